"""trainables.launch: the local Ray that hwd-tune starts gets Ray Train's settings for one machine."""

from __future__ import annotations

import os

import pytest

from trainables import launch

LOCAL_SETTINGS = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}


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
