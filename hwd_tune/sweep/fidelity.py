"""Whether ASHA's early stops can be trusted: Spearman's ρ, at each rung, between the completed
trials' values there and their final scores (scipy.stats.spearmanr).

The computation takes plain data (per-trial histories, iteration -> value); `sweep_rung_correlations`
reads them from Tune's results. Only trials that completed have both values, so ρ is taken over
the rung's survivors: a narrower spread than all trials, which tends to lower it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ray import tune
from scipy import stats

from hwd_tune.sweep.config import SweepConfig
from hwd_tune.sweep.searcher import ITERATION_KEY

MIN_PAIRS = 3  # fewer (rung value, final score) pairs than this give no rank correlation
NOISY_BELOW = 0.5  # a rung whose ρ is lower ranks trials too unlike their final order to stop them

Rung = int | float  # grace_period x reduction_factor^k: whole unless reduction_factor is not
History = Mapping[int, float]  # one trial's reports: training iteration -> metric value


@dataclass(frozen=True)
class RungCorrelation:
    """Spearman's ρ at one ASHA rung over the completed trials, or None when it cannot be had."""

    iteration: Rung
    n: int  # completed trials with a value at the rung
    rho: float | None  # None: fewer than MIN_PAIRS pairs, or all values tie on one side

    def describe(self, metric: str) -> str:
        """One line for the sweep's printout."""
        if self.n < MIN_PAIRS:
            return f"not enough completed trials ({self.n}, need {MIN_PAIRS}) for a rank correlation"
        if self.rho is None:
            return f"no rank correlation: the {self.n} completed trials tie at the rung or at the end"
        return (
            f"Spearman ρ = {self.rho:.2f} between {metric} at the rung and the trial's final score, "
            f"over {self.n} completed trials"
        )


def asha_rungs(grace_period: int, reduction_factor: float, max_t: int) -> list[Rung]:
    """ASHA's rungs below max_t (one bracket): grace_period x reduction_factor^k, ascending."""
    rungs: list[Rung] = []
    k = 0
    while (rung := grace_period * reduction_factor**k) < max_t:
        rungs.append(int(rung) if float(rung).is_integer() else rung)
        k += 1
    return rungs


def rung_value(history: History, rung: Rung, next_rung: Rung) -> float | None:
    """The value ASHA judged the trial on at `rung`: its first report at or after the rung and
    before the next rung (or max_t); None when it reported nothing in between (no decision there)."""
    judged = sorted(iteration for iteration in history if rung <= iteration < next_rung)
    return history[judged[0]] if judged else None


def rung_correlations(
    histories: Mapping[str, History], finals: Mapping[str, float], rungs: list[Rung], max_t: int
) -> list[RungCorrelation]:
    """Spearman's ρ at each rung between the values of the trials in `finals` (the completed
    ones, trial id -> final score) there and their final scores."""
    correlations = []
    for rung, next_rung in zip(rungs, [*rungs[1:], max_t]):  # no rung (grace_period = max_t): nothing
        pairs = [
            (value, finals[trial_id])
            for trial_id in sorted(finals)
            if (value := rung_value(histories.get(trial_id, {}), rung, next_rung)) is not None
        ]
        correlations.append(RungCorrelation(rung, len(pairs), spearman(pairs)))
    return correlations


def spearman(pairs: list[tuple[float, float]]) -> float | None:
    """Spearman's ρ of the pairs (ties share their mean rank); None when there are fewer than
    MIN_PAIRS or one side is constant (ρ undefined)."""
    if len(pairs) < MIN_PAIRS:
        return None
    first, second = zip(*pairs, strict=True)
    if len(set(first)) == 1 or len(set(second)) == 1:
        return None
    return float(stats.spearmanr(first, second).statistic)


def noisy_rung_notes(correlations: list[RungCorrelation]) -> list[str]:
    """A warning for each rung whose ρ is below NOISY_BELOW."""
    return [
        f"early stopping at iteration {rung.iteration} is deciding on noise (Spearman ρ = {rung.rho:.2f} over "
        f"{rung.n} completed trials): raise grace_period"
        for rung in correlations
        if rung.rho is not None and rung.rho < NOISY_BELOW
    ]


def sweep_rung_correlations(
    sweep: SweepConfig, experiment_path: str, finals: Mapping[str, float]
) -> list[RungCorrelation]:
    """`rung_correlations` of a finished sweep, its histories of search.metric read from Tune's
    results; none without ASHA (search.scheduler.type "none")."""
    scheduler = sweep.search.scheduler
    if scheduler.type == "none":
        return []
    rungs = asha_rungs(scheduler.grace_period, scheduler.reduction_factor, scheduler.max_t)
    tables = tune.ExperimentAnalysis(experiment_path).trial_dataframes
    histories = {trial_id: metric_history(tables.get(trial_id), sweep.search.metric) for trial_id in finals}
    return rung_correlations(histories, finals, rungs, scheduler.max_t)


def metric_history(table, metric: str) -> dict[int, float]:
    """iteration -> `metric` from a trial's result table (a DataFrame of its reports); a step
    reported twice (a restarted trial) keeps its first value, the one ASHA and Optuna saw."""
    if table is None or metric not in getattr(table, "columns", ()) or ITERATION_KEY not in table.columns:
        return {}
    history: dict[int, float] = {}
    for iteration, value in table[[ITERATION_KEY, metric]].dropna().itertuples(index=False):
        history.setdefault(int(iteration), float(value))
    return history
