"""What MLflow shows of a real distillation run on a folder dataset (real Ray, real sqlite MLflow):
a picture of the predictions at each new best, and the machine's system metrics with its node."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import numpy as np
import psutil
import pytest
import ray
import torch
import torch.nn.functional as F
from mlflow import MlflowClient
from PIL import Image

from hwd_tune.config import ModelConfig
from hwd_tune.data.panels import tile_box
from hwd_tune.data.transforms import eval_transforms
from tests.data.layouts import FOLDER_SAMPLES, write_folder_dataset
from tests.trainables.helpers import TINY_TEACHER, tiny_config
from trainables.launch import run_training
from trainables.loop import model_from_config
from trainables.predictions import sample_indices

pytestmark = pytest.mark.slow

PALETTE = [[0, 0, 0], [128, 64, 128], [0, 0, 142]]
CLASSES_YAML = f"classes: [background, road, car]\nignore_index: 255\npalette: {PALETTE}\nignore_color: [255, 255, 0]\n"
STEP_PNG = re.compile(r"images/predictions~(val_\d{4})\+step\+(\d+)\+.*\.png$")


@pytest.fixture(scope="module")
def distilled(ray_local, tmp_path_factory):
    """A 4-iteration HWD run from a random teacher, validated at 2 and 4, pictures of 4 val images asked
    (the split has 2), system metrics every 0.5 s."""
    root = tmp_path_factory.mktemp("predictions")
    written = write_folder_dataset(root / "data", classes_yaml=CLASSES_YAML)
    teacher = model_from_config(ModelConfig.model_validate(TINY_TEACHER), 3)
    torch.save(teacher.state_dict(), root / "teacher.pt")
    config = tiny_config(
        root / "out",
        job="distill",
        method={"name": "hwd"},
        teacher={**TINY_TEACHER, "source": str(root / "teacher.pt")},
        data={"name": "folder", "root": str(root / "data"), "crop_size": 32, "loader_workers": 0},
        optimizer={"lr": 0.5},
        schedule={"max_iters": 4, "batch_size": 2, "val_interval": 2, "log_interval": 2},
        tracking={"experiment": "tests", "prediction_images": 4, "system_metrics_interval_s": 0.5},
    )
    outcome = run_training(config)
    return {"outcome": outcome, "written": written, "root": root, "teacher": teacher, "config": config}


def stepped_pictures(client: MlflowClient, run_id: str) -> dict[tuple[str, int], str]:
    """(image name, step) -> artifact path of each prediction picture of the run."""
    found = {}
    for info in client.list_artifacts(run_id, "images"):
        match = STEP_PNG.match(info.path)
        if match:
            found[(match.group(1), int(match.group(2)))] = info.path
    return found


def painted(labels: torch.Tensor) -> np.ndarray:
    return np.asarray(PALETTE, dtype=np.uint8)[labels.numpy()]


def argmax_at_image_size(model: torch.nn.Module, image: torch.Tensor) -> torch.Tensor:
    """The prediction written out by hand: logits, bilinear to the image's size (corners aligned), argmax."""
    model.eval()
    with torch.no_grad():
        logits = model(image.unsqueeze(0)).logits
        return F.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=True).argmax(1)[0]


def test_each_new_best_logs_one_picture_per_val_image_whose_student_tile_is_the_checkpoints_prediction(
    distilled, tmp_path
):
    outcome = distilled["outcome"]
    client = MlflowClient(outcome["tracking_uri"])
    run_id = outcome["run_id"]
    history = client.get_metric_history(run_id, "val_miou")
    improved_at, best = [], -1.0
    for metric in sorted(history, key=lambda m: m.step):
        if metric.value > best:
            improved_at.append(metric.step)
            best = metric.value
    pictures = stepped_pictures(client, run_id)
    val_keys = sorted(FOLDER_SAMPLES["val"])  # e, f: the split's order
    assert sample_indices(len(val_keys), 4) == [0, 1]
    assert set(pictures) == {(f"val_{index:04d}", step) for index in (0, 1) for step in improved_at}

    best_dir = client.download_artifacts(run_id, "best_checkpoint", str(tmp_path))
    meta = json.loads(Path(best_dir, "meta.json").read_text())
    assert meta["iteration"] in improved_at, (meta["iteration"], improved_at, [m.value for m in history])
    student = model_from_config(distilled["config"].student, 3)
    student.load_state_dict(torch.load(f"{best_dir}/model.pt", map_location="cpu", weights_only=True))
    normalise = eval_transforms()  # imagenet, as the config
    for index, key in enumerate(val_keys):
        mask = distilled["written"][("val", key)][1]
        stored = distilled["root"] / "data" / "images" / "val" / f"{key}{FOLDER_SAMPLES['val'][key]}"
        pixels = np.asarray(Image.open(stored).convert("RGB"))  # as decoded (a .jpg differs from what was written)
        path = client.download_artifacts(run_id, pictures[(f"val_{index:04d}", meta["iteration"])], str(tmp_path))
        panel = np.asarray(Image.open(path).convert("RGB"))
        height, width = mask.shape
        assert panel.shape[1] == tile_box(3, height, width)[2] + 4  # image | truth | teacher | student + margin
        assert panel.shape[0] > tile_box(0, height, width)[3]  # and a legend below
        image = normalise(torch.from_numpy(pixels).permute(2, 0, 1).contiguous(), torch.zeros(1))[0]
        tiles = [
            panel[top:bottom, left:right] for left, top, right, bottom in (tile_box(k, height, width) for k in range(4))
        ]
        assert np.array_equal(tiles[0], pixels)
        truth = np.where(
            (mask == 255)[..., None], np.array([255, 255, 0], np.uint8), painted(torch.from_numpy(mask % 255))
        )
        assert np.array_equal(tiles[1], truth)
        assert np.array_equal(tiles[2], painted(argmax_at_image_size(distilled["teacher"], image)))
        assert np.array_equal(tiles[3], painted(argmax_at_image_size(student, image)))


def test_the_run_records_cpu_and_memory_of_its_node(distilled):
    outcome = distilled["outcome"]
    client = MlflowClient(outcome["tracking_uri"])
    run = client.get_run(outcome["run_id"])
    assert run.data.tags["hwd.node_hostname"] == socket.gethostname()
    assert run.data.tags["hwd.node_ip"] == ray.util.get_node_ip_address()
    cpu = client.get_metric_history(outcome["run_id"], "system/cpu_utilization_percentage")
    memory = client.get_metric_history(outcome["run_id"], "system/system_memory_usage_megabytes")
    assert cpu and len(memory) == len(cpu)
    assert all(0.0 <= m.value <= 100.0 * psutil.cpu_count() for m in cpu)
    assert all(0.0 < m.value < psutil.virtual_memory().total / 1e6 for m in memory)
    assert sorted(m.step for m in cpu) == list(range(len(cpu)))
