"""A tiny sweep for the sweep wing's tests: 8-iteration HWD runs on 48 px synthetic images."""

from __future__ import annotations

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
