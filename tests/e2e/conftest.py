"""A real control plane (etcd + kube-apiserver + kube-controller-manager) for the session, CRD installed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.k8s.controlplane import ControlPlane, build_binaries
from tests.k8s.node_agent import NodeAgent

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
