"""A command's run log: Ray's, Tune's and the libraries' console output (worker logs, Tune's status
tables, warnings, C++ log lines) goes to `<output_dir>/logs/<time>-<command>.log` instead of the
terminal, which keeps only the command's own screen; with `verbose` it all stays on the terminal.

The redirect is of the process's file descriptors 1 and 2 (and Python's sys.stdout and sys.stderr),
so it also catches what Ray's C++ core writes and the lines Ray forwards from its workers; the
command's `rich` console is pointed at a copy of the original stdout."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path
from typing import IO

from rich.console import Console

LOGS_FOLDER = "logs"  # under the run's output folder
QUIET_LIBRARIES = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}  # tqdm bars make a log unreadable


class RunLog:
    """Where one command's output goes; nothing is written until `capture` starts."""

    def __init__(self, output_dir: str | Path, command: str) -> None:
        self.path = (Path(output_dir) / LOGS_FOLDER / f"{time.strftime('%Y%m%d-%H%M%S')}-{command}.log").resolve()
        self.opened = False

    @contextmanager
    def capture(self, console: Console, *, verbose: bool = False) -> Iterator[Path]:
        """While the block runs, fds 1 and 2 write to the log (unless `verbose`) and `console`
        writes to the terminal. Where stdout has no file descriptor (an in-process test runner),
        nothing is redirected."""
        for name, value in QUIET_LIBRARIES.items():
            os.environ.setdefault(name, value)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch()
        self.opened = True
        if verbose or not _has_descriptors():
            yield self.path
            return
        with (
            open(self.path, "a", buffering=1) as log,
            _descriptors_to(log) as terminal,
            redirect_stdout(log),  # Python's streams too, where they are not fd 1 and 2 themselves
            redirect_stderr(log),
        ):
            previous = getattr(console, "_file", None)  # None: the console follows sys.stdout
            console.file = terminal
            try:
                yield self.path
            finally:
                console.file = previous

    def append(self, text: str) -> Path:
        """Adds `text` (a traceback) to the log, creating it if the command failed before `capture`."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as log:
            log.write(text)
        return self.path


def _has_descriptors() -> bool:
    try:
        sys.stdout.fileno()
        sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    return True


@contextmanager
def _descriptors_to(log: IO[str]) -> Iterator[IO[str]]:
    """Points fds 1 and 2 at `log`; yields a text stream on the original stdout; restores both."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    terminal = os.fdopen(os.dup(saved_out), "w", buffering=1, encoding=sys.stdout.encoding or "utf-8")
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    try:
        yield terminal
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        terminal.flush()
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        os.close(saved_out)
        os.close(saved_err)
        terminal.close()
