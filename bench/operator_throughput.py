"""How fast the operator admits a burst of CompressionJobs, against a tight client loop creating the Jobs itself.

On the real control plane of the end-to-end tests (etcd, kube-apiserver, kube-controller-manager
built from Go modules, cached in ~/.cache/edgecompress/k8s), in one run:

1. a tight loop (one client, one connection, one create after the other) creates N runner Jobs,
   built by the operator's own ``build_job``, in namespace ``bench-loop``;
2. the operator runs as a subprocess (its RSS is its own) with the concurrency limit at N, and a
   tight loop creates N CompressionJobs in ``bench-operator``; the time runs from the first
   CompressionJob's create to the N-th runner Job existing (seen by a watch);
3. (between the two) the same tight loop creates N CompressionJobs in ``bench-unwatched``, where no operator
   watches: what the CompressionJobs' own creates cost the apiserver (schema and CEL validation).

It prints the times, the ratio of 2 to 1 (goal <= 1.3), the ratio of 2 to 3 (what the operator adds to the
creates themselves) and the operator's peak RSS (VmHWM; goal <= 200 MiB).
No node runs the pods (there is no scheduler either): this measures admission only.

    python bench/operator_throughput.py [--jobs 1000] [--parallel-writes 16]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "contract"), str(ROOT / "operator")]

from tests.k8s.controlplane import ControlPlane, build_binaries, free_port  # noqa: E402
from tests.processes import http_status, stop_process  # noqa: E402

from edgecompress_contract.spec import parse_spec  # noqa: E402
from edgecompress_operator.config import Config  # noqa: E402
from edgecompress_operator.manifests import build_job  # noqa: E402

CRD = ROOT / "crds" / "compressionjobs.edgecompress.io.yaml"
LOOP_NAMESPACE, OPERATOR_NAMESPACE, UNWATCHED_NAMESPACE = "bench-loop", "bench-operator", "bench-unwatched"
RUNNER_IMAGE = "edgecompress-runner:bench"
SPEC = {
    "model": {"uri": "s3://bench/models/digits.keras", "format": "keras"},
    "steps": [{"type": "ptq", "mode": "dynamic"}],
    "output": {"uri": "s3://bench/compressed/"},
}


def compression_job(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "edgecompress.io/v1alpha1",
        "kind": "CompressionJob",
        "metadata": {"name": name},
        "spec": SPEC,
    }


def create_compression_jobs(custom: client.CustomObjectsApi, namespace: str, count: int, prefix: str) -> float:
    """Seconds to create ``count`` CompressionJobs one after the other."""
    started = time.monotonic()
    for index in range(count):
        custom.create_namespaced_custom_object(
            "edgecompress.io", "v1alpha1", namespace, "compressionjobs",
            compression_job(f"{prefix}-{index:04d}"), _preload_content=False, _request_timeout=30,
        )  # fmt: skip
    return time.monotonic() - started


def tight_job_loop(api: client.BatchV1Api, count: int) -> float:
    """Seconds to create ``count`` runner Jobs one after the other (owner references dropped: no owner exists)."""
    spec = parse_spec(SPEC)
    settings = Config(runner_image=RUNNER_IMAGE)
    manifests = []
    for index in range(count):
        manifest = build_job(f"loop-{index:04d}", LOOP_NAMESPACE, f"uid-{index:04d}", spec, config=settings)
        manifest["metadata"].pop("ownerReferences", None)
        manifests.append(manifest)
    started = time.monotonic()
    for manifest in manifests:
        api.create_namespaced_job(LOOP_NAMESPACE, manifest, _preload_content=False, _request_timeout=30)
    return time.monotonic() - started


class JobCounter:
    """Counts the Jobs appearing in a namespace through a watch; notes when the count reaches ``target``."""

    def __init__(self, api: client.BatchV1Api, namespace: str, target: int) -> None:
        self.api, self.namespace, self.target = api, namespace, target
        self.seen: set[str] = set()
        self.reached: float | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from kubernetes.watch.watch import iter_resp_lines

        version = json.loads(self.api.list_namespaced_job(self.namespace, _preload_content=False).data)["metadata"][
            "resourceVersion"
        ]
        response = self.api.list_namespaced_job(
            self.namespace, watch=True, resource_version=version, timeout_seconds=3600, _preload_content=False
        )
        for line in iter_resp_lines(response):
            if not line:
                continue
            event = json.loads(line)
            if event["type"] == "ADDED":
                self.seen.add(event["object"]["metadata"]["name"])
                if len(self.seen) >= self.target:
                    self.reached = time.monotonic()
                    self.done.set()
                    response.close()
                    return


def pod_count(core: client.CoreV1Api, namespace: str) -> int:
    return len(json.loads(core.list_namespaced_pod(namespace, _preload_content=False).data)["items"])


def settle(core: client.CoreV1Api, namespace: str, count: int, timeout: float = 300) -> None:
    """Waits for the Job controller to create the pods of the Jobs, so the next phase starts on a quiet apiserver."""
    deadline = time.monotonic() + timeout
    while pod_count(core, namespace) < count and time.monotonic() < deadline:
        time.sleep(2)
    time.sleep(3)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_by_process(plane: ControlPlane, operator: subprocess.Popen[bytes] | None) -> dict[str, float]:
    """CPU seconds so far of the control plane's processes, this benchmark, and the operator."""
    found = {Path(str(process.args[0])).name: cpu_seconds(process.pid) for process in plane.processes}
    found["benchmark"] = sum(os.times()[:2])
    if operator is not None:
        found["operator"] = cpu_seconds(operator.pid)
    return found


def cpu_used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: round(after[name] - before.get(name, 0.0), 1) for name in after}


def requests_by_kind(plane: ControlPlane) -> Counter[str]:
    """The apiserver's request counter (apiserver_request_total) by verb and resource."""
    from prometheus_client.parser import text_string_to_metric_families

    counts: Counter[str] = Counter()
    for family in text_string_to_metric_families(plane.kubectl("get", "--raw", "/metrics").stdout):
        for sample in family.samples:
            if sample.name == "apiserver_request_total":
                labels = sample.labels
                resource = labels.get("resource", "") + (
                    f"/{labels['subresource']}" if labels.get("subresource") else ""
                )
                counts[f"{labels.get('verb')} {resource}"] += int(sample.value)
    return counts


def requests_made(before: Counter[str], after: Counter[str], least: int) -> dict[str, int]:
    """The kinds of request made at least ``least`` times between two readings."""
    made = after - before
    return {kind: number for kind, number in sorted(made.items()) if number >= least}


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/<pid>/status")


def start_operator(plane: ControlPlane, count: int, parallel_writes: int, log: Path) -> subprocess.Popen[bytes]:
    health = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(str(ROOT / part) for part in ("contract", "runner", "operator")),
        "KUBECONFIG": str(plane.kubeconfig),
        "EDGECOMPRESS_RUNNER_IMAGE": RUNNER_IMAGE,
        "EDGECOMPRESS_MAX_CONCURRENT_JOBS": str(count),
        "EDGECOMPRESS_MAX_PARALLEL_WRITES": str(parallel_writes),
        "EDGECOMPRESS_WATCH_NAMESPACE": OPERATOR_NAMESPACE,
        "EDGECOMPRESS_METRICS_PORT": str(free_port()),
        "EDGECOMPRESS_HEALTH_PORT": str(health),
    }
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "edgecompress_operator.cli"], env=env, stdout=output, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 120
    while http_status(f"http://127.0.0.1:{health}/readyz") != 200:
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the operator never became ready; see {log}")
        time.sleep(0.5)
    return process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1000, help="CompressionJobs (and Jobs in the tight loop)")
    parser.add_argument("--parallel-writes", type=int, default=Config.model_fields["max_parallel_writes"].default)
    args = parser.parse_args()
    count = args.jobs
    root = Path(tempfile.mkdtemp(prefix="bench-operator-"))
    plane = ControlPlane(root, build_binaries())
    operator: subprocess.Popen[bytes] | None = None
    try:
        plane.start()
        plane.kubectl("apply", "-f", str(CRD))
        plane.kubectl("wait", "--for=condition=Established", "crd/compressionjobs.edgecompress.io", "--timeout=60s")
        for namespace in (LOOP_NAMESPACE, OPERATOR_NAMESPACE, UNWATCHED_NAMESPACE):
            plane.kubectl("create", "namespace", namespace)
        api_client = config.new_client_from_config(str(plane.kubeconfig))
        batch, core = client.BatchV1Api(api_client), client.CoreV1Api(api_client)
        custom = client.CustomObjectsApi(api_client)
        while plane.kubectl("get", "compressionjobs", "-A", check=False).returncode != 0:
            time.sleep(1)
        # kube-controller-manager's ServiceAccount controller makes "default" in each namespace; pods need it.
        while plane.kubectl("get", "serviceaccount", "default", "-n", OPERATOR_NAMESPACE, check=False).returncode:
            time.sleep(1)

        cpu_before, requests_before = cpu_by_process(plane, None), requests_by_kind(plane)
        loop_seconds = tight_job_loop(batch, count)
        loop_cpu = cpu_used(cpu_before, cpu_by_process(plane, None))
        print(f"tight loop: {count} Jobs in {loop_seconds:.2f} s", flush=True)
        settle(core, LOOP_NAMESPACE, count)
        loop_requests = requests_made(requests_before, requests_by_kind(plane), count // 10)

        # The same creates with no operator: what the CompressionJobs' own admission (schema, CEL rules) costs.
        alone_seconds = create_compression_jobs(custom, UNWATCHED_NAMESPACE, count, "alone")
        print(f"tight loop: {count} CompressionJobs, no operator, in {alone_seconds:.2f} s", flush=True)
        time.sleep(3)

        operator = start_operator(plane, count, args.parallel_writes, root / "operator.log")
        counter = JobCounter(batch, OPERATOR_NAMESPACE, count)
        counter.thread.start()
        time.sleep(1)
        cpu_before, requests_before = cpu_by_process(plane, operator), requests_by_kind(plane)
        started = time.monotonic()
        created_seconds = create_compression_jobs(custom, OPERATOR_NAMESPACE, count, "burst")
        if not counter.done.wait(timeout=max(600, 60 * loop_seconds)):
            raise RuntimeError(f"only {len(counter.seen)} of {count} Jobs after 600 s; see {root / 'operator.log'}")
        assert counter.reached is not None
        operator_cpu = cpu_used(cpu_before, cpu_by_process(plane, operator))
        operator_seconds = counter.reached - started
        time.sleep(5)  # the status writes and Events that follow the creates
        rss = peak_rss_mib(operator.pid)
        operator_requests = requests_made(requests_before, requests_by_kind(plane), count // 10)
        print(
            yaml.safe_dump(
                {
                    "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
                    "jobs": count,
                    "parallel_writes": args.parallel_writes,
                    "tight_loop_seconds": round(loop_seconds, 2),
                    "compressionjob_creates_seconds": round(created_seconds, 2),
                    "operator_first_cr_to_last_job_seconds": round(operator_seconds, 2),
                    "ratio": round(operator_seconds / loop_seconds, 2),
                    "compressionjob_creates_without_operator_seconds": round(alone_seconds, 2),
                    "ratio_to_compressionjob_creates_without_operator": round(operator_seconds / alone_seconds, 2),
                    "operator_peak_rss_mib": round(rss, 1),
                    "cpu_seconds_during_tight_loop": loop_cpu,
                    "cpu_seconds_during_operator_run": operator_cpu,
                    "apiserver_requests_tight_loop_and_its_pods": loop_requests,
                    "apiserver_requests_operator_run": operator_requests,
                    "load_average_1m_at_end": round(os.getloadavg()[0], 2),
                },
                sort_keys=False,
            ),
            flush=True,
        )
    finally:
        if operator is not None:
            stop_process(operator)
        plane.stop()


if __name__ == "__main__":
    main()
