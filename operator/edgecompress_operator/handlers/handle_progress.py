"""Live progress of a running CompressionJob, read from the runner's JSON log lines.

The runner logs one JSON object per phase and per epoch (``--progress log``); the operator reads
the tail of the runner pod's log and copies the newest such line into ``.status.progress``. The
runner therefore needs no Kubernetes credentials at all.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from kubernetes.client import ApiException

from .. import kube
from ..manifests import RUNNER_CONTAINER

logger = logging.getLogger("edgecompress.progress")

LOG_TAIL_LINES = 40
PROGRESS_KEYS = ("phase", "epoch", "epochs", "percent")


def progress_from_log(log: str) -> dict[str, Any] | None:
    """The newest progress event in a runner log, as status.progress fields."""
    for line in reversed(log.splitlines()):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and entry.get("event") in ("phase", "epoch"):
            return {
                key: entry[key] for key in PROGRESS_KEYS if key in entry and not (key == "epochs" and not entry[key])
            }
    return None


def update_progress(namespace: str, name: str, job: str, previous: dict[str, Any] | None) -> dict[str, Any] | None:
    """Patches status.progress when the runner reported something new; returns the current progress."""
    pod = kube.runner_pod(namespace, job)
    if pod is None or pod.get("status", {}).get("phase") != "Running":
        return previous
    progress = progress_from_log(
        kube.pod_log_tail(namespace, pod["metadata"]["name"], RUNNER_CONTAINER, LOG_TAIL_LINES)
    )
    if progress is None:
        return previous
    if previous is not None and all(previous.get(key) == progress.get(key) for key in PROGRESS_KEYS):
        return previous
    progress["updateTime"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    kube.patch_status(namespace, name, {"progress": progress})
    return progress


def progress_pass(watch_namespace: str | None) -> int:
    """Refreshes the progress of every running CompressionJob; returns how many were read."""
    read = 0
    for resource in kube.list_compression_jobs(watch_namespace):
        status = resource.get("status") or {}
        if status.get("phase") != "Running" or not status.get("job"):
            continue
        meta = resource["metadata"]
        try:
            update_progress(meta["namespace"], meta["name"], status["job"], status.get("progress"))
            read += 1
        except ApiException as error:
            logger.info("progress of %s/%s not readable yet: %s", meta["namespace"], meta["name"], error.reason)
    return read
