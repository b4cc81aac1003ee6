"""What one CompressionJob write costs the apiserver, with the CRD's CEL rules and without them.

On the real control plane of the end-to-end tests, in one run: N CompressionJob creates and N status
merge-PATCHes (what the operator writes once per job) with the CRD as shipped, the same with every
``x-kubernetes-validations`` rule removed from the CRD, and N runner Jobs for comparison (the Job
controller's pod creates included, as in ``operator_throughput.py``'s tight loop). Each is a tight loop of one
client; the kube-apiserver's CPU seconds over it are read from /proc.

    python bench/crd_write_cost.py [--writes 500]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config

sys.path.insert(0, str(Path(__file__).resolve().parent))

import operator_throughput as throughput  # noqa: E402

GROUP, VERSION, PLURAL = "edgecompress.io", "v1alpha1", "compressionjobs"


def without_cel_rules(node: Any) -> Any:
    """The CRD (or a part of it) with every x-kubernetes-validations list removed."""
    if isinstance(node, dict):
        return {key: without_cel_rules(value) for key, value in node.items() if key != "x-kubernetes-validations"}
    if isinstance(node, list):
        return [without_cel_rules(value) for value in node]
    return node


def status_patches(custom: client.CustomObjectsApi, namespace: str, count: int, prefix: str) -> None:
    for index in range(count):
        name = f"{prefix}-{index:04d}"
        status = {"phase": "Running", "jobName": f"{name}-runner", "message": "the runner Job was created"}
        custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, name, {"status": status}, _preload_content=False, _request_timeout=30
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--writes", type=int, default=500, help="writes of each kind")
    count = parser.parse_args().writes
    root = Path(tempfile.mkdtemp(prefix="bench-crd-cost-"))
    plane = throughput.ControlPlane(root, throughput.build_binaries())
    try:
        plane.start()
        api_client = config.new_client_from_config(str(plane.kubeconfig))
        custom, batch = client.CustomObjectsApi(api_client), client.BatchV1Api(api_client)

        def measure(label: str, writes: Callable[[], object]) -> None:
            before = throughput.cpu_by_process(plane, None)
            started = time.monotonic()
            writes()
            seconds = time.monotonic() - started
            apiserver = throughput.cpu_used(before, throughput.cpu_by_process(plane, None))["kube-apiserver"]
            each = 1000 * apiserver / count
            print(f"{label}: {seconds:.2f} s, kube-apiserver {apiserver:.1f} CPU s ({each:.1f} ms each)", flush=True)

        shipped = yaml.safe_load(throughput.CRD.read_text())
        for variant, crd in (("with CEL rules", shipped), ("without CEL rules", without_cel_rules(shipped))):
            (root / "crd.yaml").write_text(yaml.safe_dump(crd))
            plane.kubectl("apply", "-f", str(root / "crd.yaml"))
            plane.kubectl("wait", "--for=condition=Established", f"crd/{PLURAL}.{GROUP}", "--timeout=60s")
            namespace = "cel" if crd is shipped else "no-cel"
            plane.kubectl("create", "namespace", namespace)
            while plane.kubectl("get", PLURAL, "-n", namespace, check=False).returncode != 0:
                time.sleep(1)
            time.sleep(3)  # the apiserver serves the changed schema once the CRD is re-established
            creates = partial(throughput.create_compression_jobs, custom, namespace, count, "job")
            measure(f"{count} CompressionJob creates, {variant}", creates)
            measure(f"{count} status PATCHes, {variant}", partial(status_patches, custom, namespace, count, "job"))
        plane.kubectl("create", "namespace", throughput.LOOP_NAMESPACE)
        measure(f"{count} runner Job creates", lambda: throughput.tight_job_loop(batch, count))
    finally:
        plane.stop()


if __name__ == "__main__":
    main()
