"""Progress lines of a run: one per stage, with the time since the start, and a line every EVERY_S seconds of a long
loop (decoding, encoding, captioning), with its rate and ETA (stderr, through logging)."""

from __future__ import annotations

import datetime
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("clip4vla")


class Progress:
    """One line per stage with the time since start; under torchrun, rank 0 speaks for all."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def say(self, text: str) -> None:
        if os.environ.get("RANK", "0") == "0":
            log.info("[%6.1fs] %s", time.perf_counter() - self.start, text)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        begin = time.perf_counter()
        self.say(f"{name} ...")
        yield
        self.say(f"{name} done in {time.perf_counter() - begin:.1f}s")


# Seconds between two progress lines of a long loop: a multi-hour `prepare` or a 35 k-clip beam decoding says
# where it is at least this often, in a log that has no terminal.
EVERY_S = 30.0


class Ticker:
    """Progress of a counted loop as log lines, not a bar, so that it reads in a batch job's log: a line at most
    every EVERY_S seconds and one at the end, e.g. "decode x: 1200/4000 clips (30%), 41.3 clips/s, ETA 0:01:08"."""

    def __init__(self, label: str, total: int, unit: str, clock=time.perf_counter) -> None:
        self.label, self.total, self.unit, self.clock = label, total, unit, clock
        self.done = 0
        self.start = self.last = clock()

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.clock() - self.last >= EVERY_S and self.done < self.total:
            self._say()

    def close(self) -> None:
        """The last line (only for a loop that had something to do)."""
        if self.total:
            self._say()

    def _say(self) -> None:
        now = self.clock()
        self.last = now
        rate = self.done / max(now - self.start, 1e-9)
        left = (self.total - self.done) / rate if rate > 0 else 0.0
        if os.environ.get("RANK", "0") == "0":
            log.info("  %s: %d/%d %s (%d%%), %.3g %s/s, ETA %s", self.label, self.done, self.total, self.unit,
                     100 * self.done // max(self.total, 1), rate, self.unit, datetime.timedelta(seconds=round(left)))
