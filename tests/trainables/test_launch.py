"""Run keys: a run with no image held out keeps the key it had before data.holdout existed."""

from __future__ import annotations

import hashlib
import json

from tests.trainables.helpers import tiny_config
from trainables.launch import run_key


def test_run_key_ignores_holdout_only_when_it_is_off(tmp_path):
    config = tiny_config(tmp_path)
    content = config.model_dump(mode="json", exclude={"name", "resources", "tracking", "output_dir"})
    del content["data"]["holdout"]  # the config as dumped before the field existed
    assert run_key(config) == hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:10]
    held_out = tiny_config(tmp_path, data={"holdout": {"fraction": 0.1}})
    assert run_key(held_out) != run_key(config)
    other_seed = tiny_config(tmp_path, data={"holdout": {"fraction": 0.1, "seed": 1}})
    assert run_key(other_seed) != run_key(held_out)
