"""A tiny kubelet for tests: one Node whose pods run as local processes (there is no container runtime).

It registers a Ready Node, binds pending pods to it (there is no scheduler either), runs each
container's command and args as a local process with the container's environment (values,
Secret references, envFrom Secrets, and its ServiceAccount's token as ``KUBECONFIG`` unless
automountServiceAccountToken is false), and reports phase, exit code and termination message in
the pod's status. ``image_commands`` maps an image to the local command that stands in for its
entrypoint when the container gives no command. Deleting a pod stops its process.

Like a scheduler, it binds a pod only when the node's extended resources (GPUs) still fit it and
otherwise marks it Unschedulable with the scheduler's message. Like a kubelet, it serves
``/containerLogs`` over HTTPS, so ``kubectl logs`` and the API's pods/log work.
"""

from __future__ import annotations

import base64
import http.server
import os
import ssl
import subprocess
import tempfile
import threading
import urllib.parse
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config

from tests.processes import stop_process


def _downward_field(pod: Any, path: str) -> str:
    """A pod field as the kubelet's downward API gives it to an env var (the Job controller sets the
    completion index of an Indexed Job's pod this way, from an annotation)."""
    simple = {"metadata.name": pod.metadata.name, "metadata.namespace": pod.metadata.namespace,
              "metadata.uid": pod.metadata.uid, "spec.nodeName": pod.spec.node_name,
              "spec.serviceAccountName": pod.spec.service_account_name}  # fmt: skip
    if path in simple:
        return str(simple[path] or "")
    for prefix, values in (
        ("metadata.annotations", pod.metadata.annotations),
        ("metadata.labels", pod.metadata.labels),
    ):
        if path.startswith(prefix + "['") and path.endswith("']"):
            return str((values or {}).get(path[len(prefix) + 2 : -2], ""))
    raise ValueError(f"the test node agent does not resolve fieldRef {path!r}")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _Running:
    process: subprocess.Popen[bytes]
    message_file: Path
    started: str


@dataclass
class NodeAgent:
    kubeconfig: Path
    node_name: str = "edgecompress-test-node"
    image_commands: dict[str, list[str]] = field(default_factory=dict)
    capacity: dict[str, str] = field(
        default_factory=lambda: {"cpu": "8", "memory": "32Gi", "pods": "50", "nvidia.com/gpu": "2"}
    )
    log_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="node-agent-")))
    _running: dict[str, _Running] = field(default_factory=dict)
    launched: list[dict[str, str]] = field(default_factory=list)
    """The labels of every pod whose container was started, in order (one entry per runner execution)."""
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _log_server: http.server.ThreadingHTTPServer | None = None

    def start(self) -> None:
        api_client = config.new_client_from_config(config_file=str(self.kubeconfig))
        self.core = client.CoreV1Api(api_client)
        self._start_log_server()
        self._register_node()
        self._thread = threading.Thread(target=self._loop, name="node-agent", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._log_server is not None:
            self._log_server.shutdown()
        for running in self._running.values():
            if running.process.poll() is None:
                running.process.kill()

    def live_processes(self) -> int:
        """Pod processes still running."""
        return sum(running.process.poll() is None for running in self._running.values())

    def _register_node(self) -> None:
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.node_name, "labels": {"kubernetes.io/hostname": self.node_name}},
        }
        try:
            self.core.create_node(node)
        except client.ApiException as error:
            if error.status != 409:
                raise
        status = {
            "status": {
                "capacity": self.capacity,
                "allocatable": self.capacity,
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "message": "test node agent",
                        "lastHeartbeatTime": _now(),
                        "lastTransitionTime": _now(),
                    }
                ],
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": self._log_port}},
            }
        }
        self.core.patch_node_status(self.node_name, status)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._sync()
            except client.ApiException:
                pass
            self._stop.wait(0.3)

    def _sync(self) -> None:
        pods = self.core.list_pod_for_all_namespaces().items
        seen = set()
        for pod in pods:
            key = f"{pod.metadata.namespace}/{pod.metadata.name}/{pod.metadata.uid}"
            seen.add(key)
            if pod.metadata.deletion_timestamp is not None:
                self._delete(pod, key)
            elif not pod.spec.node_name and pod.status.phase == "Pending":
                missing = self._insufficient(pod, pods)
                if missing:
                    self._mark_unschedulable(pod, missing)
                else:
                    self._bind(pod)
            elif pod.spec.node_name == self.node_name:
                if key not in self._running and pod.status.phase == "Pending":
                    self._launch(pod, key)
                elif key in self._running:
                    self._report_exit(pod, key)
        for key in list(self._running):
            if key not in seen:
                self._kill(key)

    def _log_file(self, namespace: str, name: str) -> Path:
        return self.log_dir / f"{namespace}.{name}.log"

    def _start_log_server(self) -> None:
        certificate, key = self.log_dir / "kubelet.crt", self.log_dir / "kubelet.key"
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-keyout",
                str(key),
                "-out",
                str(certificate),
                "-subj",
                "/CN=edgecompress-test-node",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ],
            check=True,
            capture_output=True,
        )
        agent = self

        class ContainerLogs(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                parts = url.path.strip("/").split("/")
                log = agent._log_file(parts[1], parts[2]) if len(parts) == 4 and parts[0] == "containerLogs" else None
                if log is None or not log.exists():
                    self.send_error(404)
                    return
                lines = log.read_bytes().splitlines(keepends=True)
                tail = urllib.parse.parse_qs(url.query).get("tailLines")
                body = b"".join(lines[-int(tail[0]) :] if tail else lines)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ContainerLogs)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certificate, key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self._log_server = server
        self._log_port = int(server.server_address[1])
        threading.Thread(target=server.serve_forever, name="node-agent-logs", daemon=True).start()

    def _insufficient(self, pod: Any, pods: list[Any]) -> list[str]:
        """Extended resources (e.g. nvidia.com/gpu) the pod requests beyond what is free on the node."""

        def requests(candidate: Any) -> dict[str, int]:
            wanted: dict[str, int] = {}
            for container in candidate.spec.containers:
                for name, value in ((container.resources and container.resources.requests) or {}).items():
                    if "/" in name:
                        wanted[name] = wanted.get(name, 0) + int(value)
            return wanted

        used: dict[str, int] = {}
        for other in pods:
            if other.spec.node_name == self.node_name and other.status.phase in ("Pending", "Running"):
                for name, amount in requests(other).items():
                    used[name] = used.get(name, 0) + amount
        return sorted(
            name
            for name, amount in requests(pod).items()
            if amount > int(self.capacity.get(name, "0")) - used.get(name, 0)
        )

    def _mark_unschedulable(self, pod: Any, missing: list[str]) -> None:
        message = "0/1 nodes are available: " + ", ".join(f"1 Insufficient {name}" for name in missing) + "."
        for condition in pod.status.conditions or []:
            if condition.type == "PodScheduled" and condition.message == message:
                return
        self._patch_status(
            pod,
            {
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": message,
                        "lastTransitionTime": _now(),
                    }
                ]
            },
        )

    def _bind(self, pod: Any) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": pod.metadata.name},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.node_name},
        }
        try:
            self.core.create_namespaced_pod_binding(
                pod.metadata.name, pod.metadata.namespace, body, _preload_content=False
            )
        except client.ApiException as error:
            if error.status != 409:
                raise
        pod.spec.node_name = self.node_name

    def _secret(self, namespace: str, name: str) -> dict[str, str]:
        secret = self.core.read_namespaced_secret(name, namespace)
        return {key: base64.b64decode(value).decode() for key, value in (secret.data or {}).items()}

    def _service_account_kubeconfig(self, pod: Any) -> Path:
        """What the kubelet's projected token volume gives a pod, as a kubeconfig (a process cannot
        see a volume mounted at /var/run/secrets): a fresh token of the pod's ServiceAccount."""
        account = pod.spec.service_account_name or "default"
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "expirationSeconds": 86400,
                "boundObjectRef": {
                    "kind": "Pod",
                    "apiVersion": "v1",
                    "name": pod.metadata.name,
                    "uid": pod.metadata.uid,
                },
            },
        }
        token = self.core.create_namespaced_service_account_token(account, pod.metadata.namespace, request)
        admin = yaml.safe_load(self.kubeconfig.read_text())
        admin["users"] = [{"name": admin["users"][0]["name"], "user": {"token": token.status.token}}]
        admin["contexts"][0]["context"]["namespace"] = pod.metadata.namespace
        path = self.log_dir / f"{pod.metadata.uid}.kubeconfig"
        path.write_text(yaml.safe_dump(admin))
        return path

    def _environment(self, pod: Any, container: Any) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(self.log_dir)}
        if os.environ.get("PYTHONPATH"):  # the tests' checkout, not whatever an editable install points to
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        if pod.spec.automount_service_account_token is not False:
            env["KUBECONFIG"] = str(self._service_account_kubeconfig(pod))
        for source in container.env_from or []:
            if source.secret_ref is not None:
                env.update(self._secret(pod.metadata.namespace, source.secret_ref.name))
        for item in container.env or []:
            if item.value is not None:
                env[item.name] = item.value
            elif item.value_from is not None and item.value_from.secret_key_ref is not None:
                reference = item.value_from.secret_key_ref
                env[item.name] = self._secret(pod.metadata.namespace, reference.name)[reference.key]
            elif item.value_from is not None and item.value_from.field_ref is not None:
                env[item.name] = _downward_field(pod, item.value_from.field_ref.field_path)
        return env

    def _launch(self, pod: Any, key: str) -> None:
        container = pod.spec.containers[0]
        command = list(container.command or self.image_commands.get(container.image, []))
        message_file = self.log_dir / f"{pod.metadata.uid}.termination-log"
        message_file.touch()
        declared = container.termination_message_path or "/dev/termination-log"
        args = [str(message_file) if arg == declared else arg for arg in (container.args or [])]
        try:
            environment = self._environment(pod, container)
        except client.ApiException as error:
            if error.status != 404:
                raise
            secrets = [source.secret_ref.name for source in container.env_from or [] if source.secret_ref]
            self._config_error(pod, container.name, f"secret {', '.join(secrets) or '?'!r} not found")
            return
        environment = {name: value.replace(declared, str(message_file)) for name, value in environment.items()}
        log = self._log_file(pod.metadata.namespace, pod.metadata.name).open("wb")
        started = _now()
        try:
            process = subprocess.Popen(
                command + args, env=environment, stdout=log, stderr=subprocess.STDOUT, cwd=self.log_dir
            )
        except OSError as error:
            self._set_status(pod, "Failed", container.name, started, 127, f"cannot start {command}: {error}")
            return
        self._running[key] = _Running(process, message_file, started)
        self.launched.append(dict(pod.metadata.labels or {}))
        self._patch_status(
            pod,
            {
                "phase": "Running",
                "startTime": started,
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [
                    {
                        "name": container.name,
                        "image": container.image,
                        "imageID": "",
                        "ready": True,
                        "restartCount": 0,
                        "started": True,
                        "state": {"running": {"startedAt": started}},
                    }
                ],
            },
        )

    def _config_error(self, pod: Any, container: str, message: str) -> None:
        """What a kubelet reports when a container's environment cannot be built (e.g. a missing Secret)."""
        waiting = {"reason": "CreateContainerConfigError", "message": message}
        statuses = pod.status.container_statuses or []
        if any(status.state and status.state.waiting and status.state.waiting.reason == waiting["reason"]
               for status in statuses):  # fmt: skip
            return
        state = {"name": container, "image": "", "imageID": "", "ready": False, "restartCount": 0}
        self._patch_status(pod, {"containerStatuses": [{**state, "state": {"waiting": waiting}}]})

    def _report_exit(self, pod: Any, key: str) -> None:
        running = self._running[key]
        code = running.process.poll()
        if code is None or pod.status.phase in ("Succeeded", "Failed"):
            return
        message = running.message_file.read_text(errors="replace")[:4096]
        container = pod.spec.containers[0]
        self._set_status(pod, "Succeeded" if code == 0 else "Failed", container.name, running.started, code, message)

    def _set_status(self, pod: Any, phase: str, container: str, started: str, code: int, message: str) -> None:
        self._patch_status(
            pod,
            {
                "phase": phase,
                "conditions": [{"type": "Ready", "status": "False", "reason": "PodCompleted"}],
                "containerStatuses": [
                    {
                        "name": container,
                        "image": pod.spec.containers[0].image,
                        "imageID": "",
                        "ready": False,
                        "restartCount": 0,
                        "started": False,
                        "state": {
                            "terminated": {
                                "exitCode": code,
                                "reason": "Completed" if code == 0 else "Error",
                                "message": message,
                                "startedAt": started,
                                "finishedAt": _now(),
                            }
                        },
                    }
                ],
            },
        )

    def _patch_status(self, pod: Any, status: dict[str, Any]) -> None:
        self.core.patch_namespaced_pod_status(pod.metadata.name, pod.metadata.namespace, {"status": status})

    def _kill(self, key: str) -> None:
        stop_process(self._running.pop(key).process, timeout=10)

    def _delete(self, pod: Any, key: str) -> None:
        if key in self._running:
            self._kill(key)
        try:
            self.core.delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace, grace_period_seconds=0)
        except client.ApiException as error:
            if error.status != 404:
                raise
