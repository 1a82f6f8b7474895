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


def pytest_runtest_logreport(report):
    """With HWD_TEST_DURATIONS=FILE, each test phase's wall time is appended to FILE as it ends
    (seconds, phase, test id): where a long or killed run spent its time, unlike --durations."""
    path = os.environ.get("HWD_TEST_DURATIONS")
    if path:
        with open(path, "a") as log:
            log.write(f"{report.duration:.2f}\t{report.when}\t{report.outcome}\t{report.nodeid}\n")


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance (2 CPUs, like the CI machine) shared by every test that needs it:
    `ray.init` costs ~10 s. Stopped at the end of the session by the fixture that started it."""
    import ray

    from trainables.launch import start_local_ray

    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    # start_local_ray sets Ray Train's settings for one machine itself (as for every user)
    start_local_ray(num_cpus=2, log_to_driver=False)  # dashboard on: see start_local_ray
    yield ray
    ray.shutdown()
    os.environ.pop("RAY_API_SERVER_ADDRESS", None)
