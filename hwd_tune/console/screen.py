"""A command's screen from start to end: Ray's and the libraries' output captured in the run log
(its path printed first), and the command's board shown on the console while it runs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console

from hwd_tune.console.board import Board, showing
from hwd_tune.console.run_log import RunLog
from hwd_tune.console.views import watching


@contextmanager
def command_screen(console: Console, run_log: RunLog, *, verbose: bool = False) -> Iterator[Board]:
    """Captures the output into `run_log` (unless `verbose`) and shows the active board on `console`."""
    with run_log.capture(console, verbose=verbose) as path:
        where = "" if verbose else " (Ray's and Tune's own output; --verbose shows it here)"
        console.print(f"log: {path}{where}", soft_wrap=True, markup=False, highlight=False)
        board = Board()
        with showing(board), watching(board, console, redirect_output=verbose):
            yield board
