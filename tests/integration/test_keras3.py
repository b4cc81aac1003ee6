"""A Keras 3 .keras file (the default keras of TF 2.21) is converted and post-training quantized."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgecompress_runner.errors import ExitCode
from tests.conftest import job, run_job

pytestmark = pytest.mark.tf

BUILD = """
import keras, numpy as np
keras.utils.set_random_seed(0)
inputs = keras.Input((8, 8, 1))
x = keras.layers.Conv2D(16, 3, padding="same", use_bias=False)(inputs)
x = keras.layers.BatchNormalization()(x)
x = keras.layers.ReLU()(x)
x = keras.layers.SeparableConv2D(64, 3, padding="same")(x)
x = keras.layers.Flatten()(x)
x = keras.layers.Dense(64, activation="relu")(x)
outputs = keras.layers.Dense(10, activation="softmax")(x)
model = keras.Model(inputs, outputs)
{extra}
model.save({path!r})
"""


def keras3_model(path: Path, extra: str = "") -> Path:
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "0", "TF_CPP_MIN_LOG_LEVEL": "3"}
    script = BUILD.format(path=str(path), extra=extra)
    subprocess.run([sys.executable, "-c", script], check=True, env=env, capture_output=True, timeout=300)
    return path


@pytest.fixture(scope="module")
def k3_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return keras3_model(tmp_path_factory.mktemp("k3") / "cnn.keras")


@pytest.mark.parametrize(("mode", "min_ratio"), [("dynamic", 2.5), ("float16", 1.8), ("int8", 2.5)])
def test_keras3_model_is_quantized(
    k3_model: Path, small_digits_npz: Path, tmp_path: Path, mode: str, min_ratio: float
) -> None:
    dataset = small_digits_npz if mode == "int8" else None
    run = run_job(job(k3_model, dataset, tmp_path / "out", [{"type": "ptq", "mode": mode}]), tmp_path)
    assert run.exit_code == ExitCode.SUCCEEDED, run.summary
    report = run.report
    assert report["baseline"]["sizeBytes"] / report["result"]["sizeBytes"] >= min_ratio
    tflite = (tmp_path / "out" / "model.tflite").read_bytes()
    assert len(tflite) == report["result"]["sizeBytes"]
    if mode == "int8":
        assert report["result"]["top1Agreement"] >= 0.8 or report["result"].get("accuracy") is not None


def test_keras3_baseline_matches_keras3_outputs(k3_model: Path, tmp_path: Path) -> None:
    """The exported baseline computes what Keras 3 computes (no layer lost on the way)."""
    from ai_edge_litert.interpreter import Interpreter

    from edgecompress_runner.model_io import load_model

    loaded = load_model(k3_model, "keras", str(k3_model), tmp_path)
    interpreter = Interpreter(model_content=loaded.converter().convert())
    interpreter.allocate_tensors()
    sample = np.random.default_rng(0).random((1, 8, 8, 1), dtype=np.float32)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], sample)
    interpreter.invoke()
    converted = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    script = (
        "import keras, numpy as np, sys\n"
        f"m = keras.saving.load_model({str(k3_model)!r})\n"
        f"x = np.random.default_rng(0).random((1, 8, 8, 1), dtype=np.float32)\n"
        "np.save(sys.argv[1], m.predict(x, verbose=0))\n"
    )
    expected_file = tmp_path / "expected.npy"
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "0", "TF_CPP_MIN_LOG_LEVEL": "3"}
    subprocess.run([sys.executable, "-c", script, str(expected_file)], check=True, env=env, timeout=300)
    np.testing.assert_allclose(converted, np.load(expected_file), atol=1e-5)


def test_keras3_lambda_is_refused(tmp_path: Path) -> None:
    model = keras3_model(
        tmp_path / "lambda.keras",
        extra="model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Lambda(lambda t: t * 2, name='double')])",
    )
    run = run_job(job(model, None, tmp_path / "out", [{"type": "ptq", "mode": "dynamic"}]), tmp_path)
    assert run.exit_code == ExitCode.INVALID_INPUT and "Lambda layer 'double'" in run.summary["message"]
    assert not (tmp_path / "out").exists()
