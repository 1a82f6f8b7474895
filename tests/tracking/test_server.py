"""The tracking package against a real `mlflow server` with proxied artifacts (slow)."""

import pytest
import torch
from mlflow import MlflowClient

from hwd_tune import tracking
from tests.tracking.helpers import assert_same_state, write_checkpoint


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
        tracking_uri=http_server,
        run_id=run_id,
        checkpoint_dir=checkpoint,
        dataset="synthetic",
        arch="tiny",
        aliases=[tracking.milestone_alias(80000), "best"],
    )
    assert version == 1
    for source in ("models:/teacher-synthetic-tiny@iter-80k", f"runs:/{run_id}/teacher/iter-80k"):
        path = tracking.resolve_teacher(source, tracking_uri=http_server, cache_dir=tmp_path / "cache")
        assert_same_state(path, state)
    with pytest.raises(ValueError, match=r"aliases are \{'best': 1, 'iter-80k': 1\}"):
        tracking.resolve_teacher(
            "models:/teacher-synthetic-tiny@iter-160k", tracking_uri=http_server, cache_dir=tmp_path / "cache"
        )
    run_logger.finish("FINISHED")


@pytest.mark.slow
def test_teacher_and_distillation_log_to_an_http_server(http_server, ray_local, tmp_path):
    """The whole path against a real `mlflow server` (proxied artifacts): a tiny teacher is
    registered on the server and a small HWD distillation takes it by alias."""
    from tests.trainables.helpers import TINY_TEACHER, tiny_config
    from trainables.launch import run_training

    remote = {"uri": http_server, "experiment": "remote"}
    teacher = run_training(
        tiny_config(
            tmp_path,
            name="remote-teacher",
            student=dict(TINY_TEACHER),
            teacher={"milestones": [10]},
            schedule={"max_iters": 10, "val_interval": 10},
            tracking=remote,
        )
    )
    student = run_training(
        tiny_config(
            tmp_path,
            name="remote-student",
            job="distill",
            method={"name": "hwd"},
            tracking=remote,
            teacher={"source": "models:/teacher-synthetic-deeplabv3_resnet18@iter-10"},
            schedule={"max_iters": 6, "val_interval": 3},
        )
    )
    assert teacher["tracking_uri"] == student["tracking_uri"] == http_server
    client = MlflowClient(http_server)
    assert set(client.get_registered_model("teacher-synthetic-deeplabv3_resnet18").aliases) == {"iter-10", "best"}
    run = client.get_run(student["run_id"])
    assert run.info.status == "FINISHED" and run.info.artifact_uri.startswith("mlflow-artifacts:")
    assert [m.step for m in client.get_metric_history(student["run_id"], "val_miou")] == [3, 6]
    assert {a.path for a in client.list_artifacts(student["run_id"])} >= {"best_checkpoint", "channel_weights"}
    assert not list(tmp_path.glob("mlflow/**/*.pt"))  # nothing written to a local store
