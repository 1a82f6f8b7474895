"""The summary's pure parts: the failure reason of a wrapped error and a trial's status by budget."""

from __future__ import annotations

from hwd_tune.sweep import summary
from tests.sweep.helpers import tiny_sweep


def test_failure_reason_is_the_innermost_error_line():
    wrapped = (
        "ray.train.WorkerGroupError: Training failed due to worker errors:\n[Rank 0 Error Snippet]:\n"
        'Traceback (most recent call last):\n  File "loop.py", line 3\n'
        "RuntimeError: failing on purpose at iteration 2 (loop_config fail_at_iteration test hook)\n"
    )
    assert summary.failure_reason(wrapped) == (
        "RuntimeError: failing on purpose at iteration 2 (loop_config fail_at_iteration test hook)"
    )
    assert summary.failure_reason("no error class here\nsecond") == "no error class here"
    assert len(summary.failure_reason("ValueError: " + "x" * 2000)) == 500


def test_trial_status_counts_the_budget_in_iterations(tmp_path):
    sweep = tiny_sweep(tmp_path, "teacher.pt")  # max_iters 8 = ASHA max_t
    assert summary.status_of(8, sweep, failed=False) == "completed"
    assert summary.status_of(4, sweep, failed=False) == "stopped early"
    assert summary.status_of(8, sweep, failed=True) == "failed"


def best_summary(sweep, tmp_path, **fields) -> summary.SweepSummary:
    """A summary whose best trial is the paper's point with val_miou 42.5 (nothing else ran)."""
    return summary.SweepSummary(
        name=sweep.name,
        metric="val_miou",
        best_params={"tau": 2.0, "mu": 0.5, "beta": 0.25},
        best_val_miou=42.5,
        best_score=42.5,
        trials=[],
        baselines=[],
        parent_run_id="parent",
        tracking_uri="sqlite:///mlflow.db",
        best_config_path=None,
        optuna_storage="sqlite:///optuna.db",
        experiment_path=str(tmp_path / "tune"),
        report_dir=tmp_path / "report",
        **fields,
    )


def test_best_config_trains_on_every_image_and_reports_val(tmp_path):
    from hwd_tune.config import HoldoutConfig, load_train_config

    sweep = tiny_sweep(tmp_path, "teacher.pt", final={"top_k": 1, "max_iters": 6})
    path = summary.write_best_config(sweep, best_summary(sweep, tmp_path))
    header = path.read_text().splitlines()[:4]
    assert header == [
        "# Best configuration of sweep 'tiny': tau=2, mu=0.5, beta=0.25; "
        "val_miou 42.50 on the held-out training images",
        "# Chosen by the best search score.",
        "# It trains on the whole training split (no image held out) and reports on val.",
        f"# Train it with: hwd-tune distill {path}",
    ]
    config = load_train_config(path)
    assert config.data.holdout == HoldoutConfig()  # every training image, validated on val
    assert config.schedule.max_iters == 8  # the trials' length, not the final stage's 6
    assert (config.method.params["tau"], config.method.params["beta"]) == (2.0, 0.25)


def test_the_summary_says_what_the_trials_were_scored_on(tmp_path):
    from rich.console import Console

    sweep = tiny_sweep(tmp_path, "teacher.pt")
    console = Console(record=True, width=200)
    summary.print_summary(best_summary(sweep, tmp_path, tuning_split="tuned on the 6 held out"), console)
    assert "tuned on the 6 held out\n" in console.export_text()
