"""The operator's Kubernetes API calls (the only module that talks to the apiserver).

Every call has a time limit (``load_client_config``): a connection that went dead without FIN or
RST (a network partition) fails the call after the limit instead of hanging the pass forever.
All calls share one client and its connection pool (sized for the parallel writes of a pass and
the watches), and read the apiserver's JSON as plain dicts, as the watch-fed caches keep them.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from typing import Any

from kubernetes import client, config
from kubernetes.watch.watch import iter_resp_lines

from edgecompress_contract.spec import API_GROUP, API_VERSION

from .crd import PLURAL

COMPRESSION_JOBS, JOBS, PODS, EVENTS = "compressionjobs", "jobs", "pods", "events"
WATCHED_KINDS = (COMPRESSION_JOBS, JOBS, PODS, EVENTS)

_timeout: tuple[float, float] | None = None
_api_client: client.ApiClient | None = None


def load_client_config(timeout_seconds: float, connections: int = 16) -> None:
    """One shared client whose pool keeps ``connections`` connections open (no TLS handshake per call)."""
    global _timeout, _api_client
    _timeout = (timeout_seconds, timeout_seconds)
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        config.load_kube_config(client_configuration=configuration)
    configuration.connection_pool_maxsize = connections
    _api_client = client.ApiClient(configuration)


def _client() -> client.ApiClient:
    if _api_client is None:
        raise RuntimeError("kube.load_client_config() was not called")
    return _api_client


def _limit() -> dict[str, Any]:
    """The keyword arguments of one bounded call: (connect, read) seconds, and the raw JSON response."""
    return {"_request_timeout": _timeout, "_preload_content": False}


def _json(response: Any) -> Any:
    return json.loads(response.data)


def create_job(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """Creates the Job and returns it as stored; None when it exists (a retried pass, a restarted operator)."""
    try:
        response = client.BatchV1Api(_client()).create_namespaced_job(
            manifest["metadata"]["namespace"], manifest, **_limit()
        )
    except client.ApiException as error:
        if error.status == 409:
            return None
        raise
    return _json(response)  # type: ignore[no-any-return]


def read_job(namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return _json(client.BatchV1Api(_client()).read_namespaced_job(name, namespace, **_limit()))  # type: ignore[no-any-return]
    except client.ApiException as error:
        if error.status == 404:
            return None
        raise


def delete_job(namespace: str, name: str) -> None:
    """Deletes the Job, its pods in the background (garbage collection); a Job already gone is success."""
    try:
        client.BatchV1Api(_client()).delete_namespaced_job(name, namespace, propagation_policy="Background", **_limit())
    except client.ApiException as error:
        if error.status != 404:
            raise


def list_job_pods(namespace: str, job: str) -> list[dict[str, Any]]:
    """The pods of one Job, read directly (to confirm what the cache shows when its Job has finished)."""
    response = client.CoreV1Api(_client()).list_namespaced_pod(namespace, label_selector=f"job-name={job}", **_limit())
    return list(_json(response)["items"])


def patch_status(namespace: str, name: str, changes: dict[str, Any], resource_version: str) -> dict[str, Any]:
    """A JSON merge patch of the status subresource, made only if the object is still at ``resource_version``.

    The apiserver refuses it with 409 when the CompressionJob changed since it was read, so a write
    computed from an outdated view never lands, and a phase change recorded by it happened exactly once.
    Returns the CompressionJob as stored.
    """
    response = client.CustomObjectsApi(_client()).patch_namespaced_custom_object_status(
        API_GROUP,
        API_VERSION,
        namespace,
        PLURAL,
        name,
        {"metadata": {"resourceVersion": resource_version}, "status": changes},
        **_limit(),
    )
    return _json(response)  # type: ignore[no-any-return]


def read_compression_job(namespace: str, name: str) -> dict[str, Any] | None:
    try:
        response = client.CustomObjectsApi(_client()).get_namespaced_custom_object(
            API_GROUP, API_VERSION, namespace, PLURAL, name, **_limit()
        )
    except client.ApiException as error:
        if error.status == 404:
            return None
        raise
    return _json(response)  # type: ignore[no-any-return]


def _list_call(kind: str, namespace: str | None) -> Callable[..., Any]:
    """The list method of a watched kind, with its leading arguments bound (it also opens watches)."""
    if kind == COMPRESSION_JOBS and namespace:
        return lambda **kw: client.CustomObjectsApi(_client()).list_namespaced_custom_object(
            API_GROUP, API_VERSION, namespace, PLURAL, **kw
        )
    if kind == COMPRESSION_JOBS:
        return lambda **kw: client.CustomObjectsApi(_client()).list_cluster_custom_object(
            API_GROUP, API_VERSION, PLURAL, **kw
        )
    if kind == JOBS and namespace:
        return lambda **kw: client.BatchV1Api(_client()).list_namespaced_job(namespace, **kw)
    if kind == JOBS:
        return lambda **kw: client.BatchV1Api(_client()).list_job_for_all_namespaces(**kw)
    if kind == PODS and namespace:
        return lambda **kw: client.CoreV1Api(_client()).list_namespaced_pod(namespace, **kw)
    if kind == PODS:
        return lambda **kw: client.CoreV1Api(_client()).list_pod_for_all_namespaces(**kw)
    if kind == EVENTS and namespace:
        return lambda **kw: client.CoreV1Api(_client()).list_namespaced_event(namespace, **kw)
    if kind == EVENTS:
        return lambda **kw: client.CoreV1Api(_client()).list_event_for_all_namespaces(**kw)
    raise ValueError(f"not a watched kind: {kind}")


Selectors = dict[str, str]
"""``label_selector`` and/or ``field_selector`` of a list or watch, applied by the apiserver."""


def list_objects(kind: str, namespace: str | None, selectors: Selectors) -> tuple[list[dict[str, Any]], str]:
    """All objects of a kind (within the time limit) and the resourceVersion to watch from."""
    found = _json(_list_call(kind, namespace)(**selectors, **_limit()))
    return list(found["items"]), str(found["metadata"]["resourceVersion"])


def watch_objects(
    kind: str, namespace: str | None, selectors: Selectors, resource_version: str, seconds: int
) -> tuple[Iterator[dict[str, Any]], Callable[[], None]]:
    """Watch events after ``resource_version`` (with bookmarks) and a function that ends the stream at once.

    The apiserver ends the watch after ``seconds``; the client gives up when nothing (not even a
    bookmark) arrives for ``seconds`` plus the API time limit, so a dead connection does not stay open.
    """
    assert _timeout is not None
    response = _list_call(kind, namespace)(
        **selectors,
        watch=True,
        allow_watch_bookmarks=True,
        resource_version=resource_version,
        timeout_seconds=seconds,
        _request_timeout=(_timeout[0], seconds + _timeout[1]),
        _preload_content=False,
    )

    def events() -> Iterator[dict[str, Any]]:
        try:
            for line in iter_resp_lines(response):
                yield json.loads(line)
        finally:
            response.release_conn()

    def end() -> None:
        """Shuts the connection's socket down, which ends a read blocked on it in another thread at once; closing
        the response from another thread would wait for that read (up to the watch's length: a slow shutdown)."""
        connection = response.connection
        sock = getattr(connection, "sock", None) if connection is not None else None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:  # already closed
                pass

    return events(), end


def set_job_suspended(namespace: str, name: str, suspended: bool) -> None:
    client.BatchV1Api(_client()).patch_namespaced_job(name, namespace, {"spec": {"suspend": suspended}}, **_limit())


def pod_log_tail(namespace: str, pod: str, container: str, lines: int) -> str:
    """The last lines of a container's log (raw bytes decoded here: the client would deserialize them as a repr)."""
    response = client.CoreV1Api(_client()).read_namespaced_pod_log(
        pod, namespace, container=container, tail_lines=lines, **_limit()
    )
    return bytes(response.data).decode("utf-8", errors="replace")


def create_event(event: dict[str, Any]) -> None:
    client.CoreV1Api(_client()).create_namespaced_event(event["metadata"]["namespace"], event, **_limit())
