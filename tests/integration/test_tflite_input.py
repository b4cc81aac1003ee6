"""A float .tflite as the input model (format tflite): quantized by litert-quantizer, checked in the file itself."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgecompress_runner.errors import ExitCode
from tests.conftest import job, run_job
from tests.integration.tflite_inspect import op_types, stored_weight_dtypes

pytestmark = pytest.mark.tf


def tflite_job(model: Path, dataset: Path | None, output: Path, steps: list[dict[str, Any]]) -> dict[str, Any]:
    document = job(model, dataset, output, steps)
    document["model"]["format"] = "tflite"
    return document


@pytest.fixture(scope="module")
def cnn_tflite(tmp_path_factory: pytest.TempPathFactory, digits: dict[str, np.ndarray]) -> Path:
    """A tf-keras Conv2D + BatchNorm + Dense softmax classifier trained on the digits, converted to float."""
    from edgecompress_runner.tfcompat import keras, tf

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(16, 3, padding="same", use_bias=False, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(64, activation="relu", name="hidden")(x)
    outputs = keras.layers.Dense(10, activation="softmax", name="probs")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    model.fit(digits["x_train"], digits["y_train"], epochs=4, batch_size=32, verbose=0)
    path = tmp_path_factory.mktemp("tflite") / "cnn.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return path


KERAS3_EXPORT = """
import keras, numpy as np, sys, tensorflow as tf
from edgecompress_runner.example import digits_arrays
keras.utils.set_random_seed(0)
digits = digits_arrays()
inputs = keras.Input((8, 8, 1))
x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
x = keras.layers.Flatten()(x)
x = keras.layers.Dense(32, activation="relu")(x)
outputs = keras.layers.Dense(10, activation="softmax")(x)
model = keras.Model(inputs, outputs)
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
model.fit(digits["x_train"], digits["y_train"], epochs=4, batch_size=32, verbose=0)
model.export(sys.argv[1] + ".savedmodel", format="tf_saved_model", verbose=False)
open(sys.argv[1], "wb").write(tf.lite.TFLiteConverter.from_saved_model(sys.argv[1] + ".savedmodel").convert())
"""


@pytest.fixture(scope="module")
def keras3_tflite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Keras 3 model (TF_USE_LEGACY_KERAS=0, in its own process) trained and exported to a float .tflite."""
    path = tmp_path_factory.mktemp("k3") / "keras3.tflite"
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "0", "TF_CPP_MIN_LOG_LEVEL": "3"}
    subprocess.run(
        [sys.executable, "-c", KERAS3_EXPORT, str(path)], check=True, env=env, capture_output=True, timeout=300
    )
    return path


def outputs_of(model: bytes, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model)
    interpreter.allocate_tensors()
    (source,), (target,) = interpreter.get_input_details(), interpreter.get_output_details()
    found = []
    for sample in x:
        interpreter.set_tensor(source["index"], sample[None])
        interpreter.invoke()
        found.append(interpreter.get_tensor(target["index"])[0].copy())
    return np.asarray(found)


def agreement(first: bytes, second: bytes, x: np.ndarray) -> float:
    return float(np.mean(outputs_of(first, x).argmax(-1) == outputs_of(second, x).argmax(-1)))


# (stored kernel type, activation type of the weighted ops, largest result/baseline bytes, least top-1 agreement).
# Agreements are deterministic for the seeded model: measured 1.0 (dynamic, float16) and 0.995 (int8) over
# the 200 evaluation samples; the limits leave room for another CPU's float rounding.
EXPECTED = {
    "dynamic": ("int8", "float32", 0.28, 0.97),
    "float16": ("float16", "float32", 0.52, 0.99),
    "int8": ("int8", "int8", 0.28, 0.95),
}


@pytest.mark.parametrize("mode", EXPECTED)
def test_float_tflite_is_quantized_by_litert_quantizer(
    cnn_tflite: Path, small_digits_npz: Path, digits: dict[str, np.ndarray], tmp_path: Path, mode: str
) -> None:
    weights, activations, max_ratio, min_agreement = EXPECTED[mode]
    output = tmp_path / "out"
    run = run_job(tflite_job(cnn_tflite, small_digits_npz, output, [{"type": "ptq", "mode": mode}]), tmp_path)
    assert run.exit_code == ExitCode.SUCCEEDED, run.summary
    report = run.report
    baseline, result = cnn_tflite.read_bytes(), (output / "model.tflite").read_bytes()

    assert report["inputs"]["model"]["sha256"] == hashlib.sha256(baseline).hexdigest()
    assert report["baseline"]["sizeBytes"] == len(baseline) and report["result"]["sizeBytes"] == len(result)
    assert report["conversion"]["quantizer"] == "litertQuantizer" and report["conversion"]["mode"] == mode
    assert report["steps"][-1]["quantizer"] == "litertQuantizer"
    assert len(result) / len(baseline) <= max_ratio

    kernels = stored_weight_dtypes(output / "model.tflite")
    assert len(kernels) == 3 and set(kernels.values()) == {weights}, kernels
    weighted = [dtype for op, dtype in op_types(output / "model.tflite") if op in ("CONV_2D", "FULLY_CONNECTED")]
    assert weighted == [activations] * 3
    assert report["result"]["inputType"] == "float32"

    x_eval = digits["x_eval"][:200]
    measured = agreement(baseline, result, x_eval)
    assert report["result"]["top1Agreement"] == pytest.approx(measured, abs=1e-9)
    assert measured >= min_agreement
    assert report["comparison"]["accuracyDrop"] is not None


def test_skipped_layer_stays_float(cnn_tflite: Path, small_digits_npz: Path, tmp_path: Path) -> None:
    output = tmp_path / "out"
    steps = [{"type": "ptq", "mode": "int8", "skipLayers": ["hidden"]}]
    run = run_job(tflite_job(cnn_tflite, small_digits_npz, output, steps), tmp_path)
    assert run.exit_code == ExitCode.SUCCEEDED, run.summary
    kernels = stored_weight_dtypes(output / "model.tflite")
    hidden = [name for name in kernels if "/hidden/" in name]
    assert len(hidden) == 1 and kernels[hidden[0]] == "float32"
    assert sorted(dtype for name, dtype in kernels.items() if name not in hidden) == ["int8", "int8"]
    (kept,) = run.report["steps"][-1]["denylistedNodes"]
    assert "/hidden/" in kept


def test_keras3_export_is_quantized(keras3_tflite: Path, small_digits_npz: Path, tmp_path: Path) -> None:
    output = tmp_path / "out"
    run = run_job(tflite_job(keras3_tflite, small_digits_npz, output, [{"type": "ptq", "mode": "int8"}]), tmp_path)
    assert run.exit_code == ExitCode.SUCCEEDED, run.summary
    kernels = stored_weight_dtypes(output / "model.tflite")
    assert len(kernels) == 3 and set(kernels.values()) == {"int8"}, kernels
    assert len((output / "model.tflite").read_bytes()) / keras3_tflite.stat().st_size <= 0.3
    assert run.report["result"]["top1Agreement"] >= 0.95


def assert_refused(document: dict[str, Any], tmp_path: Path, message: str, reason: str = "InvalidInput") -> None:
    run = run_job(document, tmp_path)
    assert run.exit_code == ExitCode.INVALID_INPUT, run.summary
    assert run.summary["reason"] == reason
    assert message in run.summary["message"], run.summary["message"]
    output = Path(document["output"]["uri"])
    assert not (output / "report.json").exists() and not (output / "model.tflite").exists()


def test_a_layer_the_model_does_not_have_is_refused(cnn_tflite: Path, tmp_path: Path) -> None:
    steps = [{"type": "ptq", "mode": "dynamic", "skipLayers": ["dense_7"]}]
    document = tflite_job(cnn_tflite, None, tmp_path / "out", steps)
    assert_refused(document, tmp_path, "spec.steps[0].skipLayers: layer 'dense_7' matches no conv, fully-connected")


def test_a_file_that_is_no_flatbuffer_is_refused(tmp_path: Path) -> None:
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(np.random.default_rng(0).bytes(4096))
    document = tflite_job(broken, None, tmp_path / "out", [{"type": "ptq", "mode": "dynamic"}])
    assert_refused(document, tmp_path, "broken.tflite: not a LiteRT (.tflite) flatbuffer")


def test_a_damaged_flatbuffer_is_refused(cnn_tflite: Path, tmp_path: Path) -> None:
    damaged = bytearray(cnn_tflite.read_bytes())
    damaged[16:2048] = bytes(2032)
    path = tmp_path / "damaged.tflite"
    path.write_bytes(damaged)
    document = tflite_job(path, None, tmp_path / "out", [{"type": "ptq", "mode": "dynamic"}])
    assert_refused(document, tmp_path, "damaged.tflite: not a readable .tflite flatbuffer")


def test_an_already_quantized_tflite_is_refused(cnn_tflite: Path, small_digits_npz: Path, tmp_path: Path) -> None:
    first = tmp_path / "first"
    steps = [{"type": "ptq", "mode": "int8"}]
    assert run_job(tflite_job(cnn_tflite, small_digits_npz, first, steps), tmp_path / "a").exit_code == 0
    document = tflite_job(first / "model.tflite", None, tmp_path / "out", [{"type": "ptq", "mode": "dynamic"}])
    assert_refused(document, tmp_path / "b", "model.tflite: the model is already quantized")


def test_custom_and_flex_ops_are_refused_by_name(cnn_tflite: Path, tmp_path: Path) -> None:
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(cnn_tflite.read_bytes()))
    custom = 32  # BuiltinOperator.CUSTOM
    model.operatorCodes[0].builtinCode = model.operatorCodes[0].deprecatedBuiltinCode = custom
    model.operatorCodes[0].customCode = "FlexMatrixExponential"
    path = tmp_path / "flex.tflite"
    path.write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(model)))
    document = tflite_job(path, None, tmp_path / "out", [{"type": "ptq", "mode": "dynamic"}])
    assert_refused(document, tmp_path, "custom ops the runner does not run: FlexMatrixExponential")


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ({"type": "prune"}, "spec.steps[0]: a tflite model (spec.model.format) can only be quantized by a ptq step"),
        (
            {"type": "ptq", "mode": "int8", "integerIO": True},
            "spec.steps[0].integerIO: integerIO is not available for a tflite model",
        ),
    ],
)
def test_spec_refuses_what_a_tflite_input_cannot_do(
    cnn_tflite: Path, small_digits_npz: Path, tmp_path: Path, step: dict[str, Any], message: str
) -> None:
    document = tflite_job(cnn_tflite, small_digits_npz, tmp_path / "out", [step])
    assert_refused(document, tmp_path, message, reason="InvalidSpec")


def test_calibration_keeps_each_tensors_widest_range_and_repeats_exactly(
    cnn_tflite: Path, digits: dict[str, np.ndarray]
) -> None:
    """The input's int8 scale spans the calibration samples' minimum to maximum, as the converter's would."""
    from ai_edge_litert.interpreter import Interpreter

    from edgecompress_runner.tflite_quantize import (
        Precision,
        RecipeEntry,
        calibration_samples,
        only_signature,
        quantize,
    )

    float_model = cnn_tflite.read_bytes()
    x = digits["x_train"][:50]
    _, (input_name,) = only_signature(float_model)
    recipe, samples = [RecipeEntry(".*", Precision.STATIC_INT8)], calibration_samples({input_name: x}, 50)
    quantized = quantize(float_model, recipe, calibration=samples)
    assert quantize(float_model, recipe, calibration=samples) == quantized
    interpreter = Interpreter(model_content=quantized)
    (quantized_input,) = [t for t in interpreter.get_tensor_details() if t["name"].endswith("_quantized")]
    parameters = quantized_input["quantization_parameters"]
    assert parameters["scales"][0] == pytest.approx((x.max() - min(x.min(), 0.0)) / 255, rel=1e-5)
    assert parameters["zero_points"][0] == -128
