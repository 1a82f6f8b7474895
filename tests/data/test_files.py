"""The lookup-table label mapping shared by the file datasets, against a plain loop."""

import numpy as np
import pytest

from hwd_tune.data.files import NOT_IN_MAPPING, lookup_table, map_label_ids


def reference_map(label_ids, mapping):
    return [[mapping[int(v)] for v in row] for row in label_ids]


def test_table_lookup_equals_a_plain_loop():
    rng = np.random.default_rng(0)
    mapping = {0: -1, 1: 4, 2: 0, 7: 3, 255: -1}
    label_ids = rng.choice(list(mapping), size=(9, 13)).astype(np.uint8)
    train_ids = map_label_ids(label_ids, lookup_table(mapping), "x.png")
    assert train_ids.dtype == np.int64 and train_ids.shape == (9, 13)
    assert train_ids.tolist() == reference_map(label_ids, mapping)


def test_unlisted_ids_are_marked_and_rejected_with_their_values():
    table = lookup_table({0: 0, 1: 1, 255: -1})
    assert table[2] == NOT_IN_MAPPING and table[255] == -1
    with pytest.raises(ValueError, match=r"a/b\.png has values \[2, 9\].*expected only 0\.\.1, 255"):
        map_label_ids(np.array([[0, 9, 2, 255, 9]], np.uint8), table, "a/b.png")


def test_wide_integer_labels_outside_the_table_are_rejected():
    table = lookup_table({0: 0, 1: 1})
    assert map_label_ids(np.array([[1, 0]], np.int32), table, "w.png").tolist() == [[1, 0]]
    with pytest.raises(ValueError, match=r"w\.png has values \[-3, 300\]"):
        map_label_ids(np.array([[1, 300, -3]], np.int32), table, "w.png")
    with pytest.raises(ValueError, match="integer label ids, got dtype float32"):
        map_label_ids(np.zeros((2, 2), np.float32), table, "w.png")
