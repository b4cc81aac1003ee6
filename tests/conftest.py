"""Shared fixtures: a trained digits model, small datasets, a job runner, and a real MinIO server."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from tests.processes import stop_process

MINIO_MODULE = "github.com/minio/minio@latest"


@pytest.fixture(scope="session", autouse=True)
def deterministic_ops() -> None:
    """TensorFlow's op determinism on before any test trains. The first job in a process turns it on for good, so
    a fixture's model otherwise depended on whether its pytest-xdist worker happened to run a job before it."""
    from edgecompress_runner.tfcompat import tf

    tf.config.experimental.enable_op_determinism()


@pytest.fixture(autouse=True)
def seeded_random_ops(deterministic_ops: None) -> None:
    """Python's, NumPy's and TensorFlow's global seeds set before every test. With op determinism on, an op with
    no seed of its own (a layer's default initializer) fails unless a global seed is set, and before, whether one
    was depended on which tests the pytest-xdist worker had run first."""
    from edgecompress_runner.tfcompat import keras

    keras.utils.set_random_seed(0)


@dataclass(frozen=True)
class JobRun:
    exit_code: int
    summary: dict[str, Any]
    output: Path

    @property
    def report(self) -> dict[str, Any]:
        return json.loads((self.output / "report.json").read_text())


def run_job(document: dict[str, Any], workdir: Path) -> JobRun:
    """Runs a job document through the CLI's own entry (in-process, so TensorFlow loads once)."""
    from edgecompress_contract.spec import load_spec_text
    from edgecompress_runner.cli import execute

    workdir.mkdir(parents=True, exist_ok=True)
    summary_file = workdir / "summary.json"
    text = yaml.safe_dump(document)
    code = execute(lambda: load_spec_text(text), workdir / "work", summary_file, "log")
    summary = json.loads(summary_file.read_text())
    assert len(summary_file.read_bytes()) < 4096
    output = document.get("output", {}).get("uri", "")
    return JobRun(code, summary, Path(output) if output and "://" not in output else Path())


def run_job_in_new_process(
    document: dict[str, Any], workdir: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Runs a job document as a runner pod does: the CLI in a fresh process (fresh TensorFlow and Keras state),
    with ``job.yaml`` and ``summary.json`` in ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "job.yaml").write_text(yaml.safe_dump(document))
    return subprocess.run(
        [sys.executable, "-m", "edgecompress_runner.cli", "run", "job.yaml", "--summary-file", "summary.json"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=workdir,
        env={**(os.environ if env is None else env), "PYTHONPATH": os.pathsep.join(sys.path)},
    )


@pytest.fixture(scope="session")
def digits() -> dict[str, np.ndarray]:
    from edgecompress_runner.example import digits_arrays

    return digits_arrays()


@pytest.fixture(scope="session")
def small_digits_npz(tmp_path_factory: pytest.TempPathFactory, digits: dict[str, np.ndarray]) -> Path:
    """600 training and 200 evaluation samples: enough to fine-tune quickly."""
    path = tmp_path_factory.mktemp("data") / "digits-small.npz"
    np.savez(
        path,
        x_train=digits["x_train"][:600],
        y_train=digits["y_train"][:600],
        x_eval=digits["x_eval"][:200],
        y_eval=digits["y_eval"][:200],
    )
    return path


@pytest.fixture(scope="session")
def digits_npz(tmp_path_factory: pytest.TempPathFactory, digits: dict[str, np.ndarray]) -> Path:
    """All of the digits (1437 train, 360 eval): for runs whose accuracy gates must hold every time."""
    path = tmp_path_factory.mktemp("data") / "digits.npz"
    np.savez(path, **digits)  # type: ignore[arg-type]
    return path


@pytest.fixture(scope="session")
def digits_model(tmp_path_factory: pytest.TempPathFactory, digits: dict[str, np.ndarray]) -> Path:
    from edgecompress_runner.example import digits_cnn, train_classifier

    path = tmp_path_factory.mktemp("models") / "digits.keras"
    train_classifier(digits_cnn, digits, epochs=6).save(path)
    return path


def job(model: Path, dataset: Path | None, output: Path, steps: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "model": {"uri": str(model), "format": "h5" if model.suffix == ".h5" else "keras"},
        "steps": steps,
        "evaluation": {"samples": 200, "latency": {"runs": 20, "warmup": 2}},
        "output": {"uri": str(output)},
    }
    if dataset is not None:
        document["dataset"] = {"uri": str(dataset)}
    document.update(extra)
    return document


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def minio_binary() -> Path:
    """The MinIO server, built from Go modules once and kept in the Go bin folder."""
    gopath = subprocess.run(["go", "env", "GOPATH"], check=True, capture_output=True, text=True).stdout.strip()
    binary = Path(gopath) / "bin" / "minio"
    lock = Path.home() / ".cache" / "edgecompress" / "minio-build.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # pytest-xdist workers: one builds, the others wait for its binary
        if not binary.exists():
            subprocess.run(["go", "install", MINIO_MODULE], check=True, timeout=1800)
    return binary


@dataclass(frozen=True)
class MinioServer:
    endpoint: str
    access_key: str
    secret_key: str

    def client(self, access_key: str | None = None, secret_key: str | None = None) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=access_key or self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}),
        )


@pytest.fixture(scope="session")
def minio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MinioServer]:
    binary = minio_binary()
    data = tmp_path_factory.mktemp("minio")
    port, console = _free_port(), _free_port()
    env = {
        **os.environ,
        "MINIO_ROOT_USER": "edgecompress",
        "MINIO_ROOT_PASSWORD": "edgecompress-secret",
        "MINIO_BROWSER": "off",
    }
    log = (data.parent / "minio.log").open("wb")
    process = subprocess.Popen(
        [
            str(binary),
            "server",
            str(data),
            "--address",
            f"127.0.0.1:{port}",
            "--console-address",
            f"127.0.0.1:{console}",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{endpoint}/minio/health/live", timeout=2):
                break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"MinIO did not start; see {log.name}") from None
            time.sleep(0.3)
    try:
        yield MinioServer(endpoint, "edgecompress", "edgecompress-secret")
    finally:
        stop_process(process, timeout=3)  # a throwaway server: its graceful shutdown only costs time
        log.close()
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def s3_env(minio: MinioServer, monkeypatch: pytest.MonkeyPatch) -> MinioServer:
    """Credentials and endpoint passed the way a pod gets them: standard AWS environment variables."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", minio.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", minio.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", minio.secret_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return minio
