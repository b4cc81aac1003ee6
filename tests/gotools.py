"""Tools the tests build or fetch from the Go module proxy, pinned and cached in the user's caches."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

HELM_MODULE = "helm.sh/helm/v3/cmd/helm"
HELM_VERSION = "v3.22.0"
PROMETHEUS_OPERATOR_MODULE = "github.com/prometheus-operator/prometheus-operator@v0.85.0"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgecompress"


def helm_binary() -> Path:
    """helm built from its Go module at a pinned release (about 5 minutes once, then cached)."""
    folder = CACHE / "helm" / HELM_VERSION
    binary = folder / "helm"
    if not binary.exists():
        subprocess.run(
            ["go", "install", f"{HELM_MODULE}@{HELM_VERSION}"],
            env={**os.environ, "GOBIN": str(folder)},
            check=True,
            timeout=3600,
        )
    return binary


def prometheus_operator_crds() -> Path:
    """The ServiceMonitor/PrometheusRule CRDs, from the prometheus-operator Go module (not a download of its own)."""
    found = subprocess.run(
        ["go", "mod", "download", "-json", PROMETHEUS_OPERATOR_MODULE],
        check=True,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    return Path(json.loads(found.stdout)["Dir"]) / "example" / "prometheus-operator-crd"
