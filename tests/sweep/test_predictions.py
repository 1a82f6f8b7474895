"""The parent run's pictures of the final stage: teacher, winner and CWD on the same val images, each
tile the argmax of the weights its run published (real sqlite MLflow, runs made without training)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from mlflow import MlflowClient
from PIL import Image

from hwd_tune import tracking
from hwd_tune.config import ModelConfig
from hwd_tune.data.palette import default_palette
from hwd_tune.data.panels import tile_box
from hwd_tune.data.synthetic import SyntheticShapes
from hwd_tune.data.transforms import eval_transforms
from hwd_tune.sweep.final_stage import Candidate, CandidateResult, FinalStageResult
from hwd_tune.sweep.predictions import PREDICTIONS_FOLDER, log_final_predictions
from tests.sweep.helpers import PAPER_POINT, tiny_sweep
from tests.trainables.helpers import TINY_STUDENT, TINY_TEACHER
from trainables.loop import model_from_config


def run_with_best_checkpoint(tracking_uri: str, key: str, model: torch.nn.Module, folder) -> str:
    """An MLflow run holding `model`'s weights as best_checkpoint/model.pt, as `run_training` publishes them."""
    run_id = tracking.start_run(tracking_uri=tracking_uri, experiment="tests", run_key=key, run_name=key)
    folder.mkdir()
    torch.save(model.state_dict(), folder / "model.pt")
    tracking.RunLogger(tracking_uri, run_id).log_artifact_dir(folder, "best_checkpoint")
    return run_id


def prediction(model: torch.nn.Module, image: torch.Tensor) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        logits = F.interpolate(model(image[None]).logits, size=image.shape[-2:], mode="bilinear", align_corners=True)
    return default_palette(4)[logits.argmax(1)[0].numpy()]


def test_the_parent_run_shows_teacher_winner_and_cwd_on_the_same_images(tmp_path):
    teacher = model_from_config(ModelConfig.model_validate(TINY_TEACHER), 4)
    torch.save(teacher.state_dict(), tmp_path / "teacher.pt")
    sweep = tiny_sweep(tmp_path, str(tmp_path / "teacher.pt"), final={"top_k": 1, "seeds": [0, 1]})
    uri = sweep.train.tracking.uri
    torch.manual_seed(1)
    students = {name: model_from_config(ModelConfig.model_validate(TINY_STUDENT), 4) for name in ("hwd", "cwd")}
    hwd_run = run_with_best_checkpoint(uri, "hwd-seed-1", students["hwd"], tmp_path / "hwd")
    cwd_run = run_with_best_checkpoint(uri, "cwd-seed-1", students["cwd"], tmp_path / "cwd")
    final = FinalStageResult(
        seeds=[0, 1],
        results=[
            CandidateResult(Candidate("top-1", "hwd", dict(PAPER_POINT), "tuned"), {0: 50.0, 1: 51.0}, {1: hwd_run}),
            CandidateResult(Candidate("cwd", "cwd", {}, "baseline"), {1: 49.0}, {1: cwd_run}),  # seed 1 only
        ],
        winner="top-1",
        comparisons={},
    )
    parent = tracking.RunLogger(
        uri, tracking.start_run(tracking_uri=uri, experiment="tests", run_key="p", run_name="p")
    )
    paths = log_final_predictions(sweep, final, parent, uri)
    val = SyntheticShapes(split="val", num_samples=8, image_size=48, num_classes=4)
    assert paths == [f"{PREDICTIONS_FOLDER}/val_{index:04d}.png" for index in (0, 2, 5, 7)]  # 4 of 8, spread
    client = MlflowClient(uri)
    for path, index in zip(paths, (0, 2, 5, 7)):
        panel = np.asarray(Image.open(client.download_artifacts(parent.run_id, path, str(tmp_path))).convert("RGB"))
        pixels, mask = val[index]
        image = eval_transforms()(pixels, mask)[0]
        tiles = [panel[top:bottom, left:right] for left, top, right, bottom in (tile_box(k, 48, 48) for k in range(5))]
        assert np.array_equal(tiles[0], pixels.permute(1, 2, 0).numpy())
        assert np.array_equal(tiles[1], default_palette(4)[mask.numpy()])
        assert np.array_equal(tiles[2], prediction(teacher, image))
        assert np.array_equal(tiles[3], prediction(students["hwd"], image))  # the winner, seed 1: the seed both have
        assert np.array_equal(tiles[4], prediction(students["cwd"], image))
        assert not np.array_equal(tiles[3], tiles[4])  # two different students really are shown


def test_nothing_is_drawn_when_pictures_are_off(tmp_path):
    sweep = tiny_sweep(tmp_path, "teacher.pt", final={"top_k": 1})
    sweep.train.tracking.prediction_images = 0
    final = FinalStageResult([0], [], winner="top-1", comparisons={})
    assert log_final_predictions(sweep, final, None, sweep.train.tracking.uri) == []
