"""Student versions in a real sqlite MLflow store: a checkpoint registered as a pyfunc model whose
predict gives the checkpoint's class maps, with a signature, an input example and no pickle; a
run's best weights registered once however often asked; URIs that point nowhere named as such."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pytest
import torch
import yaml

from hwd_tune import tracking
from tests.deploy.helpers import fluent_mlflow_store, reference_class_maps, write_student
from tests.tracking.helpers import new_run

NAME = "student-synthetic-deeplabv3_resnet18"


@pytest.fixture(scope="module")
def registered(store, tmp_path_factory):
    """A tiny student registered from its run as @best-hwd; (run id, checkpoint folder, version)."""
    checkpoint = write_student(tmp_path_factory.mktemp("students") / "best")
    run_id = new_run(store, "student-run", experiment="students")
    mlflow.MlflowClient(tracking_uri=store[1]).log_artifacts(run_id, str(checkpoint), "best_checkpoint")
    name, version = tracking.register_run_student(tracking_uri=store[1], run_id=run_id, aliases=["best-hwd"])
    assert name == NAME
    return run_id, checkpoint, version


def test_a_registered_student_loads_as_pyfunc_and_predicts_the_checkpoints_class_maps(store, registered, client):
    _, checkpoint, version = registered
    with fluent_mlflow_store(store[1]):
        model = mlflow.pyfunc.load_model(f"models:/{NAME}@best-hwd")
        info = mlflow.models.get_model_info(f"models:/{NAME}@best-hwd")
    images = np.random.default_rng(1).normal(size=(3, 3, 40, 48)).astype(np.float32)
    classes = model.predict(images)
    assert classes.dtype == np.int64 and classes.shape == (3, 40, 48)
    assert np.array_equal(classes, reference_class_maps(checkpoint, torch.from_numpy(images)).numpy())

    [inputs], [outputs] = info.signature.inputs.inputs, info.signature.outputs.inputs
    assert (inputs.type, inputs.shape) == (np.dtype(np.float32), (-1, 3, -1, -1))
    assert (outputs.type, outputs.shape) == (np.dtype(np.int64), (-1, -1, -1))
    assert info.saved_input_example_info["type"] == "ndarray"
    assert info.metadata["normalization"] == "imagenet" and info.metadata["num_classes"] == 4
    destination = checkpoint.parent / "downloaded"
    folder = tracking.resolve_student(f"models:/{NAME}/{version}", tracking_uri=store[1], destination=destination)
    files = {path.name for path in folder.parent.rglob("*") if path.is_file()}
    assert not any(name.endswith((".pkl", ".cloudpickle")) for name in files), files  # the pyfunc is code
    flavour = yaml.safe_load((folder.parent / "MLmodel").read_text())["flavors"]["python_function"]
    assert flavour["loader_module"] == "mlflow.pyfunc.loaders.code_model"
    assert json.loads((folder / "meta.json").read_text())["num_classes"] == 4
    assert client.get_model_version(NAME, str(version)).tags["hwd.meta.method"] == "hwd"


def test_a_runs_student_is_registered_once_and_later_aliases_join_it(store, registered, client):
    run_id, _, version = registered
    assert tracking.register_run_student(tracking_uri=store[1], run_id=run_id, aliases=["champion"]) == (NAME, version)
    assert int(client.get_model_version_by_alias(NAME, "champion").version) == version
    assert len(client.search_model_versions(f"name = '{NAME}'")) == 1


def test_model_uris_that_point_nowhere_say_what_exists(store, registered, tmp_path):
    with pytest.raises(ValueError, match=r"model URI .*has no alias 'nope'; its aliases are \{'best-hwd': 1"):
        tracking.resolve_student(f"models:/{NAME}@nope", tracking_uri=store[1], destination=tmp_path)
    with pytest.raises(ValueError, match=rf"no registered model 'student-x'.*registered models: .*{NAME}"):
        tracking.resolve_student("models:/student-x@champion", tracking_uri=store[1], destination=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"no such directory .*missing.*expected models:/<name>@<alias>"):
        tracking.resolve_student(str(tmp_path / "missing"), tracking_uri=store[1], destination=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"holds no model\.pt \+ meta\.json"):
        tracking.resolve_student(str(tmp_path), tracking_uri=store[1], destination=tmp_path)
    with pytest.raises(ValueError, match="does not exist, so it holds no model"):
        tracking.resolve_student(
            f"models:/{NAME}@champion", tracking_uri=f"sqlite:///{tmp_path}/none.db", destination=tmp_path
        )
