"""Progress of long loops as plain log lines: one every few seconds, never a progress bar.

A task log is read after the fact and by people watching a run in the Airflow UI: a bar's carriage
returns turn into one unreadable line there. So a loop over many images (decoding, hashing,
training batches) reports through the logger a line at most every ``every_s`` seconds, with how
far it is, its rate and the time left, and one line when it ends.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["Progress"]


class Progress:
    """Counts units of work (``update``) and logs ``"<what>: 1,200/8,000 images (15%), 410/s, about
    17 s left"`` when ``every_s`` seconds have passed since the last line; ``done`` logs the total
    (with ``always=False`` only after a loop long enough to have logged a line: a short loop stays
    silent where another line already reports it, as an epoch's)."""

    def __init__(
        self,
        what: str,
        total: int,
        *,
        unit: str = "images",
        every_s: float = 10.0,
        logger: logging.Logger | None = None,
        clock: Callable[[], float] = time.monotonic,
        always: bool = True,
    ) -> None:
        self.what, self.total, self.unit, self.every_s = what, total, unit, every_s
        self.always, self.lines = always, 0
        self.log = logger or logging.getLogger("visionops.progress")
        self.clock = clock
        self.count = 0
        self.start = self.last = clock()

    def update(self, n: int = 1) -> None:
        self.count += n
        now = self.clock()
        if now - self.last >= self.every_s and self.count < self.total:
            self.last = now
            self.lines += 1
            self.log.info("%s", self.line(now))

    def line(self, now: float) -> str:
        elapsed = max(now - self.start, 1e-9)
        rate = self.count / elapsed
        share = f" ({100 * self.count / self.total:.0f}%)" if self.total else ""
        left = (self.total - self.count) / rate if rate > 0 else float("inf")
        return (
            f"{self.what}: {self.count:,}/{self.total:,} {self.unit}{share}, {rate:,.0f}/s, "
            f"about {left:,.0f} s left"
        )

    def done(self) -> None:
        if not (self.always or self.lines):
            return
        elapsed = self.clock() - self.start
        rate = self.count / elapsed if elapsed > 0 else 0.0
        self.log.info(
            "%s: %s %s in %.1f s (%s/s)",
            self.what,
            f"{self.count:,}",
            self.unit,
            elapsed,
            f"{rate:,.0f}",
        )
