"""The final stage: the search's best configurations, the paper's Table I point and the baselines,
each retrained with every seed of `search.final.seeds`, as one Tune job whose runs go side by side
as the resources fit. A run whose MLflow run already FINISHED is not trained again, and an
unfinished one resumes from its checkpoint, so a killed sweep resumes through this stage too.
The winner is the tuned method's configuration with the best mean over seeds, compared with Table I
and each baseline by paired differences on the same seeds."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ray import tune

from hwd_tune import tracking
from hwd_tune.config import TrainConfig
from hwd_tune.console import active_board
from hwd_tune.sweep.board_feed import BoardFeed, JobLabel
from hwd_tune.sweep.config import SweepConfig, baseline_method, final_job_config
from hwd_tune.sweep.interruption import Interrupted, unfinished
from hwd_tune.sweep.layout import FINAL_FOLDER, SWEEP_TAG, sweep_storage
from hwd_tune.sweep.restarts import train_unless_code_failed
from hwd_tune.sweep.statistics import PairedDifference, SeedStats, paired_difference, seed_stats
from hwd_tune.sweep.summary import TrialRow, failure_reason, ranked_trials
from trainables.launch import pinned_to_driver, run_name, run_training

FINAL_LABEL_TAG = "hwd.final.label"
FINAL_SEED_TAG = "hwd.final.seed"
CHAMPION_TAG = "hwd.champion"  # on the parent run: models:/student-<dataset>-<arch>/<version> of the winner
Role = Literal["tuned", "table_i", "baseline"]
LoopConfigHook = Callable[[Mapping[str, Any]], Mapping[str, Any]]


@dataclass(frozen=True)
class Candidate:
    """One configuration the final stage retrains: a label, its method and params, and its role."""

    label: str  # top-1, top-2, ..., table_i, or the baseline's method
    method: str
    params: dict[str, Any]
    role: Role


@dataclass
class CandidateResult:
    """A candidate's best val_miou per seed (on the validation split), its runs and failures."""

    candidate: Candidate
    values: dict[int, float] = field(default_factory=dict)  # seed -> best val_miou (0-100)
    run_ids: dict[int, str] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)  # seed -> why its run failed

    @property
    def stats(self) -> SeedStats | None:
        return seed_stats([self.values[seed] for seed in sorted(self.values)]) if self.values else None


@dataclass
class FinalStageResult:
    """Every candidate's results, the winner (by mean) and its paired differences (label -> diff)."""

    seeds: list[int]
    results: list[CandidateResult]
    winner: str | None
    comparisons: dict[str, PairedDifference]  # winner minus Table I / each baseline, by label

    def result(self, label: str) -> CandidateResult:
        return next(result for result in self.results if result.candidate.label == label)


def candidates(
    sweep: SweepConfig, trials: list[TrialRow], tuned_baselines: Mapping[str, dict[str, Any]]
) -> list[Candidate]:
    """The top_k trials by search score, then Table I and the baselines as `search.final.include` says.

    `tuned_baselines`: the winning params of each tuned baseline (method -> params); a tuned
    baseline without a winner is left out.
    """
    final, search = sweep.search.final, sweep.search
    ranked = ranked_trials(trials, search.mode)
    chosen = [
        Candidate(f"top-{rank}", sweep.train.method.name, dict(row.params), "tuned")
        for rank, row in enumerate(ranked[: final.top_k], start=1)
    ]
    if "table_i" in final.include and search.points_to_evaluate:
        chosen.append(Candidate("table_i", sweep.train.method.name, dict(search.points_to_evaluate[0]), "table_i"))
    if "baselines" in final.include:
        for entry in search.baselines:
            method = baseline_method(entry)
            if isinstance(entry, str):
                chosen.append(Candidate(method, method, {}, "baseline"))
            elif method in tuned_baselines:
                chosen.append(Candidate(method, method, dict(tuned_baselines[method]), "baseline"))
    return chosen


@dataclass(frozen=True)
class FinalSetup:
    """What every final-stage trial needs (sent once to the object store): each run's job and tags."""

    configs: dict[str, dict[str, Any]]  # run name -> TrainConfig.model_dump(mode="json")
    tags: dict[str, dict[str, str]]
    parent_run_id: str
    loop_config_hook: LoopConfigHook | None = None  # tests: extra loop_config per run, by its params


def run_final_job(trial_config: dict[str, Any], setup: FinalSetup) -> None:
    """Tune's trial function: trains (or resumes) one run of the final stage under the parent run."""
    name = trial_config["run"]
    config = TrainConfig.model_validate(setup.configs[name])
    extra = dict(setup.loop_config_hook(config.method.params) or {}) if setup.loop_config_hook else None
    outcome = train_unless_code_failed(
        config.tracking.uri,
        config.tracking.experiment,
        name,
        lambda: run_training(config, parent_run_id=setup.parent_run_id, tags=setup.tags[name], extra_loop_config=extra),
    )
    metrics = outcome["metrics"]
    tune.report(
        {"best_val_miou": float(metrics.get("best_val_miou", math.nan)), "iteration": int(metrics.get("iteration", 0))}
    )


def run_final_stage(
    sweep: SweepConfig,
    chosen: list[Candidate],
    *,
    parent_run_id: str,
    tracking_uri: str,
    max_concurrent: int,
    loop_config_hook: LoopConfigHook | None = None,
) -> FinalStageResult:
    """Retrains every candidate with every seed (finished runs are reused) and judges the winner."""
    seeds = list(sweep.search.final.seeds)
    jobs: dict[tuple[str, int], TrainConfig] = {
        (candidate.label, seed): final_job_config(sweep, candidate.method, candidate.params, seed)
        for candidate in chosen
        for seed in seeds
    }
    by_run: dict[str, TrainConfig] = {run_name(config): config for config in jobs.values()}  # equal configs run once
    experiment = sweep.train.tracking.experiment
    finished = {name for name in by_run if _finished_run(tracking_uri, experiment, name) is not None}
    remaining = sorted(set(by_run) - finished)
    errors: dict[str, str] = {}
    active_board().stage(
        f"final stage: {len(chosen)} configurations x seeds {seeds}, {len(remaining)} of {len(by_run)} runs to train",
        len(remaining),
    )
    if remaining:
        setup = FinalSetup(
            configs={name: pinned_to_driver(by_run[name], tracking_uri).model_dump(mode="json") for name in remaining},
            tags={name: _tags(sweep, jobs, name) for name in remaining},
            parent_run_id=parent_run_id,
            loop_config_hook=loop_config_hook,
        )
        labels = {name: _job_label(jobs, by_run[name], name) for name in remaining}
        results = _tuner(sweep, remaining, setup, min(max_concurrent, len(remaining)), labels).fit()
        if unfinished(results, "best_val_miou"):
            raise Interrupted(f"{sweep.name}: the final stage was stopped with runs unfinished")
        for result in results:
            if result.error is not None:
                errors[result.config["run"]] = failure_reason(result.error)
    outcomes = [CandidateResult(candidate) for candidate in chosen]
    for outcome in outcomes:
        for seed in seeds:
            name = run_name(jobs[(outcome.candidate.label, seed)])
            run = _finished_run(tracking_uri, experiment, name)
            best = None if run is None else run.metrics.get("best_val_miou")
            if best is not None:
                outcome.values[seed] = float(best)
                outcome.run_ids[seed] = run.run_id
            else:
                outcome.errors[seed] = errors.get(name, "no finished run")
    return judge(outcomes, seeds, sweep.search.mode)


def judge(outcomes: list[CandidateResult], seeds: list[int], mode: str) -> FinalStageResult:
    """The winner: the tuned method's candidate (a top-k or Table I) with the best mean; then its
    paired difference with Table I and with each baseline."""
    sign = 1.0 if mode == "max" else -1.0
    contenders = [result for result in outcomes if result.candidate.role != "baseline" and result.values]
    winner = max(contenders, key=lambda result: sign * result.stats.mean) if contenders else None
    comparisons: dict[str, PairedDifference] = {}
    if winner is not None:
        for other in outcomes:
            if other.candidate.role == "tuned" or other is winner or not set(other.values) & set(winner.values):
                continue
            comparisons[other.candidate.label] = paired_difference(winner.values, other.values)
    return FinalStageResult(seeds, outcomes, winner.candidate.label if winner else None, comparisons)


def register_champion(sweep: SweepConfig, final: FinalStageResult, *, tracking_uri: str) -> str | None:
    """Registers the winner's best seed run's best weights as `student-<dataset>-<arch>@champion`
    (an MLflow pyfunc model returning class maps); returns `models:/<name>/<version>`, or None
    when there is no winner."""
    if final.winner is None:
        return None
    winner = final.result(final.winner)
    sign = 1.0 if sweep.search.mode == "max" else -1.0
    seed = max(winner.values, key=lambda each: sign * winner.values[each])
    name, version = tracking.register_run_student(
        tracking_uri=tracking_uri,
        run_id=winner.run_ids[seed],
        aliases=[tracking.CHAMPION_ALIAS],
        tags={
            SWEEP_TAG: sweep.name,
            FINAL_LABEL_TAG: final.winner,
            FINAL_SEED_TAG: seed,
            "hwd.final.mean": winner.stats.mean,
        },
    )
    return f"models:/{name}/{version}"


def _tags(sweep: SweepConfig, jobs: Mapping[tuple[str, int], TrainConfig], name: str) -> dict[str, str]:
    labels = sorted({label for (label, _), config in jobs.items() if run_name(config) == name})
    seed = next(seed for (_, seed), config in jobs.items() if run_name(config) == name)
    return {SWEEP_TAG: sweep.name, "hwd.job": "final", FINAL_LABEL_TAG: ",".join(labels), FINAL_SEED_TAG: str(seed)}


def _finished_run(tracking_uri: str, experiment: str, name: str) -> tracking.FoundRun | None:
    runs = tracking.find_runs(tracking_uri, experiment, {tracking.RUN_KEY_TAG: name}, status="FINISHED", max_results=1)
    return runs[0] if runs else None


def _job_label(jobs: Mapping[tuple[str, int], TrainConfig], config: TrainConfig, name: str) -> JobLabel:
    """`top-1 seed 0` (or `cwd,none seed 1` when equal configurations share the run), its params."""
    keys = sorted(key for key, job in jobs.items() if run_name(job) == name)
    labels = ",".join(dict.fromkeys(label for label, _ in keys))
    params = {key: value for key, value in config.method.params.items() if key in ("tau", "mu", "beta")}
    return JobLabel(f"{labels} seed {keys[0][1]}", params, config.schedule.max_iters)


def _tuner(
    sweep: SweepConfig, names: list[str], setup: FinalSetup, max_concurrent: int, labels: Mapping[str, JobLabel]
) -> tune.Tuner:
    """A grid over the runs, FIFO; reused trial actors (each new one costs seconds of imports)."""
    trainable = tune.with_resources(
        tune.with_parameters(run_final_job, setup=setup), {"CPU": sweep.resources.trial_cpus}
    )
    return tune.Tuner(
        trainable,
        param_space={"run": tune.grid_search(names)},
        tune_config=tune.TuneConfig(num_samples=1, max_concurrent_trials=max_concurrent, reuse_actors=True),
        run_config=tune.RunConfig(
            name=FINAL_FOLDER,
            storage_path=sweep_storage(sweep),
            failure_config=tune.FailureConfig(max_failures=sweep.resources.trial_max_failures, fail_fast=False),
            callbacks=[BoardFeed(budget=None, job_key="run", jobs=labels)],
        ),
    )
