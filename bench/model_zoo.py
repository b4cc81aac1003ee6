"""Every recipe on every kind of model: the plain converter's float file against each runner recipe.

The zoo is built here (never downloaded), from the same data generators as the integration tests, at
sizes closer to real edge models than the tests use: a mini-Xception-style CNN (SeparableConv2D +
BatchNorm + residual adds), a multi-output model over variable-length audio (a framewise sigmoid map and
a softmax), a token-id text classifier (Embedding), a binary sigmoid classifier, a regression model, a
Keras 3 `.keras` CNN and a float `.tflite`. Each recipe is one runner job; its report gives the numbers:
the float baseline is exactly what one `TFLiteConverter` call makes, and the result is timed interleaved
with it. Fidelity is the worst classifier output's top-1 (or decision) agreement with the float model,
and the worst output's SNR against it.

    python bench/model_zoo.py [--models xception,audio] [--recipes int8,prune50-int8] [--out /tmp/zoo]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import run_job  # noqa: E402
from tests.integration.conftest import audio_arrays, seeded_keras, tabular, token_arrays  # noqa: E402
from tests.integration.test_keras3 import keras3_model  # noqa: E402
from tests.integration.test_training import gratings, mini_xception  # noqa: E402

RECIPES: dict[str, list[dict[str, Any]]] = {
    "dynamic": [{"type": "ptq", "mode": "dynamic"}],
    "float16": [{"type": "ptq", "mode": "float16"}],
    "int8": [{"type": "ptq", "mode": "int8"}],
    "prune50-int8": [
        {"type": "prune", "targetSparsity": 0.5, "fineTune": {"epochs": 6, "learningRate": 0.001, "batchSize": 16}},
        {"type": "ptq", "mode": "int8"},
    ],
    "prune50-qat-int8": [
        {"type": "prune", "targetSparsity": 0.5, "fineTune": {"epochs": 6, "learningRate": 0.001, "batchSize": 16}},
        {"type": "qat", "fineTune": {"epochs": 3, "learningRate": 0.0003}},
        {"type": "ptq", "mode": "int8"},
    ],
    "prune50-oneshot-qat-int8": [
        {
            "type": "prune",
            "schedule": "oneShot",
            "targetSparsity": 0.5,
            "fineTune": {"epochs": 6, "learningRate": 0.001, "batchSize": 16},
        },
        {"type": "qat", "fineTune": {"epochs": 3, "learningRate": 0.0003}},
        {"type": "ptq", "mode": "int8"},
    ],
    "reduce50": [{"type": "reduceFilters", "targetReduction": 0.5, "fineTune": {"epochs": 10}}],
    "reduce50-int8": [
        {"type": "reduceFilters", "targetReduction": 0.5, "fineTune": {"epochs": 10}},
        {"type": "ptq", "mode": "int8"},
    ],
}
_ONE_SHOT_PRUNE, *_ONE_SHOT_REST = RECIPES["prune50-oneshot-qat-int8"]
RECIPES["prune50-sensitivity-qat-int8"] = [{**_ONE_SHOT_PRUNE, "allocation": "sensitivity"}, *_ONE_SHOT_REST]
"""The same recipe with the cut shared out among the layers by sensitivity."""
RECIPES["prune50-distilled-qat-int8"] = [
    {**RECIPES["prune50-sensitivity-qat-int8"][0], "layerDistillation": 30},
    *_ONE_SHOT_REST,
]
"""And with every pruned layer's output distilled from the float model's while fine-tuning."""
AUTO = "auto-size-not-slower"
"""The auto step, smallest file that passes the model's quality gate and is not slower than float."""
RECIPES[AUTO] = [{"type": "auto", "objective": "size", "maxLatencyRatio": 1.0}]
AUTO_TRIALS = "auto-with-trials"
"""The same search, with three training recipes tried as trials beside its post-training candidates."""
RECIPES[AUTO_TRIALS] = [
    {
        **RECIPES[AUTO][0],
        "trials": [
            {"preset": preset, "fineTune": {"epochs": 4, "learningRate": 0.0005, "batchSize": 16}}
            for preset in ("qat", "prune50Qat", "cluster16Qat")
        ],
    }
]
AUTO_RECIPES = {AUTO, AUTO_TRIALS}
CLASSIFIER_GATE = {"minFidelity": 0.99}
SIGNAL_GATE = {"minSnrDb": 30.0}
"""The gates a user would set: 99 % top-1 agreement for classifiers, 30 dB SNR on every output otherwise."""
TRAINING_RECIPES = {
    "prune50-int8",
    "prune50-qat-int8",
    "prune50-oneshot-qat-int8",
    "prune50-sensitivity-qat-int8",
    "prune50-distilled-qat-int8",
    "reduce50",
    "reduce50-int8",
    AUTO_TRIALS,
}


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    np.savez(path, **arrays)
    return path


def xception(folder: Path) -> tuple[Path, str, Path]:
    keras = seeded_keras()
    x, y = gratings(1500, seed=1)
    model = mini_xception(stem=16, blocks=(32, 64, 128))
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=6, batch_size=32, verbose=0)
    model.save(folder / "xception.h5")
    data = {"x_train": gratings(600, seed=3)[0], "x_eval": gratings(300, seed=4)[0]}
    return folder / "xception.h5", "h5", save_npz(folder / "xception.npz", data)


def float_tflite(folder: Path) -> tuple[Path, str, Path]:
    from edgecompress_runner.tfcompat import keras, tf

    model_path, _, data = xception(folder)
    model = keras.models.load_model(model_path)
    (folder / "xception.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return folder / "xception.tflite", "tflite", data


def audio(folder: Path) -> tuple[Path, str, Path]:
    keras = seeded_keras()
    layers = keras.layers
    clip = keras.Input((None, 1), name="audio")
    hidden = layers.Conv1D(32, 9, padding="same", activation="relu", name="conv_a")(clip)
    hidden = layers.Conv1D(64, 5, padding="same", activation="relu", name="conv_b")(hidden)
    hidden = layers.Conv1D(64, 3, padding="same", activation="relu", name="conv_c")(hidden)
    frames = layers.Conv1D(1, 1, activation="sigmoid", name="frames")(hidden)
    pitch = layers.Dense(3, activation="softmax", name="pitch")(layers.GlobalMaxPooling1D(name="pool")(hidden))
    model = keras.Model(clip, [frames, pitch])
    train, evaluation = audio_arrays(800, 128, seed=1), audio_arrays(200, 96, seed=2)
    model.compile(keras.optimizers.Adam(3e-3), ["binary_crossentropy", "sparse_categorical_crossentropy"])
    model.fit(train["audio"], [train["frames"], train["pitch"]], epochs=6, batch_size=32, verbose=0)
    model.save(folder / "audio.keras")
    return (
        folder / "audio.keras",
        "keras",
        save_npz(folder / "audio.npz", {"x_train": train["audio"], "x_eval": evaluation["audio"]}),
    )


def text(folder: Path) -> tuple[Path, str, Path]:
    keras = seeded_keras()
    layers = keras.layers
    tokens = keras.Input((16,), dtype="int32", name="tokens")
    hidden = layers.Embedding(50, 32, name="embedding")(tokens)
    hidden = layers.Conv1D(64, 3, padding="same", activation="relu", name="conv")(hidden)
    hidden = layers.Dense(64, activation="relu", name="hidden")(layers.GlobalAveragePooling1D(name="pool")(hidden))
    model = keras.Model(tokens, layers.Dense(4, activation="softmax", name="topic")(hidden))
    (x_train, y_train), (x_eval, _) = token_arrays(1200, seed=1), token_arrays(300, seed=2)
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(x_train, y_train, epochs=5, batch_size=32, verbose=0)
    model.save(folder / "text.keras")
    return folder / "text.keras", "keras", save_npz(folder / "text.npz", {"x_train": x_train, "x_eval": x_eval})


def tabular_model(folder: Path, *, name: str, output: Any, loss: str, target: Callable[[np.ndarray], Any]) -> Path:
    keras = seeded_keras()
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(64, activation="relu"),
            output,
        ]
    )
    x = tabular(2000, 1)
    model.compile(keras.optimizers.Adam(3e-3), loss)
    model.fit(x, target(x), epochs=6, batch_size=32, verbose=0)
    model.save(folder / f"{name}.keras")
    return folder / f"{name}.keras"


def binary(folder: Path) -> tuple[Path, str, Path]:
    rule = np.array([1.0, -1.0, 0.5, 0, 0, 0, 0.3, 0])
    output = seeded_keras().layers.Dense(1, activation="sigmoid")
    model = tabular_model(
        folder, name="binary", output=output, loss="binary_crossentropy", target=lambda x: (x @ rule > 0) * 1
    )
    return model, "keras", save_npz(folder / "tabular.npz", {"x_train": tabular(600, 3), "x_eval": tabular(300, 4)})


def regression(folder: Path) -> tuple[Path, str, Path]:
    weights = np.linspace(-2, 2, 8)
    output = seeded_keras().layers.Dense(1, name="value")
    model = tabular_model(folder, name="regression", output=output, loss="mse", target=lambda x: np.sin(x @ weights))
    return model, "keras", save_npz(folder / "tabular.npz", {"x_train": tabular(600, 3), "x_eval": tabular(300, 4)})


KERAS3_TRAINING = """
rng = np.random.default_rng(0)
x = rng.random((1024, 8, 8, 1), dtype=np.float32)
y = (x.reshape(len(x), -1) @ np.random.default_rng(1).normal(size=(64, 10))).argmax(-1)
model.compile("adam", "sparse_categorical_crossentropy")
model.fit(x, y, epochs=8, batch_size=32, verbose=0)
"""
"""Teaches the Keras 3 CNN a fixed linear rule over uniform images, so that agreement means something."""


def keras3_cnn(folder: Path) -> tuple[Path, str, Path]:
    rng = np.random.default_rng(7)
    data = {"x_train": rng.random((400, 8, 8, 1), np.float32), "x_eval": rng.random((300, 8, 8, 1), np.float32)}
    model = keras3_model(folder / "keras3.keras", extra=KERAS3_TRAINING)
    return model, "keras", save_npz(folder / "keras3.npz", data)


GATES = {"audio": SIGNAL_GATE, "regression": SIGNAL_GATE}
"""Quality gates for the auto recipe by model (CLASSIFIER_GATE for the others)."""

MODELS: dict[str, Callable[[Path], tuple[Path, str, Path]]] = {
    "xception": xception,
    "audio": audio,
    "text": text,
    "binary": binary,
    "regression": regression,
    "keras3-cnn": keras3_cnn,
    "float-tflite": float_tflite,
}


def measure(
    model: Path,
    model_format: str,
    dataset: Path,
    *,
    recipe: str,
    work: Path,
    gates: dict[str, float],
    overwrite: bool = False,
) -> dict[str, Any]:
    document: dict[str, Any] = {
        "model": {"uri": str(model), "format": model_format},
        "dataset": {"uri": str(dataset)},
        "steps": RECIPES[recipe],
        "evaluation": {"samples": 300, "latency": {"runs": 200, "warmup": 20}},
        "output": {"uri": str(work / "out"), "overwrite": overwrite},
    }
    if recipe in AUTO_RECIPES:
        document["gates"] = gates
    started = time.monotonic()
    with contextlib.redirect_stdout(io.StringIO()):  # the runner's console table; the report has the numbers
        run = run_job(document, work)
    seconds = time.monotonic() - started
    if not (work / "out" / "report.json").exists():
        return {"error": run.summary.get("message", run.summary)}
    report = run.report
    baseline, result, comparison = report["baseline"], report["result"], report["comparison"]
    return {
        "float_bytes": baseline["sizeBytes"],
        "bytes": result["sizeBytes"],
        "gzip": result["gzipBytes"] / baseline["gzipBytes"],
        "latency": 1.0 / comparison["latencySpeedup"],
        "agreement": comparison.get("top1Agreement"),
        "snr": comparison.get("snrDb"),
        "seconds": seconds,
        "passed": report["gatesPassed"],
        "pick": next((step["chosen"] for step in report["steps"] if step["type"] == "auto"), None),
    }


def row(model: str, recipe: str, found: dict[str, Any]) -> str:
    if "error" in found:
        return f"| {model} | {recipe} | | failed: {str(found['error'])[:90]} | | | | | | |"
    agreement = "" if found["agreement"] is None else f"{found['agreement']:.3f}"
    snr = "" if found["snr"] is None else f"{found['snr']:.1f}"
    if found["pick"] is not None:
        recipe += f" ({found['pick']})"
    if not found["passed"]:
        recipe += " (gates failed)"
    return (
        f"| {model} | {recipe} | {found['float_bytes']:,} | {found['bytes']:,} "
        f"| {found['bytes'] / found['float_bytes']:.3f}x "
        f"| {found['gzip']:.3f}x | {found['latency']:.2f}x | {agreement} | {snr} | {found['seconds']:.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--out", type=Path, default=None, help="keep the models and runs here")
    parser.add_argument(
        "--rerun", action="store_true", help="run each auto recipe a second time on the same output (its cache)"
    )
    args = parser.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="model-zoo-"))
    from edgecompress_runner.tfcompat import seed_run

    print(
        "| model | recipe | float bytes (converter) | bytes | / float | gzip / float | latency / float "
        "| agreement | SNR dB | wall s |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in args.models.split(","):
        seed_run(0)
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        model, model_format, dataset = MODELS[name](folder)
        for recipe in args.recipes.split(","):
            if recipe in TRAINING_RECIPES and model_format == "tflite":
                continue
            gates = GATES.get(name, CLASSIFIER_GATE)
            found = measure(model, model_format, dataset, recipe=recipe, work=folder / recipe, gates=gates)
            print(row(name, recipe, found))
            if args.rerun and recipe in AUTO_RECIPES and "error" not in found:
                again = measure(
                    model, model_format, dataset, recipe=recipe, work=folder / recipe, gates=gates, overwrite=True
                )
                print(row(name, f"{recipe}, run again", again))
            sys.stdout.flush()


if __name__ == "__main__":
    main()
