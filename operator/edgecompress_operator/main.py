"""kopf handlers: thin decorators only; the work is in handlers/. Started by ``edgecompress-operator`` (cli.py).

kopf runs the operator (start-up, clean-up, signals, logging). What the operator watches it watches
through its own caches (informer.py: CompressionJobs, and runner Jobs and pods by label, server-side):
their events feed the metrics and wake the reconcile loop, whose pass reads the caches and is the one
writer of CompressionJob status (handlers/handle_reconcile.py).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import kopf

from . import kube
from .config import load_config
from .endpoints import start_servers
from .handlers.handle_reconcile import PassMemory, reconcile_pass
from .informer import ClusterCache
from .loops import PassLoop
from .manifests import JOB_LABEL
from .metrics import METRICS
from .status import parse_status

WATCH_CONNECTIONS = 3
"""Connections the three watches hold open, next to the parallel writes of a pass."""


class CachesNotCurrent(RuntimeError):
    """A pass before every cache has listed once would take missing objects for absent ones, and one whose watch
    cannot reach the apiserver would miss new CompressionJobs: the pass fails, so /readyz does."""


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config = memo.config if "config" in memo else load_config()
    memo.config = config
    kube.load_client_config(config.api_timeout_seconds, config.max_parallel_writes + WATCH_CONNECTIONS + 2)
    settings.posting.level = logging.WARNING

    def on_event(kind: str, event: str, item: dict[str, Any]) -> None:
        if kind == kube.COMPRESSION_JOBS:
            meta = item["metadata"]
            status = parse_status(meta["namespace"], meta["name"], item.get("status") or {})
            if event == "DELETED":
                METRICS.jobs.forget(meta["namespace"], meta["name"])
            else:
                METRICS.jobs.observe(meta["namespace"], meta["name"], status, meta.get("creationTimestamp"))
            if event == "MODIFIED" and meta.get("generation") == status.observed_generation:
                return  # its own status write: nothing new to reconcile
        memo.reconciler.wake()

    cluster = ClusterCache.watching(config.watch_namespace, JOB_LABEL, on_event)
    memory = PassMemory()

    def run_pass() -> object:
        if not cluster.wait_synced(config.api_timeout_seconds):
            raise CachesNotCurrent("the watch caches have not listed CompressionJobs, Jobs and pods yet")
        if not cluster.current():
            raise CachesNotCurrent("a watch cache cannot reach the apiserver; it lists again and the pass retries")
        return reconcile_pass(config, cluster, memory)

    memo.cluster = cluster
    memo.reconciler = PassLoop("reconcile", config.pass_interval_seconds, run_pass)
    cluster.start()
    memo.servers = await start_servers(
        METRICS.registry,
        config.metrics_port,
        config.health_port,
        alive=lambda: (
            not memo.reconciler.task.done()
            and memo.reconciler.health.alive(time.monotonic(), config.liveness_stall_seconds)
        ),
        ready=lambda: memo.reconciler.health.ready(time.monotonic(), config.readiness_bound_seconds),
    )


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    memo.reconciler.task.cancel()
    memo.cluster.stop()
    for server in memo.servers:
        await server.cleanup()
