"""kopf handlers: thin decorators only; the work is in handlers/. Started by ``edgecompress-operator`` (cli.py).

The watch handlers never write: they feed the metrics cache and wake the reconcile loop, whose pass
is the one writer of CompressionJob status (handlers/handle_reconcile.py).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import kopf

from edgecompress_contract.spec import API_GROUP, API_VERSION

from . import kube
from .config import load_config
from .crd import PLURAL
from .endpoints import start_servers
from .handlers.handle_reconcile import reconcile_pass
from .loops import PassLoop
from .manifests import JOB_LABEL
from .metrics import METRICS
from .status import parse_status

WATCH_SECONDS = 300
"""Watches are re-opened this often, so one that went silent (a dead connection) does not stay open."""


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config = memo.config if "config" in memo else load_config()
    memo.config = config
    kube.load_client_config(config.api_timeout_seconds)
    settings.watching.connect_timeout = config.api_timeout_seconds
    settings.watching.server_timeout = WATCH_SECONDS
    settings.watching.client_timeout = WATCH_SECONDS + config.api_timeout_seconds
    settings.posting.level = logging.WARNING
    memo.reconciler = PassLoop("reconcile", config.pass_interval_seconds, lambda: reconcile_pass(config))
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
    for server in memo.servers:
        await server.cleanup()


@kopf.on.event(API_GROUP, API_VERSION, PLURAL)
def on_compression_job_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    meta = body["metadata"]
    status = parse_status(meta["namespace"], meta["name"], body.get("status") or {})
    if type == "DELETED":
        METRICS.jobs.forget(meta["namespace"], meta["name"])
    else:
        METRICS.jobs.observe(meta["namespace"], meta["name"], status, meta.get("creationTimestamp"))
    if type != "MODIFIED" or meta.get("generation") != status.observed_generation:
        memo.reconciler.wake()


@kopf.on.event("batch", "v1", "jobs", labels={JOB_LABEL: kopf.PRESENT})
def on_job_event(memo: kopf.Memo, **_: Any) -> None:
    memo.reconciler.wake()


@kopf.on.event("", "v1", "pods", labels={JOB_LABEL: kopf.PRESENT})
def on_pod_event(memo: kopf.Memo, **_: Any) -> None:
    memo.reconciler.wake()
