"""The operator's own background loop (the reconcile pass), next to kopf's watch handlers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

logger = logging.getLogger("edgecompress.operator")


class PassLoop:
    """Runs a pass (in a thread) every ``interval`` seconds or when woken from any handler thread.

    Passes of one loop never overlap, so the reconcile pass cannot race itself; no finalizer is
    involved (kopf daemons and timers would put one on every CompressionJob).
    """

    def __init__(self, name: str, interval: float, run_pass: Callable[[], object]) -> None:
        self.interval, self.run_pass = interval, run_pass
        self.loop = asyncio.get_running_loop()
        self.wakeup = asyncio.Event()
        self.last_pass_succeeded = False
        self.task = asyncio.create_task(self._run(), name=name)

    def wake(self) -> None:
        self.loop.call_soon_threadsafe(self.wakeup.set)

    async def _run(self) -> None:
        while True:
            self.wakeup.clear()
            try:
                await asyncio.to_thread(self.run_pass)
                self.last_pass_succeeded = True
            except Exception:
                self.last_pass_succeeded = False
                logger.exception("%s pass failed; retrying in %s s", self.task.get_name(), self.interval)
            try:
                await asyncio.wait_for(self.wakeup.wait(), timeout=self.interval)
            except TimeoutError:
                pass
