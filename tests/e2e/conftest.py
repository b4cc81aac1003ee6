"""A real control plane (etcd + kube-apiserver + kube-controller-manager) for the session, CRD installed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from pathlib import Path

import pytest

from tests.k8s.controlplane import ControlPlane, build_binaries
from tests.k8s.node_agent import NodeAgent
from tests.processes import stop_process

CRD = Path(__file__).resolve().parents[2] / "crds" / "compressionjobs.edgecompress.io.yaml"


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    plane = ControlPlane(tmp_path_factory.mktemp("control-plane"), build_binaries())
    try:
        plane.start()
        plane.kubectl("apply", "-f", str(CRD))
        plane.kubectl("wait", "--for=condition=Established", "crd/compressionjobs.edgecompress.io", "--timeout=60s")
        deadline = time.monotonic() + 60
        while plane.kubectl("get", "compressionjobs", check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError("the CompressionJob resource never became available")
            time.sleep(1)
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def node_agent(control_plane: ControlPlane) -> Iterator[NodeAgent]:
    agent = NodeAgent(control_plane.kubeconfig)
    agent.start()
    try:
        yield agent
    finally:
        agent.stop()


@pytest.fixture(scope="session")
def operator_process(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The operator as a user runs it (kopf run), against the test control plane."""
    import json
    import os
    import subprocess
    import sys

    log_path = tmp_path_factory.mktemp("operator") / "operator.log"
    env = {
        **os.environ,
        "KUBECONFIG": str(control_plane.kubeconfig),
        "EDGECOMPRESS_RUNNER_IMAGE": "edgecompress-runner:test",
        "EDGECOMPRESS_RUNNER_COMMAND": json.dumps([sys.executable, "-m", "edgecompress_runner.cli"]),
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "kopf", "run", "--standalone", "--all-namespaces", "-m", "edgecompress_operator.main"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            yield process
        finally:
            stop_process(process, timeout=30)
