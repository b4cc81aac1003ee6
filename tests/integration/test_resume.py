"""Checkpoints and resume: a runner killed (SIGKILL, as on preemption) during the second step of a prune + qat
job is started again with the same job; it reuses the first step, resumes the second from its checkpoint and
writes the same model.tflite as an uninterrupted run.

The kill is timed from outside the product: a ``sitecustomize`` module on the runner's PYTHONPATH wraps
``RunCheckpoints.save`` so that, right after the chosen checkpoint is written, the run process waits; the test
then kills the runner's whole process group.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from edgecompress_runner.errors import ExitCode
from tests.conftest import job, run_job

pytestmark = pytest.mark.tf

SITECUSTOMIZE = """
import os
import signal

from edgecompress_runner import checkpoints

_save = checkpoints.RunCheckpoints.save


def _save_then_wait(self, index, state):
    _save(self, index, state)
    wanted = tuple(int(part) for part in os.environ["TEST_WAIT_AFTER"].split(","))
    if (index, state.epoch, state.batches) == wanted and not state.finished:
        with open(os.environ["TEST_WAIT_PIDFILE"], "w") as pidfile:
            pidfile.write(str(os.getpid()))
        signal.pause()


checkpoints.RunCheckpoints.save = _save_then_wait
"""

STEPS = [
    {"type": "prune", "targetSparsity": 0.5, "fineTune": {"epochs": 3, "batchSize": 32}},
    {"type": "qat", "fineTune": {"epochs": 2, "batchSize": 32}},
]


@pytest.fixture(scope="module")
def blobs_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A small dense classifier of four Gaussian blobs in 16 dimensions, with its dataset."""
    from edgecompress_runner.tfcompat import keras

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (4, 16))

    def blobs(count: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, 4, count)
        return (centres[labels] + rng.normal(0, 0.8, (count, 16))).astype(np.float32), labels

    x_train, y_train = blobs(512)
    x_eval, y_eval = blobs(128)
    inputs = keras.Input((16,), name="features")
    hidden = keras.layers.Dense(32, activation="relu", name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax", name="classes")(hidden))
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    model.fit(x_train, y_train, epochs=5, batch_size=32, verbose=0)
    folder = tmp_path_factory.mktemp("blobs")
    model.save(folder / "blobs.keras")
    np.savez(folder / "blobs.npz", x_train=x_train, y_train=y_train, x_eval=x_eval, y_eval=y_eval)
    return folder / "blobs.keras", folder / "blobs.npz"


def document(model: tuple[Path, Path], output: Path, **checkpoints: Any) -> dict[str, Any]:
    spec = job(model[0], model[1], output, STEPS, checkpoints=checkpoints)
    spec["evaluation"] = {"samples": 128, "latency": {"runs": 3, "warmup": 0}}
    return spec


@pytest.fixture(scope="module")
def uninterrupted(blobs_model: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("uninterrupted")
    run = run_job(document(blobs_model, folder / "out"), folder)
    assert run.exit_code == ExitCode.SUCCEEDED, run.summary
    assert not (folder / "out" / "checkpoints").exists(), "checkpoints are deleted after a finished run"
    return run.report


def runner(job_file: Path, folder: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "edgecompress_runner.cli", "run", str(job_file), "--progress", "log"],
        cwd=folder,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=(folder / "runner.log").open("w"),
        text=True,
        start_new_session=True,
    )


def kill_when_paused(process: subprocess.Popen[str], pidfile: Path, folder: Path) -> None:
    deadline = time.monotonic() + 600
    while not pidfile.exists():
        assert process.poll() is None, (folder / "runner.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "the run never reached the checkpoint"
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)


@pytest.mark.parametrize(
    ("checkpoints", "killed_after", "resumed_from_batch"),
    [
        ({}, (1, 1, 0), None),  # after the second step's first epoch
        ({"everyMinutes": 0.0001}, (1, 1, 4), 4),  # within its second epoch, after 4 mini-batches
    ],
    ids=["epoch-end", "within-an-epoch"],
)
def test_a_killed_run_resumes_and_writes_the_same_bytes(
    blobs_model: tuple[Path, Path],
    uninterrupted: dict[str, Any],
    tmp_path: Path,
    checkpoints: dict[str, Any],
    killed_after: tuple[int, int, int],
    resumed_from_batch: int | None,
) -> None:
    output = tmp_path / "out"
    job_file = tmp_path / "job.yaml"
    job_file.write_text(yaml.safe_dump(document(blobs_model, output, **checkpoints)))
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    pidfile = tmp_path / "paused.pid"
    first = runner(
        job_file,
        tmp_path,
        {
            "PYTHONPATH": os.pathsep.join([str(hook), *sys.path]),
            "TEST_WAIT_AFTER": ",".join(map(str, killed_after)),
            "TEST_WAIT_PIDFILE": str(pidfile),
        },
    )
    kill_when_paused(first, pidfile, tmp_path)
    record = json.loads((output / "checkpoints" / "training-1.json").read_text())
    assert (record["epoch"], record["batches"], record["finished"]) == (1, killed_after[2], False)
    assert json.loads((output / "checkpoints" / "training-0.json").read_text())["finished"] is True
    assert not (output / "report.json").exists() and not (output / "model.tflite").exists()

    again = runner(job_file, tmp_path, {"PYTHONPATH": os.pathsep.join(sys.path)})
    assert again.wait(timeout=600) == ExitCode.SUCCEEDED, (tmp_path / "runner.log").read_text()[-3000:]
    report = json.loads((output / "report.json").read_text())
    resumption = report["resumption"]
    assert resumption["reusedSteps"] == [0]
    assert resumption["resumedStep"] == 1 and resumption["resumedFromEpoch"] == 1
    assert resumption.get("resumedFromBatch") == resumed_from_batch
    assert resumption.get("randomLayers", []) == []
    assert resumption["fingerprint"] == record["fingerprint"]
    tflite = (output / "model.tflite").read_bytes()
    assert hashlib.sha256(tflite).hexdigest() == report["outputs"]["tflite"]["sha256"]
    assert report["outputs"]["tflite"]["sha256"] == uninterrupted["outputs"]["tflite"]["sha256"], (
        "the resumed run wrote other bytes than an uninterrupted one"
    )
    assert report["steps"][0]["validation"] == uninterrupted["steps"][0]["validation"]
    assert report["steps"][1]["validation"] == uninterrupted["steps"][1]["validation"]
    assert "resumption" not in uninterrupted
    assert not (output / "checkpoints").exists(), "checkpoints are deleted after a finished run"
