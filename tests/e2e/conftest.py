"""A real control plane (etcd + kube-apiserver + kube-controller-manager) for the session, CRD installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import MinioServer
from tests.k8s.controlplane import ControlPlane, build_binaries, free_port
from tests.k8s.node_agent import NodeAgent
from tests.k8s.tcp_proxy import TcpProxy
from tests.processes import http_status

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


OPERATOR_RULES = Path(__file__).resolve().parents[2] / "charts" / "edgecompress" / "files" / "operator-rules.yaml"
OPERATOR_NAMESPACE = "edgecompress-system"
MAX_CONCURRENT_JOBS = 2
API_TIMEOUT_SECONDS = 5
START_TIMEOUT_SECONDS = 20


def operator_kubeconfig(control_plane: ControlPlane, path: Path, server: str | None = None) -> Path:
    """A kubeconfig with the token of a ServiceAccount bound to the operator's RBAC rules (not admin).

    ``server`` replaces the apiserver's address (the operator then reaches it through a proxy).
    """
    rules_by_scope = yaml.safe_load(OPERATOR_RULES.read_text())
    rules = rules_by_scope["namespaced"] + rules_by_scope["cluster"]
    objects = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "edgecompress-operator", "namespace": OPERATOR_NAMESPACE},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "edgecompress-operator"},
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "edgecompress-operator"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "edgecompress-operator",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "edgecompress-operator", "namespace": OPERATOR_NAMESPACE}],
        },
    ]
    control_plane.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(objects))
    token = control_plane.kubectl(
        "create", "token", "edgecompress-operator", "-n", OPERATOR_NAMESPACE, "--duration=24h"
    ).stdout.strip()
    config = yaml.safe_load(control_plane.kubeconfig.read_text())
    config["users"] = [{"name": "admin", "user": {"token": token}}]
    if server is not None:
        config["clusters"][0]["cluster"]["server"] = server
    path.write_text(yaml.safe_dump(config))
    return path


STOP_SECONDS = 10
"""It stops in about a second (its watches end at once); before, closing them waited up to 30 s."""


class OperatorProcess:
    """The operator as a user runs it (edgecompress-operator), with its own RBAC, on the test control plane.

    Restartable. It reaches the apiserver through ``proxy``, which the partition test cuts.
    """

    def __init__(self, control_plane: ControlPlane, log_dir: Path, proxy: TcpProxy) -> None:
        self.proxy = proxy
        self.log_dir = log_dir
        self.starts = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.metrics_port, self.health_port = free_port(), free_port()
        self.command = [sys.executable, "-m", "edgecompress_operator.cli"]
        self.env = {
            **os.environ,
            "KUBECONFIG": str(
                operator_kubeconfig(control_plane, log_dir / "kubeconfig", f"https://127.0.0.1:{proxy.port}")
            ),
            "EDGECOMPRESS_RUNNER_IMAGE": "edgecompress-runner:test",
            "EDGECOMPRESS_RUNNER_COMMAND": json.dumps([sys.executable, "-m", "edgecompress_runner.cli"]),
            "EDGECOMPRESS_MAX_CONCURRENT_JOBS": str(MAX_CONCURRENT_JOBS),
            "EDGECOMPRESS_METRICS_PORT": str(self.metrics_port),
            "EDGECOMPRESS_HEALTH_PORT": str(self.health_port),
            "EDGECOMPRESS_PROGRESS_INTERVAL_SECONDS": "2",
            "EDGECOMPRESS_ADMISSION_INTERVAL_SECONDS": "5",
            "EDGECOMPRESS_API_TIMEOUT_SECONDS": str(API_TIMEOUT_SECONDS),
            "EDGECOMPRESS_START_TIMEOUT_SECONDS": str(START_TIMEOUT_SECONDS),
        }

    def start(self) -> None:
        self.starts += 1
        with (self.log_dir / f"operator-{self.starts}.log").open("wb") as log:
            self.process = subprocess.Popen(self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while self.probe("/readyz") != 200:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the operator never became ready; see {self.log_dir}")
            time.sleep(0.5)

    def probe(self, path: str) -> int:
        return http_status(f"http://127.0.0.1:{self.health_port}{path}")

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            return str(response.read().decode())

    def log(self) -> str:
        return "".join(path.read_text(errors="replace") for path in sorted(self.log_dir.glob("operator-*.log")))

    def stop(self) -> None:
        """SIGTERM, as the kubelet sends it: the operator must be gone well within the pod's default 30 s grace."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)
            raise AssertionError(f"the operator did not stop within {STOP_SECONDS} s of SIGTERM") from None

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture(scope="session")
def operator_process(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    server = urllib.parse.urlsplit(control_plane.server)
    proxy = TcpProxy(str(server.hostname), int(server.port or 443))
    proxy.start()
    operator = OperatorProcess(control_plane, tmp_path_factory.mktemp("operator"), proxy)
    try:
        operator.start()
        yield operator
    finally:
        operator.stop()
        proxy.stop()


@pytest.fixture(scope="session")
def demo_bucket(control_plane: ControlPlane, minio: MinioServer, digits_model: Path, digits_npz: Path) -> Any:
    """The example's bucket with its model and data, and the Secret the example names."""
    s3 = minio.client()
    s3.create_bucket(Bucket="edgecompress-demo")
    s3.upload_file(str(digits_model), "edgecompress-demo", "models/digits.keras")
    s3.upload_file(str(digits_npz), "edgecompress-demo", "datasets/digits.npz")
    control_plane.kubectl(
        "create",
        "secret",
        "generic",
        "edgecompress-s3",
        f"--from-literal=AWS_ACCESS_KEY_ID={minio.access_key}",
        f"--from-literal=AWS_SECRET_ACCESS_KEY={minio.secret_key}",
        f"--from-literal=AWS_ENDPOINT_URL={minio.endpoint}",
        "--from-literal=AWS_DEFAULT_REGION=us-east-1",
    )
    return s3
