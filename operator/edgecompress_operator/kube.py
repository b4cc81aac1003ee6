"""The operator's Kubernetes API calls (the only module that talks to the apiserver).

Every call has a time limit (``load_client_config``): a connection that went dead without FIN or
RST (a network partition) fails the call after the limit instead of hanging the pass forever.
"""

from __future__ import annotations

from typing import Any

from kubernetes import client, config

from edgecompress_contract.spec import API_GROUP, API_VERSION

from .crd import PLURAL

_timeout: tuple[float, float] | None = None


def load_client_config(timeout_seconds: float) -> None:
    global _timeout
    _timeout = (timeout_seconds, timeout_seconds)
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()


def _limit() -> dict[str, Any]:
    """The keyword argument that bounds one call: (connect, read) seconds."""
    return {"_request_timeout": _timeout}


def create_job(manifest: dict[str, Any]) -> bool:
    """Creates the Job; an existing one (a retried handler, a restarted operator) is success. True if new."""
    try:
        client.BatchV1Api().create_namespaced_job(manifest["metadata"]["namespace"], manifest, **_limit())
    except client.ApiException as error:
        if error.status == 409:
            return False
        raise
    return True


def list_pods(namespace: str | None, label_selector: str) -> list[dict[str, Any]]:
    api = client.CoreV1Api()
    if namespace:
        found = api.list_namespaced_pod(namespace, label_selector=label_selector, **_limit())
    else:
        found = api.list_pod_for_all_namespaces(label_selector=label_selector, **_limit())
    return [client.ApiClient().sanitize_for_serialization(pod) for pod in found.items]


def patch_status(namespace: str, name: str, changes: dict[str, Any]) -> None:
    """A JSON merge patch of the status subresource: the top-level status fields in ``changes``, nothing else."""
    client.CustomObjectsApi().patch_namespaced_custom_object_status(
        API_GROUP, API_VERSION, namespace, PLURAL, name, {"status": changes}, **_limit()
    )


def list_compression_jobs(namespace: str | None) -> list[dict[str, Any]]:
    api = client.CustomObjectsApi()
    if namespace:
        found = api.list_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, **_limit())
    else:
        found = api.list_cluster_custom_object(API_GROUP, API_VERSION, PLURAL, **_limit())
    return list(found["items"])


def list_jobs(namespace: str | None, label_selector: str) -> list[dict[str, Any]]:
    api = client.BatchV1Api()
    if namespace:
        found = api.list_namespaced_job(namespace, label_selector=label_selector, **_limit())
    else:
        found = api.list_job_for_all_namespaces(label_selector=label_selector, **_limit())
    return [client.ApiClient().sanitize_for_serialization(job) for job in found.items]


def set_job_suspended(namespace: str, name: str, suspended: bool) -> None:
    client.BatchV1Api().patch_namespaced_job(name, namespace, {"spec": {"suspend": suspended}}, **_limit())


def pod_log_tail(namespace: str, pod: str, container: str, lines: int) -> str:
    """The last lines of a container's log (raw bytes decoded here: the client would deserialize them as a repr)."""
    response = client.CoreV1Api().read_namespaced_pod_log(
        pod, namespace, container=container, tail_lines=lines, _preload_content=False, **_limit()
    )
    return bytes(response.data).decode("utf-8", errors="replace")


def failed_create_message(namespace: str, job_uid: str) -> str | None:
    """The newest FailedCreate Event of a Job (why the Job controller cannot create its pod), if any."""
    events = (
        client.CoreV1Api()
        .list_namespaced_event(
            namespace, field_selector=f"involvedObject.uid={job_uid},reason=FailedCreate", **_limit()
        )
        .items
    )
    if not events:
        return None
    newest = max(events, key=lambda event: str(event.last_timestamp or event.event_time or ""))
    return str(newest.message or "")


def create_event(event: dict[str, Any]) -> None:
    client.CoreV1Api().create_namespaced_event(event["metadata"]["namespace"], event, **_limit())
