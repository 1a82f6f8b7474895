"""The sweep service on real Ray, Optuna (sqlite) and MLflow (sqlite): Table I first, statuses,
parent/child runs, the best config, and the clear errors raised before any trial starts."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from hwd_tune import sweep as sweep_service
from hwd_tune.config import ConfigError, load_train_config
from hwd_tune.sweep_config import ParameterRange, SweepConfig
from tests.trainables.helpers import TINY_TEACHER, tiny_config

PAPER_POINT = {"tau": 4.0, "mu": 0.0, "beta": 0.1}  # Table I (ADE20K)
SPACE = {
    "tau": {"type": "loguniform", "low": 1.0, "high": 8.0},
    "mu": {"type": "uniform", "low": -1.0, "high": 2.0},
    "beta": {"type": "loguniform", "low": 0.01, "high": 1.0},
}


def tiny_sweep(output_dir: Path, teacher_source: str, **search) -> SweepConfig:
    """A 4-trial sweep of 8-iteration HWD runs on 48 px synthetic images (validation every 2)."""
    train = tiny_config(
        output_dir, job="distill", method={"name": "hwd", "params": dict(PAPER_POINT)},
        teacher={**TINY_TEACHER, "source": teacher_source},
        schedule={"max_iters": 8, "batch_size": 4, "val_interval": 2, "log_interval": 2},
        tracking={"experiment": "tests", "uri": f"sqlite:///{output_dir}/mlflow/mlflow.db"},
    )
    return SweepConfig.model_validate({
        "name": "tiny", "train": train.model_dump(mode="json"),
        "search": {
            "num_samples": 4, "max_concurrent_trials": 2, "seed": 0, "space": SPACE,
            "points_to_evaluate": [dict(PAPER_POINT)], "baselines": [],
            "scheduler": {"grace_period": 2, "reduction_factor": 2}, **search,
        },
    })


# --------------------------------------------------------------------------------------------
# Helpers without Ray
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "parameter, check",
    [
        ({"type": "uniform", "low": -1.0, "high": 2.0}, lambda v: -1.0 <= v <= 2.0),
        ({"type": "loguniform", "low": 0.01, "high": 1.0}, lambda v: 0.01 <= v <= 1.0),
        ({"type": "int", "low": 1, "high": 3}, lambda v: isinstance(v, int) and 1 <= v <= 3),
        ({"type": "choice", "values": ["mse", "l1"]}, lambda v: v in ("mse", "l1")),
    ],
)
def test_tune_domains_sample_inside_the_range_with_the_high_bound_included(parameter, check):
    domain = sweep_service.tune_domain(ParameterRange.model_validate(parameter))
    samples = [domain.sample() for _ in range(200)]
    assert all(check(value) for value in samples)
    if parameter["type"] == "int":
        assert set(samples) == {1, 2, 3}  # Tune's randint excludes its upper bound: high + 1 is passed


def test_failure_reason_is_the_innermost_error_line():
    wrapped = (
        "ray.train.WorkerGroupError: Training failed due to worker errors:\n[Rank 0 Error Snippet]:\n"
        "Traceback (most recent call last):\n  File \"loop.py\", line 3\n"
        "RuntimeError: failing on purpose at iteration 2 (loop_config fail_at_iteration test hook)\n"
    )
    assert sweep_service.failure_reason(wrapped) == (
        "RuntimeError: failing on purpose at iteration 2 (loop_config fail_at_iteration test hook)"
    )
    assert sweep_service.failure_reason("no error class here\nsecond") == "no error class here"
    assert len(sweep_service.failure_reason("ValueError: " + "x" * 2000)) == 500


def test_sweep_key_ignores_where_it_runs_but_not_what_it_searches(tmp_path):
    base = tiny_sweep(tmp_path, "teacher.pt")
    moved = base.model_copy(deep=True)
    moved.resources.trial_cpus = 0.05
    moved.train.resources.cpus_per_worker = 0.25
    other_space = tiny_sweep(tmp_path, "teacher.pt", num_samples=5)
    assert sweep_service.sweep_key(base) == sweep_service.sweep_key(moved)
    assert sweep_service.sweep_key(base) != sweep_service.sweep_key(other_space)
    assert sweep_service.sweep_key(base).startswith("sweep-tiny-")


def test_trial_status_counts_the_budget_in_iterations(tmp_path):
    sweep = tiny_sweep(tmp_path, "teacher.pt")  # max_iters 8 = ASHA max_t
    assert sweep_service._status_of(8, sweep, failed=False) == "completed"
    assert sweep_service._status_of(4, sweep, failed=False) == "stopped early"
    assert sweep_service._status_of(8, sweep, failed=True) == "failed"


# --------------------------------------------------------------------------------------------
# Real Ray
# --------------------------------------------------------------------------------------------
def test_resources_that_do_not_fit_fail_before_any_trial(ray_local, tmp_path):
    sweep = tiny_sweep(tmp_path, "teacher.pt")
    sweep.train.resources.cpus_per_worker = 3.0  # the session's Ray has 2 CPUs
    with pytest.raises(ConfigError, match=r"cpus_per_worker.*one trial needs 3.01 CPUs, the cluster has 2"):
        sweep_service.run(sweep)
    assert not (tmp_path / "tiny").exists()  # nothing started: no Tune state, no study


@pytest.fixture(scope="module")
def teacher_checkpoint(ray_local, tmp_path_factory) -> str:
    """A tiny teacher trained once for the module (8 iterations); its checkpoint directory."""
    from trainables.launch import run_training

    output = tmp_path_factory.mktemp("teacher")
    config = tiny_config(
        output, name="tiny-teacher", student=dict(TINY_TEACHER),
        tracking={"experiment": "tests", "uri": f"sqlite:///{output}/mlflow/mlflow.db"},
    )
    return str(run_training(config)["checkpoint"])


@pytest.mark.slow
def test_sweep_runs_table_i_first_and_records_parent_child_runs(ray_local, tmp_path, teacher_checkpoint):
    from mlflow import MlflowClient

    sweep = tiny_sweep(tmp_path, teacher_checkpoint)
    summary = sweep_service.run(sweep)

    assert len(summary.trials) == 4
    assert summary.trials[0].params == PAPER_POINT  # points_to_evaluate run first
    for row in summary.trials:
        assert row.status in ("completed", "stopped early")
        assert row.iterations == 8 if row.status == "completed" else 2 <= row.iterations < 8
        assert 0.0 <= row.val_miou <= 100.0
    best = max(summary.trials, key=lambda row: row.score)
    assert math.isclose(summary.best_val_miou, best.val_miou)

    client = MlflowClient(tracking_uri=summary.tracking_uri)
    parent = client.get_run(summary.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["hwd.sweep"] == "tiny"
    for row in summary.trials:
        child = client.get_run(row.run_id)
        assert child.data.tags["mlflow.parentRunId"] == summary.parent_run_id
        assert child.data.tags["hwd.trial_id"] == row.trial_id
        assert child.data.tags["hwd.trial_status"] == row.status.replace(" ", "_")
        assert child.info.status == "FINISHED"
        for name in ("tau", "mu", "beta"):
            assert float(child.data.params[name]) == pytest.approx(row.params[name], rel=1e-9)
        history = client.get_metric_history(row.run_id, "val_miou")
        assert [metric.step for metric in history] == list(range(2, row.iterations + 1, 2))
        assert max(metric.value for metric in history) == pytest.approx(row.val_miou)

    best_config = load_train_config(summary.best_config_path)
    for name, value in summary.best_params.items():
        assert best_config.method.params[name] == pytest.approx(value)
    assert best_config.job == "distill" and best_config.schedule.max_iters == 8
    assert (summary.report_dir / "plots" / "optimization_history.png").is_file()
    assert yaml.safe_load((summary.report_dir / "search_space.json").read_text()) == SPACE
    assert summary.mlflow_ui_command().endswith("--host 127.0.0.1 --port 5000")


@pytest.mark.slow
def test_a_new_sweep_does_not_mix_with_an_existing_one(ray_local, tmp_path, teacher_checkpoint):
    sweep = tiny_sweep(tmp_path, teacher_checkpoint)
    (sweep_service.sweep_dir(sweep) / sweep_service.TUNE_FOLDER / sweep.name).mkdir(parents=True)
    with pytest.raises(ValueError, match="already exists.*--resume"):
        sweep_service.run(sweep)


@pytest.mark.slow
def test_a_failing_trial_is_recorded_with_its_reason_and_the_sweep_goes_on(ray_local, tmp_path, teacher_checkpoint):
    from mlflow import MlflowClient

    def fail_the_paper_point(params):  # nested: Ray pickles it by value for the trial actors
        return {"fail_at_iteration": 3} if dict(params) == PAPER_POINT else {}

    sweep = tiny_sweep(tmp_path, teacher_checkpoint, num_samples=3, scheduler={"type": "none"})
    summary = sweep_service.run(sweep, loop_config_hook=fail_the_paper_point)

    by_status = {row.status: row for row in summary.trials}
    assert len(summary.trials) == 3
    failed = by_status["failed"]
    assert failed.params == PAPER_POINT
    assert "failing on purpose at iteration 3" in failed.reason
    others = [row for row in summary.trials if row is not failed]
    assert [row.status for row in others] == ["completed", "completed"]
    assert all(row.iterations == 8 for row in others)
    assert summary.best_params != PAPER_POINT

    client = MlflowClient(tracking_uri=summary.tracking_uri)
    child = client.get_run(failed.run_id)
    assert child.info.status == "FAILED"
    assert "failing on purpose at iteration 3" in child.data.tags["hwd.failure_reason"]
    assert client.get_run(summary.parent_run_id).info.status == "FINISHED"
