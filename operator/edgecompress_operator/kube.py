"""The operator's Kubernetes API calls (the only module that talks to the apiserver)."""

from __future__ import annotations

from typing import Any

from kubernetes import client, config

from edgecompress_runner.spec import API_GROUP, API_VERSION

PLURAL = "compressionjobs"


def load_client_config() -> None:
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()


def create_job(manifest: dict[str, Any]) -> bool:
    """Creates the Job; an existing one (a retried handler, a restarted operator) is success. True if new."""
    try:
        client.BatchV1Api().create_namespaced_job(manifest["metadata"]["namespace"], manifest)
    except client.ApiException as error:
        if error.status == 409:
            return False
        raise
    return True


def runner_pod(namespace: str, job_name: str) -> dict[str, Any] | None:
    pods = client.CoreV1Api().list_namespaced_pod(namespace, label_selector=f"job-name={job_name}").items
    if not pods:
        return None
    newest = max(pods, key=lambda pod: pod.metadata.creation_timestamp)
    return client.ApiClient().sanitize_for_serialization(newest)  # type: ignore[no-any-return]


def patch_status(namespace: str, name: str, status: dict[str, Any]) -> None:
    client.CustomObjectsApi().patch_namespaced_custom_object_status(
        API_GROUP, API_VERSION, namespace, PLURAL, name, {"status": status}
    )


def get_compression_job(namespace: str, name: str) -> dict[str, Any] | None:
    try:
        found = client.CustomObjectsApi().get_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, name)
    except client.ApiException as error:
        if error.status == 404:
            return None
        raise
    return found  # type: ignore[no-any-return]
