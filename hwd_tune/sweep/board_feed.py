"""Feeds the command's board from Ray Tune: a trial's start, its reports and its end (Tune's
driver-side callbacks), so the screen needs no channel into the trials of its own."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ray import tune

from hwd_tune.console import active_board
from hwd_tune.console.lines import in_paper_order
from hwd_tune.sweep.summary import failure_reason, trial_error


@dataclass(frozen=True)
class JobLabel:
    """How the screen names a trial that runs one known job (a final-stage run, a plan cell)."""

    label: str
    params: dict[str, Any] = field(default_factory=dict)
    max_iters: int | None = None


class BoardFeed(tune.Callback):
    """A search's trials (labelled by trial id, with their sampled `param_names`), or a grid of
    known jobs (`jobs`, keyed by the value of `job_key` in the trial's config).

    Holds nothing but names and numbers, so Tune can pickle it with the experiment; the board
    is looked up at each event (`active_board`), also after a restore."""

    def __init__(
        self,
        *,
        budget: int | None,
        param_names: tuple[str, ...] = (),
        job_key: str | None = None,
        jobs: Mapping[str, JobLabel] | None = None,
    ) -> None:
        self.budget = budget  # iterations a completed trial reaches (max_iters, or ASHA's max_t)
        self.param_names = tuple(in_paper_order(param_names))
        self.job_key = job_key
        self.jobs = dict(jobs or {})

    def describe(self, trial) -> JobLabel:
        if self.job_key is not None:
            name = str(trial.config.get(self.job_key))
            return self.jobs.get(name, JobLabel(name, max_iters=self.budget))
        params = {name: _plain(trial.config.get(name)) for name in self.param_names if name in trial.config}
        return JobLabel(trial.trial_id, params, self.budget)

    def on_trial_start(self, iteration: int, trials: list, trial, **info: Any) -> None:
        job = self.describe(trial)
        announce = self.job_key is None  # a grid of known jobs reports once, at each job's end
        active_board().started(trial.trial_id, job.label, job.params, job.max_iters, announce=announce)

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info: Any) -> None:
        active_board().result(
            trial.trial_id, int(result.get("iteration", 0)), result.get("val_miou"), node=result.get("node_ip")
        )

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        last = trial.last_result or {}
        reached = int(last.get("iteration", 0))
        budget = self.describe(trial).max_iters
        status = "completed" if not budget or reached >= budget else "stopped early"
        active_board().finished(trial.trial_id, status, iteration=reached, best=_best(last), node=last.get("node_ip"))

    def on_trial_error(self, iteration: int, trials: list, trial, **info: Any) -> None:
        last = trial.last_result or {}
        active_board().finished(
            trial.trial_id,
            "failed",
            iteration=int(last.get("iteration", 0)),
            reason=failure_reason(trial_error(trial)),
            node=last.get("node_ip"),
        )


def _best(result: Mapping[str, Any]) -> float | None:
    value = result.get("best_val_miou", result.get("val_miou"))
    return None if value is None else float(value)


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
