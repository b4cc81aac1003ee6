"""Filter reduction against quantization on a mini-Xception-style classifier, measured in one interleaved run.

The model (Conv2D + BN + ReLU stem, residual blocks of SeparableConv2D + BN with a strided 1x1 Conv2D
shortcut, global average pooling, Dense softmax; the tests' model) is trained on the seeded gratings of
tests/integration/test_training.py. The runner then makes three results from it on unlabelled data:
int8 PTQ, reduceFilters 50 % (+ fine-tuning), and reduceFilters 50 % + int8 PTQ. All four .tflite files
(with the float baseline) are timed interleaved in the same rounds, so every ratio compares runs made
side by side; fidelity is top-1 agreement with the float baseline on held-out samples.

    python bench/filter_reduction.py [--stem 16] [--stride 1] [--blocks 32,64] [--epochs 10] [--runs 2000]
"""

from __future__ import annotations

import argparse
import gzip
import platform
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from tests.integration.test_training import gratings, mini_xception

from edgecompress_contract.spec import Latency, parse_spec
from edgecompress_runner import evaluate
from edgecompress_runner.pipeline import run
from edgecompress_runner.tfcompat import keras, tf


def train(stem: int, blocks: tuple[int, ...], stride: int, path: Path) -> None:
    x, y = gratings(1200, seed=1)
    model = mini_xception(stem=stem, blocks=blocks, stride=stride, dense_head=True)
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", ["accuracy"])
    model.fit(x, y, epochs=12, batch_size=32, verbose=0)
    x_check, y_check = gratings(400, seed=2)
    accuracy = model.evaluate(x_check, y_check, verbose=0)[1]
    print(
        f"model: {model.count_params():,} parameters, stem {stem} (stride {stride}), blocks {blocks}, "
        f"accuracy {accuracy:.3f}"
    )
    model.save(path)


def compress(model: Path, data: Path, output: Path, steps: list[dict[str, Any]], work: Path) -> bytes:
    spec = parse_spec(
        {
            "model": {"uri": str(model), "format": "h5"},
            "dataset": {"uri": str(data)},
            "steps": steps,
            "evaluation": {"latency": {"runs": 20, "warmup": 2}},
            "output": {"uri": str(output)},
        }
    )
    run(spec, work)
    return (output / "model.tflite").read_bytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stem", type=int, default=16)
    parser.add_argument("--stride", type=int, default=1, help="stride of the stem")
    parser.add_argument("--blocks", default="32,64", help="filters of each residual block, comma-separated")
    parser.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs of reduceFilters")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=2000)
    args = parser.parse_args()
    blocks = tuple(int(part) for part in args.blocks.split(","))
    reduce = {
        "type": "reduceFilters",
        "targetReduction": 0.5,
        "fineTune": {"epochs": args.epochs, "learningRate": 1e-3},
    }
    recipes = {
        "int8": [{"type": "ptq", "mode": "int8"}],
        "reduce 50 % (+ft)": [reduce],
        "reduce 50 % + int8": [reduce, {"type": "ptq", "mode": "int8"}],
    }
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        model_path = root / "model.h5"
        train(args.stem, blocks, args.stride, model_path)
        data = root / "data.npz"
        x_eval = gratings(400, seed=4)[0]
        np.savez(data, x_train=gratings(600, seed=3)[0], x_eval=x_eval)
        converter = tf.lite.TFLiteConverter.from_keras_model(keras.models.load_model(model_path))
        files = {"float": bytes(converter.convert())}
        for index, (name, steps) in enumerate(recipes.items()):
            files[name] = compress(model_path, data, root / f"out{index}", steps, root / f"work{index}")
    signature = evaluate.ModelRunner(files["float"], args.threads).signature
    inputs = {signature.inputs[0].name: x_eval}
    scores = {
        name: next(iter(evaluate.ModelRunner(model, args.threads, names_of=signature).predict(inputs).values()))
        for name, model in files.items()
    }
    agreement = {name: float((found.argmax(-1) == scores["float"].argmax(-1)).mean()) for name, found in scores.items()}
    stats = evaluate.latency(
        list(files.values()),
        {name: array[0] for name, array in inputs.items()},
        Latency(threads=args.threads, runs=args.runs, warmup=50),
        names_of=signature,
    )
    rounds = {name: np.asarray(measured.rounds_ms) for name, measured in zip(files, stats, strict=True)}
    print(f"{platform.processor() or platform.machine()}, {args.threads} thread(s), {args.runs} runs per model")
    print("| model | bytes | gzip bytes | p50 (ms) | speed-up vs float | speed-up vs int8 | top-1 agreement |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for (name, model), measured in zip(files.items(), stats, strict=True):
        versus_float = np.median(rounds["float"] / rounds[name])
        versus_int8 = np.median(rounds["int8"] / rounds[name])
        print(
            f"| {name} | {len(model):,} | {len(gzip.compress(model, 9)):,} | {measured.p50_ms:.4f} | "
            f"{versus_float:.2f}x | {versus_int8:.2f}x | {agreement[name]:.4f} |"
        )


if __name__ == "__main__":
    main()
