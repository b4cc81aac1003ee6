"""The operator's own background loop (the reconcile pass), next to kopf's watch handlers."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

logger = logging.getLogger("edgecompress.operator")


@dataclass
class PassHealth:
    """When passes completed, for the probes: pure, so the bounds are unit-tested with plain numbers."""

    started: float = field(default_factory=time.monotonic)
    last_completed: float | None = None
    last_succeeded: bool = False

    def completed(self, *, succeeded: bool, now: float) -> None:
        self.last_completed, self.last_succeeded = now, succeeded

    def since_progress(self, now: float) -> float:
        """Seconds since the last completed pass (or since the start, before the first)."""
        return now - (self.last_completed if self.last_completed is not None else self.started)

    def ready(self, now: float, bound: float) -> bool:
        """The last pass succeeded and one completed within ``bound`` seconds."""
        return self.last_succeeded and self.since_progress(now) <= bound

    def alive(self, now: float, stall: float) -> bool:
        """A pass completed (successfully or not) within ``stall`` seconds: the loop is not hung."""
        return self.since_progress(now) <= stall


BATCH_SECONDS = 0.1
"""After a wake-up the loop waits this long, so a burst of watch events (a thousand new CompressionJobs, their
Jobs and pods) is handled by a few passes over many objects rather than by one pass per event."""


class PassLoop:
    """Runs a pass (in a thread) every ``interval`` seconds or when woken from any handler thread.

    Passes of one loop never overlap, so the reconcile pass cannot race itself; no finalizer is
    involved (kopf daemons and timers would put one on every CompressionJob).
    """

    def __init__(self, name: str, interval: float, run_pass: Callable[[], object]) -> None:
        self.interval, self.run_pass = interval, run_pass
        self.loop = asyncio.get_running_loop()
        self.wakeup = asyncio.Event()
        self.health = PassHealth()
        self.task = asyncio.create_task(self._run(), name=name)

    def wake(self) -> None:
        self.loop.call_soon_threadsafe(self.wakeup.set)

    async def _run(self) -> None:
        while True:
            self.wakeup.clear()
            try:
                await asyncio.to_thread(self.run_pass)
                self.health.completed(succeeded=True, now=time.monotonic())
            except Exception:
                self.health.completed(succeeded=False, now=time.monotonic())
                logger.exception("%s pass failed; retrying in %s s", self.task.get_name(), self.interval)
            try:
                await asyncio.wait_for(self.wakeup.wait(), timeout=self.interval)
                await asyncio.sleep(BATCH_SECONDS)
            except TimeoutError:
                pass
