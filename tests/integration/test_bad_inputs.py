"""Bad runtime inputs: each gives a clear message, exit code 20, and leaves no result behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgecompress_runner.errors import ExitCode
from tests.conftest import job, run_job

pytestmark = pytest.mark.tf


def assert_rejected(document: dict[str, Any], tmp_path: Path, message: str, reason: str = "InvalidInput") -> None:
    import re

    run = run_job(document, tmp_path)
    assert run.exit_code == ExitCode.INVALID_INPUT, run.summary
    assert run.summary["result"] == "Failed" and run.summary["reason"] == reason
    assert re.search(message, run.summary["message"]), run.summary["message"]
    output = Path(document["output"]["uri"])
    assert not (output / "report.json").exists() and not (output / "model.tflite").exists()


def test_missing_model_file(small_digits_npz: Path, tmp_path: Path) -> None:
    document = job(tmp_path / "nowhere.keras", small_digits_npz, tmp_path / "out", [{"type": "ptq", "mode": "int8"}])
    assert_rejected(document, tmp_path, r"nowhere\.keras: no such file")


def test_corrupt_model_bytes(small_digits_npz: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.keras"
    broken.write_bytes(os.urandom(4096))
    document = job(broken, small_digits_npz, tmp_path / "out", [{"type": "ptq", "mode": "int8"}])
    assert_rejected(document, tmp_path, r"broken\.keras: cannot load as a keras model")


def test_truncated_h5_model(digits_model: Path, small_digits_npz: Path, tmp_path: Path) -> None:
    from edgecompress_runner.tfcompat import keras

    whole = tmp_path / "model.h5"
    keras.models.load_model(digits_model).save(whole)
    cut = tmp_path / "cut.h5"
    cut.write_bytes(whole.read_bytes()[:2000])
    document = job(cut, small_digits_npz, tmp_path / "out", [{"type": "ptq", "mode": "dynamic"}])
    assert_rejected(document, tmp_path, r"cut\.h5: cannot load as a h5 model")


def test_input_shape_does_not_match_dataset(digits_model: Path, tmp_path: Path) -> None:
    flat = tmp_path / "flat.npz"
    rng = np.random.default_rng(0)
    np.savez(
        flat,
        x_train=rng.random((50, 64)),
        y_train=np.zeros(50, np.int32),
        x_eval=rng.random((20, 64)),
        y_eval=np.zeros(20, np.int32),
    )
    document = job(digits_model, flat, tmp_path / "out", [{"type": "ptq", "mode": "int8"}])
    assert_rejected(document, tmp_path, r"x_train samples have shape \(64,\) but the model expects \(8, 8, 1\)")


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x_train": np.zeros((0, 8, 8, 1)), "x_eval": np.zeros((0, 8, 8, 1))}, r"x_train is empty"),
        ({"x_train": np.zeros((5, 8, 8, 1))}, r"the dataset has no x_eval array"),
        (
            {
                "x_train": np.zeros((5, 8, 8, 1)),
                "y_train": np.zeros(4),
                "x_eval": np.zeros((5, 8, 8, 1)),
                "y_eval": np.zeros(5),
            },
            r"x_train has 5 samples but y_train has 4",
        ),
        ({"x_eval": np.zeros((5, 8, 8, 1)), "images": np.zeros(3)}, r"unexpected arrays \['images'\]"),
        ({"x_eval": np.zeros((5, 8, 8, 1))}, r"spec\.steps\[0\]\.mode: int8 calibrates on x_train"),
    ],
    ids=["empty", "no-eval", "label-count", "unknown-array", "no-calibration-data"],
)
def test_bad_datasets(arrays: dict[str, np.ndarray], message: str, digits_model: Path, tmp_path: Path) -> None:
    dataset = tmp_path / "bad.npz"
    np.savez(dataset, **arrays)
    document = job(digits_model, dataset, tmp_path / "out", [{"type": "ptq", "mode": "int8"}])
    assert_rejected(document, tmp_path, message)


def test_dataset_that_is_not_npz(digits_model: Path, tmp_path: Path) -> None:
    dataset = tmp_path / "data.npz"
    dataset.write_text("x,y\n1,2\n")
    document = job(digits_model, dataset, tmp_path / "out", [{"type": "ptq", "mode": "int8"}])
    assert_rejected(document, tmp_path, r"data\.npz: not a readable \.npz dataset")


def _rescaling_model(path: Path) -> None:
    from edgecompress_runner.tfcompat import keras

    layers = keras.layers
    keras.Sequential(
        [
            layers.Input((8, 8, 1)),
            layers.Rescaling(1.0, name="rescale"),
            layers.Conv2D(8, 3, activation="relu", name="conv"),
            layers.Flatten(name="flatten"),
            layers.Dense(10, name="logits"),
        ]
    ).save(path)


def test_layer_qat_cannot_quantize_is_named(small_digits_npz: Path, tmp_path: Path) -> None:
    model = tmp_path / "rescaling.keras"
    _rescaling_model(model)
    steps = [{"type": "qat", "fineTune": {"epochs": 1}}, {"type": "ptq", "mode": "int8"}]
    assert_rejected(
        job(model, small_digits_npz, tmp_path / "out", steps),
        tmp_path,
        r"steps\[0\] qat: tfmot cannot quantize \(QAT\) layer 'rescale' \(Rescaling\); "
        r"list it in this step's skipLayers",
        reason="UnsupportedLayer",
    )
    steps[0]["skipLayers"] = ["rescale"]
    run = run_job(job(model, small_digits_npz, tmp_path / "ok", steps), tmp_path / "second")
    assert run.exit_code == ExitCode.SUCCEEDED, run.summary
    assert "rescale" not in run.report["steps"][0]["quantizedLayers"]


def test_nested_model_is_named(small_digits_npz: Path, tmp_path: Path) -> None:
    from edgecompress_runner.tfcompat import keras

    inner = keras.Sequential(
        [keras.layers.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(16)], name="backbone"
    )
    outer = keras.Sequential([keras.layers.Input((8, 8, 1)), inner, keras.layers.Dense(10, name="head")])
    model = tmp_path / "nested.keras"
    outer.save(model)
    assert_rejected(
        job(model, small_digits_npz, tmp_path / "out", [{"type": "prune", "fineTune": {"epochs": 1}}]),
        tmp_path,
        r"layer 'backbone' is a nested model",
        reason="UnsupportedLayer",
    )


def test_keras3_h5_model_gets_a_hint(small_digits_npz: Path, tmp_path: Path) -> None:
    model = tmp_path / "k3.h5"
    script = (
        "import keras\n"
        "m = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])\n"
        f"m.save({str(model)!r})\n"
    )
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "0", "TF_CPP_MIN_LOG_LEVEL": "3"}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, capture_output=True, timeout=300)
    assert_rejected(
        job(model, small_digits_npz, tmp_path / "out", [{"type": "qat"}]),
        tmp_path,
        r"k3\.h5: saved with Keras 3\.[\d.]+ as h5, which the runner reads only from tf-keras",
        reason="UnsupportedLayer",
    )


def test_pruning_frequency_that_would_never_prune(digits_model: Path, small_digits_npz: Path, tmp_path: Path) -> None:
    steps = [{"type": "prune", "frequency": 500, "fineTune": {"epochs": 1}}]
    assert_rejected(
        job(digits_model, small_digits_npz, tmp_path / "out", steps),
        tmp_path,
        r"steps\[0\]\.frequency: 500 exceeds the pruning window of 16 steps",
    )


def test_unknown_skip_layer(digits_model: Path, small_digits_npz: Path, tmp_path: Path) -> None:
    steps = [{"type": "ptq", "mode": "int8", "skipLayers": ["dense_9"]}]
    assert_rejected(
        job(digits_model, small_digits_npz, tmp_path / "out", steps),
        tmp_path,
        r"skipLayers: layer 'dense_9' is not found",
    )


def test_finished_output_is_not_overwritten(digits_model: Path, small_digits_npz: Path, tmp_path: Path) -> None:
    output = tmp_path / "out"
    output.mkdir()
    (output / "report.json").write_text('{"gatesPassed": true}')
    run = run_job(job(digits_model, small_digits_npz, output, [{"type": "ptq", "mode": "dynamic"}]), tmp_path)
    assert run.exit_code == ExitCode.INVALID_INPUT
    assert "already holds a finished run" in run.summary["message"]
    assert (output / "report.json").read_text() == '{"gatesPassed": true}'
    assert not (output / "model.tflite").exists()


def test_subclassed_model_is_named(small_digits_npz: Path, tmp_path: Path) -> None:
    from edgecompress_runner.tfcompat import keras

    @keras.saving.register_keras_serializable(package="edgecompress_tests")
    class TinySubclassed(keras.Model):  # type: ignore[misc]
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.flatten = keras.layers.Flatten()
            self.dense = keras.layers.Dense(10)

        def call(self, inputs: Any) -> Any:
            return self.dense(self.flatten(inputs))

    model = TinySubclassed()
    model(np.zeros((1, 8, 8, 1), np.float32))
    path = tmp_path / "subclassed.keras"
    model.save(path)
    assert_rejected(
        job(path, small_digits_npz, tmp_path / "out", [{"type": "qat"}]),
        tmp_path,
        r"subclassed\.keras: TinySubclassed is a subclassed model; tfmot and the converter need "
        r"a Sequential or functional model",
        reason="UnsupportedLayer",
    )


def test_unregistered_custom_class_gets_a_hint(small_digits_npz: Path, tmp_path: Path) -> None:
    import json
    import zipfile

    from edgecompress_runner.tfcompat import keras

    inputs = keras.layers.Input((8, 8, 1))
    model = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(inputs)))
    saved = tmp_path / "plain.keras"
    model.save(saved)
    custom = tmp_path / "custom.keras"
    with zipfile.ZipFile(saved) as source, zipfile.ZipFile(custom, "w") as target:
        for item in source.namelist():
            data = source.read(item)
            if item == "config.json":
                config = json.loads(data)
                config["config"]["layers"][-1]["class_name"] = "MyCustomDense"
                data = json.dumps(config).encode()
            target.writestr(item, data)
    assert_rejected(
        job(custom, small_digits_npz, tmp_path / "out", [{"type": "ptq", "mode": "dynamic"}]),
        tmp_path,
        r"custom\.keras: the model uses classes the runner cannot import: MyCustomDense\.",
    )
