"""A student exported to TorchScript or ONNX and checked against PyTorch on real images.

The exported module is `hwd_tune.models.ClassMapNetwork`: images [N, 3, H, W] (any N, H, W) ->
logits [N, K, H, W] and class map [N, H, W]. The check runs each image through PyTorch and
through the written file (TorchScript by `torch.jit.load`, ONNX by onnxruntime) and fails when
a logit differs by more than the tolerance; a file that fails is removed.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from hwd_tune.deploy.inputs import normalised, read_images, validation_images
from hwd_tune.deploy.source import open_student
from hwd_tune.models import ClassMapNetwork, DeployableStudent

EXPORT_FORMATS = {"torchscript": ".pt", "onnx": ".onnx"}  # format -> file suffix
DEFAULT_TOLERANCE = 1e-3  # largest accepted |logit difference|; float32 reorderings stay near 1e-5
Runner = Callable[[Tensor], tuple[np.ndarray, np.ndarray]]  # images -> (logits, class map)


@dataclass(frozen=True)
class Parity:
    """How an exported file agrees with PyTorch on the images it was checked on."""

    format: str
    path: Path
    tolerance: float
    max_logit_diff: float  # largest |exported - PyTorch| over every logit of every image
    class_agreement: float  # fraction of pixels with the same class (0-1)
    pixels: int
    images: int

    @property
    def ok(self) -> bool:
        return self.max_logit_diff <= self.tolerance

    def describe(self) -> str:
        return (
            f"{self.format} vs PyTorch on {self.images} image(s), {self.pixels:,} pixels: max |logit difference| "
            f"{self.max_logit_diff:.3g} (tolerance {self.tolerance:g}), class maps agree on "
            f"{100 * self.class_agreement:.4f} % of pixels"
        )


def export_model(
    model_uri: str,
    export_format: str,
    *,
    out: str | os.PathLike | None,
    tracking_uri: str | None,
    image_paths: Sequence[str | os.PathLike] = (),
    count: int = 4,
    tolerance: float = DEFAULT_TOLERANCE,
) -> Parity:
    """Exports the student behind `model_uri` (default file: student-<dataset>-<arch>.<suffix>) and
    checks it on `image_paths`, or on `count` validation images of its dataset."""
    check_export_options(export_format, tolerance)
    with tempfile.TemporaryDirectory(prefix="hwd-export-") as scratch:
        student = open_student(model_uri, tracking_uri=tracking_uri, scratch=scratch)
        if image_paths:
            images = [normalised(image, student.normalization) for _, image in read_images(image_paths)]
        else:
            images = [image for _, image in validation_images(student, count)]
        path = Path(out) if out else Path(f"student-{student.dataset}-{student.arch}{EXPORT_FORMATS[export_format]}")
        return export_student(student, images, export_format, path, tolerance)


def check_export_options(export_format: str, tolerance: float) -> None:
    """ValueError for an unknown format or a tolerance that is not a positive number."""
    if export_format not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {export_format!r}; expected one of {sorted(EXPORT_FORMATS)}")
    if not (isinstance(tolerance, (int, float)) and np.isfinite(tolerance) and tolerance > 0):
        raise ValueError(f"tolerance must be a finite number > 0, got {tolerance!r}")


def export_student(
    student: DeployableStudent, images: Sequence[Tensor], export_format: str, path: Path, tolerance: float
) -> Parity:
    """Writes `path` from the student's network (traced on the first image) and measures its parity
    on every image ([1, 3, H, W] each, sizes may differ); removes the file when it fails."""
    check_export_options(export_format, tolerance)
    if not images:
        raise ValueError("no images to check the export on")
    path.parent.mkdir(parents=True, exist_ok=True)
    writers = {"torchscript": _write_torchscript, "onnx": _write_onnx}
    runner = writers[export_format](student.network, images[0], path)
    worst, agreeing, pixels = 0.0, 0, 0
    with torch.inference_mode():
        for image in images:
            logits, classes = (output.numpy() for output in student.network(image))
            exported_logits, exported_classes = runner(image)
            worst = max(worst, float(np.abs(exported_logits - logits).max()))
            agreeing += int((exported_classes == classes).sum())
            pixels += classes.size
    parity = Parity(export_format, path, float(tolerance), worst, agreeing / pixels, pixels, len(images))
    if not parity.ok:
        path.unlink(missing_ok=True)
    return parity


def _write_torchscript(network: ClassMapNetwork, example: Tensor, path: Path) -> Runner:
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, still the most loadable format
        torch.jit.trace(network, example, check_trace=False).save(str(path))
        loaded = torch.jit.load(str(path), map_location="cpu").eval()

    def run(images: Tensor) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            logits, classes = loaded(images)
        return logits.numpy(), classes.numpy()

    return run


def _write_onnx(network: ClassMapNetwork, example: Tensor, path: Path) -> Runner:
    import onnxruntime
    from torch.export import Dim

    dynamic = {"images": {0: Dim.DYNAMIC, 2: Dim.DYNAMIC, 3: Dim.DYNAMIC}}  # any batch and image size
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            network,
            (example,),
            str(path),
            input_names=["images"],
            output_names=["logits", "classes"],
            dynamic_shapes=dynamic,
            dynamo=True,
            verbose=False,
        )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(images: Tensor) -> tuple[np.ndarray, np.ndarray]:
        logits, classes = session.run(["logits", "classes"], {"images": images.numpy()})
        return logits, classes

    return run
