"""The operator's RBAC rules are exactly the API calls it makes: nothing missing, nothing unused, no '*'."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "charts" / "edgecompress" / "files" / "operator-rules.yaml"
KUBE = ROOT / "operator" / "edgecompress_operator" / "kube.py"

# kubernetes-client method -> (API group, resource, verb)
CLIENT_CALLS = {
    "create_namespaced_job": ("batch", "jobs", "create"),
    "read_namespaced_job": ("batch", "jobs", "get"),
    "list_namespaced_job": ("batch", "jobs", "list"),
    "list_job_for_all_namespaces": ("batch", "jobs", "list"),
    "patch_namespaced_job": ("batch", "jobs", "patch"),
    "delete_namespaced_job": ("batch", "jobs", "delete"),
    "list_namespaced_pod": ("", "pods", "list"),
    "list_pod_for_all_namespaces": ("", "pods", "list"),
    "read_namespaced_pod_log": ("", "pods/log", "get"),
    "get_namespaced_custom_object": ("edgecompress.io", "compressionjobs", "get"),
    "list_namespaced_custom_object": ("edgecompress.io", "compressionjobs", "list"),
    "list_cluster_custom_object": ("edgecompress.io", "compressionjobs", "list"),
    "patch_namespaced_custom_object_status": ("edgecompress.io", "compressionjobs/status", "patch"),
    "create_namespaced_event": ("", "events", "create"),
    "list_namespaced_event": ("", "events", "list"),
    "list_event_for_all_namespaces": ("", "events", "list"),
}
# The watches of informer.py's caches (kube.watch_objects: the list methods above with watch=True).
WATCH_CALLS = {
    ("edgecompress.io", "compressionjobs", "watch"),
    ("batch", "jobs", "watch"),
    ("", "pods", "watch"),
    ("", "events", "watch"),
}
# kopf's own calls: its scan of CRDs.
KOPF_CALLS = {
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
}


# Resources without a namespace; everything else the operator touches lives in the CompressionJob's namespace.
CLUSTER_SCOPED = {("apiextensions.k8s.io", "customresourcedefinitions")}


def granted(scope: str | None = None) -> set[tuple[str, str, str]]:
    """(group, resource, verb) granted by the rules of one scope ("namespaced" or "cluster"), or of both."""
    rules = yaml.safe_load(RULES.read_text())
    scopes = [scope] if scope else ["namespaced", "cluster"]
    return {
        (group, resource, verb)
        for name in scopes
        for rule in rules[name]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def client_methods_called() -> set[str]:
    tree = ast.parse(KUBE.read_text())
    return {
        node.func.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Call)
        and isinstance(node.func.value.func, ast.Attribute)
        and node.func.value.func.attr.endswith("Api")
    }


def test_every_client_call_is_known() -> None:
    assert client_methods_called() - set(CLIENT_CALLS) == set()


def test_rules_are_exactly_what_the_code_calls() -> None:
    needed = {CLIENT_CALLS[method] for method in client_methods_called()} | WATCH_CALLS | KOPF_CALLS
    assert granted() == needed


def test_no_wildcards() -> None:
    assert not [item for item in granted() if "*" in item]


@pytest.mark.parametrize("scope, cluster_scoped", [("namespaced", False), ("cluster", True)])
def test_rules_are_filed_under_their_scope(scope: str, cluster_scoped: bool) -> None:
    """With watchNamespace the chart grants the namespaced rules by a Role, which cannot grant cluster-scoped ones."""
    misplaced = {
        (group, resource)
        for group, resource, _ in granted(scope)
        if ((group, resource) in CLUSTER_SCOPED) != cluster_scoped
    }
    assert misplaced == set()
