"""Kubernetes Events on a CompressionJob, one per transition (what ``kubectl describe`` shows).

Posted with the Kubernetes client rather than kopf's event queue, which only exists inside kopf
handlers and not in the reconcile loop; a failure to post is logged and never fails the caller.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from kubernetes.client import ApiException

from . import kube
from .status import now_timestamp

EVENT_MESSAGE_LIMIT = 1000
COMPONENT = "edgecompress-operator"

logger = logging.getLogger("edgecompress.events")


def build_event(resource: dict[str, Any], reason: str, message: str, *, warning: bool, now: str) -> dict[str, Any]:
    meta = resource["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": resource.get("apiVersion"),
            "kind": resource.get("kind"),
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": "Warning" if warning else "Normal",
        "reason": reason,
        "message": message[:EVENT_MESSAGE_LIMIT],
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": socket.gethostname()[:128],
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


def post_event(resource: dict[str, Any], reason: str, message: str, warning: bool = False) -> None:
    now = now_timestamp()
    try:
        kube.create_event(build_event(resource, reason, message, warning=warning, now=now))
    except ApiException as error:
        logger.warning("could not post Event %s on %s: %s", reason, resource["metadata"]["name"], error.reason)
