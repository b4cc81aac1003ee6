"""A real control plane (etcd + kube-apiserver + kube-controller-manager) for the session, CRD installed."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


class OperatorProcess:
    """The operator as a user runs it (kopf run), against the test control plane; restartable."""

    def __init__(self, control_plane: ControlPlane, log_dir: Path) -> None:
        import json
        import os
        import sys

        self.log_dir = log_dir
        self.starts = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.command = [sys.executable, "-m", "kopf", "run", "--standalone", "--all-namespaces",
                        "-m", "edgecompress_operator.main"]
        self.env = {
            **os.environ,
            "KUBECONFIG": str(control_plane.kubeconfig),
            "EDGECOMPRESS_RUNNER_IMAGE": "edgecompress-runner:test",
            "EDGECOMPRESS_RUNNER_COMMAND": json.dumps([sys.executable, "-m", "edgecompress_runner.cli"]),
        }

    def start(self) -> None:
        self.starts += 1
        with (self.log_dir / f"operator-{self.starts}.log").open("wb") as log:
            self.process = subprocess.Popen(self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=30)

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture(scope="session")
def operator_process(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    operator = OperatorProcess(control_plane, tmp_path_factory.mktemp("operator"))
    operator.start()
    try:
        yield operator
    finally:
        operator.stop()
