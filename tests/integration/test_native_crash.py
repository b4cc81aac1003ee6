"""A run process that dies of a signal still ends with a summary, a documented exit code and no upload.

The crash is injected from outside the product: a ``sitecustomize`` module on the runner's PYTHONPATH
wraps ``Progress._emit`` so that, right after a chosen progress message, the process sends itself a
signal (as a native crash in TensorFlow would) — only the child that runs the job emits progress.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from edgecompress_runner.errors import ExitCode
from tests.conftest import job, run_job_in_new_process

pytestmark = pytest.mark.tf

SITECUSTOMIZE = """
import os
import signal

from edgecompress_runner import progress

_emit = progress.Progress._emit


def _emit_then_die(self, message, event):
    _emit(self, message, event)
    if message == os.environ["TEST_CRASH_AFTER"]:
        with open(os.environ["TEST_CRASH_PIDFILE"], "w") as pidfile:
            pidfile.write(str(os.getpid()))
        target = os.getppid() if os.environ.get("TEST_CRASH_PARENT") else os.getpid()
        os.kill(target, signal.Signals[os.environ["TEST_CRASH_SIGNAL"]])
        signal.pause()


progress.Progress._emit = _emit_then_die
"""

STEPS = [{"type": "prune", "fineTune": {"epochs": 2}}, {"type": "ptq", "mode": "dynamic"}]


def run_until_signal(
    model: Path, dataset: Path, tmp_path: Path, after: str, signal_name: str, parent: bool = False
) -> tuple[int, dict[str, object], str]:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    job_file = tmp_path / "job.yaml"
    job_file.write_text(yaml.safe_dump(job(model, dataset, tmp_path / "out", STEPS)))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(hook), *sys.path]),
        "TMPDIR": str(scratch),
        "TEST_CRASH_AFTER": after,
        "TEST_CRASH_SIGNAL": signal_name,
        "TEST_CRASH_PIDFILE": str(tmp_path / "child.pid"),
        **({"TEST_CRASH_PARENT": "1"} if parent else {}),
    }
    summary = tmp_path / "termination-log"
    finished = subprocess.run(
        [sys.executable, "-m", "edgecompress_runner.cli", "run", str(job_file), "--summary-file", str(summary)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert not (tmp_path / "out" / "model.tflite").exists() and not (tmp_path / "out" / "report.json").exists()
    if signal_name == "SIGKILL" and parent:  # nothing is left to clean up or report
        return finished.returncode, {}, finished.stderr
    assert not list(scratch.glob("edgecompress-*")), "the temporary work folder was left behind"
    return finished.returncode, json.loads(summary.read_text()), finished.stderr


@pytest.mark.parametrize(
    ("after", "signal_name", "code", "reason", "words"),
    [
        ("steps[0] prune started", "SIGSEGV", ExitCode.NATIVE_CRASH, "NativeCrash", "SIGSEGV (Segmentation fault)"),
        ("steps[0] prune epoch 1/2", "SIGABRT", ExitCode.NATIVE_CRASH, "NativeCrash", "after epoch 1 of 2"),
        ("steps[0] prune started", "SIGKILL", ExitCode.INFRASTRUCTURE, "Killed", "out-of-memory killer"),
    ],
)
def test_a_child_killed_by_a_signal_gives_a_summary_and_a_documented_exit_code(
    digits_model: Path,
    small_digits_npz: Path,
    tmp_path: Path,
    after: str,
    signal_name: str,
    code: ExitCode,
    reason: str,
    words: str,
) -> None:
    returncode, summary, stderr = run_until_signal(digits_model, small_digits_npz, tmp_path, after, signal_name)
    assert returncode == code, stderr[-3000:]
    assert summary["result"] == "Failed" and summary["exitCode"] == code and summary["reason"] == reason
    assert "in phase steps[0] prune" in str(summary["message"]) and words in str(summary["message"])
    if signal_name == "SIGSEGV":
        assert "Fatal Python error: Segmentation fault" in stderr, "faulthandler shows the Python stack"


def test_sigterm_to_the_runner_stops_the_child_and_says_so(
    digits_model: Path, small_digits_npz: Path, tmp_path: Path
) -> None:
    returncode, summary, stderr = run_until_signal(
        digits_model, small_digits_npz, tmp_path, "steps[0] prune started", "SIGTERM", parent=True
    )
    assert returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert summary["reason"] == "Terminated" and "stopped by SIGTERM in phase steps[0] prune" in str(summary["message"])


def test_a_child_does_not_outlive_a_killed_runner(digits_model: Path, small_digits_npz: Path, tmp_path: Path) -> None:
    returncode, _, stderr = run_until_signal(
        digits_model, small_digits_npz, tmp_path, "steps[0] prune started", "SIGKILL", parent=True
    )
    assert returncode == -signal.SIGKILL, stderr[-3000:]
    child = int((tmp_path / "child.pid").read_text())
    deadline = time.monotonic() + 30
    while Path(f"/proc/{child}").exists() and "Z" not in _state(child):
        assert time.monotonic() < deadline, "the run process goes on after its runner was killed"
        time.sleep(0.2)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def mini_xception(path: Path) -> None:
    """The mini-Xception emotion CNN (64x64x1; SeparableConv2D + BatchNormalization + residual adds)."""
    from edgecompress_runner.tfcompat import keras

    layers, l2 = keras.layers, keras.regularizers.l2(0.01)
    inputs = layers.Input((64, 64, 1))
    x = inputs
    for _ in range(2):
        x = layers.Conv2D(8, 3, kernel_regularizer=l2, use_bias=False)(x)
        x = layers.Activation("relu")(layers.BatchNormalization()(x))
    for filters in (16, 32, 64, 128):
        residual = layers.BatchNormalization()(layers.Conv2D(filters, 1, strides=2, padding="same", use_bias=False)(x))
        x = layers.SeparableConv2D(filters, 3, padding="same", depthwise_regularizer=l2, use_bias=False)(x)
        x = layers.Activation("relu")(layers.BatchNormalization()(x))
        x = layers.SeparableConv2D(filters, 3, padding="same", depthwise_regularizer=l2, use_bias=False)(x)
        x = layers.MaxPooling2D(3, strides=2, padding="same")(layers.BatchNormalization()(x))
        x = layers.add([x, residual])
    x = layers.GlobalAveragePooling2D()(layers.Conv2D(7, 3, padding="same")(x))
    keras.Model(inputs, layers.Activation("softmax")(x)).save(path)


def test_a_mini_xception_fine_tunes_without_a_native_crash(tmp_path: Path) -> None:
    """With oneDNN's custom kernels on (TF_ENABLE_ONEDNN_OPTS=1) this run dies of SIGABRT in the cluster step
    (prune: SIGSEGV); the runner turns them off unless the environment sets the variable."""
    model = tmp_path / "mini_xception.h5"
    mini_xception(model)
    rng = np.random.default_rng(0)
    dataset = tmp_path / "faces.npz"
    np.savez(
        dataset,
        x_train=rng.random((128, 64, 64, 1), dtype=np.float32),
        y_train=rng.integers(0, 7, 128),
        x_eval=rng.random((32, 64, 64, 1), dtype=np.float32),
        y_eval=rng.integers(0, 7, 32),
    )
    document = job(model, dataset, tmp_path / "out", [{"type": "cluster", "fineTune": {"epochs": 1}}])
    document["evaluation"] = {"samples": 32, "latency": {"runs": 2, "warmup": 0}}
    env = {name: value for name, value in os.environ.items() if name != "TF_ENABLE_ONEDNN_OPTS"}
    finished = run_job_in_new_process(document, tmp_path, env)
    assert finished.returncode == ExitCode.SUCCEEDED, (tmp_path / "summary.json").read_text()
