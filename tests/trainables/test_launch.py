"""trainables.launch: run keys (a run with no image held out keeps the key it had before
data.holdout existed), and the local Ray that hwd-tune starts gets Ray Train's one-machine settings."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from tests.trainables.helpers import tiny_config
from trainables import launch
from trainables.launch import run_key

LOCAL_SETTINGS = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}


def test_run_key_ignores_holdout_only_when_it_is_off(tmp_path):
    config = tiny_config(tmp_path)
    content = config.model_dump(mode="json", exclude={"name", "resources", "tracking", "output_dir", "storage"})
    for field in ("holdout", "folder", "check_samples"):  # the config as dumped before these fields existed
        del content["data"][field]
    assert run_key(config) == hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:10]
    held_out = tiny_config(tmp_path, data={"holdout": {"fraction": 0.1}})
    assert run_key(held_out) != run_key(config)
    other_seed = tiny_config(tmp_path, data={"holdout": {"fraction": 0.1, "seed": 1}})
    assert run_key(other_seed) != run_key(held_out)


@pytest.mark.parametrize("user_settings", [{}, {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "5"}])
def test_start_local_ray_sets_ray_train_settings_unless_the_user_did(user_settings, monkeypatch):
    """Set before ray.init (Ray Train passes the driver's on to its controller); a user's value wins."""
    environment = {key: value for key, value in os.environ.items() if key not in LOCAL_SETTINGS}
    monkeypatch.setattr(os, "environ", {**environment, **user_settings})
    seen_by_ray = {}
    monkeypatch.setattr(launch.ray, "init", lambda **options: seen_by_ray.update(os.environ))
    launch.start_local_ray()
    expected = {**LOCAL_SETTINGS, **user_settings}
    assert {key: seen_by_ray.get(key) for key in LOCAL_SETTINGS} == expected


def test_a_job_sent_to_a_trial_actor_carries_the_drivers_store_and_an_absolute_output_dir(tmp_path, monkeypatch):
    """A Tune trial runs in its own folder: relative paths would point elsewhere there."""
    monkeypatch.chdir(tmp_path)
    config = tiny_config("outputs", tracking={"experiment": "tests", "uri": None})
    pinned = launch.pinned_to_driver(config, "sqlite:////store/mlflow.db")
    assert pinned.output_dir == str(tmp_path.resolve() / "outputs")
    assert pinned.tracking.uri == "sqlite:////store/mlflow.db" and pinned.tracking.experiment == "tests"
    assert launch.run_name(pinned) == launch.run_name(config)  # the same run, found again by its key
