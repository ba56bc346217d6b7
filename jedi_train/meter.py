"""Step accounting for the log line: loss, clips/s, data-wait % and learning rate."""
from __future__ import annotations

import time
from typing import Iterator


class StepMeter:
    """Times the wait for the next batch apart from the compute, over a window of steps."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.data_seconds = 0.0
        self.total_seconds = 0.0
        self.clips = 0
        self.steps = 0
        self._mark = time.perf_counter()

    def timed(self, batches) -> Iterator:
        """Yield from `batches`, charging the time spent inside next() to data wait."""
        iterator = iter(batches)
        while True:
            start = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                return
            self.data_seconds += time.perf_counter() - start
            yield batch

    def step_done(self, clips: int) -> None:
        now = time.perf_counter()
        self.total_seconds += now - self._mark
        self._mark = now
        self.clips += clips
        self.steps += 1

    @property
    def clips_per_second(self) -> float:
        return self.clips / max(self.total_seconds, 1e-9)

    @property
    def data_wait_percent(self) -> float:
        return 100.0 * self.data_seconds / max(self.total_seconds, 1e-9)

    def line(self, loss: float, lr: float, loader: str) -> str:
        return (f"loss {loss:.4f} | {self.clips_per_second:.1f} clips/s | data-wait {self.data_wait_percent:.1f}% "
                f"({loader}) | lr {lr:.2e}")
