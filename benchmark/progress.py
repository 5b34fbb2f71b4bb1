"""Progress lines of a run: one per stage and step, with the time since the start (stderr, through logging)."""

from __future__ import annotations

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
