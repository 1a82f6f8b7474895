"""A model URI (models:/name@alias, models:/name/version, runs:/..., a checkpoint folder) to its
network in eval mode, with the normalisation its inputs need."""

from __future__ import annotations

import os
from pathlib import Path

from hwd_tune import tracking
from hwd_tune.models import DeployableStudent, load_deployable


def open_student(model_uri: str, *, tracking_uri: str | None, scratch: str | os.PathLike) -> DeployableStudent:
    """The student behind `model_uri`; registry and run artifacts are downloaded into `scratch`.

    Raises ValueError / FileNotFoundError naming the URI and what exists instead (models, aliases,
    versions, files) when it points nowhere.
    """
    folder = tracking.resolve_student(model_uri, tracking_uri=tracking_uri, destination=Path(scratch))
    return load_deployable(folder)
