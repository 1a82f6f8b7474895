"""A tiny sweep for the sweep wing's tests (8-iteration HWD runs on 48 px synthetic images), and a
sweep driver in its own process that a test kills with `kill -9` once something has happened."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from hwd_tune.sweep.config import SweepConfig
from tests.trainables.helpers import TINY_TEACHER, tiny_config

PAPER_POINT = {"tau": 4.0, "mu": 0.0, "beta": 0.1}  # Table I (ADE20K)
SPACE = {
    "tau": {"type": "loguniform", "low": 1.0, "high": 8.0},
    "mu": {"type": "uniform", "low": -1.0, "high": 2.0},
    "beta": {"type": "loguniform", "low": 0.01, "high": 1.0},
}


def tiny_sweep(output_dir: Path, teacher_source: str, **search) -> SweepConfig:
    """A 4-trial sweep of 8-iteration HWD runs on 48 px synthetic images (validation every 2)."""
    train = tiny_config(
        output_dir,
        job="distill",
        method={"name": "hwd", "params": dict(PAPER_POINT)},
        teacher={**TINY_TEACHER, "source": teacher_source},
        schedule={"max_iters": 8, "batch_size": 4, "val_interval": 2, "log_interval": 2},
        tracking={"experiment": "tests", "uri": f"sqlite:///{output_dir}/mlflow/mlflow.db"},
    )
    return SweepConfig.model_validate(
        {
            "name": "tiny",
            "train": train.model_dump(mode="json"),
            "search": {
                "num_samples": 4,
                "max_concurrent_trials": 2,
                "seed": 0,
                "space": SPACE,
                "points_to_evaluate": [dict(PAPER_POINT)],
                "baselines": [],
                "scheduler": {"grace_period": 2, "reduction_factor": 2},
                **search,
            },
        }
    )


DRIVER = """
import json, sys
from hwd_tune.sweep import service
from hwd_tune.sweep.config import SweepConfig
from trainables.launch import start_local_ray

start_local_ray(num_cpus=2, log_to_driver=False)
service.run(SweepConfig.model_validate(json.loads(sys.argv[1])))
"""


def kill_driver_once(sweep: SweepConfig, happened: Callable[[], bool], what: str, timeout_s: float) -> None:
    """Runs `sweep` in a driver process with its own local Ray and SIGKILLs its whole session as
    soon as `happened()` is true (checked twice a second); fails if the driver ends first or
    `what` has not happened within `timeout_s`."""
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, json.dumps(sweep.model_dump(mode="json"))],
        cwd=Path(__file__).resolve().parents[2],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + timeout_s
        while not happened():
            assert driver.poll() is None, f"the sweep driver exited before {what}"
            assert time.monotonic() < deadline, f"no {what} within {timeout_s:g} s"
            time.sleep(0.5)
    finally:
        _kill_session(driver)


def _kill_session(process: subprocess.Popen) -> None:
    """SIGKILL the driver's whole process group (it and the local Ray it started), like `kill -9`."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    survivors = [pid for pid in os.listdir("/proc") if pid.isdigit() and _session_of(int(pid)) == process.pid]
    for pid in survivors:  # Ray processes that left the group but not the session
        os.kill(int(pid), signal.SIGKILL)


def _session_of(pid: int) -> int | None:
    try:
        return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[3])
    except (OSError, IndexError, ValueError):
        return None
