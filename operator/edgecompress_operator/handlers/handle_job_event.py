"""A change of a runner Job or its pod: reflect it in its CompressionJob's status, with an Event per transition."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from edgecompress_contract.spec import KIND

from .. import kube
from ..admission import TERMINAL_PHASES
from ..events import post_event
from ..metrics import METRICS
from ..status import status_from_job


def reflect_job(job: dict[str, Any]) -> dict[str, Any] | None:
    owners = [ref for ref in job["metadata"].get("ownerReferences") or [] if ref.get("kind") == KIND]
    if not owners:
        return None
    namespace = job["metadata"]["namespace"]
    owner = kube.get_compression_job(namespace, owners[0]["name"])
    if owner is None or owner["metadata"].get("uid") != owners[0].get("uid"):
        return None
    previous = owner.get("status") or {}
    if previous.get("phase") in TERMINAL_PHASES:
        return None
    pod = kube.runner_pod(namespace, job["metadata"]["name"])
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    suspended = bool((owner.get("spec") or {}).get("suspend"))
    status = status_from_job(job, pod, int(owner["metadata"].get("generation", 1)), now, suspended)
    if all(previous.get(key) == status[key] for key in ("phase", "reason", "message")):
        return status
    kube.patch_status(namespace, owners[0]["name"], status)
    if status["phase"] in TERMINAL_PHASES:
        METRICS.record_completion(status)
    post_event(owner, status["reason"], f"{status['phase']}: {status['message']}", warning=status["phase"] == "Failed")
    return status


def reflect_pod(pod: dict[str, Any]) -> dict[str, Any] | None:
    """A runner pod changed (started, became unschedulable, finished): reflect its Job."""
    owners = [ref for ref in pod["metadata"].get("ownerReferences") or [] if ref.get("kind") == "Job"]
    if not owners:
        return None
    job = kube.get_job(pod["metadata"]["namespace"], owners[0]["name"])
    return None if job is None else reflect_job(job)
