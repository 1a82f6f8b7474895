"""The held-out tuning split: sizes, disjointness, determinism per seed, the cap, and clear errors."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
import torch

from hwd_tune.data.holdout import holdout_count, holdout_indices, training_indices


@pytest.mark.parametrize(
    ("num_images", "fraction", "max_images", "expected"),
    [
        (64, 0.1, None, 6),  # 6.4 -> 6 (the tests' tiny sweep)
        (512, 0.1, 32, 32),  # 51.2 capped at 32 (the quickstart)
        (20210, 0.1, 2000, 2000),  # ADE20K's training split, capped
        (2975, 0.1, 2000, 298),  # Cityscapes: 297.5 rounds to the even 298
        (10, 0.25, None, 2),  # 2.5 rounds to the even 2
        (10, 0.35, None, 4),  # 3.5 rounds to the even 4
        (1000, 0.001, None, 1),
        (2, 0.01, None, 1),  # 0.02 -> 0, raised to one image
        (3, 0.9, None, 2),  # 2.7 -> 3 would leave nothing to train on: 2
        (5, 0.5, 1, 1),
    ],
)
def test_count_is_the_rounded_fraction_capped_and_clamped(num_images, fraction, max_images, expected):
    assert holdout_count(num_images, fraction, max_images) == expected
    held_out = holdout_indices(num_images, fraction, max_images, seed=0)
    assert len(held_out) == expected
    assert len(training_indices(num_images, fraction, max_images, seed=0)) == num_images - expected


@pytest.mark.parametrize(
    ("num_images", "fraction", "max_images", "seed"),
    list(itertools.product([2, 7, 64, 513], [0.05, 0.1, 0.5, 0.95], [None, 3], [0, 1, 12345, -7])),
)
def test_split_is_sorted_disjoint_and_covers_every_image(num_images, fraction, max_images, seed):
    held_out = holdout_indices(num_images, fraction, max_images, seed)
    kept = training_indices(num_images, fraction, max_images, seed)
    assert held_out == sorted(set(held_out)) and kept == sorted(set(kept))
    assert not set(held_out) & set(kept)
    assert set(held_out) | set(kept) == set(range(num_images))
    assert 1 <= len(held_out) <= num_images - 1


def test_held_out_images_are_the_first_of_a_seeded_torch_permutation():
    # reference: the first round(0.25 x 20) = 5 entries of torch.randperm(20) under seed 0
    reference = torch.randperm(20, generator=torch.Generator().manual_seed(0))[:5]
    assert holdout_indices(20, 0.25, None, seed=0) == sorted(reference.tolist())
    # pinned: a resumed sweep (and every user of seed 0) must keep holding out these images
    assert holdout_indices(20, 0.25, None, seed=0) == [4, 5, 7, 13, 19]
    assert holdout_indices(64, 0.1, 2000, seed=0) == [3, 17, 21, 44, 46, 47]


def test_same_arguments_same_split_and_different_seeds_differ():
    first = holdout_indices(100, 0.2, None, seed=3)
    torch.manual_seed(99)  # the global RNG plays no part
    assert holdout_indices(100, 0.2, None, seed=3) == first
    splits = {tuple(holdout_indices(100, 0.2, None, seed=seed)) for seed in range(6)}
    assert len(splits) == 6


def test_raising_the_fraction_or_the_cap_only_adds_images():
    smaller = set(holdout_indices(200, 0.05, None, seed=4))
    larger = set(holdout_indices(200, 0.2, None, seed=4))
    assert len(smaller) == 10 and len(larger) == 40 and smaller < larger
    capped = set(holdout_indices(200, 0.2, 15, seed=4))
    assert len(capped) == 15 and smaller < capped < larger


def test_every_image_is_held_out_equally_often_over_seeds():
    # 3 of 10 images under 2000 seeds: each index ~600 times (binomial sd ~20); a bias would show
    counts = Counter(index for seed in range(2000) for index in holdout_indices(10, 0.3, None, seed))
    assert sorted(counts) == list(range(10))
    assert all(500 < count < 700 for count in counts.values()), counts


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ((10, 0.0, None, 0), r"fraction must be in \(0, 1\), got fraction=0\.0"),
        ((10, 1.0, None, 0), r"fraction must be in \(0, 1\), got fraction=1\.0"),
        ((10, -0.1, None, 0), r"got fraction=-0\.1"),
        ((10, 1.5, None, 0), r"got fraction=1\.5"),
        ((10, True, None, 0), r"got fraction=True"),
        ((1, 0.5, None, 0), r"too few training images to hold any out: need at least 2 .*got num_images=1"),
        ((0, 0.5, None, 0), r"got num_images=0"),
        ((10, 0.5, 0, 0), r"max_images must be None or an int >= 1, got max_images=0"),
        ((10, 0.5, 2.5, 0), r"got max_images=2\.5"),
        ((10, 0.5, None, "0"), r"seed must be an int, got seed='0'"),
    ],
)
def test_bad_arguments_are_named_with_their_values(arguments, message):
    with pytest.raises(ValueError, match=message):
        holdout_indices(*arguments)
    with pytest.raises(ValueError, match=message):
        training_indices(*arguments)
