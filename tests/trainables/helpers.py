"""Tiny training configs on the synthetic dataset, small enough for 2 CPU cores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hwd_tune.config import TrainConfig

TINY_STUDENT = {"arch": "deeplabv3_resnet18", "width_multiplier": 0.125}
TINY_TEACHER = {"arch": "deeplabv3_resnet18", "width_multiplier": 0.25}


def tiny_config(output_dir: Path, **sections: Any) -> TrainConfig:
    """A TrainConfig of a few iterations on 48x48 synthetic images; `sections` override parts."""
    raw: dict[str, Any] = {
        "job": "teacher",
        "method": {"name": "none"},
        "output_dir": str(output_dir),
        "seed": 0,
        "data": {
            "crop_size": 48,
            "scale_range": [1.0, 1.0],
            "loader_workers": 0,
            "synthetic": {"num_classes": 4, "image_size": 48, "train_samples": 64, "val_samples": 8},
        },
        "student": dict(TINY_STUDENT),
        "teacher": {**TINY_TEACHER, "milestones": [4, 8]},
        "optimizer": {"lr": 0.05},
        "schedule": {"max_iters": 8, "batch_size": 4, "val_interval": 4, "log_interval": 2},
        "resources": {"num_workers": 1, "cpus_per_worker": 0.5},
        "tracking": {"experiment": "tests"},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return TrainConfig.model_validate(raw)


def register_in_new_store(store: Path, checkpoint: Path, arch: str, alias: str) -> str:
    """A fresh sqlite MLflow store under `store` where `checkpoint` (model.pt + meta.json) is
    registered as the synthetic teacher of `arch` with `alias`; returns the store's URI."""
    from hwd_tune import tracking

    uri = tracking.default_tracking_uri(store)
    run_id = tracking.start_run(tracking_uri=uri, experiment="teachers", run_key="teacher", run_name="teacher")
    tracking.register_teacher(
        tracking_uri=uri, run_id=run_id, checkpoint_dir=checkpoint, dataset="synthetic", arch=arch, aliases=[alias]
    )
    return uri
