"""hwd_tune.tracking against a real MLflow sqlite store in a temporary folder (no mocks).

One store is shared by the module (MLflow's first sqlite migration takes seconds); every test
uses its own experiment or run key, so the tests stay independent of each other's order.
"""

import csv
import io
import json
import math
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from mlflow.utils.validation import _validate_model_alias_name, _validate_model_alias_name_reserved
from PIL import Image

from hwd_tune import tracking
from hwd_tune.config import TrainConfig
from hwd_tune.models import build_model

PASSWORD = "s3cr3t-Pa55"


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """(output_dir, tracking_uri) of an embedded sqlite store shared by this module."""
    output_dir = tmp_path_factory.mktemp("outputs")
    return output_dir, tracking.default_tracking_uri(output_dir)


@pytest.fixture(scope="module")
def client(store):
    return MlflowClient(tracking_uri=store[1], registry_uri=store[1])


def new_run(store, key, experiment="unit", **kwargs):
    return tracking.start_run(
        tracking_uri=store[1], experiment=experiment, run_key=key, run_name=key, **kwargs
    )


def download(client, run_id, path, tmp_path):
    return Path(client.download_artifacts(run_id, path, str(tmp_path)))


def write_checkpoint(directory, state, iteration, extra_meta=None):
    """A checkpoint folder like the training loop's: model.pt, train_state.pt, meta.json."""
    directory.mkdir(parents=True)
    torch.save(state, directory / "model.pt")
    torch.save({"iteration": torch.tensor(iteration)}, directory / "train_state.pt")
    meta = {"iteration": iteration, "val_miou": 12.5, **(extra_meta or {})}
    (directory / "meta.json").write_text(json.dumps(meta))
    return directory


def assert_same_state(path, expected):
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    assert set(loaded) == set(expected)
    for key, value in expected.items():
        assert torch.equal(loaded[key], value), key


@pytest.fixture(scope="module")
def teachers(store, tmp_path_factory):
    """Two registrations of a tiny real teacher: milestones 100 and 200, 'best' moved to the second."""
    root = tmp_path_factory.mktemp("teacher_ckpt")
    first = build_model("deeplabv3_resnet18", num_classes=3, width_multiplier=0.125).state_dict()
    second = {key: value + 1 if value.is_floating_point() else value for key, value in first.items()}
    run_id = new_run(store, "teacher-run", experiment="teachers")
    secret_uri = f"postgresql://alice:{PASSWORD}@db:5432/mlflow"
    common = dict(tracking_uri=store[1], run_id=run_id, dataset="synthetic", arch="deeplabv3_resnet18")
    version_one = tracking.register_teacher(
        checkpoint_dir=write_checkpoint(root / "a", first, 100, {"config": {"tracking": {"uri": secret_uri}}}),
        aliases=[tracking.milestone_alias(100), "best"],
        **common,
    )
    aliases_after_first = dict(
        MlflowClient(store[1], store[1]).get_registered_model("teacher-synthetic-deeplabv3_resnet18").aliases
    )
    version_two = tracking.register_teacher(
        checkpoint_dir=write_checkpoint(root / "b", second, 200),
        aliases=[tracking.milestone_alias(200), "best"],
        **common,
    )
    return {
        "name": "teacher-synthetic-deeplabv3_resnet18",
        "run_id": run_id,
        "versions": (version_one, version_two),
        "states": (first, second),
        "aliases_after_first": aliases_after_first,
        "checkpoints": (root / "a", root / "b"),
    }


# --------------------------------------------------------------------------------------------
# URIs and names (no store needed)
# --------------------------------------------------------------------------------------------
def test_default_uri_is_sqlite_under_output_dir_and_env_wins(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    expected = f"sqlite:///{tmp_path.resolve()}/mlflow/mlflow.db"
    assert tracking.default_tracking_uri(tmp_path) == expected
    assert expected.startswith("sqlite:////")  # absolute path: four slashes
    assert tracking.resolve_tracking_uri(None, tmp_path) == expected
    assert tracking.resolve_tracking_uri("  ", tmp_path) == expected
    assert tracking.resolve_tracking_uri("http://mlflow:5000", tmp_path) == "http://mlflow:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://from-env:5000")
    assert tracking.resolve_tracking_uri("http://mlflow:5000", tmp_path) == "http://from-env:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    assert tracking.resolve_tracking_uri(None, tmp_path) == expected


def test_artifact_location_sits_next_to_a_sqlite_store_only(tmp_path):
    uri = tracking.default_tracking_uri(tmp_path)
    assert tracking.default_artifact_location(uri) == (tmp_path.resolve() / "mlflow" / "artifacts").as_uri()
    assert tracking.default_artifact_location("http://mlflow:5000") is None
    assert tracking.default_artifact_location("postgresql://u:p@db/mlflow") is None
    assert tracking.default_artifact_location("sqlite:///:memory:") is None


@pytest.mark.parametrize(
    "uri, expected",
    [
        (f"http://alice:{PASSWORD}@mlflow:5000", "http://alice:***@mlflow:5000"),
        (f"postgresql://bob:{PASSWORD}@db:5432/mlflow?sslmode=require",
         "postgresql://bob:***@db:5432/mlflow?sslmode=require"),
        (f"https://{PASSWORD}@host/path", "https://***@host/path"),  # a lone token is a secret too
        (f"mysql://carol:p@ss{PASSWORD}@db/x", "mysql://carol:***@db/x"),  # raw '@' in the password
        (f"https://host/api?user=dan&token={PASSWORD}&x=1", "https://host/api?user=dan&token=***&x=1"),
        ("sqlite:////tmp/out/mlflow/mlflow.db", "sqlite:////tmp/out/mlflow/mlflow.db"),
        ("http://mlflow:5000/a@b", "http://mlflow:5000/a@b"),  # '@' in the path is not userinfo
        (f"error: see http://u:{PASSWORD}@h:1/x and https://{PASSWORD}@g/y",  # URIs inside text
         "error: see http://u:***@h:1/x and https://***@g/y"),
    ],
)
def test_redact_uri_hides_passwords_and_tokens(uri, expected):
    assert tracking.redact_uri(uri) == expected
    assert PASSWORD not in tracking.redact_uri(uri)


@pytest.mark.parametrize(
    "iteration, alias",
    [(80000, "iter-80k"), (160000, "iter-160k"), (1000, "iter-1k"), (1500, "iter-1500"), (250, "iter-250"),
     (100, "iter-100"), (1, "iter-1")],
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


# --------------------------------------------------------------------------------------------
# Params
# --------------------------------------------------------------------------------------------
def reference_leaves(node, prefix=""):
    """Every (dotted key, value) leaf of a nested dict, written independently of the module."""
    leaves = {}
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            leaves.update(reference_leaves(value, dotted + "."))
        else:
            leaves[dotted] = value
    return leaves


def test_flatten_params_has_every_value_and_the_aliases():
    config = TrainConfig.model_validate({
        "teacher": {"source": "models:/teacher-ade20k-deeplabv3_resnet101@iter-80k"},
        "method": {"name": "hwd", "params": {"tau": 2.0, "mu": 0.5}},
        "data": {"name": "ade20k"},
        "schedule": {"max_iters": 1234},
        "tracking": {"uri": f"http://alice:{PASSWORD}@mlflow:5000"},
    })
    flat = tracking.flatten_params(config.model_dump(mode="json"))
    assert all(isinstance(value, str) for value in flat.values())
    for key, value in reference_leaves(config.model_dump(mode="json")).items():
        if key == "method.params":
            continue
        expected = "http://alice:***@mlflow:5000" if key == "tracking.uri" else str(value)
        assert flat[key] == expected, key
    # method.params completed with HWD's defaults (beta 0.1, weight 3.0, ...), given values kept
    assert flat["method.params.tau"] == "2.0" and flat["method.params.mu"] == "0.5"
    assert flat["method.params.beta"] == "0.1" and flat["method.params.weight"] == "3.0"
    assert flat["data.scale_range"] == "[0.5, 2.0]" and flat["teacher.milestones"] == "[80000, 160000]"
    aliases = {key: flat[key] for key in tracking.PARAM_ALIASES}
    assert aliases == {
        "tau": "2.0", "mu": "0.5", "beta": "0.1", "method": "hwd", "dataset": "ade20k",
        "student": "deeplabv3_resnet18", "teacher": "models:/teacher-ade20k-deeplabv3_resnet101@iter-80k",
        "max_iters": "1234",
    }
    assert all(PASSWORD not in value for value in flat.values())
    assert tracking.flatten_params(config) == flat  # a pydantic config directly gives the same


def test_flatten_params_for_a_teacher_job_and_other_methods():
    teacher_job = TrainConfig.model_validate({"job": "teacher", "method": {"name": "none"}})
    flat = tracking.flatten_params(teacher_job.model_dump(mode="json"))
    assert flat["teacher"] == "none" and flat["method"] == "none" and flat["method.params"] == "{}"
    assert not {"tau", "mu", "beta"} & set(flat)
    cwd = TrainConfig.model_validate({"method": {"name": "cwd"}, "teacher": {"source": "/w/t.pth"}})
    flat = tracking.flatten_params(cwd.model_dump(mode="json"))
    assert flat["tau"] == "4.0" and "mu" not in flat and flat["teacher"] == "/w/t.pth"


def test_flatten_params_truncates_values_beyond_mlflows_limit():
    flat = tracking.flatten_params({"long": "x" * 7000, "nested": {"ok": [1, (2, 3)]}})
    assert len(flat["long"]) == 6000 and flat["long"].endswith(tracking.TRUNCATION_MARKER)
    assert flat["long"].startswith("x" * 5000)
    assert flat["nested.ok"] == "[1, (2, 3)]"
    with pytest.raises(ValueError, match="config must be a mapping"):
        tracking.flatten_params(["not", "a", "mapping"])


# --------------------------------------------------------------------------------------------
# Runs: create, resume, nest, finish
# --------------------------------------------------------------------------------------------
def test_start_run_creates_then_resumes_the_same_run(store, client):
    output_dir, uri = store
    run_id = new_run(store, "job-a", experiment="resume", tags={"hwd.job": "distill"})
    experiment = client.get_experiment_by_name("resume")
    assert experiment.artifact_location == (output_dir.resolve() / "mlflow" / "artifacts").as_uri()
    run = client.get_run(run_id)
    assert run.info.artifact_uri.startswith(experiment.artifact_location + "/")
    assert run.info.run_name == "job-a" and run.info.status == "RUNNING"
    assert run.data.tags["hwd.run_key"] == "job-a" and run.data.tags["hwd.job"] == "distill"

    tracking.RunLogger(uri, run_id).finish("FAILED", reason="RuntimeError: worker died")
    assert client.get_run(run_id).info.status == "FAILED"
    resumed = new_run(store, "job-a", experiment="resume")
    assert resumed == run_id
    run = client.get_run(run_id)
    assert run.info.status == "RUNNING" and run.data.tags["hwd.resume_count"] == "1"
    assert len(client.search_runs([experiment.experiment_id])) == 1
    assert new_run(store, "job-b", experiment="resume") != run_id
    assert len(client.search_runs([experiment.experiment_id])) == 2

    tracking.RunLogger(uri, run_id).finish("FINISHED")
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and "hwd.failure_reason" not in run.data.tags


def test_child_run_is_nested_under_its_parent(store, client):
    parent = new_run(store, "sweep", experiment="nesting")
    child = new_run(store, "trial-1", experiment="nesting", parent_run_id=parent)
    assert client.get_run(child).data.tags["mlflow.parentRunId"] == parent
    assert "mlflow.parentRunId" not in client.get_run(parent).data.tags
    with pytest.raises(ValueError, match="parent run 'nope' not found"):
        new_run(store, "trial-2", experiment="nesting", parent_run_id="nope")


def test_bad_run_arguments_are_named(store):
    with pytest.raises(ValueError, match="run_key must not contain quotes"):
        new_run(store, "it's", experiment="bad")
    with pytest.raises(ValueError, match="run_key must be a non-empty string"):
        new_run(store, " ", experiment="bad")
    with pytest.raises(ValueError, match="experiment must be a non-empty name"):
        new_run(store, "k", experiment="")
    run_logger = tracking.RunLogger(store[1], new_run(store, "finish-bad", experiment="bad"))
    with pytest.raises(ValueError, match="status must be one of"):
        run_logger.finish("DONE")


def test_failure_reason_is_a_tag(store, client):
    run_id = new_run(store, "fails", experiment="finish")
    reason = f"ConnectionError: cannot reach http://alice:{PASSWORD}@mlflow:5000"
    tracking.RunLogger(store[1], run_id).finish("KILLED", reason=reason)
    run = client.get_run(run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["hwd.failure_reason"] == "ConnectionError: cannot reach http://alice:***@mlflow:5000"


# --------------------------------------------------------------------------------------------
# Params, metrics, system facts
# --------------------------------------------------------------------------------------------
def test_params_read_back_and_relogging_on_resume(store, client):
    run_id = new_run(store, "params", experiment="logging")
    config = TrainConfig.model_validate({"method": {"name": "hwd", "params": {"tau": 3.0}}, "teacher": {"source": "t.pth"}})
    flat = {**tracking.flatten_params(config.model_dump(mode="json")), **{f"extra.{i}": str(i) for i in range(60)}}
    assert len(flat) > 100  # more than one MLflow batch
    run_logger = tracking.RunLogger(store[1], run_id)
    assert run_logger.log_params(flat) == {}
    assert client.get_run(run_id).data.params == flat

    resumed_logger = tracking.RunLogger(store[1], new_run(store, "params", experiment="logging"))
    assert resumed_logger.log_params(flat) == {}  # identical values: no error, nothing changes
    changed = resumed_logger.log_params({**flat, "max_iters": "2000", "new_key": 1})
    assert changed == {"max_iters": ("40000", "2000")}
    run = client.get_run(run_id)
    assert run.data.params["max_iters"] == "40000" and run.data.params["new_key"] == "1"
    assert run.data.tags["hwd.param_changed.max_iters"] == "2000"
    with pytest.raises(ValueError, match="max_iters: logged '40000', now '3000'"):
        resumed_logger.log_params({"max_iters": 3000}, on_change="error")


def test_metrics_read_back_at_their_steps(store, client):
    run_logger = tracking.RunLogger(store[1], new_run(store, "metrics", experiment="logging"))
    logged = {0: {"loss": 2.5, "val_miou": 10.0}, 400: {"loss": 1.25, "val_miou": float("nan")},
              800: {"loss": torch.tensor(0.75), "val_miou": 31.5}}
    for step, metrics in logged.items():
        run_logger.log_metrics(metrics, step=step)
    for key in ("loss", "val_miou"):
        history = sorted(client.get_metric_history(run_logger.run_id, key), key=lambda metric: metric.step)
        assert [metric.step for metric in history] == [0, 400, 800]
        for metric, step in zip(history, logged):
            expected = float(logged[step][key])
            assert (math.isnan(metric.value) and math.isnan(expected)) or metric.value == expected
    with pytest.raises(ValueError, match="metric 'loss' must be a number"):
        run_logger.log_metrics({"loss": "high"}, step=1)
    with pytest.raises(ValueError, match="step must be a non-negative int"):
        run_logger.log_metrics({"loss": 1.0}, step=-1)


def test_system_facts_are_tags(store, client):
    run_logger = tracking.RunLogger(store[1], new_run(store, "facts", experiment="logging"))
    facts = run_logger.log_system_facts()
    tags = client.get_run(run_logger.run_id).data.tags
    for package in ("torch", "torchvision", "ray", "mlflow"):
        assert tags[f"hwd.system.{package}"] == metadata.version(package)
    assert tags["hwd.system.python"] == sys.version.split()[0]
    assert tags["hwd.system.cuda_available"] == str(torch.cuda.is_available())
    assert tags["hwd.system.device"] == ("cpu" if not torch.cuda.is_available() else facts["device"])


def test_run_logger_pickles_to_the_same_run(store, client):
    run_logger = tracking.RunLogger(store[1], new_run(store, "pickled", experiment="logging"))
    copy = pickle.loads(pickle.dumps(run_logger))
    copy.log_metrics({"x": 1.0}, step=3)
    assert [m.step for m in client.get_metric_history(run_logger.run_id, "x")] == [3]


# --------------------------------------------------------------------------------------------
# Artifacts
# --------------------------------------------------------------------------------------------
def test_class_iou_table_and_chart(store, client, tmp_path):
    run_logger = tracking.RunLogger(store[1], new_run(store, "iou", experiment="artifacts"))
    iou = [0.5, float("nan"), 0.123456789012345, 1.0]
    names = ["wall", "sky, blue", "floor|tile", "tree"]
    folder = run_logger.log_class_iou(iou, names, step=400)
    assert folder == "class_iou/step_0000400"
    local = download(client, run_logger.run_id, folder, tmp_path)
    with open(local / "class_iou.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["class_name"] for row in rows] == names
    assert [int(row["class_id"]) for row in rows] == [0, 1, 2, 3]
    for row, expected in zip(rows, iou):
        value = float(row["iou"])
        assert (math.isnan(value) and math.isnan(expected)) or value == expected
    markdown = (local / "class_iou.md").read_text()
    assert "| 1 | sky, blue | n/a |" in markdown and "| 2 | floor/tile | 0.1235 |" in markdown
    assert f"{np.nanmean(iou):.4f}" in markdown
    with Image.open(local / "class_iou.png") as image:
        assert image.format == "PNG" and image.width > 100
    with pytest.raises(ValueError, match="one value per class"):
        run_logger.log_class_iou([0.5], names, step=1)
    with pytest.raises(ValueError, match="step must be a non-negative int"):
        run_logger.log_class_iou(iou, names, step=2.5)


def test_channel_weights_heatmap_and_raw_values(store, client, tmp_path):
    run_logger = tracking.RunLogger(store[1], new_run(store, "weights", experiment="artifacts"))
    iterations = [400, 800, 1200]
    weights = torch.rand(3, 4) * 4  # list of per-iteration tensors, as the loop collects them
    names = ["a", "b", "c", "d"]
    folder = run_logger.log_channel_weights(iterations, list(weights), names)
    local = download(client, run_logger.run_id, folder, tmp_path)
    np.testing.assert_array_equal(np.load(local / "channel_weights.npy"), weights.double().numpy())
    np.testing.assert_array_equal(np.load(local / "iterations.npy"), iterations)
    with open(local / "channel_weights.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["iteration", *names]
    assert [int(row[0]) for row in rows[1:]] == iterations
    np.testing.assert_array_equal(np.array([[float(v) for v in row[1:]] for row in rows[1:]]),
                                  weights.double().numpy())
    with Image.open(local / "channel_weights.png") as image:
        assert image.format == "PNG"
    with pytest.raises(ValueError, match=r"weights must be \[T, C\] = \[2 iterations, 4 classes\]"):
        run_logger.log_channel_weights([1, 2], weights, names)


def test_artifact_dir_keeps_files_and_redacts_json(store, client, tmp_path):
    run_logger = tracking.RunLogger(store[1], new_run(store, "dir", experiment="artifacts"))
    source = tmp_path / "ckpt"
    (source / "sub").mkdir(parents=True)
    (source / "model.pt").write_bytes(b"\x00\x01weights")
    (source / "sub" / "notes.txt").write_text("hello")
    meta = {"config": {"tracking": {"uri": f"http://u:{PASSWORD}@h"}}, "iteration": 5}
    (source / "meta.json").write_text(json.dumps(meta))
    run_logger.log_artifact_dir(source, "best_checkpoint")
    local = download(client, run_logger.run_id, "best_checkpoint", tmp_path / "down")
    assert (local / "model.pt").read_bytes() == b"\x00\x01weights"
    assert (local / "sub" / "notes.txt").read_text() == "hello"
    uploaded = json.loads((local / "meta.json").read_text())
    assert uploaded == {"config": {"tracking": {"uri": "http://u:***@h"}}, "iteration": 5}
    with pytest.raises(FileNotFoundError, match="artifact directory not found"):
        run_logger.log_artifact_dir(tmp_path / "missing", "x")


# --------------------------------------------------------------------------------------------
# Teacher registry
# --------------------------------------------------------------------------------------------
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
        tracking_uri=store[1], run_id=teachers["run_id"], checkpoint_dir=teachers["checkpoints"][0],
        dataset="synthetic", arch="deeplabv3_resnet18", aliases=[],  # e.g. re-registered after a resume
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


@pytest.mark.parametrize(
    "source, which",
    [
        ("models:/teacher-synthetic-deeplabv3_resnet18@iter-100", 0),
        ("models:/teacher-synthetic-deeplabv3_resnet18@iter-200", 1),
        ("models:/teacher-synthetic-deeplabv3_resnet18@best", 1),
        ("models:/teacher-synthetic-deeplabv3_resnet18/1", 0),
        ("models:/teacher-synthetic-deeplabv3_resnet18/2", 1),
        ("runs:/{run_id}/teacher/iter-100/model.pt", 0),
        ("runs:/{run_id}/teacher/iter-200", 1),
    ],
)
def test_resolve_teacher_from_mlflow(store, teachers, tmp_path, source, which):
    source = source.format(run_id=teachers["run_id"])
    cache_dir = tmp_path / "cache"
    path = tracking.resolve_teacher(source, tracking_uri=store[1], cache_dir=cache_dir)
    assert path.is_file() and cache_dir.resolve() in path.parents
    assert_same_state(path, teachers["states"][which])
    mtime = path.stat().st_mtime_ns
    again = tracking.resolve_teacher(source, tracking_uri=store[1], cache_dir=cache_dir)
    assert again == path and again.stat().st_mtime_ns == mtime  # the cached copy is reused
    assert not [entry for entry in path.parent.parent.iterdir() if entry.name.startswith(".download-")]


def test_resolve_teacher_from_plain_files(teachers, tmp_path):
    checkpoint = teachers["checkpoints"][0]
    for source in (str(checkpoint), str(checkpoint / "model.pt"), (checkpoint / "model.pt").as_uri()):
        path = tracking.resolve_teacher(source, tracking_uri=None, cache_dir=tmp_path)
        assert path == (checkpoint / "model.pt").resolve()
        assert_same_state(path, teachers["states"][0])
    authors_file = tmp_path / "deeplabv3_resnet101_citys_best_model.pth"
    torch.save(teachers["states"][1], authors_file)
    assert tracking.resolve_teacher(str(authors_file), tracking_uri=None, cache_dir=tmp_path) == authors_file


def test_resolve_teacher_errors_name_what_exists(store, teachers, tmp_path):
    name, uri = teachers["name"], store[1]
    with pytest.raises(ValueError, match=r"has no alias 'iter-80k'; its aliases are \{'best': 2, 'iter-100': 1"):
        tracking.resolve_teacher(f"models:/{name}@iter-80k", tracking_uri=uri, cache_dir=tmp_path)
    with pytest.raises(ValueError, match=r"has no version 9; versions \[1, 2"):
        tracking.resolve_teacher(f"models:/{name}/9", tracking_uri=uri, cache_dir=tmp_path)
    with pytest.raises(ValueError, match=rf"no registered model 'teacher-ade20k-x'.*registered models: \[.*'{name}'"):
        tracking.resolve_teacher("models:/teacher-ade20k-x@best", tracking_uri=uri, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="expected models:/<name>@<alias> or models:/<name>/<version number>"):
        tracking.resolve_teacher(f"models:/{name}/latest", tracking_uri=uri, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="needs a tracking URI"):
        tracking.resolve_teacher(f"models:/{name}@best", tracking_uri=None, cache_dir=tmp_path)
    run_id = teachers["run_id"]
    with pytest.raises(FileNotFoundError, match=r"no artifact 'teacher/iter-300'; teacher holds \['teacher/iter-100'"):
        tracking.resolve_teacher(f"runs:/{run_id}/teacher/iter-300", tracking_uri=uri, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="without '..'"):
        tracking.resolve_teacher(f"runs:/{run_id}/../../etc", tracking_uri=uri, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="run 'deadbeef' not found"):
        tracking.resolve_teacher("runs:/deadbeef/model.pt", tracking_uri=uri, cache_dir=tmp_path)
    (tmp_path / "present.pth").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"no such file or directory .*missing.pth; .* holds \[.*'present.pth'"):
        tracking.resolve_teacher(str(tmp_path / "missing.pth"), tracking_uri=None, cache_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"has no model.pt; it holds \['present.pth'\]"):
        tracking.resolve_teacher(str(tmp_path), tracking_uri=None, cache_dir=tmp_path / "cache")
    assert not list(tmp_path.glob("models/*"))  # nothing half-downloaded left behind


# --------------------------------------------------------------------------------------------
# An http tracking server (mlflow server with proxied artifacts)
# --------------------------------------------------------------------------------------------
@pytest.fixture
def http_server(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "server_artifacts")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,  # its workers share our group id
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mlflow server did not start: {(tmp_path / 'server.log').read_text()[-2000:]}")
                time.sleep(0.5)
        yield uri
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the group this test started: server and its workers
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()


@pytest.mark.slow
def test_register_and_resolve_through_an_http_server(http_server, tmp_path):
    state = {"weight": torch.randn(3, 2), "bias": torch.randn(3)}
    run_id = tracking.start_run(tracking_uri=http_server, experiment="remote", run_key="t", run_name="t")
    run_logger = tracking.RunLogger(http_server, run_id)
    run_logger.log_params({"tau": 4.0})
    run_logger.log_metrics({"val_miou": 50.0}, step=10)
    assert run_logger.log_params({"tau": 4.0}) == {}
    assert MlflowClient(http_server).get_run(run_id).info.artifact_uri.startswith("mlflow-artifacts:")
    checkpoint = write_checkpoint(tmp_path / "ckpt", state, 80000)
    version = tracking.register_teacher(
        tracking_uri=http_server, run_id=run_id, checkpoint_dir=checkpoint,
        dataset="synthetic", arch="tiny", aliases=[tracking.milestone_alias(80000), "best"],
    )
    assert version == 1
    for source in ("models:/teacher-synthetic-tiny@iter-80k", f"runs:/{run_id}/teacher/iter-80k"):
        path = tracking.resolve_teacher(source, tracking_uri=http_server, cache_dir=tmp_path / "cache")
        assert_same_state(path, state)
    with pytest.raises(ValueError, match=r"aliases are \{'best': 1, 'iter-80k': 1\}"):
        tracking.resolve_teacher("models:/teacher-synthetic-tiny@iter-160k", tracking_uri=http_server,
                                 cache_dir=tmp_path / "cache")
    run_logger.finish("FINISHED")


@pytest.mark.slow
def test_teacher_and_distillation_log_to_an_http_server(http_server, ray_local, tmp_path):
    """The whole path against a real `mlflow server` (proxied artifacts): a tiny teacher is
    registered on the server and a small HWD distillation takes it by alias."""
    from tests.trainables.helpers import TINY_TEACHER, tiny_config
    from trainables.launch import run_training

    remote = {"uri": http_server, "experiment": "remote"}
    teacher = run_training(tiny_config(
        tmp_path, name="remote-teacher", student=dict(TINY_TEACHER), teacher={"milestones": [10]},
        schedule={"max_iters": 10, "val_interval": 10}, tracking=remote,
    ))
    student = run_training(tiny_config(
        tmp_path, name="remote-student", job="distill", method={"name": "hwd"}, tracking=remote,
        teacher={"source": "models:/teacher-synthetic-deeplabv3_resnet18@iter-10"},
        schedule={"max_iters": 6, "val_interval": 3},
    ))
    assert teacher["tracking_uri"] == student["tracking_uri"] == http_server
    client = MlflowClient(http_server)
    assert set(client.get_registered_model("teacher-synthetic-deeplabv3_resnet18").aliases) == {"iter-10", "best"}
    run = client.get_run(student["run_id"])
    assert run.info.status == "FINISHED" and run.info.artifact_uri.startswith("mlflow-artifacts:")
    assert [m.step for m in client.get_metric_history(student["run_id"], "val_miou")] == [3, 6]
    assert {a.path for a in client.list_artifacts(student["run_id"])} >= {"best_checkpoint", "channel_weights"}
    assert not list(tmp_path.glob("mlflow/**/*.pt"))  # nothing written to a local store
