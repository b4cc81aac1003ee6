"""The test node agent with the real Job controller: pods run as local processes and report back."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest

from tests.k8s.controlplane import ControlPlane
from tests.k8s.node_agent import NodeAgent
from tests.waiting import wait_until

pytestmark = pytest.mark.k8s

SCRIPT = (
    "import os, sys; open(sys.argv[1], 'w').write(os.environ['GREETING'] + ' ' + os.environ['TOKEN']); "
    "sys.exit(int(sys.argv[2]))"
)


def job(name: str, exit_code: int) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "backoffLimit": 3,
            "podFailurePolicy": {
                "rules": [
                    {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [21]}},
                ]
            },
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "main",
                            "image": "python:local",
                            "command": [sys.executable, "-c", SCRIPT],
                            "args": ["/dev/termination-log", str(exit_code)],
                            "env": [{"name": "GREETING", "value": "hello"}],
                            "envFrom": [{"secretRef": {"name": "agent-secret"}}],
                        }
                    ],
                }
            },
        },
    }


def job_condition(plane: ControlPlane, name: str) -> dict[str, Any] | None:
    status = json.loads(plane.kubectl("get", "job", name, "-o", "json").stdout).get("status", {})
    for condition in status.get("conditions", []):
        if condition["type"] in ("Complete", "Failed") and condition["status"] == "True":
            return condition  # type: ignore[no-any-return]
    return None


def pod_of(plane: ControlPlane, name: str) -> dict[str, Any]:
    pods = json.loads(plane.kubectl("get", "pods", "-l", f"job-name={name}", "-o", "json").stdout)["items"]
    return pods[0]  # type: ignore[no-any-return]


@pytest.fixture(scope="module", autouse=True)
def secret(control_plane: ControlPlane) -> None:
    control_plane.kubectl("create", "secret", "generic", "agent-secret", "--from-literal=TOKEN=s3cr3t")


def test_pod_runs_and_reports_its_termination_message(control_plane: ControlPlane, node_agent: NodeAgent) -> None:
    control_plane.kubectl("apply", "-f", "-", stdin=json.dumps(job("agent-ok", 0)))
    condition = wait_until(lambda: job_condition(control_plane, "agent-ok"), "the Job to finish", timeout=90)
    assert condition["type"] == "Complete"
    pod = pod_of(control_plane, "agent-ok")
    assert pod["spec"]["nodeName"] == node_agent.node_name and pod["status"]["phase"] == "Succeeded"
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 0 and terminated["message"] == "hello s3cr3t"


def test_exit_code_in_pod_failure_policy_fails_the_job_at_once(
    control_plane: ControlPlane, node_agent: NodeAgent
) -> None:
    control_plane.kubectl("apply", "-f", "-", stdin=json.dumps(job("agent-gates", 21)))
    condition = wait_until(lambda: job_condition(control_plane, "agent-gates"), "the Job to fail", timeout=90)
    assert condition["type"] == "Failed" and condition["reason"] == "PodFailurePolicy"
    pods = json.loads(control_plane.kubectl("get", "pods", "-l", "job-name=agent-gates", "-o", "json").stdout)["items"]
    assert len(pods) == 1
