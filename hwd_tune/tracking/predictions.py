"""Pictures of a run's predictions in MLflow: one PNG per validation image.

A training run logs them as MLflow images keyed `predictions/<image>` at the iteration of each
new best, so the run's page shows them on a step slider (artifacts `images/predictions~<image>+step+<N>+...`).
The sweep's parent run gets plain PNG files in an artifact folder.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from hwd_tune.tracking.run_logger import RunLogger

PREDICTIONS_KEY = "predictions"  # key prefix of the stepped images


def log_prediction_panels(logger: RunLogger, panels: Mapping[str, np.ndarray], step: int) -> list[str]:
    """Logs each [H, W, 3] uint8 panel as the image `predictions/<name>` at `step`; returns the keys."""
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be a non-negative int (the iteration), got {step!r}")
    keys = []
    for name, panel in panels.items():
        key = f"{PREDICTIONS_KEY}/{name}"
        logger.client.log_image(logger.run_id, _checked(panel, name), key=key, step=step, synchronous=True)
        keys.append(key)
    return keys


def log_prediction_files(logger: RunLogger, panels: Mapping[str, np.ndarray], artifact_path: str) -> list[str]:
    """Logs each panel as the PNG artifact `<artifact_path>/<name>.png`; returns the artifact paths."""
    paths = []
    for name, panel in panels.items():
        path = f"{artifact_path.rstrip('/')}/{name}.png"
        logger.client.log_image(logger.run_id, _checked(panel, name), artifact_file=path)
        paths.append(path)
    return paths


def _checked(panel: np.ndarray, name: str) -> np.ndarray:
    if not isinstance(panel, np.ndarray) or panel.dtype != np.uint8 or panel.ndim != 3 or panel.shape[-1] != 3:
        shape = getattr(panel, "shape", None)
        raise ValueError(f"panel {name!r} must be a uint8 [H, W, 3] array, got {type(panel).__name__} {shape}")
    return panel
