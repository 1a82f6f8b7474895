"""The training loop's test and benchmark hooks, in one place and off unless the loop config asks.

The loop calls `before_step` and `after_step` around each optimiser step and knows nothing else
of them, so its body reads as the algorithm alone. Keys of the loop config (never set by users):
- `fault_injection: {rank, iteration, marker}` kills that worker process once at that iteration
  (tests of Ray Train's restart from the last checkpoint; the marker file makes it once);
- `fail_at_iteration: N` raises at iteration N (tests of a trial that breaks);
- `timing_file: PATH` makes rank 0 append "iteration perf_counter process_time" after each step
  (benchmarks: wall and this process's CPU seconds).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class LoopHooks:
    """What one worker does besides training at named points of the loop; all off by default."""

    rank: int
    fault_injection: Mapping[str, Any] | None = None
    fail_at_iteration: int | None = None
    timing_file: str | None = None

    @classmethod
    def from_loop_config(cls, loop_config: Mapping[str, Any], rank: int) -> LoopHooks:
        """The hooks a loop config asks for (none for a user's run)."""
        return cls(
            rank=rank,
            fault_injection=loop_config.get("fault_injection"),
            fail_at_iteration=loop_config.get("fail_at_iteration"),
            timing_file=loop_config.get("timing_file"),
        )

    def before_step(self, iteration: int) -> None:
        """Before the step that goes from `iteration` to `iteration + 1`: the injected faults."""
        self._maybe_kill_worker(iteration)
        if self.fail_at_iteration is not None and iteration == self.fail_at_iteration:
            raise RuntimeError(f"failing on purpose at iteration {iteration} (loop_config fail_at_iteration test hook)")

    def after_step(self, iteration: int) -> None:
        """After the step that reached `iteration`: rank 0 records the time, if asked."""
        if self.timing_file and self.rank == 0:
            with open(self.timing_file, "a") as timing:
                timing.write(f"{iteration} {time.perf_counter()} {time.process_time()}\n")

    def _maybe_kill_worker(self, iteration: int) -> None:
        fault = self.fault_injection
        if not fault or self.rank != fault["rank"] or iteration != fault["iteration"]:
            return
        marker = Path(fault["marker"])
        if marker.exists():
            return
        marker.write_text(str(iteration))
        os._exit(1)
