"""`hwd-tune export`: TorchScript and ONNX files of a student agree with PyTorch on real validation
images (checked again here through torch.jit.load and onnxruntime directly), and a file that differs
by more than the tolerance fails with the measured difference and is removed."""

from __future__ import annotations

import re

import numpy as np
import onnxruntime
import pytest
import torch
from typer.testing import CliRunner

from hwd_tune.cli import app
from hwd_tune.data import SyntheticShapes
from hwd_tune.data.transforms import eval_transforms
from hwd_tune.deploy import DEFAULT_TOLERANCE, export_model
from tests.deploy.helpers import NUM_CLASSES, reference_class_maps, write_student


def validation_batch(count: int) -> torch.Tensor:
    """The synthetic dataset's first val images, normalised by the pipeline: [count, 3, 48, 48]."""
    dataset = SyntheticShapes(count, split="val", image_size=48, num_classes=NUM_CLASSES, transforms=eval_transforms())
    return torch.stack([dataset[index][0].as_subclass(torch.Tensor) for index in range(count)])


@pytest.mark.slow
def test_torchscript_round_trips_on_validation_images_and_loads_without_hwd_tune(tmp_path):
    checkpoint = write_student(tmp_path / "student")
    parity = export_model(str(checkpoint), "torchscript", out=tmp_path / "student.pt", tracking_uri=None, count=4)
    assert parity.ok and parity.images == 4 and parity.pixels == 4 * 48 * 48
    print(f"\nPARITY {parity.describe()}")
    loaded = torch.jit.load(str(tmp_path / "student.pt"))
    images = validation_batch(4)
    logits, classes = loaded(images)  # a batch of 4, though traced on one image
    assert logits.shape == (4, NUM_CLASSES, 48, 48)
    assert torch.equal(classes, reference_class_maps(checkpoint, images))
    bigger = torch.randn(1, 3, 56, 72)  # another size than the trace's
    assert torch.equal(loaded(bigger)[1], reference_class_maps(checkpoint, bigger))


@pytest.mark.slow
def test_onnx_round_trips_through_onnxruntime_and_a_difference_above_the_tolerance_fails(tmp_path):
    checkpoint = write_student(tmp_path / "student")
    out = tmp_path / "student.onnx"
    parity = export_model(str(checkpoint), "onnx", out=out, tracking_uri=None, count=4)
    print(f"\nPARITY {parity.describe()}")
    assert parity.ok and parity.max_logit_diff <= DEFAULT_TOLERANCE and parity.class_agreement == 1.0
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    images = validation_batch(2)
    logits, classes = session.run(None, {"images": images.numpy()})
    assert logits.shape == (2, NUM_CLASSES, 48, 48) and classes.dtype == np.int64
    assert np.array_equal(classes, reference_class_maps(checkpoint, images).numpy())

    if parity.max_logit_diff == 0:
        pytest.skip("onnxruntime matched PyTorch bit for bit: no tolerance below the difference to test")
    tolerance = parity.max_logit_diff / 4
    result = CliRunner().invoke(
        app, ["export", str(checkpoint), "--format", "onnx", "--out", str(out), "--tolerance", f"{tolerance:.3g}"]
    )
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert re.search(rf"max \|logit difference\| \S+ \(tolerance {tolerance:.3g}\)", text), text
    assert "differs from PyTorch by" in text and "it was removed" in text
    assert not out.exists()


def test_bad_export_requests_exit_2_naming_the_problem(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["export", str(tmp_path / "nowhere"), "--format", "onnx"])
    assert result.exit_code == 2 and "no such directory" in result.output, result.output
    result = runner.invoke(app, ["export", str(tmp_path), "--format", "torchscript", "--tolerance", "0"])
    assert result.exit_code == 2 and "tolerance must be a finite number > 0" in result.output, result.output
    result = runner.invoke(app, ["export", str(tmp_path), "--format", "tflite"])
    assert result.exit_code == 2 and "tflite" in result.output
