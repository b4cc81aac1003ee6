"""Streamed against in-memory fine-tuning: the same uint8 images as a prefix of .npz shards and as one .npz.

Both runs are the runner CLI in its own process on the same tiny image model and the same job (one QAT step
and int8 PTQ); the samples per second are the QAT step's trained samples over its wall time (report.json), the
peak RSS is the largest resident set of the runner and its children (getrusage RUSAGE_CHILDREN of a wrapper).

    python bench/streaming.py --shards 20 --shard-mb 20
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

SIDE = 96
CLASSES = 4
EVAL_SAMPLES = 200
EVAL_SEED = 1_000_000


def images(samples: int, seed: int, side: int = SIDE) -> tuple[np.ndarray, np.ndarray]:
    """uint8 grey images and a class from their brightness and left-right balance (learnable, seeded)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (samples, side, side, 1), dtype=np.uint8)
    brightness = x.mean(axis=(1, 2, 3)) > 127.5
    left = x[:, :, : side // 2].mean(axis=(1, 2, 3)) > x[:, :, side // 2 :].mean(axis=(1, 2, 3))
    return x, (brightness.astype(np.int32) * 2 + left.astype(np.int32))


def write_model(path: Path, side: int = SIDE) -> Path:
    """A small CNN that pools the image to 24x24 first (cheap per byte of data), trained one epoch; saved as .keras."""
    from edgecompress_runner.tfcompat import keras, seed_run

    seed_run(0)
    inputs = keras.Input((side, side, 1), name="image")
    hidden = keras.layers.AveragePooling2D(side // 24)(inputs)
    hidden = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(hidden)
    hidden = keras.layers.Conv2D(16, 3, activation="relu")(hidden)
    hidden = keras.layers.GlobalAveragePooling2D()(hidden)
    outputs = keras.layers.Dense(CLASSES, activation="softmax")(hidden)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x, y = images(512, seed=1000, side=side)
    model.fit(x.astype(np.float32), y, epochs=1, verbose=0)
    model.save(path)
    return path


def shard_samples(shard_bytes: int, side: int = SIDE) -> int:
    return max(1, shard_bytes // (side * side))


def write_shards(folder: Path, *, shards: int, samples_per_shard: int, side: int = SIDE) -> Path:
    """``shards`` files part-NNNNN.npz with x_train (uint8) and y_train; the first also has x_eval and y_eval."""
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(shards):
        x, y = images(samples_per_shard, seed=index, side=side)
        arrays = {"x_train": x, "y_train": y}
        if index == 0:
            arrays |= dict(zip(("x_eval", "y_eval"), images(EVAL_SAMPLES, seed=EVAL_SEED, side=side), strict=True))
        np.savez(folder / f"part-{index:05d}.npz", **arrays)  # type: ignore[arg-type]
    return folder


def write_single(path: Path, *, shards: int, samples_per_shard: int) -> Path:
    """The same arrays as ``write_shards`` in one .npz."""
    parts = [images(samples_per_shard, seed=index) for index in range(shards)]
    x_eval, y_eval = images(EVAL_SAMPLES, seed=EVAL_SEED)
    np.savez(
        path,
        x_train=np.concatenate([x for x, _ in parts]),
        y_train=np.concatenate([y for _, y in parts]),
        x_eval=x_eval,
        y_eval=y_eval,
    )
    return path


def job(model: Path, dataset: str, output: Path, steps: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "model": {"uri": str(model), "format": "keras"},
        "dataset": {"uri": dataset},
        "steps": steps,
        "evaluation": {"samples": EVAL_SAMPLES, "latency": {"runs": 20, "warmup": 2}},
        "output": {"uri": str(output)},
    }


@dataclass(frozen=True)
class MeasuredRun:
    exit_code: int
    summary: dict[str, Any]
    report: dict[str, Any] | None
    peak_rss_bytes: int
    stderr: str


_PEAK_RSS = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode\n"
    "print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)\n"
)


def run_measured(document: dict[str, Any], workdir: Path) -> MeasuredRun:
    """Runs the runner CLI on ``document``; the peak RSS is the largest of the runner and its children's."""
    workdir.mkdir(parents=True, exist_ok=True)
    job_file, summary_file = workdir / "job.yaml", workdir / "summary.json"
    job_file.write_text(yaml.safe_dump(document))
    command = ["edgecompress-runner", "run", str(job_file), "--summary-file", str(summary_file), "--progress", "log"]
    command += ["--work-dir", str(workdir / "work")]
    finished = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS, *command], capture_output=True, text=True, timeout=1800, check=False
    )
    code, peak = (int(value) for value in finished.stdout.split())
    report_file = Path(document["output"]["uri"]) / "report.json"
    report = json.loads(report_file.read_text()) if report_file.exists() else None
    return MeasuredRun(code, json.loads(summary_file.read_text()), report, peak, finished.stderr)


def trained_per_second(report: dict[str, Any], step: int, train_samples: int) -> float:
    """A fine-tuning step's trained samples (all epochs) per second of its wall time."""
    record = report["steps"][step]
    streaming = record.get("streaming")
    if streaming is not None:
        trained = streaming["samplesSeen"]
    else:
        held_out = record["validation"]["samples"] if record.get("validation") else 0
        trained = (train_samples - held_out) * record["epochs"]
    return trained / record["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, default=20)
    parser.add_argument("--shard-mb", type=float, default=20.0)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=128)
    arguments = parser.parse_args()
    per_shard = shard_samples(int(arguments.shard_mb * 2**20))
    total = per_shard * arguments.shards
    steps = [
        {"type": "qat", "fineTune": {"epochs": arguments.epochs, "batchSize": arguments.batch_size}},
        {"type": "ptq", "mode": "int8"},
    ]
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        model = write_model(root / "model.keras")
        shards = write_shards(root / "shards", shards=arguments.shards, samples_per_shard=per_shard)
        single = write_single(root / "single.npz", shards=arguments.shards, samples_per_shard=per_shard)
        runs = {
            "streamed (shards)": run_measured(job(model, f"{shards}/", root / "out-streamed", steps), root / "s"),
            "in memory (one .npz)": run_measured(job(model, str(single), root / "out-memory", steps), root / "m"),
        }
    data_bytes = total * SIDE * SIDE
    print(f"{platform.processor() or platform.machine()}; {arguments.shards} shards x {per_shard} uint8 images")
    print(f"({SIDE}x{SIDE}x1), {data_bytes / 2**20:.0f} MiB of x_train; qat {arguments.epochs} epoch(s), int8 PTQ\n")
    print("| run | samples/s (qat step) | peak RSS (MiB) | result |")
    print("| --- | --- | --- | --- |")
    for name, run in runs.items():
        if run.report is None:
            print(f"| {name} | failed: {run.summary.get('message')} | | |")
            continue
        rate = trained_per_second(run.report, 0, total)
        print(f"| {name} | {rate:,.0f} | {run.peak_rss_bytes / 2**20:,.0f} | {run.summary['result']} |")


if __name__ == "__main__":
    main()
