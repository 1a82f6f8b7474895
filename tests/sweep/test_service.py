"""The sweep service on real Ray, Optuna (sqlite) and MLflow (sqlite): Table I first, statuses,
parent/child runs, the best config, and the clear errors raised before any trial starts."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from hwd_tune.config import ConfigError, load_train_config
from hwd_tune.data.holdout import holdout_indices
from hwd_tune.sweep import layout, service
from hwd_tune.sweep.restarts import CODE_ERROR_TAG_PREFIX
from tests.sweep.helpers import PAPER_POINT, SPACE, kill_driver_once, tiny_sweep
from tests.trainables.helpers import TINY_TEACHER
from trainables.checks import NotStarted


@pytest.mark.slow  # starts the session's Ray: `make test-fast` skips it
def test_resources_that_do_not_fit_fail_before_any_trial(ray_local, tmp_path):
    sweep = tiny_sweep(tmp_path, "teacher.pt")
    sweep.train.resources.cpus_per_worker = 3.0  # the session's Ray has 2 CPUs
    with pytest.raises(NotStarted, match=r"cpus_per_worker.*one trial needs 3.01 CPUs, the cluster has 2") as error:
        service.run(sweep)
    assert isinstance(error.value.__cause__, ConfigError)
    assert not (tmp_path / "tiny").exists()  # nothing started: no Tune state, no study


@pytest.fixture(scope="module")
def teacher_checkpoint(tmp_path_factory) -> str:
    """A checkpoint directory holding a tiny teacher's model.pt. Random weights: these tests check
    the sweep's bookkeeping, not accuracy, and a Ray Train run to make them costs ~25 CPU-seconds."""
    import torch

    from hwd_tune.config import ModelConfig
    from trainables.loop import model_from_config

    folder = tmp_path_factory.mktemp("teacher") / "checkpoint"
    folder.mkdir()
    torch.save(model_from_config(ModelConfig.model_validate(TINY_TEACHER), 4).state_dict(), folder / "model.pt")
    return str(folder)


@pytest.mark.slow
def test_a_new_sweep_does_not_mix_with_an_existing_one(ray_local, tmp_path, teacher_checkpoint):
    sweep = tiny_sweep(tmp_path, teacher_checkpoint)
    (layout.sweep_dir(sweep) / layout.TUNE_FOLDER / sweep.name).mkdir(parents=True)
    with pytest.raises(ValueError, match="already exists.*--resume"):
        service.run(sweep)


@pytest.mark.slow
def test_a_failing_trial_is_recorded_with_its_reason_and_the_sweep_goes_on(ray_local, tmp_path, teacher_checkpoint):
    from mlflow import MlflowClient

    def fail_the_paper_point(params):  # nested: Ray pickles it by value for the trial actors
        return {"fail_at_iteration": 3} if dict(params) == PAPER_POINT else {}

    sweep = tiny_sweep(tmp_path, teacher_checkpoint, num_samples=2, scheduler={"type": "none"})
    summary = service.run(sweep, loop_config_hook=fail_the_paper_point)

    by_status = {row.status: row for row in summary.trials}
    assert len(summary.trials) == 2
    failed = by_status["failed"]
    assert failed.params == PAPER_POINT
    assert "failing on purpose at iteration 3" in failed.reason
    others = [row for row in summary.trials if row is not failed]
    assert [row.status for row in others] == ["completed"]
    assert all(row.iterations == 8 for row in others)
    assert summary.best_params != PAPER_POINT

    client = MlflowClient(tracking_uri=summary.tracking_uri)
    child = client.get_run(failed.run_id)
    assert child.info.status == "FAILED"
    assert "failing on purpose at iteration 3" in child.data.tags["hwd.failure_reason"]
    # Tune restarted it resources.trial_max_failures (2) times; each restart refused at once to train
    # into the same error again and is reported with the first attempt's reason.
    assert child.data.tags[layout.RESTARTS_TAG] == "2"
    noted = [value for key, value in child.data.tags.items() if key.startswith(CODE_ERROR_TAG_PREFIX)]
    assert len(noted) == 1 and "failing on purpose at iteration 3" in noted[0]
    assert client.get_run(summary.parent_run_id).info.status == "FINISHED"

    # trials were tuned on held-out training images (search.tune_on's default), named on the parent run
    listing = client.download_artifacts(summary.parent_run_id, "sweep/holdout.txt", str(tmp_path / "artifacts"))
    lines = Path(listing).read_text().splitlines()
    header = "# dataset synthetic, seed 0, fraction 0.1, max_images 2000: 6 of 64 training images held out"
    assert lines == [header] + [f"synthetic/train/{index}" for index in holdout_indices(64, 0.1, 2000, seed=0)]
    assert "trained on 58 training images and were tuned on the 6 held out" in summary.tuning_split
    for row in summary.trials:
        params = client.get_run(row.run_id).data.params
        assert (params["data.holdout.validate_on"], params["data.holdout.fraction"]) == ("holdout", "0.1")


def _finished_children(tracking_uri: str) -> dict[str, str]:
    """trial id -> MLflow run id of the trials whose child run the driver has ended."""
    from hwd_tune import tracking

    runs = tracking.find_runs(tracking_uri, "tests", {"hwd.job": "trial"})
    return {
        run.tags[layout.TRIAL_ID_TAG]: run.run_id
        for run in runs
        if run.tags.get(layout.TRIAL_STATUS_TAG) in ("completed", "stopped_early")
    }


@pytest.mark.slow
def test_resume_after_the_driver_is_killed_continues_without_re_running_finished_trials(
    ray_local, tmp_path, teacher_checkpoint
):
    import json

    import optuna
    from mlflow import MlflowClient

    sweep = tiny_sweep(tmp_path, teacher_checkpoint, num_samples=4, scheduler={"type": "none"})
    tracking_uri = sweep.train.tracking.uri
    kill_driver_once(sweep, lambda: bool(_finished_children(tracking_uri)), "any trial finished", timeout_s=300)
    before_kill = _finished_children(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri)
    history_before = {run_id: client.get_metric_history(run_id, "loss/total") for run_id in before_kill.values()}

    # Usually Tune last saved its state before the first trial ended, so that trial restarts and
    # reports its final checkpoint again (the case test_the_searcher_ignores_results... isolates).
    summary = service.run(sweep, resume=True)

    # the final number of trials is right, each one ended, none of them twice
    assert len(summary.trials) == 4
    assert [row.status for row in summary.trials] == ["completed"] * 4
    assert all(row.iterations == 8 for row in summary.trials)
    assert summary.trials[0].params == PAPER_POINT
    study = optuna.load_study(study_name="tiny", storage=summary.optuna_storage)
    complete = [trial for trial in study.trials if trial.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 4
    assert not [trial for trial in study.trials if trial.state == optuna.trial.TrialState.RUNNING]
    # trials finished before the kill were not trained again; the others resumed or started once
    for trial_id, run_id in before_kill.items():
        assert client.get_metric_history(run_id, "loss/total") == history_before[run_id], trial_id
    for row in summary.trials:
        steps = [metric.step for metric in client.get_metric_history(row.run_id, "loss/total")]
        assert sorted(set(steps)) == [2, 4, 6, 8]
    # one parent run, continued; one child run per trial
    parent = client.get_run(summary.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["hwd.resume_count"] == "1"
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert sorted(run.data.tags[layout.TRIAL_ID_TAG] for run in children) == sorted(
        row.trial_id for row in summary.trials
    )
    assert parent.data.tags["hwd.sweep"] == "tiny"
    for row in summary.trials:
        child = client.get_run(row.run_id)
        assert child.data.tags[layout.TRIAL_STATUS_TAG] == "completed"
        assert child.info.run_name == layout.trial_run_name("hwd", row.params)  # e.g. hwd τ=4 μ=0 β=0.1
        for name in ("tau", "mu", "beta"):
            assert float(child.data.params[name]) == pytest.approx(row.params[name])
        assert child.data.metrics["best_val_miou"] == pytest.approx(row.val_miou)
    # the report: best trial, best config ready for `hwd-tune distill`, plots, search space
    best = max(summary.trials, key=lambda row: row.score)
    assert math.isclose(summary.best_val_miou, best.val_miou) and summary.best_params == best.params
    assert parent.data.metrics["best_val_miou"] == pytest.approx(best.val_miou)
    assert parent.data.metrics["trials_completed"] == 4
    best_config = load_train_config(summary.best_config_path)
    for name, value in summary.best_params.items():
        assert best_config.method.params[name] == pytest.approx(value)
    assert best_config.job == "distill" and best_config.schedule.max_iters == 8
    for plot in ("optimization_history", "parallel_coordinate"):
        assert (summary.report_dir / "plots" / f"{plot}.png").is_file(), plot
    assert summary.best_trial_checkpoint.parent.name == f"trial-{best.trial_id}"
    assert json.loads((summary.best_trial_checkpoint / "meta.json").read_text())["val_miou"] == pytest.approx(
        best.val_miou
    )
    assert yaml.safe_load((summary.report_dir / "search_space.json").read_text()) == SPACE
    assert summary.mlflow_ui_command().endswith("--host 127.0.0.1 --port 5000")
    experiment = client.get_experiment(parent.info.experiment_id)
    assert summary.mlflow_ui_link == (
        f"http://127.0.0.1:5000/#/experiments/{experiment.experiment_id}/runs?viewStateShareKey=sweep-tiny"
    )
    assert "mlflow.sharedViewState.sweep-tiny" in experiment.tags


def test_the_checks_before_start_cover_the_trials_each_baseline_and_the_final_stage(tmp_path):
    tuned = {"name": "kd", "space": {"temperature": {"type": "uniform", "low": 1.0, "high": 4.0}}}
    sweep = tiny_sweep(tmp_path, "teacher.pt", baselines=["none", tuned], final={"top_k": 1, "seeds": [3]})
    jobs = service.sweep_jobs(sweep)
    assert [(job.method.name, job.seed) for job in jobs] == [("hwd", 0), ("none", 0), ("kd", 0), ("hwd", 3)]
    assert jobs[0].method.params == PAPER_POINT
    with pytest.raises(ValueError, match=r"^sweep config: train\.teacher\.source: teacher source 'teacher\.pt'"):
        service.check_before_start(sweep)
    service.check_before_start(sweep, teacher_sources=False)
    assert list(tmp_path.iterdir()) == []
