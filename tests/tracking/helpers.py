"""Helpers of the tracking tests: runs in the shared store, checkpoint folders like the loop's."""

import json
from pathlib import Path

import torch

from hwd_tune import tracking

PASSWORD = "s3cr3t-Pa55"


def new_run(store, key, experiment="unit", **kwargs):
    return tracking.start_run(tracking_uri=store[1], experiment=experiment, run_key=key, run_name=key, **kwargs)


def download(client, run_id, path, tmp_path):
    return Path(client.download_artifacts(run_id, path, str(tmp_path)))


def write_checkpoint(directory, state, iteration, extra_meta=None):
    """A checkpoint folder like the training loop's: model.pt, train_state.pt, meta.json."""
    directory.mkdir(parents=True)
    torch.save(state, directory / "model.pt")
    torch.save({"iteration": torch.tensor(iteration)}, directory / "train_state.pt")
    meta = {"iteration": iteration, "val_miou": 12.5, **(extra_meta or {})}
    (directory / "meta.json").write_text(json.dumps(meta))
    return directory


def assert_same_state(path, expected):
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    assert set(loaded) == set(expected)
    for key, value in expected.items():
        assert torch.equal(loaded[key], value), key
