"""The auto step's training trials: trained into trials/<i>/, recorded in trial.json, measured by the search as
candidates of kind trained, and read back instead of trained again; the ``trial`` command a trial pod runs."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgecompress_contract.progress import ProgressEvent
from edgecompress_runner.errors import ExitCode
from tests.conftest import job, run_job
from tests.integration.test_native_crash import SITECUSTOMIZE
from tests.integration.tflite_inspect import (
    WEIGHTED_OPS,
    op_types,
    stored_weight_dtypes,
    weight_tensors,
    zero_fraction,
)

pytestmark = pytest.mark.tf

TRIALS = [
    {"preset": "qat", "fineTune": {"epochs": 1}},
    {"preset": "prune50Qat", "fineTune": {"epochs": 1}},
]
SEARCH = {"maxTrials": 2, "minWeights": 10**9}
"""Two post-training candidates and no per-layer analysis: the trials are what these tests are about."""
TRIAL_FILES = ("model.tflite", "report.json")


@pytest.fixture(scope="module")
def residual_keras(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The residual CNN (Conv2D + BatchNorm, SeparableConv2D block with a residual Add, Dense head) as a
    .keras file, trained one seeded epoch, and an unlabelled dataset of its images."""
    from edgecompress_runner.example import residual_cnn, synthetic_images
    from edgecompress_runner.tfcompat import seed_run

    images = synthetic_images(0, samples=700)
    seed_run(0)
    model = residual_cnn()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(images["x_train"][:300], images["y_train"][:300], epochs=1, batch_size=32, verbose=0)
    folder = tmp_path_factory.mktemp("trials")
    model.save(folder / "residual.keras")
    np.savez(folder / "images.npz", x_train=images["x_train"][:300], x_eval=images["x_eval"][:100])
    return folder / "residual.keras", folder / "images.npz"


def trials_job(model: Path, dataset: Path, output: Path, trials: list[dict[str, Any]]) -> dict[str, Any]:
    document = job(model, dataset, output, [{"type": "auto", "trials": trials, **SEARCH}], gates={"minFidelity": 0.5})
    document["evaluation"] = {"samples": 100, "latency": {"runs": 5, "warmup": 1}}
    return document


def progress_events(stderr: str) -> list[ProgressEvent]:
    found = (ProgressEvent.from_log_line(line) for line in stderr.splitlines())
    return [event for event in found if event is not None]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_local_run_trains_each_trial_measures_it_and_a_rerun_reads_the_records(
    residual_keras: tuple[Path, Path], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    model, dataset = residual_keras
    output = tmp_path / "out"
    document = trials_job(model, dataset, output, TRIALS)
    capfd.readouterr()
    first = run_job(document, tmp_path / "first")
    first_log = capfd.readouterr().err
    assert first.exit_code == ExitCode.SUCCEEDED, first.summary
    report = first.report
    (auto,) = report["steps"]
    trained = {candidate["name"]: candidate for candidate in auto["candidates"] if candidate["kind"] == "trained"}
    assert sorted(trained) == ["trial0-qat", "trial1-prune50Qat"]
    files: dict[Path, int] = {}
    for index, name in enumerate(trained):
        folder = output / "trials" / str(index)
        tflite, record_file = folder / "model.tflite", folder / "trial.json"
        record = json.loads(record_file.read_text())
        assert record["index"] == index and record["preset"] == TRIALS[index]["preset"] and record["exitCode"] == 0
        assert record["modelSha256"] == sha256(tflite) and record["sizeBytes"] == tflite.stat().st_size
        assert trained[name]["sizeBytes"] == len(tflite.read_bytes()) and trained[name]["recipe"] == []
        trial_report = json.loads((folder / "report.json").read_text())
        assert trial_report["outputs"]["tflite"]["sha256"] == sha256(tflite)
        assert [step["type"] for step in trial_report["steps"]] == (["qat"] if index == 0 else ["prune", "qat"])
        # trial.json is the trial's last file: its presence means the model and report are complete.
        assert record_file.stat().st_mtime_ns >= max((folder / file).stat().st_mtime_ns for file in TRIAL_FILES)
        for path in (tflite, folder / "report.json", record_file):
            files[path] = path.stat().st_mtime_ns
    # The QAT trial's file computes in int8: every conv and dense kernel is stored as int8, and they output int8.
    kernels = stored_weight_dtypes(output / "trials" / "0" / "model.tflite")
    assert kernels and set(kernels.values()) == {"int8"}, kernels
    weighted = {dtype for op, dtype in op_types(output / "trials" / "0" / "model.tflite") if op in WEIGHTED_OPS}
    assert weighted == {"int8"}, weighted
    # The prune50Qat trial's kernels are at least 45 % zeros (tfmot prunes the pointwise kernel of the
    # SeparableConv2D, and every Conv2D and Dense kernel, to 50 %).
    assert zero_fraction(weight_tensors(output / "trials" / "1" / "model.tflite")) >= 0.45
    assert any(event.event == "epoch" for event in progress_events(first_log))
    picked = (output / "model.tflite").read_bytes()
    (chosen,) = [candidate for candidate in auto["candidates"] if candidate.get("chosen")]
    assert chosen["sizeBytes"] == len(picked)

    document["output"]["overwrite"] = True
    second = run_job(document, tmp_path / "second")
    second_log = capfd.readouterr().err
    assert second.exit_code == ExitCode.SUCCEEDED, second.summary
    # Nothing trained: no epoch of any fine-tuning, and every trial file is the first run's, untouched.
    assert not any(event.event == "epoch" for event in progress_events(second_log))
    assert {path: path.stat().st_mtime_ns for path in files} == files
    served = [json.loads(line) for line in second_log.splitlines() if '"trainingTrial"' in line]
    assert [(entry["name"], entry["served"]) for entry in served] == [("trial0-qat", True), ("trial1-prune50Qat", True)]
    (again,) = second.report["steps"]
    measured_again = {candidate["name"]: candidate for candidate in again["candidates"]}
    for name, candidate in trained.items():  # the same files: their measurements come from the search's records
        assert measured_again[name]["sizeBytes"] == candidate["sizeBytes"] and measured_again[name]["cached"]
    assert (output / "model.tflite").read_bytes() == picked


def runner_command(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The runner's CLI in a process of its own; ``env`` is added to this process's environment (PYTHONPATH
    is put in front of this process's import path)."""
    path = os.pathsep.join([*([env["PYTHONPATH"]] if "PYTHONPATH" in env else []), *sys.path])
    return subprocess.run(
        [sys.executable, "-m", "edgecompress_runner.cli", *args],
        env={**os.environ, **env, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_trial_command_runs_one_trial_into_its_folder_and_then_reads_its_record(
    residual_keras: tuple[Path, Path], tmp_path: Path
) -> None:
    model, dataset = residual_keras
    output = tmp_path / "out"
    environment = {"EDGECOMPRESS_JOB": json.dumps(trials_job(model, dataset, output, TRIALS))}
    summary_file = tmp_path / "summary.json"
    ran = runner_command("trial", "--index", "1", "--summary-file", str(summary_file), env=environment)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert sorted(path.name for path in output.iterdir()) == ["trials"]
    assert sorted(path.name for path in (output / "trials").iterdir()) == ["1"]
    folder = output / "trials" / "1"
    assert {"model.tflite", "report.json", "trial.json"} <= {path.name for path in folder.iterdir()}
    record = json.loads((folder / "trial.json").read_text())
    assert record["preset"] == "prune50Qat" and record["modelSha256"] == sha256(folder / "model.tflite")
    summary = json.loads(summary_file.read_text())
    assert len(summary_file.read_bytes()) < 4096
    assert summary["exitCode"] == 0 and "spec.steps[0].trials[1] (trial1-prune50Qat) ran" in summary["message"]

    # The pod run again (JOB_COMPLETION_INDEX as Kubernetes sets it): served from the record, nothing rewritten.
    written = {path: path.stat().st_mtime_ns for path in folder.iterdir()}
    again = runner_command(
        "trial", "--summary-file", str(summary_file), env={**environment, "JOB_COMPLETION_INDEX": "1"}
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "read from its record" in json.loads(summary_file.read_text())["message"]
    assert {path: path.stat().st_mtime_ns for path in folder.iterdir()} == written

    # A model.tflite that is no longer the recorded one is not served: the trial runs again and replaces it.
    trained = (folder / "model.tflite").read_bytes()
    (folder / "model.tflite").write_bytes(trained[: len(trained) // 2])
    repaired = runner_command("trial", "--index", "1", "--summary-file", str(summary_file), env=environment)
    assert repaired.returncode == 0, repaired.stderr[-3000:]
    assert " ran in " in json.loads(summary_file.read_text())["message"]
    rewritten = json.loads((folder / "trial.json").read_text())
    assert rewritten["key"] == record["key"] and rewritten["modelSha256"] == sha256(folder / "model.tflite")
    assert (folder / "trial.json").stat().st_mtime_ns > written[folder / "trial.json"]


def test_trial_command_rejects_an_index_the_spec_does_not_have(
    residual_keras: tuple[Path, Path], tmp_path: Path
) -> None:
    model, dataset = residual_keras
    output = tmp_path / "out"
    job_file = tmp_path / "job.yaml"
    job_file.write_text(json.dumps(trials_job(model, dataset, output, TRIALS)))
    summary_file = tmp_path / "summary.json"
    failed = runner_command("trial", str(job_file), "--index", "5", "--summary-file", str(summary_file), env={})
    assert failed.returncode == ExitCode.INVALID_INPUT
    summary = json.loads(summary_file.read_text())
    assert summary["exitCode"] == 20 and summary["reason"] == "InvalidInput"
    assert "spec.steps[0].trials" in summary["message"] and "no trial 5" in summary["message"]
    assert not output.exists()

    without_trials = trials_job(model, dataset, output, [])
    job_file.write_text(json.dumps(without_trials))
    failed = runner_command("trial", str(job_file), "--index", "0", env={})
    assert failed.returncode == ExitCode.INVALID_INPUT and "spec.steps[0].trials" in failed.stderr

    job_file.write_text(json.dumps(trials_job(model, dataset, output, TRIALS)))
    unindexed = runner_command("trial", str(job_file), env={"JOB_COMPLETION_INDEX": ""})
    assert unindexed.returncode == ExitCode.INVALID_INPUT and "JOB_COMPLETION_INDEX" in unindexed.stderr


@pytest.fixture(scope="module")
def layer_norm_keras(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A small dense classifier with a LayerNormalization, a layer tfmot's QAT has no quantization config for."""
    from tests.integration.conftest import seeded_keras

    keras = seeded_keras()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 16)).astype(np.float32)
    y = (x[:, :4].argmax(-1)).astype(np.int32)
    inputs = keras.Input((16,), name="features")
    hidden = keras.layers.LayerNormalization(name="norm")(
        keras.layers.Dense(32, activation="relu", name="hidden")(inputs)
    )
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax", name="classes")(hidden))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x[:150], y[:150], epochs=2, verbose=0)
    folder = tmp_path_factory.mktemp("layer-norm")
    model.save(folder / "norm.keras")
    np.savez(folder / "norm.npz", x_train=x[:150], x_eval=x[150:])
    return folder / "norm.keras", folder / "norm.npz"


def test_a_trial_that_fails_for_good_is_recorded_and_listed_unavailable(
    layer_norm_keras: tuple[Path, Path], tmp_path: Path
) -> None:
    model, dataset = layer_norm_keras
    output = tmp_path / "out"
    document = trials_job(model, dataset, output, [{"preset": "qat", "fineTune": {"epochs": 1}}])
    document["evaluation"]["samples"] = 50
    run = run_job(document, tmp_path / "work")
    assert run.exit_code == ExitCode.SUCCEEDED, run.summary
    folder = output / "trials" / "0"
    assert not (folder / "model.tflite").exists() and not (folder / "report.json").exists()
    record = json.loads((folder / "trial.json").read_text())
    assert record["exitCode"] == ExitCode.INVALID_INPUT and record["reason"] == "UnsupportedLayer"
    assert "'norm'" in record["message"] and "modelSha256" not in record
    (auto,) = run.report["steps"]
    assert not any(candidate["kind"] == "trained" for candidate in auto["candidates"])
    reason = auto["unavailable"]["trial0-qat"]
    assert "UnsupportedLayer" in reason and record["message"] in reason

    # A failure for good is the trial's outcome: a re-run reads it back instead of running the trial again.
    recorded = (folder / "trial.json").stat().st_mtime_ns
    document["output"]["overwrite"] = True
    again = run_job(document, tmp_path / "again")
    assert again.exit_code == ExitCode.SUCCEEDED, again.summary
    assert (folder / "trial.json").stat().st_mtime_ns == recorded
    (served,) = again.report["steps"]
    assert served["unavailable"]["trial0-qat"] == reason

    # The advice works: the layer listed in the trial's skipLayers, the trial trains (a new key: it runs again).
    assert "spec.steps[0].trials[0].skipLayers" in reason
    document["steps"][0]["trials"][0]["skipLayers"] = ["norm"]
    skipped = run_job(document, tmp_path / "skipped")
    assert skipped.exit_code == ExitCode.SUCCEEDED, skipped.summary
    record = json.loads((folder / "trial.json").read_text())
    assert record["exitCode"] == 0 and record["sizeBytes"] == (folder / "model.tflite").stat().st_size
    (trained,) = [c for c in skipped.report["steps"][0]["candidates"] if c["kind"] == "trained"]
    assert trained["name"] == "trial0-qat" and trained["sizeBytes"] == record["sizeBytes"]


@pytest.mark.parametrize(
    ("signal_name", "exit_code"), [("SIGSEGV", ExitCode.SUCCEEDED), ("SIGKILL", ExitCode.INFRASTRUCTURE)]
)
def test_a_trial_whose_run_dies_of_a_signal(
    residual_keras: tuple[Path, Path], tmp_path: Path, signal_name: str, exit_code: ExitCode
) -> None:
    """The trial's run process is killed as QAT starts (test_native_crash's injection): a native crash (SIGSEGV)
    fails again on the same inputs, so it is the trial's recorded outcome and the pod succeeds; a SIGKILL (the
    out-of-memory killer) leaves no record and exits 22, so Kubernetes runs the pod again."""
    model, dataset = residual_keras
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    output = tmp_path / "out"
    summary_file = tmp_path / "summary.json"
    environment = {
        "EDGECOMPRESS_JOB": json.dumps(trials_job(model, dataset, output, TRIALS[:1])),
        "JOB_COMPLETION_INDEX": "0",
        "PYTHONPATH": str(hook),
        "TEST_CRASH_AFTER": "steps[0] qat started",
        "TEST_CRASH_SIGNAL": signal_name,
        "TEST_CRASH_PIDFILE": str(tmp_path / "child.pid"),
    }
    ran = runner_command("trial", "--summary-file", str(summary_file), env=environment)
    assert ran.returncode == exit_code, ran.stderr[-3000:]
    folder = output / "trials" / "0"
    assert not (folder / "model.tflite").exists() and not (folder / "report.json").exists()
    summary = json.loads(summary_file.read_text())
    if signal_name == "SIGKILL":
        assert not (folder / "trial.json").exists()
        assert summary["exitCode"] == 22 and "Killed" in summary["message"], summary
        return
    record = json.loads((folder / "trial.json").read_text())
    assert record["exitCode"] == ExitCode.NATIVE_CRASH and record["reason"] == "NativeCrash"
    assert "SIGSEGV" in record["message"] and "steps[0] qat" in record["message"]
    assert summary["exitCode"] == 0 and "failed for good (exit 23, NativeCrash)" in summary["message"]
