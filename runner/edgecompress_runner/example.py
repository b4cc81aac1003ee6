"""The embedded example: a small CNN trained on scikit-learn's bundled digits (no download)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgecompress_contract.spec import CompressionJobSpec, parse_spec

EVAL_SAMPLES = 360


def digits_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """8x8 grey digits scaled to [0, 1], split into train and eval with a fixed shuffle."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    y = digits.target.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    return {
        "x_train": x[EVAL_SAMPLES:],
        "y_train": y[EVAL_SAMPLES:],
        "x_eval": x[:EVAL_SAMPLES],
        "y_eval": y[:EVAL_SAMPLES],
    }


def digits_cnn(width: int = 16) -> Any:
    from .tfcompat import keras

    layers = keras.layers
    return keras.Sequential(
        [
            layers.Input((8, 8, 1), name="image"),
            layers.Conv2D(width, 3, padding="same", activation="relu", name="conv1"),
            layers.Conv2D(2 * width, 3, padding="same", activation="relu", name="conv2"),
            layers.MaxPooling2D(name="pool"),
            layers.Flatten(name="flatten"),
            layers.Dense(8 * width, activation="relu", name="fc1"),
            layers.Dense(10, name="logits"),
        ],
        name="digits_cnn",
    )


def train_classifier(build: Callable[[], Any], arrays: dict[str, np.ndarray], epochs: int = 8, seed: int = 0) -> Any:
    """Builds the model and trains it seeded, with deterministic ops: its initial weights and training are the same
    every run, so the example's model and result are too."""
    from .tfcompat import keras, seed_run

    seed_run(seed)
    model = build()
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(arrays["x_train"], arrays["y_train"], epochs=epochs, batch_size=32, verbose=0)
    return model


def write_example_inputs(folder: Path) -> tuple[Path, Path]:
    """Trains the example model and writes model.keras and digits.npz into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = digits_arrays()
    model_path, dataset_path = folder / "model.keras", folder / "digits.npz"
    if not model_path.exists():
        train_classifier(digits_cnn, arrays).save(model_path)
    np.savez(dataset_path, **arrays)  # type: ignore[arg-type]
    return model_path, dataset_path


def example_job(model_uri: str, dataset_uri: str, output_uri: str, overwrite: bool = True) -> dict[str, Any]:
    """The example job: prune -> QAT -> int8 PTQ with accuracy and size gates."""
    return {
        "model": {"uri": model_uri, "format": "keras"},
        "dataset": {"uri": dataset_uri},
        "steps": [
            {
                "type": "prune",
                "initialSparsity": 0.5,
                "targetSparsity": 0.8,
                "fineTune": {"epochs": 2, "learningRate": 5e-4},
            },
            {"type": "qat", "fineTune": {"epochs": 1, "learningRate": 1e-4}},
            {"type": "ptq", "mode": "int8"},
        ],
        "evaluation": {"samples": EVAL_SAMPLES, "latency": {"threads": 1, "runs": 200}},
        "gates": {"maxAccuracyDrop": 0.03, "minSizeReduction": 0.7},
        "output": {"uri": output_uri, "overwrite": overwrite},
    }


def example_spec(folder: Path) -> CompressionJobSpec:
    model_path, dataset_path = write_example_inputs(folder / "inputs")
    return parse_spec(
        example_job(model_path.resolve().as_uri(), dataset_path.resolve().as_uri(), str((folder / "result").resolve()))
    )


def synthetic_images(seed: int = 0, *, samples: int = 1400, classes: int = 10) -> dict[str, np.ndarray]:
    """Seeded 16x16x3 noisy images of ten class prototypes: a task a small CNN learns to about 90 %.

    The prototypes are faint under the noise, so many samples lie near a decision boundary and
    quantization error shows in the top-1 answers (the auto search's tests and bench need that).
    The last 400 samples are the evaluation split.
    """
    rng = np.random.default_rng(seed)
    prototypes = rng.normal(size=(classes, 16, 16, 3)).astype(np.float32)
    y = rng.integers(0, classes, samples).astype(np.int32)
    x = (0.22 * prototypes[y] + rng.normal(size=(samples, 16, 16, 3))).astype(np.float32)
    split = samples - 400
    return {"x_train": x[:split], "y_train": y[:split], "x_eval": x[split:], "y_eval": y[split:]}


def residual_cnn() -> Any:
    """Conv2D + BatchNorm, a SeparableConv2D block with a residual Add, a strided conv, Dense, softmax."""
    from .tfcompat import keras

    layers = keras.layers
    inputs = keras.Input((16, 16, 3), name="image")
    stem = layers.Conv2D(32, 3, padding="same", use_bias=False, name="stem")(inputs)
    stem = layers.ReLU(name="stem_relu")(layers.BatchNormalization(name="stem_bn")(stem))
    block = layers.SeparableConv2D(32, 3, padding="same", name="sep")(stem)
    block = layers.BatchNormalization(name="sep_bn")(block)
    x = layers.ReLU(name="res_relu")(layers.Add(name="residual")([stem, block]))
    x = layers.Conv2D(64, 3, strides=2, padding="same", activation="relu", name="down")(x)
    x = layers.Dense(64, activation="relu", name="hidden")(layers.Flatten(name="flatten")(x))
    outputs = layers.Dense(10, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name="residual_cnn")


def trained_residual_cnn_tflite(arrays: dict[str, np.ndarray], *, epochs: int = 2, seed: int = 0) -> bytes:
    """``residual_cnn`` trained on ``arrays`` (seeded, deterministic ops) and converted to a float .tflite."""
    from .tfcompat import keras, seed_run, tf

    seed_run(seed)
    model = residual_cnn()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    model.fit(arrays["x_train"], arrays["y_train"], epochs=epochs, batch_size=32, verbose=0)
    return bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
