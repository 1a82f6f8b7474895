"""The student end to end, with real Ray, real training and a real sqlite MLflow store: a tiny sweep
with a final stage registers its winner as `student-synthetic-deeplabv3_resnet18@champion`, which
`mlflow.pyfunc` loads and `hwd-tune export` / `predict` take by URI; a plain distill run registers
`@best-hwd`. Every output is compared with the argmax of the network built from the run's model.pt."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from PIL import Image
from typer.testing import CliRunner

from hwd_tune.cli import app
from hwd_tune.config import ModelConfig
from hwd_tune.data import SyntheticShapes
from hwd_tune.data.transforms import eval_transforms
from hwd_tune.models import model_from_config
from hwd_tune.sweep import service
from hwd_tune.sweep.final_stage import CHAMPION_TAG
from tests.deploy.helpers import NUM_CLASSES, fluent_mlflow_store, reference_class_maps
from tests.sweep.helpers import PAPER_POINT, tiny_sweep
from tests.trainables.helpers import TINY_TEACHER, tiny_config

NAME = "student-synthetic-deeplabv3_resnet18"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]  # a sweep and a run: minutes on a loaded 2-core VM


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    """A tiny teacher's weights (random: the tests check the registered student, not accuracy)."""
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    torch.save(model_from_config(ModelConfig.model_validate(TINY_TEACHER), NUM_CLASSES).state_dict(), path)
    return str(path)


@pytest.fixture(scope="module")
def champion(ray_local, tmp_path_factory, teacher_file):
    """A one-trial sweep whose final stage retrains the best trial (one seed: 2 cores); its summary."""
    sweep = tiny_sweep(
        tmp_path_factory.mktemp("sweep"),
        teacher_file,
        num_samples=1,
        scheduler={"type": "none"},
        final={"top_k": 1, "seeds": [0], "include": []},
    )
    return service.run(sweep)


def validation_batch(count: int = 8) -> torch.Tensor:
    """The synthetic val images the runs validated on, normalised by the pipeline: [count, 3, 48, 48]."""
    dataset = SyntheticShapes(count, split="val", image_size=48, num_classes=NUM_CLASSES, transforms=eval_transforms())
    return torch.stack([dataset[index][0].as_subclass(torch.Tensor) for index in range(count)])


def best_checkpoint(tracking_uri: str, run_id: str, folder):
    return MlflowClient(tracking_uri=tracking_uri).download_artifacts(run_id, "best_checkpoint", str(folder))


def test_the_sweeps_winner_loads_as_pyfunc_from_champion_and_predicts_its_checkpoints_class_maps(champion, tmp_path):
    client = MlflowClient(tracking_uri=champion.tracking_uri, registry_uri=champion.tracking_uri)
    final = champion.final_stage
    assert final.winner is not None, [(result.candidate.label, result.errors) for result in final.results]
    winner = final.result(final.winner)
    best_seed = max(winner.values, key=winner.values.get)
    version = client.get_model_version_by_alias(NAME, "champion")
    assert version.run_id == winner.run_ids[best_seed]  # the winner's best seed
    assert champion.champion == f"models:/{NAME}/{version.version}"
    assert client.get_run(champion.parent_run_id).data.tags[CHAMPION_TAG] == champion.champion
    assert version.tags["hwd.final.label"] == final.winner == "top-1"
    assert len(client.search_model_versions(f"name = '{NAME}'")) == 1  # the final stage's runs are not registered

    with fluent_mlflow_store(champion.tracking_uri):
        model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    images = validation_batch()
    classes = model.predict(images.numpy())
    checkpoint = best_checkpoint(champion.tracking_uri, version.run_id, tmp_path)
    expected = reference_class_maps(tmp_path / "best_checkpoint", images)
    assert classes.dtype == np.int64 and classes.shape == (8, 48, 48)
    assert np.array_equal(classes, expected.numpy()), checkpoint


def test_export_and_predict_take_the_champion_by_uri(champion, tmp_path):
    uri, store = f"models:/{NAME}@champion", ["--tracking-uri", champion.tracking_uri]
    runner = CliRunner()
    version = MlflowClient(tracking_uri=champion.tracking_uri).get_model_version_by_alias(NAME, "champion")
    best_checkpoint(champion.tracking_uri, version.run_id, tmp_path)
    checkpoint = tmp_path / "best_checkpoint"

    result = runner.invoke(app, ["export", uri, "--format", "torchscript", "--out", str(tmp_path / "s.pt"), *store])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "torchscript vs PyTorch on 4 image(s), 9,216 pixels" in text and "agree on 100.0000 % of pixels" in text
    images = validation_batch(4)
    assert torch.equal(torch.jit.load(str(tmp_path / "s.pt"))(images)[1], reference_class_maps(checkpoint, images))

    paths = []
    for index, image in enumerate(SyntheticShapes(2, split="val", image_size=48, num_classes=NUM_CLASSES)):
        paths.append(tmp_path / f"val-{index}.png")
        Image.fromarray(np.asarray(image[0]).transpose(1, 2, 0)).save(paths[-1])
    result = runner.invoke(app, ["predict", uri, *map(str, paths), "--out", str(tmp_path / "out"), *store])
    assert result.exit_code == 0, result.output
    for index, path in enumerate(paths):
        saved = np.asarray(Image.open(tmp_path / "out" / f"{path.stem}_classes.png"))
        assert np.array_equal(
            saved, reference_class_maps(checkpoint, validation_batch(2)[index : index + 1])[0].numpy()
        )
        assert (tmp_path / "out" / f"{path.stem}_overlay.png").is_file()

    result = runner.invoke(app, ["predict", f"models:/{NAME}@nope", str(paths[0]), "--out", str(tmp_path), *store])
    assert result.exit_code == 2
    assert "has no alias 'nope'; its aliases are {'champion'" in " ".join(result.output.split())
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    result = runner.invoke(app, ["predict", uri, str(notes), "--out", str(tmp_path / "none"), *store])
    assert result.exit_code == 2 and "notes.txt: not a readable image" in result.output
    assert not (tmp_path / "none").exists()


def test_a_distill_run_registers_its_best_student_as_best_method(ray_local, tmp_path, teacher_file):
    from trainables.launch import run_training

    tracking_uri = f"sqlite:///{tmp_path}/mlflow/mlflow.db"
    config = tiny_config(
        tmp_path,
        job="distill",
        method={"name": "hwd", "params": dict(PAPER_POINT)},
        teacher={**TINY_TEACHER, "source": teacher_file},
        tracking={"experiment": "tests", "uri": tracking_uri},
    )
    outcome = run_training(config)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    version = client.get_model_version_by_alias(NAME, "best-hwd")
    assert version.run_id == outcome["run_id"]
    best_checkpoint(tracking_uri, outcome["run_id"], tmp_path)
    with fluent_mlflow_store(tracking_uri):
        model = mlflow.pyfunc.load_model(f"models:/{NAME}@best-hwd")
    images = validation_batch()
    assert np.array_equal(
        model.predict(images.numpy()), reference_class_maps(tmp_path / "best_checkpoint", images).numpy()
    )
