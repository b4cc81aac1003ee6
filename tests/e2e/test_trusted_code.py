"""trustCode in a CompressionJob is honoured only when the operator allows it (it does not here, the default)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from tests.k8s.controlplane import ControlPlane
from tests.k8s.node_agent import NodeAgent
from tests.waiting import wait_until

pytestmark = [pytest.mark.k8s, pytest.mark.s3, pytest.mark.tf]

NAME = "trusts-its-model"


def get(plane: ControlPlane, *args: str) -> dict[str, Any]:
    return json.loads(plane.kubectl("get", *args, "-o", "json").stdout)  # type: ignore[no-any-return]


def test_trust_code_without_the_operators_permission_fails_without_a_job(
    control_plane: ControlPlane, node_agent: NodeAgent, operator_process: Any, demo_bucket: Any
) -> None:
    document = {
        "apiVersion": "edgecompress.io/v1alpha1",
        "kind": "CompressionJob",
        "metadata": {"name": NAME},
        "spec": {
            "model": {"uri": "s3://edgecompress-demo/models/digits.keras", "format": "keras", "trustCode": True},
            "steps": [{"type": "ptq", "mode": "dynamic"}],
            "output": {"uri": f"s3://edgecompress-demo/compressed/{NAME}/"},
            "credentials": {"secretName": "edgecompress-s3"},
        },
    }
    control_plane.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(document))
    assert get(control_plane, "compressionjob", NAME)["spec"]["model"]["trustCode"] is True, "the CRD dropped the field"

    def failed() -> dict[str, Any] | None:
        status = get(control_plane, "compressionjob", NAME).get("status") or {}
        return status if status.get("phase") in ("Failed", "Succeeded", "Running") else None

    status = wait_until(failed, f"{NAME} to fail", 120)
    assert status["phase"] == "Failed" and status["reason"] == "TrustedCodeNotAllowed", status
    assert status["message"].startswith("spec.model.trustCode: true asks to run Python code stored in the model file")
    assert "operator.config.allowTrustedCode" in status["message"]
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "TrustedCodeNotAllowed"

    def events() -> set[tuple[str, str]]:
        found = get(control_plane, "events", "--field-selector", f"involvedObject.name={NAME}")["items"]
        return {(event["reason"], event["type"]) for event in found}

    wait_until(events, "the Event (posted right after the status write)", 30)
    assert events() == {("TrustedCodeNotAllowed", "Warning")}
    # Later admission passes leave it alone: still no Job, nothing uploaded.
    operator_process.restart()
    assert get(control_plane, "compressionjob", NAME)["status"]["reason"] == "TrustedCodeNotAllowed"
    assert get(control_plane, "jobs", "-l", f"edgecompress.io/compressionjob={NAME}")["items"] == []
    listed = demo_bucket.list_objects_v2(Bucket="edgecompress-demo", Prefix=f"compressed/{NAME}/")
    assert listed.get("KeyCount", 0) == 0


@pytest.mark.parametrize(
    ("name", "changes", "reason", "field"),
    [
        ("own-image", {"execution": {"image": "attacker.example/miner:latest"}}, "NotAllowed", "spec.execution.image"),
        (
            "own-account",
            {"execution": {"serviceAccountName": "default"}},
            "NotAllowed",
            "spec.execution.serviceAccountName",
        ),
        ("local-output", {"output": {"uri": "/tmp/out/"}}, "LocalURI", "spec.output.uri"),
    ],  # fmt: skip
    ids=["image", "service-account", "local-path"],
)
def test_what_a_spec_may_not_choose_fails_without_a_job(
    name: str,
    changes: dict[str, Any],
    reason: str,
    field: str,
    control_plane: ControlPlane,
    node_agent: NodeAgent,
    operator_process: Any,
    demo_bucket: Any,
) -> None:
    spec = {
        "model": {"uri": "s3://edgecompress-demo/models/digits.keras", "format": "keras"},
        "steps": [{"type": "ptq", "mode": "dynamic"}],
        "output": {"uri": f"s3://edgecompress-demo/compressed/{name}/"},
        "credentials": {"secretName": "edgecompress-s3"},
        **changes,
    }
    document = {"apiVersion": "edgecompress.io/v1alpha1", "kind": "CompressionJob", "metadata": {"name": name}}
    control_plane.kubectl("apply", "-f", "-", stdin=yaml.safe_dump({**document, "spec": spec}))
    status = wait_until(
        lambda: (s := get(control_plane, "compressionjob", name).get("status") or {}).get("phase") and s,
        f"{name} to get a phase",
        120,
    )
    assert (status["phase"], status["reason"]) == ("Failed", reason), status
    assert status["message"].startswith(f"{field}: "), status["message"]
    assert get(control_plane, "jobs", "-l", f"edgecompress.io/compressionjob={name}")["items"] == []
    control_plane.kubectl("delete", "compressionjob", name, "--wait=true")
