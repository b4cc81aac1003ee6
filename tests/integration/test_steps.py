"""Each step type on a real (tiny) model: a valid .tflite that LiteRT runs, with the promised effect."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgecompress_runner.errors import ExitCode
from tests.conftest import job, run_job
from tests.integration.tflite_inspect import op_types, weight_tensors, zero_fraction

pytestmark = pytest.mark.tf


def succeed(document: dict, tmp_path: Path):  # type: ignore[no-untyped-def]
    run = run_job(document, tmp_path)
    assert run.exit_code == ExitCode.SUCCEEDED, run.summary
    assert (run.output / "model.tflite").is_file() and (run.output / "report.json").is_file()
    return run


def test_prune_reaches_target_sparsity_in_the_tflite(
    digits_model: Path, small_digits_npz: Path, tmp_path: Path
) -> None:
    steps = [{"type": "prune", "targetSparsity": 0.6, "fineTune": {"epochs": 2}}, {"type": "ptq", "mode": "dynamic"}]
    run = succeed(job(digits_model, small_digits_npz, tmp_path / "out", steps), tmp_path)
    reached = run.report["steps"][0]["sparsity"]["overall"]
    assert reached == pytest.approx(0.6, abs=0.02)
    kernels = weight_tensors(run.output / "model.tflite")
    # Dynamic range leaves tiny kernels (conv1: 144 weights) float; the big ones are int8.
    assert sum(kernel.dtype == np.int8 for kernel in kernels.values()) == 3
    assert zero_fraction(kernels) == pytest.approx(0.6, abs=0.02)
    assert run.report["result"]["gzipBytes"] < run.report["baseline"]["gzipBytes"] / 4


@pytest.mark.parametrize("schedule", ["constantSparsity", "oneShot"])
def test_structured_2_by_4_sparsity(digits_model: Path, small_digits_npz: Path, tmp_path: Path, schedule: str) -> None:
    steps = [
        {
            "type": "prune",
            "pattern": "2:4",
            "schedule": schedule,
            "skipFirstAndLast": True,
            "fineTune": {"epochs": 1},
        },
        {"type": "ptq", "mode": "dynamic"},
    ]
    run = succeed(job(digits_model, small_digits_npz, tmp_path / "out", steps), tmp_path)
    pruned = run.report["steps"][0]["sparsity"]["layers"]
    assert set(pruned) == {"conv2", "fc1"}
    assert all(value == pytest.approx(0.5, abs=0.01) for value in pruned.values())
    kernels = weight_tensors(run.output / "model.tflite")
    blocked = [kernel for name, kernel in kernels.items() if "conv2" in name or "fc1" in name]
    assert len(blocked) == 2
    for kernel in blocked:  # TFLite keeps input channels last: at most two of every four consecutive are set
        rows = kernel.reshape(-1, kernel.shape[-1])
        blocks = rows[:, : rows.shape[1] // 4 * 4].reshape(len(rows), -1, 4)
        assert ((blocks != 0).sum(-1) <= 2).all()


def test_pruning_alone_gives_a_sparse_float_model(digits_model: Path, small_digits_npz: Path, tmp_path: Path) -> None:
    steps = [
        {
            "type": "prune",
            "targetSparsity": 0.7,
            "initialSparsity": 0.3,
            "fineTune": {"epochs": 3, "learningRate": 0.001},
        }
    ]
    run = succeed(job(digits_model, small_digits_npz, tmp_path / "out", steps), tmp_path)
    report = run.report
    assert report["conversion"]["mode"] == "float" and report["conversion"]["sparseEncoding"]
    assert "XNNPACK sparse inference" in report["conversion"]["speedPath"]
    assert report["result"]["sizeBytes"] < report["baseline"]["sizeBytes"]
    assert report["result"]["accuracy"] >= report["baseline"]["accuracy"] - 0.05


def test_cluster_limits_distinct_weights(digits_model: Path, small_digits_npz: Path, tmp_path: Path) -> None:
    steps = [{"type": "cluster", "numberOfClusters": 8, "fineTune": {"epochs": 1}}]
    run = succeed(job(digits_model, small_digits_npz, tmp_path / "out", steps), tmp_path)
    assert max(run.report["steps"][0]["uniqueWeights"].values()) <= 8
    kernels = weight_tensors(run.output / "model.tflite")
    assert kernels and max(np.unique(kernel).size for kernel in kernels.values()) <= 8


def test_qat_after_prune_keeps_sparsity(digits_model: Path, small_digits_npz: Path, tmp_path: Path) -> None:
    steps = [
        {"type": "prune", "targetSparsity": 0.7, "fineTune": {"epochs": 2}},
        {"type": "qat", "fineTune": {"epochs": 1}},
        {"type": "ptq", "mode": "int8"},
    ]
    run = succeed(job(digits_model, small_digits_npz, tmp_path / "out", steps), tmp_path)
    qat = run.report["steps"][1]
    assert qat["scheme"] == "Default8BitPrunePreserveQuantizeScheme"
    assert qat["sparsity"]["overall"] == pytest.approx(0.7, abs=0.02)
    assert zero_fraction(weight_tensors(run.output / "model.tflite")) >= 0.68


def test_prune_cluster_qat_preserve_earlier_gains(digits_model: Path, small_digits_npz: Path, tmp_path: Path) -> None:
    steps = [
        {"type": "prune", "targetSparsity": 0.5, "fineTune": {"epochs": 2}},
        {"type": "cluster", "numberOfClusters": 8, "fineTune": {"epochs": 1}},
        {"type": "qat", "fineTune": {"epochs": 1}},
        {"type": "ptq", "mode": "int8"},
    ]
    run = succeed(job(digits_model, small_digits_npz, tmp_path / "out", steps), tmp_path)
    _, clustered, qat, _ = run.report["steps"]
    assert clustered["preserveSparsity"] and clustered["sparsity"]["overall"] == pytest.approx(0.5, abs=0.02)
    assert max(clustered["uniqueWeights"].values()) <= 8
    assert qat["scheme"] == "Default8BitClusterPreserveQuantizeScheme"
    assert qat["sparsity"]["overall"] == pytest.approx(0.5, abs=0.02)
    assert zero_fraction(weight_tensors(run.output / "model.tflite")) >= 0.48


def test_int8_is_at_least_3_5x_smaller_than_float(digits_model: Path, small_digits_npz: Path, tmp_path: Path) -> None:
    steps = [{"type": "ptq", "mode": "int8", "integerIO": True, "representativeSamples": 100}]
    run = succeed(job(digits_model, small_digits_npz, tmp_path / "out", steps), tmp_path)
    report = run.report
    assert report["baseline"]["sizeBytes"] / report["result"]["sizeBytes"] >= 3.5
    assert report["result"]["inputType"] == "int8"
    assert report["result"]["accuracy"] >= report["baseline"]["accuracy"] - 0.03
    assert {dtype for op, dtype in op_types(run.output / "model.tflite") if op == "CONV_2D"} == {"int8"}


@pytest.mark.parametrize(("mode", "min_ratio", "weight_dtype"), [("float16", 1.8, "float16"), ("int16x8", 3.0, "int8")])
def test_other_ptq_modes(
    mode: str, min_ratio: float, weight_dtype: str, digits_model: Path, small_digits_npz: Path, tmp_path: Path
) -> None:
    run = succeed(job(digits_model, small_digits_npz, tmp_path / "out", [{"type": "ptq", "mode": mode}]), tmp_path)
    report = run.report
    assert report["baseline"]["sizeBytes"] / report["result"]["sizeBytes"] >= min_ratio
    assert report["result"]["accuracy"] >= report["baseline"]["accuracy"] - 0.02
    model = run.output / "model.tflite"
    from tests.integration.tflite_inspect import interpreter

    dtypes = {np.dtype(t["dtype"]).name for t in interpreter(model).get_tensor_details()}
    assert weight_dtype in dtypes


@pytest.mark.parametrize(
    ("steps", "fully_connected"),
    [
        # QAT annotates every layer but logits; int8 conversion keeps logits float.
        (
            [{"type": "qat", "skipLayers": ["logits"], "fineTune": {"epochs": 1}}, {"type": "ptq", "mode": "int8"}],
            ["int8", "float32"],
        ),
        # PTQ alone: the converter's denylist keeps fc1 float.
        ([{"type": "ptq", "mode": "int8", "skipLayers": ["fc1"]}], ["float32", "int8"]),
        ([{"type": "ptq", "mode": "int8", "skipFirstAndLast": True}], ["int8", "float32"]),
    ],
    ids=["qat-skip", "ptq-denylist", "ptq-first-last"],
)
def test_protected_layers_stay_float(
    steps: list, fully_connected: list, digits_model: Path, small_digits_npz: Path, tmp_path: Path
) -> None:
    run = succeed(job(digits_model, small_digits_npz, tmp_path / "out", steps), tmp_path)
    ops = op_types(run.output / "model.tflite")
    assert [dtype for op, dtype in ops if op == "FULLY_CONNECTED"] == fully_connected
    if steps[0]["type"] == "qat":
        assert "logits" not in run.report["steps"][0]["quantizedLayers"]
    else:
        assert run.report["steps"][-1]["denylistedNodes"]
    if "skipFirstAndLast" in steps[0]:
        assert [dtype for op, dtype in ops if op == "CONV_2D"] == ["float32", "int8"]


def test_distill_trains_a_smaller_student(digits_model: Path, small_digits_npz: Path, tmp_path: Path) -> None:
    from edgecompress_runner.example import digits_cnn

    student = tmp_path / "student.keras"
    digits_cnn(width=4).save(student)
    steps = [
        {
            "type": "distill",
            "student": {"uri": str(student), "format": "keras"},
            "fineTune": {"epochs": 6, "learningRate": 0.003},
        },
        {"type": "ptq", "mode": "dynamic"},
    ]
    run = succeed(job(digits_model, small_digits_npz, tmp_path / "out", steps), tmp_path)
    distilled = run.report["steps"][0]
    assert distilled["studentParameters"] * 8 < distilled["teacherParameters"]
    assert run.report["result"]["accuracy"] > 0.7


def test_fidelity_without_labels(digits_model: Path, digits: dict, tmp_path: Path) -> None:
    unlabeled = tmp_path / "unlabeled.npz"
    np.savez(unlabeled, x_train=digits["x_train"][:400], x_eval=digits["x_eval"][:200])
    steps = [{"type": "prune", "targetSparsity": 0.5, "fineTune": {"epochs": 1}}, {"type": "ptq", "mode": "int8"}]
    document = job(digits_model, unlabeled, tmp_path / "out", steps, gates={"maxAccuracyDrop": 0.2})
    run = succeed(document, tmp_path)
    report = run.report
    assert report["metric"] == "fidelity" and "accuracy" not in report["result"]
    assert report["result"]["top1Agreement"] >= 0.8
    assert report["gates"][0]["reason"].startswith("top-1 disagreement")


def test_gates_failure_exit_code_and_report(digits_model: Path, small_digits_npz: Path, tmp_path: Path) -> None:
    steps = [{"type": "ptq", "mode": "float16"}]
    document = job(
        digits_model,
        small_digits_npz,
        tmp_path / "out",
        steps,
        gates={"minSizeReduction": 0.9, "maxAccuracyDrop": 0.05},
    )
    run = run_job(document, tmp_path)
    assert run.exit_code == ExitCode.GATES_FAILED
    assert run.summary["result"] == "GatesFailed" and not run.summary["gatesPassed"]
    assert "short of the required 90.0%" in run.summary["message"]
    assert run.report["gatesPassed"] is False
    assert {gate["name"]: gate["passed"] for gate in run.report["gates"]} == {
        "maxAccuracyDrop": True,
        "minSizeReduction": False,
    }


def test_savedmodel_archive_is_converted(digits_model: Path, small_digits_npz: Path, tmp_path: Path) -> None:
    import tarfile

    from edgecompress_runner.tfcompat import keras, tf

    export = tmp_path / "export"
    tf.saved_model.save(keras.models.load_model(digits_model), str(export))
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as packed:
        packed.add(export, arcname="digits/1")
    document = job(digits_model, small_digits_npz, tmp_path / "out", [{"type": "ptq", "mode": "int8"}])
    document["model"] = {"uri": archive.as_uri(), "format": "savedmodel"}
    run = succeed(document, tmp_path)
    assert run.report["comparison"]["compressionRatio"] >= 3.5
