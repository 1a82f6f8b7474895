"""Feeds a training run's progress to the command's board, read from its MLflow metrics in a thread.

The workers log to MLflow; the driver polls the run's latest metrics, so the screen needs no
channel of its own into the Ray workers and works the same on a laptop and a cluster.
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any

from hwd_tune import tracking
from hwd_tune.console import Board, active_board


class ProgressMonitor:
    """Context manager: the run is one line of the board, with its iteration and validations."""

    def __init__(
        self,
        tracking_uri: str,
        run_id: str,
        max_iters: int,
        *,
        label: str,
        params: dict[str, Any] | None = None,
        board: Board | None = None,
        interval_s: float = 2.0,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self.max_iters = max_iters
        self.label = label
        self.params = dict(params or {})
        self.board = board or active_board()
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="hwd-progress", daemon=True)
        self._last_validation: tuple[float, float] | None = None  # (val_miou, best_val_miou) seen last

    def __enter__(self) -> ProgressMonitor:
        self.board.started(self.run_id, self.label, self.params, max_iters=self.max_iters)
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        metrics = self.update()
        if error is not None:
            status = "failed"
        else:
            status = "completed" if int(metrics.get("iteration", 0)) >= self.max_iters else "stopped early"
        self.board.finished(
            self.run_id,
            status,
            iteration=int(metrics.get("iteration", 0)),
            best=metrics.get("best_val_miou"),
            reason=None if error is None else f"{type(error).__name__}",
        )

    def update(self) -> dict[str, float]:
        """One poll: the latest metrics onto the board, a validation once (MLflow's latest values
        carry no step: a changed (val_miou, best_val_miou) pair is a new validation)."""
        try:
            metrics = tracking.latest_metrics(self.tracking_uri, self.run_id)
        except Exception:  # noqa: BLE001 - a transient store error must never kill the run
            return {}
        validation = (metrics["val_miou"], metrics.get("best_val_miou", 0.0)) if "val_miou" in metrics else None
        fresh = validation is not None and validation != self._last_validation
        self._last_validation = validation or self._last_validation
        self.board.result(self.run_id, int(metrics.get("iteration", 0)), metrics["val_miou"] if fresh else None)
        return metrics

    def _poll(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.update()
