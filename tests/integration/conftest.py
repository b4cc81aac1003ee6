"""Models with several inputs or outputs, token-id inputs, unknown input sizes and binary or regression outputs,
built and briefly trained here with tf-keras (seeded, tiny) for test_multi_io and test_multi_io_training; the
residual CNN as a float .tflite and its images for the auto step's tests (test_auto, test_report_browser)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import job


def seeded_keras() -> Any:
    from edgecompress_runner.tfcompat import keras

    keras.utils.set_random_seed(0)
    return keras


def audio_arrays(samples: int, length: int, seed: int) -> dict[str, np.ndarray]:
    """Noise with a tone burst of one of three pitches: per frame whether the burst is on, and which pitch."""
    rng = np.random.default_rng(seed)
    time = np.arange(length)
    x = rng.normal(0, 0.1, (samples, length, 1)).astype(np.float32)
    frames = np.zeros((samples, length, 1), np.float32)
    pitch = rng.integers(0, 3, samples)
    for index in range(samples):
        start = int(rng.integers(0, length // 2))
        stop = start + length // 3
        x[index, start:stop, 0] += np.sin(time[start:stop] * (0.4 + 0.6 * pitch[index]))
        frames[index, start:stop, 0] = 1.0
    return {"audio": x, "frames": frames, "pitch": pitch.astype(np.int64)}


@pytest.fixture(scope="module")
def audio_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Variable-length audio in, a framewise sigmoid map and a global softmax out; eval clips are shorter."""
    keras = seeded_keras()
    audio = keras.Input((None, 1), name="audio")
    hidden = keras.layers.Conv1D(8, 5, padding="same", activation="relu", name="conv_a")(audio)
    hidden = keras.layers.Conv1D(8, 3, padding="same", activation="relu", name="conv_b")(hidden)
    frames = keras.layers.Conv1D(1, 1, activation="sigmoid", name="frames")(hidden)
    pooled = keras.layers.GlobalMaxPooling1D(name="pool")(hidden)
    pitch = keras.layers.Dense(3, activation="softmax", name="pitch")(pooled)
    model = keras.Model(audio, [frames, pitch])
    train, evaluation = audio_arrays(256, 64, seed=1), audio_arrays(64, 48, seed=2)
    model.compile(
        optimizer=keras.optimizers.Adam(0.01), loss=["binary_crossentropy", "sparse_categorical_crossentropy"]
    )
    model.fit(train["audio"], [train["frames"], train["pitch"]], epochs=4, batch_size=32, verbose=0)
    folder = tmp_path_factory.mktemp("audio")
    model.save(folder / "audio.keras")
    np.savez(
        folder / "audio.npz",
        **{
            "x_train/audio": train["audio"],
            "y_train/frames": train["frames"],
            "y_train/pitch": train["pitch"],
            "x_eval/audio": evaluation["audio"],
            "y_eval/frames": evaluation["frames"],
            "y_eval/pitch": evaluation["pitch"],
        },
    )
    return folder / "audio.keras", folder / "audio.npz"


def token_arrays(samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Token ids 0..49 of 16-token texts; the topic (0..3) is the token range the text draws most from."""
    rng = np.random.default_rng(seed)
    topic = rng.integers(0, 4, samples)
    tokens = rng.integers(0, 50, (samples, 16))
    themed = rng.random((samples, 16)) < 0.6
    tokens = np.where(themed, 2 + topic[:, None] * 12 + rng.integers(0, 12, (samples, 16)), tokens)
    return tokens.astype(np.int64), topic.astype(np.int64)


@pytest.fixture(scope="module")
def text_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    keras = seeded_keras()
    tokens = keras.Input((16,), dtype="int32", name="tokens")
    embedded = keras.layers.Embedding(50, 8, name="embedding")(tokens)
    pooled = keras.layers.GlobalAveragePooling1D(name="pool")(embedded)
    topic = keras.layers.Dense(4, activation="softmax", name="topic")(pooled)
    model = keras.Model(tokens, topic)
    (x_train, y_train), (x_eval, y_eval) = token_arrays(400, seed=1), token_arrays(100, seed=2)
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss="sparse_categorical_crossentropy")
    model.fit(x_train, y_train, epochs=5, batch_size=32, verbose=0)
    folder = tmp_path_factory.mktemp("text")
    model.save(folder / "text.keras")
    np.savez(folder / "text.npz", x_train=x_train, y_train=y_train, x_eval=x_eval, y_eval=y_eval)
    return folder / "text.keras", folder / "text.npz"


def tabular(samples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(samples, 8)).astype(np.float32)


def _dense_model(
    folder: Path, *, output: Any, loss: str, x: tuple[np.ndarray, np.ndarray], y: tuple[np.ndarray, np.ndarray]
) -> tuple[Path, Path]:
    """Eight features -> Dense(16) -> ``output``, trained briefly; the model and its labelled dataset."""
    keras = seeded_keras()
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), output])
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss=loss)
    model.fit(x[0], y[0], epochs=5, batch_size=32, verbose=0)
    model.save(folder / "model.keras")
    np.savez(folder / "data.npz", x_train=x[0], y_train=y[0], x_eval=x[1], y_eval=y[1])
    return folder / "model.keras", folder / "data.npz"


@pytest.fixture(scope="module")
def binary_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    x = tabular(300, 1), tabular(100, 2)
    rule = np.array([1.0, -1.0, 0.5, 0, 0, 0, 0.3, 0])
    y = (x[0] @ rule > 0).astype(np.int64), (x[1] @ rule > 0).astype(np.int64)
    output = seeded_keras().layers.Dense(1, activation="sigmoid")
    return _dense_model(tmp_path_factory.mktemp("binary"), output=output, loss="binary_crossentropy", x=x, y=y)


@pytest.fixture(scope="module")
def regression_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    x = tabular(300, 3), tabular(100, 4)
    weights = np.linspace(-2, 2, 8)
    y = x[0] @ weights + 3.0, x[1] @ weights + 3.0
    output = seeded_keras().layers.Dense(1, name="value")
    return _dense_model(tmp_path_factory.mktemp("regression"), output=output, loss="mse", x=x, y=y)


@pytest.fixture(scope="module")
def two_input_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    keras = seeded_keras()
    left, right = keras.Input((8,), name="left"), keras.Input((4,), name="right")
    joined = keras.layers.Concatenate(name="join")([left, right])
    hidden = keras.layers.Dense(16, activation="relu", name="hidden")(joined)
    label = keras.layers.Dense(3, activation="softmax", name="label")(hidden)
    model = keras.Model([left, right], label)
    rng = np.random.default_rng(5)
    arrays = {}
    for split, samples in (("train", 300), ("eval", 100)):
        x_left, x_right = rng.normal(size=(samples, 8)), rng.normal(size=(samples, 4))
        arrays[f"x_{split}/left"], arrays[f"x_{split}/right"] = x_left, x_right
        arrays[f"y_{split}"] = (x_left[:, :3] + x_right[:, :3]).argmax(-1)
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss="sparse_categorical_crossentropy")
    model.fit([arrays["x_train/left"], arrays["x_train/right"]], arrays["y_train"], epochs=5, verbose=0)
    folder = tmp_path_factory.mktemp("two-input")
    model.save(folder / "two.keras")
    np.savez(folder / "two.npz", **arrays)  # float64 on purpose: the runner makes it float32
    return folder / "two.keras", folder / "two.npz"


@pytest.fixture(scope="session")
def blobs_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A small dense classifier of four Gaussian blobs in 16 dimensions, with its dataset."""
    from edgecompress_runner.tfcompat import keras

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (4, 16))

    def blobs(count: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, 4, count)
        return (centres[labels] + rng.normal(0, 0.8, (count, 16))).astype(np.float32), labels

    x_train, y_train = blobs(512)
    x_eval, y_eval = blobs(128)
    inputs = keras.Input((16,), name="features")
    hidden = keras.layers.Dense(32, activation="relu", name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax", name="classes")(hidden))
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    model.fit(x_train, y_train, epochs=5, batch_size=32, verbose=0)
    folder = tmp_path_factory.mktemp("blobs")
    model.save(folder / "blobs.keras")
    np.savez(folder / "blobs.npz", x_train=x_train, y_train=y_train, x_eval=x_eval, y_eval=y_eval)
    return folder / "blobs.keras", folder / "blobs.npz"


@pytest.fixture(scope="module")
def images() -> dict[str, np.ndarray]:
    from edgecompress_runner.example import synthetic_images

    return synthetic_images(0)


@pytest.fixture(scope="module")
def residual_tflite(tmp_path_factory: pytest.TempPathFactory, images: dict[str, np.ndarray]) -> Path:
    from edgecompress_runner.example import trained_residual_cnn_tflite

    path = tmp_path_factory.mktemp("auto") / "residual.tflite"
    path.write_bytes(trained_residual_cnn_tflite(images))
    return path


@pytest.fixture(scope="module")
def images_npz(tmp_path_factory: pytest.TempPathFactory, images: dict[str, np.ndarray]) -> Path:
    """Unlabelled, so the gate judges fidelity (1 - top-1 agreement with the float model)."""
    path = tmp_path_factory.mktemp("auto-data") / "images.npz"
    np.savez(path, x_train=images["x_train"][:300], x_eval=images["x_eval"])
    return path


def auto_job(model: Path, dataset: Path, output: Path, gates: dict[str, Any], **step: Any) -> dict[str, Any]:
    document = job(model, dataset, output, [{"type": "auto", **step}], gates=gates)
    document["model"]["format"] = "tflite"
    document["evaluation"]["samples"] = 400
    return document
