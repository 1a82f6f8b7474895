"""Images a deployed student is run on: image files (every one checked before any is used) and a
model's own validation images, normalised as its training data was."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from hwd_tune.config import DataConfig
from hwd_tune.data.files import read_rgb_image
from hwd_tune.data.from_config import validation_set
from hwd_tune.data.transforms import eval_transforms, normalization
from hwd_tune.models import DeployableStudent


def read_images(paths: Sequence[str | Path]) -> list[tuple[Path, Tensor]]:
    """(path, uint8 RGB image [3, H, W]) of each file; ValueError naming every file that is
    missing or not an image, before any is returned."""
    problems, images = [], []
    for path in map(Path, paths):
        if not path.is_file():
            problems.append(f"{path}: no such file")
            continue
        try:
            with Image.open(path) as image:
                image.verify()  # reads the whole file: a truncated or non-image file fails here
            images.append((path, read_rgb_image(path).as_subclass(Tensor)))
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
            problems.append(f"{path}: not a readable image ({type(error).__name__}: {error})")
    if not paths:
        problems.append("no image files given")
    if problems:
        raise ValueError("cannot read the images:\n  " + "\n  ".join(problems))
    return images


def normalised(image: Tensor, normalization_name: str) -> Tensor:
    """float32 [1, 3, H, W] of a uint8 RGB image [3, H, W], normalised as the named training data."""
    return eval_transforms(**normalization(normalization_name))(image).unsqueeze(0).to(torch.float32)


def validation_images(student: DeployableStudent, count: int) -> list[tuple[str, Tensor]]:
    """The first `count` validation images of the student's dataset, normalised: (name, [1, 3, H, W]).

    Raises ValueError saying to pass image files when the dataset is not readable here.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    trained = student.meta.get("config") if isinstance(student.meta.get("config"), dict) else {}
    raw = {**(trained.get("data") or {"name": student.dataset}), "holdout": {}}  # the official val split
    try:
        dataset = validation_set(DataConfig.model_validate(raw))
    except (ValueError, FileNotFoundError, OSError) as error:
        raise ValueError(
            f"the validation images of dataset {student.dataset!r} are not readable here ({error}); "
            "pass image files with --images"
        ) from None
    chosen = range(min(count, len(dataset)))
    return [(f"{student.dataset}/val/{index}", dataset[index][0].as_subclass(Tensor).unsqueeze(0)) for index in chosen]
