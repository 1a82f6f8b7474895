"""A student run on image files: a class-index PNG and a colour overlay per image.

`<stem>_classes.png` holds the class id of each pixel (uint8, or uint16 when a class id can
exceed 255); `<stem>_overlay.png` is the image blended half and half with the class colours
(the folder dataset's palette when its classes.yaml is readable here, else `default_palette`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from hwd_tune.config import DataConfig
from hwd_tune.data.folder_classes import load_folder_classes
from hwd_tune.data.palette import Palette, colorize, default_palette
from hwd_tune.deploy.inputs import normalised, read_images
from hwd_tune.deploy.source import open_student
from hwd_tune.models import DeployableStudent, class_maps

OVERLAY_ALPHA = 0.5  # weight of the class colours in the overlay


@dataclass(frozen=True)
class PredictionFiles:
    """What was written for one input image."""

    image: Path
    classes: Path
    overlay: Path


def predict_files(
    model_uri: str, image_paths: Sequence[str | os.PathLike], out_dir: str | os.PathLike, *, tracking_uri: str | None
) -> list[PredictionFiles]:
    """Runs the student behind `model_uri` on every image file and writes its PNGs into `out_dir`."""
    with tempfile.TemporaryDirectory(prefix="hwd-predict-") as scratch:
        student = open_student(model_uri, tracking_uri=tracking_uri, scratch=scratch)
        return predict_images(student, image_paths, Path(out_dir))


def predict_images(
    student: DeployableStudent, image_paths: Sequence[str | os.PathLike], out_dir: Path
) -> list[PredictionFiles]:
    """Every image is read and its output names checked before anything is written."""
    images = read_images(image_paths)
    stems: dict[str, Path] = {}
    for path, _ in images:
        if path.stem in stems:
            raise ValueError(f"{path} and {stems[path.stem]} would write the same files ({path.stem}_classes.png)")
        stems[path.stem] = path
    palette = student_palette(student)
    dtype = np.uint8 if student.num_classes <= 256 else np.uint16
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path, image in images:
        classes = class_maps(student, normalised(image, student.normalization))[0].numpy()
        files = PredictionFiles(path, out_dir / f"{path.stem}_classes.png", out_dir / f"{path.stem}_overlay.png")
        Image.fromarray(classes.astype(dtype)).save(files.classes)
        rgb = image.permute(1, 2, 0).numpy().astype(np.float32)
        overlay = (1 - OVERLAY_ALPHA) * rgb + OVERLAY_ALPHA * colorize(classes, palette).astype(np.float32)
        Image.fromarray(overlay.round().astype(np.uint8)).save(files.overlay)
        written.append(files)
    return written


def student_palette(student: DeployableStudent) -> Palette:
    """The student's folder dataset's own colours when readable here (and one per class), else the default."""
    data = (student.meta.get("config") or {}).get("data") or {}
    if data.get("name") == "folder" and data.get("root"):
        try:
            config = DataConfig.model_validate(data)
            colours = load_folder_classes(config.root, config.folder).palette
        except (OSError, ValueError):
            colours = None
        if colours is not None and len(colours) == student.num_classes:
            return Palette(np.asarray(colours, dtype=np.uint8))
    return Palette(default_palette(student.num_classes))
