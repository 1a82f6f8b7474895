"""A live progress display of a training run, read from its MLflow metrics in a thread.

The workers log to MLflow; the driver polls the run's latest metrics, so the display needs no
channel of its own into the Ray workers and works the same on a laptop and a cluster.
"""

from __future__ import annotations

import threading
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from hwd_tune import tracking


class ProgressMonitor:
    """Context manager: shows iteration / max_iters, the loss, lr and the last validation mIoU."""

    def __init__(
        self, tracking_uri: str, run_id: str, max_iters: int, *, console: Console | None = None, interval_s: float = 2.0
    ) -> None:
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self.max_iters = max_iters
        self.interval_s = interval_s
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="hwd-progress", daemon=True)
        self._task = self.progress.add_task("training", total=max_iters, status="starting workers...")

    def __enter__(self) -> ProgressMonitor:
        self.progress.start()
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.update()
        self.progress.stop()

    def update(self) -> None:
        """One poll: reads the latest metrics and refreshes the bar."""
        try:
            metrics = tracking.latest_metrics(self.tracking_uri, self.run_id)
        except Exception:  # noqa: BLE001 - a transient store error must never kill the run
            return
        if not metrics:
            return
        parts = []
        if "loss/total" in metrics:
            parts.append(f"loss {metrics['loss/total']:.4f}")
        if "lr" in metrics:
            parts.append(f"lr {metrics['lr']:.2e}")
        if "val_miou" in metrics:
            parts.append(f"val mIoU {metrics['val_miou']:.2f} (best {metrics.get('best_val_miou', 0.0):.2f})")
        if "images_per_s" in metrics:
            parts.append(f"{metrics['images_per_s']:.1f} img/s")
        self.progress.update(self._task, completed=int(metrics.get("iteration", 0)), status=" | ".join(parts))

    def _poll(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.update()
