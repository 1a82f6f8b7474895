"""Distillation losses (pure torch) and the distiller registry used by the training loop.

Importing this package registers every method, so `build_distiller(name, ...)` knows them all.
"""

from hwd_tune.losses import (  # noqa: F401  (imported to register the distillers)
    cirkd,
    cwd,
    dist,
    hwd,
    ifvd,
    kd,
    mgd,
    skd,
    student_only,
)
from hwd_tune.losses.distiller import (
    Distiller,
    available_distillers,
    build_distiller,
    distiller_params,
    register_distiller,
)
from hwd_tune.losses.task import TaskLoss, segmentation_cross_entropy, total_loss

__all__ = [
    "Distiller",
    "TaskLoss",
    "available_distillers",
    "build_distiller",
    "distiller_params",
    "register_distiller",
    "segmentation_cross_entropy",
    "total_loss",
]
