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
