"""The runner versus a hand-written tfmot script doing the same steps, side by side in one run.

The hand-written script is the classic recipe from the tfmot guides: prune 50 -> 80 % with
PolynomialDecay (the guide's default frequency), strip, prune-preserving QAT, int8 PTQ. Both get
the same trained model, data and epochs; both results are measured by the same LiteRT code.

    python bench/runner_vs_tfmot.py [--prune-epochs 2] [--qat-epochs 1] [--threads 1]
"""

from __future__ import annotations

import argparse
import math
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgecompress_contract.spec import Latency, parse_spec
from edgecompress_runner import evaluate
from edgecompress_runner.example import digits_arrays, digits_cnn, example_job, train_classifier
from edgecompress_runner.pipeline import run
from edgecompress_runner.tfcompat import keras, tf, tfmot


def handwritten(
    model_path: Path, data: dict[str, np.ndarray], prune_epochs: int, qat_epochs: int, frequency: int
) -> tuple[bytes, float]:
    """What people write by hand (kept close to the tfmot guides on purpose); returns .tflite and sparsity."""
    model = keras.models.load_model(model_path, compile=False)
    x, y = data["x_train"], data["y_train"]
    batch_size = 32
    end_step = math.ceil(len(x) / batch_size) * prune_epochs
    pruning_params = {
        "pruning_schedule": tfmot.sparsity.keras.PolynomialDecay(
            initial_sparsity=0.50, final_sparsity=0.80, begin_step=0, end_step=end_step, frequency=frequency
        )
    }
    pruned = tfmot.sparsity.keras.prune_low_magnitude(model, **pruning_params)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    pruned.compile(optimizer=keras.optimizers.Adam(5e-4), loss=loss, metrics=["accuracy"])
    pruned.fit(
        x,
        y,
        batch_size=batch_size,
        epochs=prune_epochs,
        verbose=0,
        callbacks=[tfmot.sparsity.keras.UpdatePruningStep()],
    )
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    kernels = [w.numpy() for w in stripped.weights if "kernel" in w.name]
    sparsity = sum(float((k == 0).sum()) for k in kernels) / sum(k.size for k in kernels)
    annotated = tfmot.quantization.keras.quantize_annotate_model(stripped)
    qat = tfmot.quantization.keras.quantize_apply(
        annotated, tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
    )
    qat.compile(optimizer=keras.optimizers.Adam(1e-4), loss=loss, metrics=["accuracy"])
    qat.fit(x, y, batch_size=batch_size, epochs=qat_epochs, verbose=0)

    def representative() -> Any:
        for index in range(200):
            yield [x[index : index + 1]]

    converter = tf.lite.TFLiteConverter.from_keras_model(qat)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter.convert(), sparsity


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prune-epochs", type=int, default=2)
    parser.add_argument("--qat-epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument(
        "--script-frequency",
        type=int,
        default=100,
        help="pruning frequency of the hand-written script (100 is PolynomialDecay's default)",
    )
    args = parser.parse_args()

    data = digits_arrays()
    work = Path(tempfile.mkdtemp(prefix="ec-bench-"))
    model_path, data_path = work / "model.keras", work / "digits.npz"
    train_classifier(digits_cnn, data).save(model_path)
    np.savez(data_path, **data)

    document = example_job(model_path.as_uri(), data_path.as_uri(), str(work / "runner-out"))
    document["steps"][0]["fineTune"]["epochs"] = args.prune_epochs
    document["steps"][1]["fineTune"]["epochs"] = args.qat_epochs
    started = time.monotonic()
    outcome = run(parse_spec(document), work / "runner-work")
    runner_seconds = time.monotonic() - started
    runner_bytes = (work / "runner-out" / "model.tflite").read_bytes()
    runner_sparsity = outcome.report.to_wire()["steps"][1]["sparsity"]["overall"]

    started = time.monotonic()
    script_bytes, script_sparsity = handwritten(
        model_path, data, args.prune_epochs, args.qat_epochs, args.script_frequency
    )
    script_seconds = time.monotonic() - started

    latency = Latency(threads=args.threads, runs=args.runs, warmup=20)
    signature = evaluate.ModelRunner(runner_bytes, args.threads).signature
    [image], [logits] = (tensor.name for tensor in signature.inputs), (tensor.name for tensor in signature.outputs)
    qualities = [
        evaluate.quality(
            model_bytes,
            {image: data["x_eval"]},
            threads=args.threads,
            tasks={logits: "multiclass"},
            names_of=signature,
            labels={logits: data["y_eval"]},
        )
        for model_bytes in (runner_bytes, script_bytes)
    ]
    # Timed interleaved (like a run's baseline and result), so load falls on both alike.
    runner, script = evaluate.measure_pair(
        runner_bytes,
        script_bytes,
        {image: data["x_eval"][0]},
        latency_spec=latency,
        baseline_quality=qualities[0],
        result_quality=qualities[1],
    )
    rows = [
        ("wall time (s)", f"{runner_seconds:.1f}", f"{script_seconds:.1f}", f"{runner_seconds / script_seconds:.2f}x"),
        (
            "size (bytes)",
            f"{runner.size_bytes:,}",
            f"{script.size_bytes:,}",
            f"{runner.size_bytes / script.size_bytes:.3f}x",
        ),
        (
            "gzip size (bytes)",
            f"{runner.gzip_bytes:,}",
            f"{script.gzip_bytes:,}",
            f"{runner.gzip_bytes / script.gzip_bytes:.3f}x",
        ),
        ("kernel sparsity", f"{runner_sparsity:.1%}", f"{script_sparsity:.1%}", ""),
        (
            "accuracy",
            f"{runner.accuracy:.4f}",
            f"{script.accuracy:.4f}",
            f"{(runner.accuracy or 0) - (script.accuracy or 0):+.4f}",
        ),
        (
            "latency p50 (ms)",
            f"{runner.latency_p50_ms:.4f}",
            f"{script.latency_p50_ms:.4f}",
            f"{runner.latency_p50_ms / script.latency_p50_ms:.2f}x",
        ),
    ]
    print(
        f"edgecompress bench: runner vs hand-written tfmot | {platform.node()}"
        f" | {platform.processor() or platform.machine()}"
        f" | {tf.__version__} | prune {args.prune_epochs} + QAT {args.qat_epochs} epochs | {args.threads} thread(s)"
        f" | script frequency {args.script_frequency}"
    )
    print(
        f"float baseline: {outcome.report.baseline.size_bytes:,} bytes, accuracy {outcome.report.baseline.accuracy:.4f}"
    )
    widths = [
        max(len(row[i]) for row in rows + [("metric", "runner", "tfmot script", "runner/script")]) for i in range(4)
    ]
    for row in [("metric", "runner", "tfmot script", "runner/script"), *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
