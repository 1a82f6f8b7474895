"""hwd_tune.tracking.runs against a real MLflow sqlite store: a run found again by its key, nested runs."""

import pytest

from hwd_tune import tracking
from tests.tracking.helpers import new_run


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
