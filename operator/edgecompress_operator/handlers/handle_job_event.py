"""A change of a runner Job: reflect it in its CompressionJob's status, with an Event per transition."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, cast

import kopf

from edgecompress_runner.spec import KIND

from .. import kube
from ..status import status_from_job


def reflect_job(job: dict[str, Any]) -> dict[str, Any] | None:
    owners = [ref for ref in job["metadata"].get("ownerReferences") or [] if ref.get("kind") == KIND]
    if not owners:
        return None
    namespace = job["metadata"]["namespace"]
    owner = kube.get_compression_job(namespace, owners[0]["name"])
    if owner is None or owner["metadata"].get("uid") != owners[0].get("uid"):
        return None
    previous = (owner.get("status") or {}).get("phase")
    if previous in ("Succeeded", "Failed"):
        return None
    pod = kube.runner_pod(namespace, job["metadata"]["name"])
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    status = status_from_job(job, pod, int(owner["metadata"].get("generation", 1)), now)
    if status["phase"] == previous and (owner.get("status") or {}).get("reason") == status["reason"]:
        return status
    kube.patch_status(namespace, owners[0]["name"], status)
    post = kopf.warn if status["phase"] == "Failed" else kopf.info
    post(kopf.Body(cast(kopf.RawBody, owner)), reason=status["reason"], message=f"{status['phase']}: {status['message']}"[:1000])
    return status
