"""The timing every benchmark records: wall seconds and the cpu-time / wall-time ratio since creation."""

from __future__ import annotations

import time


class Clock:
    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def seconds(self) -> float:
        return time.perf_counter() - self.wall

    def ratio(self) -> float:
        return (time.process_time() - self.cpu) / self.seconds()
