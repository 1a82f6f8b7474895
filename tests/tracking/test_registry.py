"""hwd_tune.tracking.registry against a real MLflow sqlite store: teacher versions, milestone aliases."""

import json

import pytest
from mlflow.utils.validation import (
    _validate_model_alias_name,
    _validate_model_alias_name_reserved,
)

from hwd_tune import tracking
from tests.tracking.helpers import download


@pytest.mark.parametrize(
    "iteration, alias",
    [
        (80000, "iter-80k"),
        (160000, "iter-160k"),
        (1000, "iter-1k"),
        (1500, "iter-1500"),
        (250, "iter-250"),
        (100, "iter-100"),
        (1, "iter-1"),
    ],
)
def test_milestone_alias_rule_and_mlflow_accepts_it(iteration, alias):
    assert tracking.milestone_alias(iteration) == alias
    _validate_model_alias_name(alias)  # MLflow's own checks raise on a bad alias
    _validate_model_alias_name_reserved(alias)


@pytest.mark.parametrize("bad", [0, -80000, 1.5, "80000", True, None])
def test_milestone_alias_rejects_non_positive_ints(bad):
    with pytest.raises(ValueError, match="milestone iteration must be a positive int"):
        tracking.milestone_alias(bad)


def test_teacher_model_name():
    assert tracking.teacher_model_name("ade20k", "deeplabv3_resnet101") == "teacher-ade20k-deeplabv3_resnet101"
    for dataset, arch in (("", "x"), ("ade/20k", "x"), ("ade20k", "a:b"), ("ade20k", None)):
        with pytest.raises(ValueError, match="must be a non-empty name"):
            tracking.teacher_model_name(dataset, arch)


def test_register_teacher_versions_and_aliases(teachers, client, tmp_path):
    name = teachers["name"]
    assert teachers["versions"] == (1, 2)
    assert teachers["aliases_after_first"] == {"iter-100": 1, "best": 1}
    assert client.get_registered_model(name).aliases == {"iter-100": 1, "iter-200": 2, "best": 2}
    assert client.get_model_version_by_alias(name, "best").version == 2
    first = client.get_model_version(name, "1")
    assert first.run_id == teachers["run_id"] and first.tags["hwd.artifact_path"] == "teacher/iter-100"
    assert first.tags["hwd.meta.iteration"] == "100"
    listed = {info.path for info in client.list_artifacts(teachers["run_id"], "teacher/iter-100")}
    assert listed == {"teacher/iter-100/model.pt", "teacher/iter-100/meta.json"}  # no optimizer state
    meta = json.loads(download(client, teachers["run_id"], "teacher/iter-100/meta.json", tmp_path).read_text())
    assert meta["config"]["tracking"]["uri"] == "postgresql://alice:***@db:5432/mlflow"


def test_registering_the_same_milestone_again_gets_a_new_path(store, teachers, client, tmp_path):
    version = tracking.register_teacher(
        tracking_uri=store[1],
        run_id=teachers["run_id"],
        checkpoint_dir=teachers["checkpoints"][0],
        dataset="synthetic",
        arch="deeplabv3_resnet18",
        aliases=[],  # e.g. re-registered after a resume
    )
    assert client.get_model_version(teachers["name"], str(version)).tags["hwd.artifact_path"] == "teacher/iter-100-2"
    assert client.get_registered_model(teachers["name"]).aliases["best"] == 2  # untouched


def test_register_teacher_rejects_bad_input(store, teachers, tmp_path):
    common = dict(tracking_uri=store[1], run_id=teachers["run_id"], dataset="synthetic", arch="x")
    for alias in ("iter-1.5k", "latest", "v3", ""):
        with pytest.raises(ValueError, match="alias"):
            tracking.register_teacher(checkpoint_dir=teachers["checkpoints"][0], aliases=[alias], **common)
    with pytest.raises(ValueError, match="aliases must be a list"):
        tracking.register_teacher(checkpoint_dir=teachers["checkpoints"][0], aliases="best", **common)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "meta.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"has no model.pt; it holds \['meta.json'\]"):
        tracking.register_teacher(checkpoint_dir=tmp_path / "empty", aliases=["best"], **common)
    with pytest.raises(ValueError, match="run 'no-such-run' not found"):
        tracking.register_teacher(
            checkpoint_dir=teachers["checkpoints"][0], aliases=["best"], **{**common, "run_id": "no-such-run"}
        )
