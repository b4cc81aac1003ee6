"""The Helm chart with the real tools: helm lint, the rendered manifests accepted by the apiserver, and
helm install into the test control plane — the operator pod runs on the node agent, a CompressionJob
completes and is promoted, kubectl wait sees Ready (Flux), Prometheus scrapes the operator, promtool
checks its metrics, and every Grafana panel's query returns data."""

from __future__ import annotations

import json
import shutil
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

from tests.e2e.test_operator import example, get
from tests.gotools import helm_binary, prometheus_operator_crds
from tests.k8s.controlplane import ControlPlane, free_port
from tests.k8s.node_agent import NodeAgent
from tests.processes import stop_process
from tests.waiting import wait_until

pytestmark = [pytest.mark.k8s, pytest.mark.s3, pytest.mark.tf]

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "edgecompress"
KUBE_VERSION = "1.36.3"
RELEASE, NAMESPACE = "ec", "edgecompress"
ALL_OPTIONS = [
    "--set",
    "metrics.serviceMonitor.enabled=true",
    "--set",
    "metrics.prometheusRule.enabled=true",
    "--set",
    "runner.serviceAccount.create=true",
    "--set",
    "runner.serviceAccount.namespaces={chart-dry-run}",
    "--set",
    "operator.config.watchNamespace=chart-dry-run",
]


def helm(*args: str, kubeconfig: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    command = [str(helm_binary()), *args] + ([f"--kubeconfig={kubeconfig}"] if kubeconfig else [])
    return subprocess.run(command, capture_output=True, text=True, check=check, timeout=600)


def test_helm_lint_passes_with_every_option() -> None:
    for options in ([], ALL_OPTIONS):
        linted = helm("lint", str(CHART), "--strict", "--kube-version", KUBE_VERSION, *options)
        assert "1 chart(s) linted, 0 chart(s) failed" in linted.stdout


def test_helm_refuses_values_outside_the_schema() -> None:
    refused = helm("template", "x", str(CHART), "--set", "operator.config.maxConcurrentJobs=0", check=False)
    assert refused.returncode != 0
    assert "maxConcurrentJobs" in refused.stderr and "minimum" in refused.stderr


def test_rendered_manifests_are_accepted_by_the_apiserver(control_plane: ControlPlane) -> None:
    crds = prometheus_operator_crds()
    for kind in ("servicemonitors", "prometheusrules"):
        control_plane.kubectl("apply", "--server-side", "-f", str(crds / f"monitoring.coreos.com_{kind}.yaml"))
    control_plane.kubectl(
        "wait",
        "--for=condition=Established",
        "crd/servicemonitors.monitoring.coreos.com",
        "crd/prometheusrules.monitoring.coreos.com",
        "--timeout=60s",
    )
    control_plane.kubectl("create", "namespace", "chart-dry-run")
    rendered = helm(
        "template",
        RELEASE,
        str(CHART),
        "-n",
        "chart-dry-run",
        "--include-crds",
        "--kube-version",
        KUBE_VERSION,
        *ALL_OPTIONS,
    ).stdout
    kinds = sorted(document["kind"] for document in yaml.safe_load_all(rendered) if document)
    assert kinds == [
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "CustomResourceDefinition",
        "Deployment",
        "PrometheusRule",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
        "ServiceAccount",
        "ServiceMonitor",
    ]
    deployment = next(d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "Deployment")
    env = {item["name"]: item["value"] for item in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["EDGECOMPRESS_DEFAULT_SERVICE_ACCOUNT_NAME"] == "edgecompress-runner"
    assert env["EDGECOMPRESS_RUNNER_IMAGE"] == "ghcr.io/edgecompress/edgecompress-runner:0.1.0"
    applied = control_plane.kubectl("apply", "--dry-run=server", "-f", "-", stdin=rendered, check=False)
    assert applied.returncode == 0, applied.stderr
    assert "deployment.apps/ec-edgecompress-operator created (server dry run)" in applied.stdout


class Prometheus:
    """A real Prometheus (Debian package) scraping the operator every second."""

    def __init__(self, root: Path, metrics_port: int) -> None:
        binary = shutil.which("prometheus")
        assert binary is not None, "prometheus not installed (apt-get install prometheus; .ci/run does)"
        self.port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {"job_name": "edgecompress-operator", "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}
            ],
        }
        (root / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = (root / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={root / 'prometheus.yml'}",
                f"--storage.tsdb.path={root / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_until(lambda: self._ready(), "Prometheus to be ready", timeout=60)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def query(self, expression: str) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]["result"]  # type: ignore[no-any-return]

    def stop(self) -> None:
        stop_process(self.process)
        self.log.close()


@pytest.fixture(scope="module")
def release(
    control_plane: ControlPlane,
    node_agent: NodeAgent,
    demo_bucket: Any,
    operator_process: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Any]]:
    """helm install of the chart; the node agent runs the operator pod; Prometheus scrapes it.

    The other tests' operator is stopped meanwhile: two operators would both reconcile every CompressionJob.
    """
    operator_process.stop()
    metrics_port, health_port = free_port(), free_port()
    overrides = {
        "image": {
            "operator": {"repository": "edgecompress-operator", "tag": "test"},
            "runner": {"repository": "edgecompress-runner", "tag": "test"},
        },
        "operator": {
            "logFormat": "plain",
            "config": {
                "runnerCommand": [sys.executable, "-m", "edgecompress_runner.cli"],
                "metricsPort": metrics_port,
                "healthPort": health_port,
                "maxConcurrentJobs": 2,
                "progressIntervalSeconds": 2,
                "admissionIntervalSeconds": 5,
            },
        },
        "metrics": {"service": {"port": metrics_port}},
    }
    root = tmp_path_factory.mktemp("helm")
    (root / "values.yaml").write_text(yaml.safe_dump(overrides))
    prometheus = Prometheus(root, metrics_port)
    try:
        installed = helm(
            "install",
            RELEASE,
            str(CHART),
            "-n",
            NAMESPACE,
            "--create-namespace",
            "-f",
            str(root / "values.yaml"),
            "--wait",
            "--timeout",
            "3m",
            kubeconfig=control_plane.kubeconfig,
            check=False,
        )
        assert installed.returncode == 0, installed.stderr
        yield {"prometheus": prometheus, "metrics_port": metrics_port, "notes": installed.stdout}
    finally:
        for name in ("gitops-digits", "gitops-strict", "watched-float16"):
            control_plane.kubectl("delete", "compressionjob", name, "--ignore-not-found", "--wait=true", check=False)
        helm("uninstall", RELEASE, "-n", NAMESPACE, "--wait", kubeconfig=control_plane.kubeconfig, check=False)
        prometheus.stop()
        operator_process.start()


def test_installed_operator_completes_and_promotes_a_job(
    control_plane: ControlPlane, node_agent: NodeAgent, release: dict[str, Any], demo_bucket: Any
) -> None:
    assert "kubectl wait --for=condition=Ready compressionjob/digits" in release["notes"]
    pods = get(control_plane, "pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/name=edgecompress-operator")["items"]
    assert len(pods) == 1 and pods[0]["status"]["phase"] == "Running"
    promotion = {"uri": "s3://edgecompress-demo/stable/digits/"}
    control_plane.kubectl("apply", "-f", "-", stdin=example("gitops-digits", promotion=promotion))
    control_plane.kubectl(
        "apply",
        "-f",
        "-",
        stdin=example(
            "gitops-strict",
            steps=[{"type": "ptq", "mode": "float16"}],
            gates={"minSizeReduction": 0.9},
            promotion={"uri": "s3://edgecompress-demo/stable/strict/"},
        ),
    )
    waited = control_plane.kubectl(
        "wait", "--for=condition=Ready", "compressionjob/gitops-digits", "--timeout=420s", check=False, timeout=450
    )
    assert waited.returncode == 0, (waited.stderr, get(control_plane, "compressionjob", "gitops-digits").get("status"))
    stalled = control_plane.kubectl(
        "wait", "--for=condition=Stalled", "compressionjob/gitops-strict", "--timeout=300s", check=False, timeout=330
    )
    assert stalled.returncode == 0, stalled.stderr
    status = get(control_plane, "compressionjob", "gitops-digits")["status"]
    assert status["promotedURI"] == "s3://edgecompress-demo/stable/digits/model.tflite"
    head = demo_bucket.head_object(Bucket="edgecompress-demo", Key="stable/digits/model.tflite")
    assert head["Metadata"]["edgecompress-sha256"] == status["result"]["artifacts"]["tflite"]["sha256"]
    assert head["Metadata"]["edgecompress-source-job"] == "default/gitops-digits"
    keys = {
        item["Key"] for item in demo_bucket.list_objects_v2(Bucket="edgecompress-demo", Prefix="stable/")["Contents"]
    }
    assert keys == {"stable/digits/model.tflite", "stable/digits/promotion.json"}, "a failed gate never promotes"


def test_promtool_accepts_the_operator_metrics(release: dict[str, Any]) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{release['metrics_port']}/metrics", timeout=5) as response:
        text = response.read()
    checked = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads((CHART / "files" / "grafana-dashboard.json").read_text())
    grafana_macros = {"$__rate_interval": "1m", "$__range": "1h", "$__interval": "15s"}
    queries = []
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expression = target["expr"]
            for macro, value in grafana_macros.items():
                expression = expression.replace(macro, value)
            queries.append((panel["title"], expression))
    return queries


def test_every_dashboard_panel_returns_data(release: dict[str, Any], control_plane: ControlPlane) -> None:
    prometheus: Prometheus = release["prometheus"]
    wait_until(
        lambda: get(control_plane, "compressionjob", "gitops-strict").get("status", {}).get("phase") == "Failed",
        "the jobs of the previous test to finish",
        timeout=420,
    )
    time.sleep(3)
    for title, expression in dashboard_queries():
        wait_until(
            lambda expression=expression: prometheus.query(expression),
            f"data for the panel {title!r}: {expression}",
            timeout=60,
        )
    ratio = prometheus.query('edgecompress_compressionjob_compression_ratio{name="gitops-digits"}')
    assert float(ratio[0]["value"][1]) >= 3.5
    failed = prometheus.query(
        'sum(edgecompress_compressionjob_completions_total{result="Failed",reason="GatesFailed"})'
    )
    assert float(failed[0]["value"][1]) >= 1


def test_watch_namespace_confines_the_operator_to_one_namespace(
    release: dict[str, Any], control_plane: ControlPlane, node_agent: NodeAgent
) -> None:
    """Runs last: upgrades the release to watch one namespace, so the operator's rights there come from a Role."""
    upgraded = helm(
        "upgrade",
        RELEASE,
        str(CHART),
        "-n",
        NAMESPACE,
        "--reuse-values",
        "--set",
        "operator.config.watchNamespace=default",
        "--wait",
        "--timeout",
        "3m",
        kubeconfig=control_plane.kubeconfig,
        check=False,
    )
    assert upgraded.returncode == 0, upgraded.stderr
    account = f"system:serviceaccount:{NAMESPACE}:{RELEASE}-edgecompress-operator"

    def can_i(verb: str, resource: str, *scope: str) -> str:
        return control_plane.kubectl(
            "auth", "can-i", verb, resource, *scope, "--as", account, check=False
        ).stdout.strip()

    assert can_i("create", "jobs.batch", "-n", "default") == "yes"
    assert can_i("create", "jobs.batch", "-n", "kube-system") == "no"
    assert can_i("list", "compressionjobs.edgecompress.io", "--all-namespaces") == "no"
    assert can_i("watch", "customresourcedefinitions.apiextensions.k8s.io") == "yes"
    wait_until(
        lambda: (
            [
                pod["status"].get("phase")
                for pod in get(
                    control_plane, "pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/name=edgecompress-operator"
                )["items"]
            ]
            == ["Running"]
        ),
        "the upgraded operator pod alone to run",
        timeout=120,
    )
    control_plane.kubectl(
        "apply",
        "-f",
        "-",
        stdin=example("watched-float16", steps=[{"type": "ptq", "mode": "float16"}], gates={"maxAccuracyDrop": 0.05}),
    )
    waited = control_plane.kubectl(
        "wait", "--for=condition=Ready", "compressionjob/watched-float16", "--timeout=300s", check=False, timeout=330
    )
    assert waited.returncode == 0, (
        waited.stderr,
        get(control_plane, "compressionjob", "watched-float16").get("status"),
    )
