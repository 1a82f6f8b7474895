"""hwd_tune.tracking.run_logger against a real MLflow sqlite store: params, metrics, tags, artifacts."""

import json
import math
import pickle
import sys
from importlib import metadata

import pytest
import torch

from hwd_tune import tracking
from hwd_tune.config import TrainConfig
from tests.tracking.helpers import PASSWORD, download, new_run


def test_failure_reason_is_a_tag(store, client):
    run_id = new_run(store, "fails", experiment="finish")
    reason = f"ConnectionError: cannot reach http://alice:{PASSWORD}@mlflow:5000"
    tracking.RunLogger(store[1], run_id).finish("KILLED", reason=reason)
    run = client.get_run(run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["hwd.failure_reason"] == "ConnectionError: cannot reach http://alice:***@mlflow:5000"


def test_params_read_back_and_relogging_on_resume(store, client):
    run_id = new_run(store, "params", experiment="logging")
    config = TrainConfig.model_validate(
        {"method": {"name": "hwd", "params": {"tau": 3.0}}, "teacher": {"source": "t.pth"}}
    )
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
    logged = {
        0: {"loss": 2.5, "val_miou": 10.0},
        400: {"loss": 1.25, "val_miou": float("nan")},
        800: {"loss": torch.tensor(0.75), "val_miou": 31.5},
    }
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


def test_text_artifact_is_written_and_replaced(store, client, tmp_path):
    run_logger = tracking.RunLogger(store[1], new_run(store, "text", experiment="artifacts"))
    run_logger.log_text("# header\nfirst\n", "sweep/holdout.txt")
    run_logger.log_text("# header\nsecond\n", "sweep/holdout.txt")  # a resumed sweep logs it again
    local = download(client, run_logger.run_id, "sweep/holdout.txt", tmp_path / "down")
    assert local.read_text() == "# header\nsecond\n"
    assert [item.path for item in client.list_artifacts(run_logger.run_id, "sweep")] == ["sweep/holdout.txt"]


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


def test_last_steps_are_the_highest_step_of_each_metric(store, client):
    run_logger = tracking.RunLogger(store[1], new_run(store, "last-steps", experiment="logging"))
    assert run_logger.last_steps() == {}
    for step, metrics in ((2, {"loss": 1.0, "iteration": 2}), (4, {"loss": 0.5}), (3, {"val": 10.0})):
        run_logger.log_metrics(metrics, step=step)
    assert run_logger.last_steps() == {"loss": 4, "iteration": 2, "val": 3}
