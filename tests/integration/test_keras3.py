"""A Keras 3 .keras file (the default keras of TF 2.21): converted and post-training quantized through Keras 3's
own export, and rebuilt as a tf-keras model (verified to compute the same) when a step trains it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgecompress_runner.errors import ExitCode, UnsupportedLayerError
from tests.conftest import job, run_job
from tests.integration.tflite_inspect import op_types, weight_tensors, zero_fraction

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


KERAS3_ENV = {"TF_USE_LEGACY_KERAS": "0", "TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0"}


def run_keras3(script: str, *args: str) -> None:
    """Runs a script with Keras 3 as ``keras`` (the runner's process has tf-keras)."""
    env = {**os.environ, **KERAS3_ENV, "TF_DETERMINISTIC_OPS": "1"}
    subprocess.run([sys.executable, "-c", script, *args], check=True, env=env, capture_output=True, timeout=300)


def keras3_model(path: Path, extra: str = "") -> Path:
    run_keras3(BUILD.format(path=str(path), extra=extra))
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


RESIDUAL_CNN = """
import keras, numpy as np, sys
keras.utils.set_random_seed(0)
layers = keras.layers
inputs = keras.Input((8, 8, 1), name="pixels")
h = layers.Conv2D(16, 3, padding="same", use_bias=False, name="stem")(inputs)
h = layers.BatchNormalization(name="stem_bn")(h)
h = layers.ReLU(name="stem_relu")(h)
r = layers.SeparableConv2D(16, 3, padding="same", use_bias=False, name="sep")(h)
r = layers.BatchNormalization(name="sep_bn")(r)
h = layers.Add(name="residual")([h, r])
h = layers.ReLU(name="block_relu")(h)
h = layers.MaxPooling2D(name="pool")(h)
h = layers.Flatten(name="flatten")(h)
h = layers.Dense(32, activation="relu", name="fc")(h)
h = layers.Dropout(0.2, name="dropout")(h)
model = keras.Model(inputs, layers.Dense(10, activation="softmax", name="probs")(h), name="residual_cnn")
data = np.load(sys.argv[2])
model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
model.fit(data["x_train"], data["y_train"], epochs=20, batch_size=32, verbose=0)
model.save(sys.argv[1])
student = keras.Sequential(
    [
        keras.Input((8, 8, 1)),
        layers.Conv2D(8, 3, padding="same", activation="relu", name="s_conv"),
        layers.MaxPooling2D(name="s_pool"),
        layers.Flatten(name="s_flatten"),
        layers.Dense(10, activation="softmax", name="s_probs"),
    ],
    name="student",
)
student.save(sys.argv[3])
"""


@pytest.fixture(scope="module")
def k3_trained(tmp_path_factory: pytest.TempPathFactory, small_digits_npz: Path) -> tuple[Path, Path]:
    """A Keras 3 Functional CNN (Conv2D, BatchNorm, SeparableConv2D, residual Add, Dense softmax) trained on
    the small digits, and an untrained Keras 3 Sequential student."""
    folder = tmp_path_factory.mktemp("k3-trained")
    cnn, student = folder / "residual_cnn.keras", folder / "student.keras"
    run_keras3(RESIDUAL_CNN, str(cnn), str(small_digits_npz), str(student))
    return cnn, student


# Both runs are bit-for-bit reproducible (same .tflite sha256 over repeated runs): prune + qat + int8 gave top-1
# agreement 0.93 and an accuracy drop of 0.045 (float 0.965); the distilled student agreed with the teacher on
# 0.897 of x_train. The limits leave a margin for other CPUs and library patch versions.
TRAINED_AGREEMENT = 0.88
MAX_ACCURACY_DROP = 0.1
DISTILL_AGREEMENT = 0.85


def assert_rebuilt(load: dict) -> None:
    assert load["kerasVersion"].startswith("3.") and load["rebuiltInTfKeras"] is True
    assert load["verificationSamples"] == 8
    # Softmax outputs (at most 1): the tolerance is 1e-5 itself; measured differences were 0 and 6e-8.
    assert 0 <= load["maxAbsDifference"] <= load["tolerance"] == 1e-5


def test_keras3_cnn_is_pruned_and_quantization_aware_trained(
    k3_trained: tuple[Path, Path], small_digits_npz: Path, tmp_path: Path
) -> None:
    steps = [
        {"type": "prune", "targetSparsity": 0.5, "fineTune": {"epochs": 2}},
        {"type": "qat", "fineTune": {"epochs": 1}},
        {"type": "ptq", "mode": "int8"},
    ]
    run = run_job(job(k3_trained[0], small_digits_npz, tmp_path / "out", steps), tmp_path)
    assert run.exit_code == ExitCode.SUCCEEDED, run.summary
    report = run.report
    assert_rebuilt(report["inputs"]["modelKeras3"])
    prune, qat, _ = report["steps"]
    assert set(prune["sparsity"]["layers"]) == {"stem", "sep", "fc", "probs"}
    assert prune["sparsity"]["overall"] == pytest.approx(0.5, abs=0.02)
    assert qat["scheme"] == "Default8BitPrunePreserveQuantizeScheme"
    assert {"stem_bn", "sep", "sep_bn", "residual", "fc", "probs"} <= set(qat["quantizedLayers"])
    tflite = run.output / "model.tflite"
    kernels = weight_tensors(tflite)
    assert all(kernel.dtype == np.int8 for kernel in kernels.values())
    # The depthwise kernel (144 of the 11 000 weights) is not pruned; every other kernel is half zeros.
    assert zero_fraction(kernels) >= 0.48
    assert ("FULLY_CONNECTED", "int8") in op_types(tflite)
    assert report["result"]["top1Agreement"] >= TRAINED_AGREEMENT
    assert report["comparison"]["accuracyDrop"] <= MAX_ACCURACY_DROP


def test_keras3_teacher_distills_into_a_keras3_student_that_is_clustered(
    k3_trained: tuple[Path, Path], small_digits_npz: Path, tmp_path: Path
) -> None:
    cnn, student = k3_trained
    steps = [
        {
            "type": "distill",
            "student": {"uri": str(student), "format": "keras"},
            "fineTune": {"epochs": 6, "learningRate": 0.003},
        },
        {"type": "cluster", "numberOfClusters": 8, "fineTune": {"epochs": 1}},
    ]
    run = run_job(job(cnn, small_digits_npz, tmp_path / "out", steps), tmp_path)
    assert run.exit_code == ExitCode.SUCCEEDED, run.summary
    report = run.report
    assert_rebuilt(report["inputs"]["modelKeras3"])
    assert_rebuilt(report["inputs"]["studentKeras3"])
    distill, cluster = report["steps"]
    assert distill["studentParameters"] < distill["teacherParameters"]
    assert distill["trainAgreementWithTeacher"] >= DISTILL_AGREEMENT
    assert set(cluster["uniqueWeights"]) == {"s_conv", "s_probs"}
    kernels = weight_tensors(run.output / "model.tflite")
    assert len(kernels) == 2 and max(np.unique(kernel).size for kernel in kernels.values()) <= 8


def test_ptq_only_keeps_the_keras3_export(k3_model: Path, tmp_path: Path) -> None:
    run = run_job(job(k3_model, None, tmp_path / "out", [{"type": "ptq", "mode": "dynamic"}]), tmp_path)
    assert run.exit_code == ExitCode.SUCCEEDED, run.summary
    load = run.report["inputs"]["modelKeras3"]
    assert load["rebuiltInTfKeras"] is False and "maxAbsDifference" not in load


MULTI_OUTPUT = """
import keras, numpy as np, sys
keras.utils.set_random_seed(0)
layers = keras.layers
image = keras.Input((6, 6, 2), name="image")
tokens = keras.Input((5,), dtype="int32", name="tokens")
h = layers.Conv2D(4, 3, activation="relu", name="conv")(image)
h = layers.DepthwiseConv2D(2, name="depthwise")(h)
h = layers.GlobalAveragePooling2D(name="gap")(h)
e = layers.Embedding(11, 3, name="embed")(tokens)
e = layers.Conv1D(4, 2, padding="causal", name="conv1d")(e)
e = layers.LayerNormalization(name="norm")(e)
e = layers.Flatten(name="flat")(e)
shared = layers.Dense(6, activation="tanh", name="shared")
joined = layers.Concatenate(name="join")([shared(h), shared(layers.Dense(4, name="squeeze")(e))])
joined = layers.BatchNormalization(name="bn")(joined)
joined = layers.Activation("gelu", name="gelu")(joined)
classes = layers.Dense(3, activation="softmax", name="classes")(joined)
value = layers.Reshape((2, 1), name="value")(layers.LeakyReLU(0.2, name="leaky")(layers.Dense(2, name="pre")(joined)))
model = keras.Model([image, tokens], [classes, value])
rng = np.random.default_rng(1)
for layer in model.layers:  # weights unlike their initial values (BatchNorm: non-trivial statistics)
    positive = isinstance(layer, layers.BatchNormalization)
    draw = (lambda shape: rng.uniform(0.5, 1.5, shape)) if positive else (lambda shape: rng.normal(0, 0.4, shape))
    layer.set_weights([draw(w.shape) for w in layer.get_weights()])
model.save(sys.argv[1])
model = keras.saving.load_model(sys.argv[1])
pixels, ids = rng.normal(size=(16, 6, 6, 2)).astype("float32"), rng.integers(0, 11, (16, 5)).astype("int32")
classes, value = model([pixels, ids], training=False)
np.savez(sys.argv[2], image=pixels, tokens=ids, classes=np.asarray(classes), value=np.asarray(value))
"""


def test_multi_output_model_is_rebuilt_with_identical_outputs(tmp_path: Path) -> None:
    from edgecompress_runner.model_io import load_model
    from edgecompress_runner.tfcompat import keras

    path, computed = tmp_path / "multi.keras", tmp_path / "keras3-computed.npz"
    run_keras3(MULTI_OUTPUT, str(path), str(computed))
    loaded = load_model(path, "keras", str(path), tmp_path, keras_needed_by="steps[0] prune")
    model = loaded.keras_model
    assert isinstance(model, keras.Model) and type(model).__module__.startswith("tf_keras")
    assert loaded.keras3 is not None and loaded.keras3.rebuilt_in_tf_keras
    assert {layer.name for layer in model.layers if layer.weights} == {
        "conv",
        "embed",
        "conv1d",
        "depthwise",
        "norm",
        "squeeze",
        "shared",
        "bn",
        "pre",
        "classes",
    }
    with np.load(computed) as saved:
        arrays = {name: saved[name] for name in saved.files}
    expected = [arrays["classes"], arrays["value"]]
    actual = model([arrays["image"], arrays["tokens"]], training=False)
    assert [output.shape for output in expected] == [(16, 3), (16, 2, 1)]
    for got, want in zip(actual, expected, strict=True):
        np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=1e-5 * max(1.0, float(np.abs(want).max())))


BLOCKED = """
import keras, sys
layers = keras.layers
folder = sys.argv[1]
def save(name, *body):
    keras.Sequential([keras.Input((6,)), *body, layers.Dense(3, name="head")], name=name).save(f"{folder}/{name}.keras")
save("rms_norm", layers.RMSNormalization(name="rms"))
save("rms_scaling", layers.LayerNormalization(rms_scaling=True, name="ln"))
save("relu6", layers.Dense(4, activation="relu6", name="capped"))
save("hard_sigmoid", layers.Dense(4, activation="hard_sigmoid", name="gate"))
"""


@pytest.fixture(scope="module")
def blocked_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Keras 3 models with a layer, an option or an activation tf-keras 2.21 lacks or computes differently."""
    folder = tmp_path_factory.mktemp("k3-blocked")
    run_keras3(BLOCKED, str(folder))
    return folder


@pytest.mark.parametrize(
    ("name", "blocker"),
    [
        ("rms_norm", r"layer 'rms' \(RMSNormalization\) has no tf-keras equivalent"),
        ("rms_scaling", r"layer 'ln' \(LayerNormalization\) sets rms_scaling=True, an option tf-keras \S+ lacks"),
        ("relu6", r"layer 'capped' \(Dense\) sets activation='relu6', an activation tf-keras \S+ lacks"),
        # Same name, other formula (tf-keras: 0.2x + 0.5; Keras 3: x/6 + 0.5): found by the verification.
        ("hard_sigmoid", r"outputs differ from Keras 3's by up to .*, first at layer 'gate' \(Dense\)"),
    ],
)
def test_what_tf_keras_lacks_is_named(blocked_models: Path, tmp_path: Path, name: str, blocker: str) -> None:
    from edgecompress_runner.model_io import load_model

    path = blocked_models / f"{name}.keras"
    with pytest.raises(
        UnsupportedLayerError, match=rf"^steps\[0\] prune: .*{name}\.keras was saved with Keras 3"
    ) as caught:
        load_model(path, "keras", str(path), tmp_path, keras_needed_by="steps[0] prune")
    assert re.search(blocker, str(caught.value)), str(caught.value)
    assert "A job with only a ptq step works on this model" in str(caught.value)


def test_prune_is_refused_but_ptq_works_on_a_layer_tf_keras_lacks(
    blocked_models: Path, small_digits_npz: Path, tmp_path: Path
) -> None:
    model = blocked_models / "rms_norm.keras"
    arrays = np.random.default_rng(0).random((64, 6), dtype=np.float32)
    dataset = tmp_path / "vectors.npz"
    np.savez(dataset, x_train=arrays, x_eval=arrays[:16])
    refused = run_job(
        job(model, dataset, tmp_path / "refused", [{"type": "prune", "fineTune": {"epochs": 1}}]), tmp_path / "a"
    )
    assert refused.exit_code == ExitCode.INVALID_INPUT
    assert refused.summary["reason"] == "UnsupportedLayer"
    assert "layer 'rms' (RMSNormalization) has no tf-keras equivalent" in refused.summary["message"]
    assert not (tmp_path / "refused").exists()
    quantized = run_job(job(model, dataset, tmp_path / "ptq", [{"type": "ptq", "mode": "int8"}]), tmp_path / "b")
    assert quantized.exit_code == ExitCode.SUCCEEDED, quantized.summary
    assert (tmp_path / "ptq" / "model.tflite").stat().st_size == quantized.report["result"]["sizeBytes"]


def test_training_options_carry_over_and_what_cannot_is_named() -> None:
    """Regularizers, constraints and renamed options reach the tf-keras layers; graph parts tf-keras cannot
    rebuild are refused by name (Keras 3 models built in this process: the runner imports Keras 3 too)."""
    import keras as keras3

    from edgecompress_runner.keras3_rebuild import RebuildRefused, rebuild_in_tf_keras
    from edgecompress_runner.tfcompat import keras

    def rebuild(model: Any) -> Any:
        return rebuild_in_tf_keras(model, json.loads(model.to_json())).model

    keras3.utils.set_random_seed(0)
    original = keras3.Sequential(
        [
            keras3.Input((6, 6, 2)),
            keras3.layers.Conv2D(
                4,
                3,
                kernel_regularizer=keras3.regularizers.L1L2(l1=0.01, l2=0.02),
                kernel_constraint=keras3.constraints.MaxNorm(2.0),
                name="conv",
            ),
            keras3.layers.LeakyReLU(negative_slope=0.1, name="leaky"),
            keras3.layers.Flatten(name="flat"),
            keras3.layers.Dropout(0.3, seed=3, name="drop"),
            keras3.layers.Dense(2, name="out"),
        ]
    )
    rebuilt = rebuild(original)
    conv = rebuilt.get_layer("conv")
    assert isinstance(conv.kernel_regularizer, keras.regularizers.L1L2)
    assert isinstance(conv.kernel_constraint, keras.constraints.MaxNorm) and conv.kernel_constraint.max_value == 2.0
    assert rebuilt.get_layer("leaky").alpha == pytest.approx(0.1)
    assert rebuilt.get_layer("drop").rate == pytest.approx(0.3) and rebuilt.input_shape == (None, 6, 6, 2)
    # The penalty training adds is the same number in both libraries.
    assert float(sum(rebuilt.losses)) == pytest.approx(float(sum(np.asarray(loss) for loss in original.losses)))

    inputs = keras3.Input((4,), name="features")
    scaled = keras3.Model(inputs, keras3.layers.Dense(3, name="dense")(inputs) * 2.0)
    with pytest.raises(RebuildRefused, match=r"layer 'multiply' \(Multiply\) is the Keras 3 operation"):
        rebuild(scaled)
    inner = keras3.Sequential([keras3.Input((4,)), keras3.layers.Dense(3)], name="backbone")
    with pytest.raises(RebuildRefused, match=r"layer 'backbone' \(Sequential\) is a nested model"):
        rebuild(keras3.Sequential([keras3.Input((4,)), inner]))
