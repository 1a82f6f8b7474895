"""The plain progress lines of a non-interactive screen (CI, `ray job logs`, a pipe): one line per
stage and per trial event, `[mm:ss] event  label  details`, ASCII only, greppable."""

from __future__ import annotations

import math
from typing import Any

from hwd_tune.console.board import TrialLine

PAPER_ORDER = ("tau", "mu", "beta")  # HWD's parameters as the paper lists them; a sweep file may sort them


def in_paper_order(names: list[str] | tuple[str, ...]) -> list[str]:
    """`names` with tau, mu, beta first (in that order), then the others as given."""
    return sorted(names, key=lambda name: PAPER_ORDER.index(name) if name in PAPER_ORDER else len(PAPER_ORDER))


def clock(seconds: float) -> str:
    """`mm:ss`, or `h:mm:ss` from an hour on."""
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def number(value: Any) -> str:
    """A parameter or score as the screen shows it: floats with 3 significant digits."""
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.3g}"
    return "-" if value is None else str(value)


def params_text(params: dict[str, Any]) -> str:
    return " ".join(f"{name}={number(value)}" for name, value in params.items())


def iterations_text(line: TrialLine) -> str:
    return f"{line.iteration}/{line.max_iters}" if line.max_iters else str(line.iteration)


def stage_line(elapsed_s: float, title: str) -> str:
    return f"[{clock(elapsed_s)}] stage   {title}"


def started_line(elapsed_s: float, line: TrialLine) -> str:
    return f"[{clock(elapsed_s)}] start   {line.label}  {params_text(line.params)}".rstrip()


def improved_line(elapsed_s: float, line: TrialLine) -> str:
    return f"[{clock(elapsed_s)}] best    {line.label}  iter {iterations_text(line)}  val mIoU {line.val_miou:.2f}"


def finished_line(elapsed_s: float, line: TrialLine) -> str:
    """`done` (completed), `stopped` (early, by the scheduler) or `failed` with its reason."""
    event = {"completed": "done   ", "stopped early": "stopped", "failed": "failed "}.get(line.status, "ended  ")
    best = f", best {line.best:.2f}" if line.best is not None else ""
    text = f"[{clock(elapsed_s)}] {event} {line.label}  iter {iterations_text(line)}{best}"
    return text + (f": {line.reason}" if line.status == "failed" and line.reason else "")


def message_line(elapsed_s: float, text: str) -> str:
    return f"[{clock(elapsed_s)}] {text}"
