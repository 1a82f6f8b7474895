"""What a command's screen shows, as plain state: the stage, one line per trial or run, the time
spent and an estimate of what is left. Views (live table, plain lines) watch it; Tune callbacks and
the training monitor feed it through `active_board()`, as code logs through `logging`."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

FINISHED = ("completed", "stopped early", "failed")  # a trial's end states; "running" before


@dataclass
class TrialLine:
    """One trial or run: what it tries, how far it got, its last and best val mIoU, where it runs."""

    key: str  # Tune's trial id or the run's name: unique within a stage
    label: str  # what the screen calls it (the trial id, "top-1 seed 0", a plan cell)
    params: dict[str, Any] = field(default_factory=dict)  # tau, mu, beta when the trial has them
    max_iters: int | None = None  # its budget in training iterations
    iteration: int = 0
    val_miou: float | None = None  # the last validation (0-100)
    best: float | None = None  # the best validation so far
    status: str = "running"  # running, completed, stopped early, failed
    node: str = "-"
    reason: str | None = None  # why it failed

    @property
    def done_fraction(self) -> float:
        """How much of its budget is behind it: 1 once it ended (ASHA's stops included)."""
        if self.status in FINISHED:
            return 1.0
        if not self.max_iters:
            return 0.0
        return min(1.0, self.iteration / self.max_iters)


class BoardView(Protocol):
    """What a view is told; each call holds the board's lock, so views read a consistent state."""

    def on_stage_end(self, board: Board) -> None: ...
    def on_stage(self, board: Board) -> None: ...
    def on_started(self, board: Board, line: TrialLine) -> None: ...
    def on_improved(self, board: Board, line: TrialLine) -> None: ...
    def on_finished(self, board: Board, line: TrialLine) -> None: ...
    def on_message(self, board: Board, text: str) -> None: ...


class Board:
    """The state of one command's screen; safe to feed from several threads."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.started_at = clock()
        self.stage_started_at = self.started_at
        self.stage_title = ""
        self.stage_open = False  # between stage() and end_stage()
        self.stage_total = 0  # trials or runs the stage will have (0: unknown)
        self.lines: dict[str, TrialLine] = {}
        self.views: list[BoardView] = []
        self.lock = threading.RLock()

    # ---- fed by the commands, Tune callbacks and the training monitor --------------------
    def stage(self, title: str, total: int = 0) -> None:
        """A new stage (its trials replace the last stage's)."""
        with self.lock:
            self.end_stage()
            self.stage_title, self.stage_total, self.stage_open = title, total, True
            self.stage_started_at = self.clock()
            self.lines = {}
            self._tell("on_stage")

    def started(
        self,
        key: str,
        label: str,
        params: dict[str, Any] | None = None,
        max_iters: int | None = None,
        *,
        announce: bool = True,
    ) -> None:
        """A trial or run began; `announce=False` for runs that report only at their end (the final
        stage's, a plan's cells): their end says all, and plain output keeps one line per run."""
        with self.lock:
            line = TrialLine(key, label, dict(params or {}), max_iters)
            self.lines[key] = line
            if announce:
                self._tell("on_started", line)

    def result(self, key: str, iteration: int, val_miou: float | None = None, node: str | None = None) -> None:
        """A report: its iteration, and val_miou when it validated. A val_miou above the stage's
        best so far is an improvement (views print it)."""
        with self.lock:
            line = self.lines.get(key)
            if line is None:
                return
            line.iteration = max(line.iteration, int(iteration))
            line.node = node or line.node
            if val_miou is None:
                return
            best_before = self.best_value()
            line.val_miou = float(val_miou)
            line.best = max(line.best, line.val_miou) if line.best is not None else line.val_miou
            if best_before is None or line.val_miou > best_before:
                self._tell("on_improved", line)

    def finished(
        self,
        key: str,
        status: str,
        *,
        iteration: int | None = None,
        best: float | None = None,
        reason: str | None = None,
        node: str | None = None,
    ) -> None:
        with self.lock:
            line = self.lines.get(key)
            if line is None or line.status in FINISHED:
                return
            line.status, line.reason = status, reason
            line.iteration = max(line.iteration, int(iteration or 0))
            line.best = best if best is not None else line.best
            line.node = node or line.node
            self._tell("on_finished", line)

    def end_stage(self) -> None:
        """Tells the views the current stage is over (a terminal keeps one line of it)."""
        with self.lock:
            if self.stage_open:
                self.stage_open = False
                self._tell("on_stage_end")

    def message(self, text: str) -> None:
        """A line of its own (where the log is, a plan), shown above the live table."""
        with self.lock:
            self._tell("on_message", text)

    # ---- read by the views ---------------------------------------------------------------
    def elapsed_s(self) -> float:
        return self.clock() - self.started_at

    def stage_elapsed_s(self) -> float:
        return self.clock() - self.stage_started_at

    def best_value(self) -> float | None:
        values = [line.best for line in list(self.lines.values()) if line.best is not None]
        return max(values) if values else None

    def remaining_s(self) -> float | None:
        """The stage's time left at its pace so far (None before anything has progressed). Reads a
        snapshot without the lock (see `views.board_table`)."""
        lines = list(self.lines.values())
        total = max(self.stage_total, len(lines))
        done = sum(line.done_fraction for line in lines)
        if total == 0 or done <= 0:
            return None
        return self.stage_elapsed_s() * (total - done) / done

    def _tell(self, event: str, *args: Any) -> None:
        for view in self.views:
            getattr(view, event)(self, *args)


_ACTIVE: list[Board] = []


def active_board() -> Board:
    """The board of the command running in this process, or a board nobody watches."""
    return _ACTIVE[-1] if _ACTIVE else Board()


@contextmanager
def showing(board: Board) -> Iterator[Board]:
    """Makes `board` the active one while the block runs."""
    _ACTIVE.append(board)
    try:
        yield board
    finally:
        _ACTIVE.remove(board)
