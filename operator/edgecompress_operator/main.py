"""kopf handlers: thin decorators only; the work is in handlers/. Started by ``edgecompress-operator`` (cli.py)."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from edgecompress_contract.spec import API_GROUP, API_VERSION

from . import kube
from .config import load_config
from .crd import PLURAL
from .endpoints import start_servers
from .handlers.handle_admission import admission_pass
from .handlers.handle_job_event import reflect_job, reflect_pod
from .handlers.handle_progress import progress_pass
from .loops import PassLoop
from .manifests import JOB_LABEL
from .metrics import METRICS


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config = memo.config if "config" in memo else load_config()
    memo.config = config
    kube.load_client_config()
    settings.posting.level = logging.WARNING
    memo.admission = PassLoop("admission", config.admission_interval_seconds, lambda: admission_pass(config))
    memo.progress = PassLoop(
        "progress", config.progress_interval_seconds, lambda: progress_pass(config.watch_namespace)
    )
    memo.servers = await start_servers(
        METRICS.registry,
        config.metrics_port,
        config.health_port,
        alive=lambda: not (memo.admission.task.done() or memo.progress.task.done()),
        ready=lambda: memo.admission.last_pass_succeeded,
    )


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    memo.admission.task.cancel()
    memo.progress.task.cancel()
    for server in memo.servers:
        await server.cleanup()


@kopf.on.event(API_GROUP, API_VERSION, PLURAL)
def on_compression_job_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    meta, status = body["metadata"], dict(body.get("status") or {})
    if type == "DELETED":
        METRICS.jobs.forget(meta["namespace"], meta["name"])
    else:
        METRICS.jobs.observe(meta["namespace"], meta["name"], status, meta.get("creationTimestamp"))
    if type != "MODIFIED" or meta.get("generation") != status.get("observedGeneration"):
        memo.admission.wake()


@kopf.on.event("batch", "v1", "jobs", labels={JOB_LABEL: kopf.PRESENT})
def on_job_event(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    reflect_job(dict(body))
    memo.admission.wake()


@kopf.on.event("", "v1", "pods", labels={JOB_LABEL: kopf.PRESENT})
def on_pod_event(body: kopf.Body, **_: Any) -> None:
    reflect_pod(dict(body))
