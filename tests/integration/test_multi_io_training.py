"""Fine-tuning steps on models with several outputs or inputs and on a token-id model (models: conftest.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgecompress_runner.errors import ExitCode
from tests.conftest import JobRun, job, run_job
from tests.integration.conftest import seeded_keras
from tests.integration.test_multi_io import input_dtypes, outputs_of
from tests.integration.tflite_inspect import op_types, weight_tensors, zero_fraction

pytestmark = pytest.mark.tf


def train(model: tuple[Path, Path], steps: list[dict[str, Any]], tmp_path: Path, **extra: Any) -> JobRun:
    document = job(model[0], model[1], tmp_path / "out", steps, **extra)
    document["evaluation"]["latency"] = {"runs": 5, "warmup": 1}
    run = run_job(document, tmp_path)
    assert run.exit_code == ExitCode.SUCCEEDED, run.summary
    return run


def test_prune_then_int8_on_the_multi_output_model(audio_model: tuple[Path, Path], tmp_path: Path) -> None:
    steps = [
        {"type": "prune", "targetSparsity": 0.5, "fineTune": {"epochs": 2, "batchSize": 16}},
        {"type": "ptq", "mode": "int8", "representativeSamples": 50},
    ]
    report = train(audio_model, steps, tmp_path).report
    validation = report["steps"][0]["validation"]
    assert validation["metric"] == "worstOutputFidelity" and validation["samples"] == 25
    assert report["steps"][0]["sparsity"]["overall"] == pytest.approx(0.5, abs=0.02)
    outputs = outputs_of(report)
    assert set(outputs) == {"frames", "pitch"} and outputs["pitch"]["agreement"] >= 0.8
    assert outputs["frames"]["snrDb"] > 6  # 11.9 dB in repeated runs
    kernels = weight_tensors(tmp_path / "out" / "model.tflite")
    assert {kernel.dtype for kernel in kernels.values()} == {np.dtype(np.int8)}
    assert zero_fraction(kernels) >= 0.45


def test_qat_on_the_multi_output_model(audio_model: tuple[Path, Path], tmp_path: Path) -> None:
    qat = {"type": "qat", "fineTune": {"epochs": 1, "batchSize": 16}}
    run = run_job(job(*audio_model, tmp_path / "refused", [qat, {"type": "ptq", "mode": "int8"}]), tmp_path / "one")
    assert run.exit_code == ExitCode.INVALID_INPUT
    assert "'conv_a' (Conv1D), 'conv_b' (Conv1D), 'frames' (Conv1D)" in run.summary["message"]  # tfmot has no Conv1D
    qat["skipLayers"] = ["conv_a", "conv_b", "frames"]
    report = train(audio_model, [qat, {"type": "ptq", "mode": "int8"}], tmp_path).report
    assert report["steps"][0]["quantizedLayers"] == ["pool", "pitch"]
    outputs = outputs_of(report)
    assert set(outputs) == {"frames", "pitch"} and outputs["pitch"]["agreement"] >= 0.8
    ops = op_types(tmp_path / "out" / "model.tflite")
    # Only what QAT annotated is integer: the Conv1D layers it cannot quantize stay float.
    assert ("SOFTMAX", "int8") in ops and ("CONV_2D", "float32") in ops


def test_prune_then_int8_on_the_text_model(text_model: tuple[Path, Path], tmp_path: Path) -> None:
    steps = [
        {"type": "prune", "targetSparsity": 0.5, "fineTune": {"epochs": 2}},
        {"type": "ptq", "mode": "int8", "integerIO": True, "representativeSamples": 50},
    ]
    report = train(text_model, steps, tmp_path).report
    assert report["steps"][0]["validation"]["metric"] == "top1Agreement"
    assert report["result"]["accuracy"] >= report["baseline"]["accuracy"] - 0.1
    assert input_dtypes(tmp_path / "out" / "model.tflite") == {"tokens": "int32"}


def test_qat_on_the_text_model(text_model: tuple[Path, Path], tmp_path: Path) -> None:
    steps = [{"type": "qat", "fineTune": {"epochs": 1}}, {"type": "ptq", "mode": "int8"}]
    report = train(text_model, steps, tmp_path).report
    assert report["steps"][0]["skippedLayers"] == ["embedding"]  # fed token ids: never fake-quantized
    assert report["result"]["top1Agreement"] >= 0.8
    assert input_dtypes(tmp_path / "out" / "model.tflite") == {"tokens": "int32"}
    assert ("FULLY_CONNECTED", "int8") in op_types(tmp_path / "out" / "model.tflite")


def test_cluster_on_the_two_input_model(two_input_model: tuple[Path, Path], tmp_path: Path) -> None:
    steps = [{"type": "cluster", "numberOfClusters": 8, "fineTune": {"epochs": 1}}, {"type": "qat"}]
    steps[1]["fineTune"] = {"epochs": 1}
    steps.append({"type": "ptq", "mode": "int8"})
    report = train(two_input_model, steps, tmp_path).report
    assert max(report["steps"][0]["uniqueWeights"].values()) <= 8
    assert report["result"]["top1Agreement"] >= 0.8
    assert {tensor["name"] for tensor in report["result"]["inputs"]} == {"left", "right"}


def test_distill_a_multi_output_student(audio_model: tuple[Path, Path], tmp_path: Path) -> None:
    keras = seeded_keras()
    audio = keras.Input((None, 1), name="audio")
    hidden = keras.layers.Conv1D(4, 5, padding="same", activation="relu")(audio)
    frames = keras.layers.Conv1D(1, 1, activation="sigmoid", name="frames")(hidden)
    pitch = keras.layers.Dense(3, activation="softmax", name="pitch")(keras.layers.GlobalMaxPooling1D()(hidden))
    student = tmp_path / "student.keras"
    keras.Model(audio, [frames, pitch]).save(student)
    steps = [
        {
            "type": "distill",
            "student": {"uri": str(student), "format": "keras"},
            "fineTune": {"epochs": 3, "learningRate": 0.01, "batchSize": 16},
        },
        {"type": "ptq", "mode": "float16"},
    ]
    report = train(audio_model, steps, tmp_path).report
    distilled = report["steps"][0]
    assert distilled["studentParameters"] < distilled["teacherParameters"]
    assert distilled["alpha"] == 0.1 and 0 < distilled["trainAgreementWithTeacher"] <= 1
    outputs = outputs_of(report)
    assert set(outputs) == {"frames", "pitch"} and outputs["pitch"]["agreement"] >= 0.7  # 0.89 in repeated runs
