"""The two ways a board reaches the terminal: a live `rich` table redrawn in place (a terminal),
or plain lines printed once per event (anything else: CI, `ray job logs`, a pipe)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from hwd_tune.console import lines
from hwd_tune.console.board import Board, TrialLine

SYMBOLS = {"tau": "τ", "mu": "μ", "beta": "β"}
STATUS_STYLES = {"completed": "green", "stopped early": "yellow", "failed": "red", "running": "cyan"}


def board_header(board: Board) -> Text:
    """`stage · elapsed · about N left` above the table."""
    remaining = board.remaining_s()
    left = f" · about {lines.clock(remaining)} left" if remaining is not None else ""
    return Text.assemble(
        (board.stage_title or "starting", "bold"),
        f"  elapsed {lines.clock(board.elapsed_s())} (stage {lines.clock(board.stage_elapsed_s())}){left}",
    )


def board_table(board: Board) -> Table:
    """One row per trial: τ, μ, β, iteration / max, val mIoU, best, status, node.

    Reads a snapshot without the board's lock: the live view's refresh thread calls it while a feed
    may hold the lock to print through the same live display (taking it here could deadlock)."""
    rows = list(board.lines.values())
    names = list(dict.fromkeys(name for row in rows for name in row.params)) or ["tau", "mu", "beta"]
    values = [row.best for row in rows if row.best is not None]
    best = max(values) if values else None
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("trial")
    for name in names:
        table.add_column(SYMBOLS.get(name, name), justify="right")
    for title in ("iter / max", "val mIoU", "best"):
        table.add_column(title, justify="right")
    table.add_column("status")
    table.add_column("node")
    for row in rows:
        table.add_row(*_cells(row, names, best))
    return table


def _cells(row: TrialLine, names: list[str], stage_best: float | None) -> list[str | Text]:
    shown_best = lines.number(row.best) if row.best is None else f"{row.best:.2f}"
    status = row.status + (f": {row.reason}" if row.reason else "")
    return [
        row.label,
        *[lines.number(row.params.get(name)) for name in names],
        lines.iterations_text(row),
        "-" if row.val_miou is None else f"{row.val_miou:.2f}",
        Text(shown_best, style="bold green" if row.best is not None and row.best == stage_best else ""),
        Text(status, style=STATUS_STYLES.get(row.status, "")),
        row.node,
    ]


class PlainView:
    """Prints one line per stage and trial event; nothing is redrawn."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def _print(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def on_stage_end(self, board: Board) -> None:
        pass  # the next stage's line says enough

    def on_stage(self, board: Board) -> None:
        self._print(lines.stage_line(board.elapsed_s(), board.stage_title))

    def on_started(self, board: Board, line: TrialLine) -> None:
        self._print(lines.started_line(board.elapsed_s(), line))

    def on_improved(self, board: Board, line: TrialLine) -> None:
        self._print(lines.improved_line(board.elapsed_s(), line))

    def on_finished(self, board: Board, line: TrialLine) -> None:
        self._print(lines.finished_line(board.elapsed_s(), line))

    def on_message(self, board: Board, text: str) -> None:
        self._print(text)


class LiveView:
    """The stage, elapsed time, estimate and trial table redrawn in place; a finished stage leaves
    one line above it. Other code's output goes to the run log, or with --verbose above the table."""

    def __init__(self, console: Console, board: Board, *, redirect_output: bool = False) -> None:
        self.console = console
        self.live = Live(
            get_renderable=lambda: Group(board_header(board), board_table(board)),
            console=console,
            refresh_per_second=2,
            transient=True,
            redirect_stdout=redirect_output,  # --verbose: other output is printed above the table
            redirect_stderr=redirect_output,
        )

    def on_stage_end(self, board: Board) -> None:
        summary = stage_summary(board)
        if summary:
            self.console.print(f"[green]✓[/green] {summary}", highlight=False, soft_wrap=True)

    def on_stage(self, board: Board) -> None:
        pass  # the header shows it

    def on_started(self, board: Board, line: TrialLine) -> None:
        pass

    def on_improved(self, board: Board, line: TrialLine) -> None:
        pass

    def on_finished(self, board: Board, line: TrialLine) -> None:
        pass

    def on_message(self, board: Board, text: str) -> None:
        self.console.print(text, highlight=False, soft_wrap=True)


def stage_summary(board: Board) -> str | None:
    """`✓ stage: n trials, best b (label), mm:ss` for the stage that just ended; None if it had none."""
    with board.lock:
        rows = list(board.lines.values())
        if not board.stage_title or not rows:
            return None
        best = max((row for row in rows if row.best is not None), key=lambda row: row.best, default=None)
        best_text = f", best {best.best:.2f} ({best.label})" if best else ""
        failed = sum(row.status == "failed" for row in rows)
        failed_text = f", {failed} failed" if failed else ""
        took = lines.clock(board.stage_elapsed_s())
        return f"{board.stage_title}: {len(rows)} run(s){failed_text}{best_text}, {took}"


@contextmanager
def watching(board: Board, console: Console, *, redirect_output: bool = False) -> Iterator[Board]:
    """Shows `board` on `console` while the block runs: live when it is a terminal, else plain lines.
    `redirect_output`: Python's stdout and stderr are printed above the live table (--verbose)."""
    if not console.is_terminal:
        view = PlainView(console)
        board.views.append(view)
        try:
            yield board
        finally:
            board.views.remove(view)
        return
    live_view = LiveView(console, board, redirect_output=redirect_output)
    board.views.append(live_view)
    live_view.live.start()
    try:
        yield board
    finally:
        board.end_stage()
        live_view.live.stop()
        board.views.remove(live_view)
