"""Tune restarts a trial whose node or actor was lost, never one whose training code failed.

Tune's FailureConfig (resources.trial_max_failures) retries every failure of a trial. A trial
function notes an error of the training code on its MLflow run, per Tune trial, and its restarted
attempt ends at once with that error instead of training again into it. Used by the sweep, its
final stage and reproduce.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from ray import tune

from hwd_tune import tracking
from trainables.launch import failed_by_training_code

CODE_ERROR_TAG_PREFIX = "hwd.code_error."  # + the Tune trial id: the error its training code raised
_KEPT_CHARS = 4000  # of the error's text, from its end (the innermost cause); MLflow tags hold 5000
Result = TypeVar("Result")


class TrialNotRestarted(RuntimeError):
    """Raised by a restarted trial whose earlier attempt failed by its training code; `error` is
    that attempt's error text (hwd_tune.sweep.summary.failure_reason reports it, not this)."""

    def __init__(self, error: str) -> None:
        super().__init__(f"not restarted: an earlier attempt failed by its training code:\n{error}")
        self.error = error

    def __reduce__(self):
        return (type(self), (self.error,))


def train_unless_code_failed(
    tracking_uri: str, experiment: str, run_key: str, train: Callable[[], Result], *, run_id: str | None = None
) -> Result:
    """Runs `train()` in a Tune trial; an error of its training code is noted on the run `run_key`
    (or `run_id`), and a restart of the same trial after one raises TrialNotRestarted at once."""
    trial_id = tune.get_context().get_trial_id()
    tag = CODE_ERROR_TAG_PREFIX + trial_id
    for run in tracking.find_runs(tracking_uri, experiment, {tracking.RUN_KEY_TAG: run_key}, max_results=1):
        if tag in run.tags:
            raise TrialNotRestarted(run.tags[tag])
    try:
        return train()
    except Exception as error:
        run_id = run_id or tracking.find_run_id(tracking_uri, experiment, run_key)
        if failed_by_training_code(error) and run_id is not None:
            tracking.RunLogger(tracking_uri, run_id).set_tags({tag: str(error)[-_KEPT_CHARS:]})
        raise
