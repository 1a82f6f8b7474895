"""The verdict in words, the quickstart's last screen: the student alone, CWD, the paper's Table I
point and the tuned HWD side by side with the seed noise the final stage measured, and a sentence
saying whether the tuned HWD beats CWD and Table I beyond that noise."""

from __future__ import annotations

import math
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from hwd_tune.sweep.final_stage import FinalStageResult
from hwd_tune.sweep.statistics import PairedDifference
from hwd_tune.sweep.summary import SweepSummary

ROW_NAMES = {"none": "student alone", "cwd": "CWD", "table_i": "HWD, Table I point"}  # by final-stage label
COMPARED = {"cwd": "CWD", "table_i": "HWD at the Table I point"}  # what the sentence judges the tuned HWD against


def params_text(params: dict[str, Any]) -> str:
    """`τ 4, μ 0, β 0.1` for HWD's parameters, `-` when there are none."""
    symbols = {"tau": "τ", "mu": "μ", "beta": "β"}
    shown = [
        f"{symbols.get(name, name)} {value:.3g}" if isinstance(value, float) else f"{symbols.get(name, name)} {value}"
        for name, value in params.items()
    ]
    return ", ".join(shown) or "-"


def row_name(label: str, winner: str | None) -> str:
    if label == winner:
        return "HWD, tuned" if label != "table_i" else "HWD, Table I (best)"
    return ROW_NAMES.get(label, f"HWD, {label}" if label.startswith("top-") else label)


def verdict_table(final: FinalStageResult) -> Table:
    """One row per configuration the final stage retrained: mean over seeds ± the 95 % half-width,
    and the tuned HWD's paired difference with it."""
    table = Table(
        "configuration",
        "τ, μ, β",
        "val mIoU",
        "tuned minus it",
        title=f"final stage: mean over seeds {final.seeds}, ± its 95 % interval",
        box=box.SIMPLE_HEAD,
        show_edge=False,
    )
    for result in final.results:
        label, stats = result.candidate.label, result.stats
        if stats is None:
            score = "failed"
        elif math.isnan(stats.ci_low):
            score = f"{stats.mean:.2f}"
        else:
            score = f"{stats.mean:.2f} ± {stats.ci_high - stats.mean:.2f}"
        difference = final.comparisons.get(label)
        table.add_row(
            row_name(label, final.winner),
            params_text(result.candidate.params),
            score,
            "" if difference is None else _difference_text(difference),
        )
    return table


def _difference_text(difference: PairedDifference) -> str:
    if math.isnan(difference.ci_low):
        return f"{difference.mean:+.2f}"
    return f"{difference.mean:+.2f} ± {difference.ci_high - difference.mean:.2f}"


def verdict_sentence(final: FinalStageResult) -> str:
    """Whether the tuned HWD beats CWD and Table I beyond the noise the seeds measured, in words."""
    if final.winner is None:
        return "No HWD run of the final stage finished: there is nothing to judge."
    judged = [(label, final.comparisons[label]) for label in COMPARED if label in final.comparisons]
    beats = [COMPARED[label] for label, difference in judged if difference.beyond_noise() and difference.mean > 0]
    below = [COMPARED[label] for label, difference in judged if difference.beyond_noise() and difference.mean < 0]
    within = [COMPARED[label] for label, difference in judged if not difference.beyond_noise()]
    subject = "The tuned HWD" if final.winner != "table_i" else "HWD at the Table I point (no tuned setting did better)"
    parts = []
    if beats:
        parts.append(f"beats {' and '.join(beats)} beyond the seed noise")
    if below:
        parts.append(f"is below {' and '.join(below)} beyond the seed noise")
    if within:
        seeds = len(final.seeds)
        parts.append(
            f"cannot be told apart from {' or from '.join(within)}: the difference is within the noise "
            f"that {seeds} seeds measure (paired t-test, 95 %)"
        )
    if not parts:
        return f"{subject}: no CWD or Table I run to compare with."
    return f"{subject} {'; it '.join(parts)}."


def print_verdict(summary: SweepSummary, console: Console) -> None:
    """The verdict table and sentence, or without a final stage, what one run per configuration cannot say."""
    final = summary.final_stage
    if final is None:
        console.print(
            "one run per configuration cannot separate differences smaller than the seed noise "
            "(set search.final to retrain the best with several seeds)"
        )
        return
    console.print(verdict_table(final))
    for result in final.results:
        for seed, error in result.errors.items():
            console.print(f"[red]{row_name(result.candidate.label, final.winner)} seed {seed} failed[/red]: {error}")
    console.print(verdict_sentence(final))
