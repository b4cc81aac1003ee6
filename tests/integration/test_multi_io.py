"""Models with several inputs and outputs, integer inputs, unknown input sizes and non-multiclass outputs.

Each model is built and briefly trained with tf-keras (seeded, tiny; tests/integration/conftest.py); every run
goes through the CLI entry, and the checks read report.json and the .tflite itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgecompress_runner.errors import ExitCode
from tests.conftest import JobRun, job, run_job
from tests.integration.tflite_inspect import interpreter

pytestmark = pytest.mark.tf

PTQ_MODES = ("dynamic", "float16", "int8")


def ptq(model: tuple[Path, Path], mode: str, tmp_path: Path, **extra: Any) -> JobRun:
    steps = [{"type": "ptq", "mode": mode, "representativeSamples": 50, **extra.pop("ptq", {})}]
    run = run_job(job(model[0], model[1], tmp_path / mode / "out", steps, **extra), tmp_path / mode)
    return run


def outputs_of(report: dict[str, Any], role: str = "result") -> dict[str, dict[str, Any]]:
    return {output["name"]: output for output in report[role]["outputs"]}


def input_dtypes(path: Path) -> dict[str, str]:
    runner = interpreter(path).get_signature_runner()
    return {name: np.dtype(detail["dtype"]).name for name, detail in runner.get_input_details().items()}


def assert_fidelity(output: dict[str, Any], *, classifier: bool) -> None:
    assert -200 <= output["snrDb"] <= 200
    assert 0.5 < output["cosineSimilarity"] <= 1.0 + 1e-6
    assert output["meanAbsError"] >= 0
    assert ("agreement" in output) == classifier


def test_multi_output_variable_length_audio(audio_model: tuple[Path, Path], tmp_path: Path) -> None:
    for mode in PTQ_MODES:
        run = ptq(audio_model, mode, tmp_path)
        assert run.exit_code == ExitCode.SUCCEEDED, run.summary
        report = run.report
        outputs = outputs_of(report)
        assert {name: output["task"] for name, output in outputs.items()} == {
            "frames": "regression",
            "pitch": "multiclass",
        }
        assert_fidelity(outputs["frames"], classifier=False)
        assert_fidelity(outputs["pitch"], classifier=True)
        baseline = outputs_of(report, "baseline")
        assert baseline["pitch"]["accuracy"] > 0.6 and "labelMeanAbsError" in baseline["frames"]
        assert report["result"]["inputs"] == [{"name": "audio", "dtype": "float32", "shape": [-1, 1]}]
        assert report["comparison"]["snrDb"] == min(output["snrDb"] for output in outputs.values())
        assert report["comparison"]["top1Agreement"] == outputs["pitch"]["agreement"]
        signature = interpreter(run.output / "model.tflite").get_signature_runner().get_input_details()
        assert list(signature["audio"]["shape_signature"]) == [-1, -1, 1]
    assert outputs["pitch"]["agreement"] >= 0.9  # int8


def test_token_ids_stay_integers(text_model: tuple[Path, Path], tmp_path: Path) -> None:
    for mode in PTQ_MODES:
        run = ptq(text_model, mode, tmp_path, ptq={"integerIO": True} if mode == "int8" else {})
        assert run.exit_code == ExitCode.SUCCEEDED, run.summary
        report = run.report
        [output] = report["result"]["outputs"]
        assert output["name"] == "topic" and output["task"] == "multiclass"
        assert_fidelity(output, classifier=True)
        assert report["result"]["inputType"] == "int32"
        assert input_dtypes(run.output / "model.tflite") == {"tokens": "int32"}
        assert report["result"]["accuracy"] >= report["baseline"]["accuracy"] - 0.05
        assert report["baseline"]["accuracy"] > 0.8
    assert outputs_of(run.report)["topic"]["dtype"] == "int8"  # integerIO: float outputs become int8


def test_binary_classifier(binary_model: tuple[Path, Path], tmp_path: Path) -> None:
    for mode in PTQ_MODES:
        run = ptq(binary_model, mode, tmp_path, gates={"maxAccuracyDrop": 0.05, "minFidelity": 0.9})
        assert run.exit_code == ExitCode.SUCCEEDED, run.summary
        [output] = run.report["result"]["outputs"]
        assert output["task"] == "binary" and 0.5 < output["accuracy"] <= 1
        assert_fidelity(output, classifier=True)


def test_regression_model(regression_model: tuple[Path, Path], tmp_path: Path) -> None:
    for mode in PTQ_MODES:
        run = ptq(regression_model, mode, tmp_path)
        assert run.exit_code == ExitCode.SUCCEEDED, run.summary
        [output] = run.report["result"]["outputs"]
        assert output["task"] == "regression" and "accuracy" not in output
        assert output["labelMeanAbsError"] < 2.0
        assert_fidelity(output, classifier=False)
        assert "top1Agreement" not in run.report["comparison"]


def test_two_inputs_fed_by_name(two_input_model: tuple[Path, Path], tmp_path: Path) -> None:
    for mode in PTQ_MODES:
        run = ptq(two_input_model, mode, tmp_path)
        assert run.exit_code == ExitCode.SUCCEEDED, run.summary
        report = run.report
        assert {tensor["name"]: tensor["shape"] for tensor in report["result"]["inputs"]} == {
            "left": [8],
            "right": [4],
        }
        [output] = report["result"]["outputs"]
        assert output["task"] == "multiclass" and output["agreement"] >= 0.9
        assert report["baseline"]["accuracy"] > 0.7
    assert input_dtypes(run.output / "model.tflite") == {"left": "float32", "right": "float32"}


def test_task_set_in_the_spec(two_input_model: tuple[Path, Path], tmp_path: Path) -> None:
    evaluation = {
        "metric": "fidelity",  # class labels do not fit a regression output
        "latency": {"runs": 5, "warmup": 1},
        "outputs": [{"name": "label", "task": "regression"}],
    }
    run = ptq(two_input_model, "float16", tmp_path, evaluation=evaluation)
    assert run.exit_code == ExitCode.SUCCEEDED, run.summary
    [output] = run.report["result"]["outputs"]
    assert output["task"] == "regression" and "agreement" not in output


def test_unknown_output_in_the_spec_is_named(two_input_model: tuple[Path, Path], tmp_path: Path) -> None:
    evaluation = {"outputs": [{"name": "lable", "task": "binary"}]}
    run = ptq(two_input_model, "float16", tmp_path, evaluation=evaluation)
    assert run.exit_code == ExitCode.INVALID_INPUT
    assert "spec.evaluation.outputs[0].name" in run.summary["message"] and "'lable'" in run.summary["message"]


def test_snr_and_fidelity_gates(
    audio_model: tuple[Path, Path], regression_model: tuple[Path, Path], tmp_path: Path
) -> None:
    passing = ptq(audio_model, "float16", tmp_path / "pass", gates={"minSnrDb": 40, "minFidelity": 0.95})
    assert passing.exit_code == ExitCode.SUCCEEDED, passing.summary
    gates = {gate["name"]: gate for gate in passing.report["gates"]}
    assert gates["minSnrDb"]["passed"] and gates["minFidelity"]["passed"]
    assert "frames" in gates["minSnrDb"]["reason"] and "pitch" in gates["minSnrDb"]["reason"]
    assert "of output 'pitch'" in gates["minFidelity"]["reason"]
    failing = ptq(audio_model, "int8", tmp_path / "fail", gates={"minSnrDb": 80})
    assert failing.exit_code == ExitCode.GATES_FAILED
    [gate] = failing.report["gates"]
    assert not gate["passed"] and gate["actual"] == failing.report["comparison"]["snrDb"] < 80
    no_classifier = ptq(regression_model, "float16", tmp_path / "regression", gates={"minFidelity": 0.5})
    assert no_classifier.exit_code == ExitCode.GATES_FAILED
    [gate] = no_classifier.report["gates"]
    assert "actual" not in gate and "no output is a classifier" in gate["reason"]


@pytest.mark.parametrize(
    ("rename", "message"),
    [
        (
            {"x_train/audio": "x_train/audi0"},
            r"array x_train/audi0 names no model input; the model's inputs are \['audio'\]",
        ),
        (
            {"y_eval/pitch": "y_eval/pitches", "y_train/pitch": "y_train/pitches"},
            r"array y_train/pitches names no model output; the model's outputs are \['frames', 'pitch'\]",
        ),
    ],
)
def test_wrong_array_name_is_refused(
    audio_model: tuple[Path, Path], rename: dict[str, str], message: str, tmp_path: Path
) -> None:
    import re

    with np.load(audio_model[1]) as archive:
        arrays = {rename.get(name, name): archive[name] for name in archive.files}
    dataset = tmp_path / "renamed.npz"
    np.savez(dataset, **arrays)
    run = ptq((audio_model[0], dataset), "int8", tmp_path)
    assert run.exit_code == ExitCode.INVALID_INPUT
    assert re.search(message, run.summary["message"]), run.summary["message"]
    assert not (tmp_path / "int8" / "out").exists()


def test_single_array_for_two_inputs_is_refused(two_input_model: tuple[Path, Path], tmp_path: Path) -> None:
    dataset = tmp_path / "single.npz"
    np.savez(dataset, x_train=np.zeros((10, 8)), x_eval=np.zeros((10, 8)))
    run = ptq((two_input_model[0], dataset), "dynamic", tmp_path)
    assert run.exit_code == ExitCode.INVALID_INPUT
    assert (
        "x_train is one array but the model has inputs ['left', 'right']; give x_train/left, x_train/right"
        in (run.summary["message"])
    )
