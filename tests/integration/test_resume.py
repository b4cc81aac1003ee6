"""Checkpoints and resume: a runner killed (SIGKILL, as on preemption) during the second step of a prune + qat
job is started again with the same job; it reuses the first step, resumes the second from its checkpoint and
writes the same model.tflite as an uninterrupted run.

The kill is timed from outside the product: a ``sitecustomize`` module on the runner's PYTHONPATH wraps
``RunCheckpoints.save`` so that, right after the chosen checkpoint is written (an epoch end, or the first one
within an epoch), the run process waits; the test then kills the runner's whole process group.
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
    step, epoch, within = os.environ["TEST_WAIT_AFTER"].split(",")
    if (index, state.epoch, state.batches > 0) == (int(step), int(epoch), within == "within") and not state.finished:
        with open(os.environ["TEST_WAIT_PIDFILE"], "w") as pidfile:
            pidfile.write(str(os.getpid()))
        signal.pause()


checkpoints.RunCheckpoints.save = _save_then_wait
"""

STEPS = [
    {"type": "prune", "targetSparsity": 0.5, "fineTune": {"epochs": 3, "batchSize": 32}},
    {"type": "qat", "fineTune": {"epochs": 2, "batchSize": 32}},
]


def document(model: tuple[Path, Path], output: Path, **checkpoints: Any) -> dict[str, Any]:
    spec = job(model[0], model[1], output, STEPS, checkpoints=checkpoints)
    spec["evaluation"] = {"samples": 128, "latency": {"runs": 3, "warmup": 0}}
    return spec


@pytest.fixture(scope="module")
def uninterrupted(blobs_model: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The same job run from start to end in a fresh process, like the killed and the resumed runs: in a process
    that ran other tests first, Keras names new layers (tfmot's quantize layer) with a suffix, and names are
    bytes in the .tflite."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    job_file = folder / "job.yaml"
    job_file.write_text(yaml.safe_dump(document(blobs_model, folder / "out")))
    process = runner(job_file, folder, {"PYTHONPATH": os.pathsep.join(sys.path)})
    assert process.wait(timeout=600) == ExitCode.SUCCEEDED, (folder / "runner.log").read_text()[-3000:]
    assert not (folder / "out" / "checkpoints").exists(), "checkpoints are deleted after a finished run"
    report: dict[str, Any] = json.loads((folder / "out" / "report.json").read_text())
    return report


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
    ("checkpoints", "within_an_epoch"),
    [
        ({}, False),  # after the second step's first epoch
        ({"everyMinutes": 0.0001}, True),  # within its second epoch (checkpoints every few mini-batches)
    ],
    ids=["epoch-end", "within-an-epoch"],
)
def test_a_killed_run_resumes_and_writes_the_same_bytes(
    blobs_model: tuple[Path, Path],
    uninterrupted: dict[str, Any],
    tmp_path: Path,
    checkpoints: dict[str, Any],
    within_an_epoch: bool,
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
            "TEST_WAIT_AFTER": f"1,1,{'within' if within_an_epoch else 'end'}",
            "TEST_WAIT_PIDFILE": str(pidfile),
        },
    )
    kill_when_paused(first, pidfile, tmp_path)
    record = json.loads((output / "checkpoints" / "training-1.json").read_text())
    assert (record["epoch"], record["batches"] > 0, record["finished"]) == (1, within_an_epoch, False)
    assert json.loads((output / "checkpoints" / "training-0.json").read_text())["finished"] is True
    assert not (output / "report.json").exists() and not (output / "model.tflite").exists()

    again = runner(job_file, tmp_path, {"PYTHONPATH": os.pathsep.join(sys.path)})
    assert again.wait(timeout=600) == ExitCode.SUCCEEDED, (tmp_path / "runner.log").read_text()[-3000:]
    report = json.loads((output / "report.json").read_text())
    resumption = report["resumption"]
    assert resumption["reusedSteps"] == [0]
    assert resumption["resumedStep"] == 1 and resumption["resumedFromEpoch"] == 1
    assert resumption.get("resumedFromBatch") == (record["batches"] if within_an_epoch else None)
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


def test_a_failure_no_retry_fixes_deletes_the_checkpoints(
    blobs_model: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first step trains and checkpoints; the second is refused (exit 20, not retried): nothing is left."""
    spec = document(blobs_model, tmp_path / "out")
    spec["steps"] = [STEPS[0], {**STEPS[1], "skipLayers": ["no_such_layer"]}]
    written: list[str] = []
    from edgecompress_runner import checkpoints

    save = checkpoints.RunCheckpoints.save

    def recording(self: checkpoints.RunCheckpoints, index: int, state: checkpoints.TrainingState) -> None:
        save(self, index, state)
        written.append(f"{index}:{state.epoch}")

    monkeypatch.setattr(checkpoints.RunCheckpoints, "save", recording)
    run = run_job(spec, tmp_path)
    assert run.exit_code == ExitCode.INVALID_INPUT and "no_such_layer" in run.summary["message"]
    assert written[:3] == ["0:1", "0:2", "0:3"], "the first step checkpointed its epochs"
    assert not (tmp_path / "out" / "checkpoints").exists() and not (tmp_path / "out" / "report.json").exists()
