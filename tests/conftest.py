"""Shared test set-up: deterministic torch on few threads, one local Ray for the whole session."""

import os

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_torch():
    """Every test starts from the same RNG state, so failures reproduce."""
    torch.manual_seed(0)
    yield


def pytest_configure(config):
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance (2 CPUs, like the CI machine) shared by every test that needs it:
    `ray.init` costs ~10 s. Stopped at the end of the session by the fixture that started it."""
    import ray

    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield ray
    ray.shutdown()
