"""The Argo CD health check, run by a real Lua 5.1 interpreter (Argo CD's gopher-lua speaks 5.1)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CONFIGMAP = ROOT / "gitops" / "argocd" / "argocd-cm.yaml"
HARNESS = Path(__file__).with_name("argocd_health_harness.lua")
KEY = "resource.customizations.health.edgecompress.io_CompressionJob"


def health(status: dict[str, Any] | None, generation: int = 1) -> dict[str, str]:
    lua = shutil.which("lua5.1")
    assert lua is not None, "lua5.1 not installed (apt-get install lua5.1 lua-cjson; .ci/run does)"
    script = yaml.safe_load(CONFIGMAP.read_text())["data"][KEY]
    body: dict[str, Any] = {
        "apiVersion": "edgecompress.io/v1alpha1",
        "kind": "CompressionJob",
        "metadata": {"name": "digits", "generation": generation},
    }
    if status is not None:
        body["status"] = status
    finished = subprocess.run(
        [lua, str(HARNESS)],
        input=json.dumps({"script": script, "object": body}),
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return json.loads(finished.stdout)  # type: ignore[no-any-return]


def status(phase: str, reason: str, message: str = "m", generation: int = 1, **extra: Any) -> dict[str, Any]:
    return {"phase": phase, "reason": reason, "message": message, "observedGeneration": generation, **extra}


@pytest.mark.parametrize(
    ("cr_status", "generation", "expected_status", "message_part"),
    [
        (None, 1, "Progressing", "waiting for the edgecompress operator"),
        (status("Pending", "Queued", "position 1 of 2 in the queue"), 1, "Progressing", "Queued: position 1 of 2"),
        (status("Pending", "Unschedulable", "0/3 nodes are available"), 1, "Progressing", "Unschedulable"),
        (
            status("Running", "Running", "the runner is working", progress={"percent": 42.5}),
            1,
            "Progressing",
            "(42.5%)",
        ),
        (status("Pending", "Suspended", "spec.suspend is true", generation=2), 2, "Suspended", "spec.suspend is true"),
        (
            status("Succeeded", "Succeeded", "all gates passed", promotedURI="s3://m/stable/model.tflite"),
            1,
            "Healthy",
            "promoted: s3://m/stable/model.tflite",
        ),
        (status("Failed", "GatesFailed", "size reduced by 10%"), 1, "Degraded", "GatesFailed: size reduced by 10%"),
        (status("Failed", "InvalidInput", "s3://b/m.keras: object not found"), 1, "Degraded", "InvalidInput"),
        (status("Succeeded", "Succeeded", generation=1), 2, "Progressing", "not yet seen generation 2"),
    ],
    ids=[
        "new",
        "queued",
        "unschedulable",
        "running",
        "suspended",
        "succeeded",
        "gates-failed",
        "bad-input",
        "stale-generation",
    ],
)
def test_health(cr_status: dict[str, Any] | None, generation: int, expected_status: str, message_part: str) -> None:
    found = health(cr_status, generation)
    assert found["status"] == expected_status
    assert message_part in found["message"]
