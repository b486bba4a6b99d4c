"""Progress lines for long runs that work the same in a terminal, a log file or a cluster worker's log."""

from __future__ import annotations

import logging
import time

log = logging.getLogger("mmindex")


class Progress:
    """Counts work in one process and logs a line with the rate at most every ``every_s`` seconds."""

    def __init__(self, what: str, unit: str = "samples", every_s: float = 5.0):
        self.what, self.unit, self.every_s = what, unit, every_s
        self.count = 0
        self.started = self.last = time.monotonic()

    def add(self, n: int = 1) -> None:
        self.count += n
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            rate = self.count / max(now - self.started, 1e-9)
            log.info("%s: %s %s (%s/s)", self.what, f"{self.count:,}", self.unit, f"{rate:,.0f}")
