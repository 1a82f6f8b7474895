"""Stops by Ctrl-C or SIGTERM, made first-class: Ray Tune answers the first SIGINT by saving its
state and returning normally with trials unfinished, so the caller must ask whether every trial
ended; `Interrupted` then carries the stop up to the command line, which exits with 130."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

TUNE_LOGGER = "ray.tune.tune"  # logs "Resume experiment with: Tuner.restore(...)", not our command


class Interrupted(KeyboardInterrupt):
    """Stopped on request (Ctrl-C, SIGTERM) with work unfinished; the same command with --resume
    continues it. A KeyboardInterrupt, so every `except BaseException` cleanup runs as for Ctrl-C."""


def unfinished(results: Iterable[Any], finished_key: str = "iteration") -> list[Any]:
    """Results of a Tune job's trials that neither failed nor made their final report (`finished_key`
    in their last metrics): what a graceful stop left to do."""
    return [result for result in results if result.error is None and finished_key not in (result.metrics or {})]


class _WithoutTunesRestoreHint(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Tuner.restore(" not in record.getMessage()


@contextmanager
def graceful_stops() -> Iterator[None]:
    """SIGTERM behaves like the first Ctrl-C (Tune saves its state, trials stay resumable) while the
    block runs in the main thread, and Tune's own resume hint (`Tuner.restore(...)`) is not printed:
    the command prints ours. A second Ctrl-C still stops at once, like `kill -9`."""
    hint_filter = _WithoutTunesRestoreHint()
    logging.getLogger(TUNE_LOGGER).addFilter(hint_filter)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if in_main_thread else None
    if in_main_thread:
        signal.signal(signal.SIGTERM, lambda number, frame: signal.raise_signal(signal.SIGINT))
    try:
        yield
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
        logging.getLogger(TUNE_LOGGER).removeFilter(hint_filter)
