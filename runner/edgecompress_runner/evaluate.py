"""Measuring a .tflite with the LiteRT interpreter: outputs, accuracy/fidelity, size, latency, memory.

Latency is never measured for one model alone: the baseline and the result are timed interleaved
(``interleave``), in rounds, so that load on a shared machine falls on both alike; the speed-up is
the median of the per-round ratios. Peak memory is measured in a fresh child process per model
(``peak_memory``), where nothing else the runner did can hide it.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgecompress_contract.report import Metrics
from edgecompress_contract.spec import Latency

from .errors import InputError

__all__ = [
    "Metrics",
    "Quality",
    "input_signature",
    "interleave",
    "measure_pair",
    "metrics_of",
    "peak_memory",
    "predict",
    "quality",
]

ROUNDS = 5
"""Interleaved rounds (at most; never more than the runs per model)."""

PEAK_MEMORY_TIMEOUT_SECONDS = 600

_PEAK_MEMORY_CHILD = """
import ctypes, gc, json, sys
from pathlib import Path
from ai_edge_litert.interpreter import Interpreter

def status(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise OSError(field)

gc.collect()
try:
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # free heap pages leave RSS, so reusing them counts
except (OSError, AttributeError):
    pass
try:
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS: the imports' peak is forgotten
    before, field = status("VmHWM"), "VmHWM"
except OSError:
    before, field = status("VmRSS"), "VmRSS"
interpreter = Interpreter(model_content=sys.stdin.buffer.read(), num_threads=int(sys.argv[1]))
interpreter.allocate_tensors()
interpreter.invoke()
print(json.dumps({"peak": status(field) - before}))
"""


def make_interpreter(model_bytes: bytes, threads: int) -> Any:
    """The interpreter, allocated, for a single-input model."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model_bytes, num_threads=threads)
    if len(interpreter.get_input_details()) != 1:
        raise InputError(
            f"the model has {len(interpreter.get_input_details())} inputs; only single-input models are supported"
        )
    interpreter.allocate_tensors()
    return interpreter


def peak_memory(models: Sequence[bytes], threads: int) -> list[int | None]:
    """Each model's peak memory, measured in its own fresh process (None where that is impossible).

    The child imports LiteRT, forgets its peak so far, then loads the model from bytes, allocates and
    invokes it once; the growth of its peak RSS is the model's. The children run side by side (each
    measures only itself) and before any timing, so they never disturb it.
    """
    if not sys.platform.startswith("linux"):
        return [None for _ in models]
    children = [
        subprocess.Popen(
            [sys.executable, "-P", "-c", _PEAK_MEMORY_CHILD, str(threads)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in models
    ]
    return [_child_peak(child, model_bytes) for child, model_bytes in zip(children, models, strict=True)]


def _child_peak(child: subprocess.Popen[bytes], model_bytes: bytes) -> int | None:
    """The child's answer; None (never 0) when it could not measure."""
    try:
        stdout, _ = child.communicate(model_bytes, timeout=PEAK_MEMORY_TIMEOUT_SECONDS)
        peak = int(json.loads(stdout.decode(errors="replace").strip().splitlines()[-1])["peak"])
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        return None
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    return peak if child.returncode == 0 and peak > 0 else None


def input_signature(model_bytes: bytes) -> tuple[int | None, ...]:
    from ai_edge_litert.interpreter import Interpreter

    detail = Interpreter(model_content=model_bytes).get_input_details()[0]
    return tuple(None if dim < 0 else int(dim) for dim in detail["shape_signature"][1:])


def _quantize(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    dtype = detail["dtype"]
    if dtype == np.float32:
        return x.astype(np.float32)
    scale, zero_point = detail["quantization"]
    info = np.iinfo(dtype)
    quantized: np.ndarray = np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)
    return quantized


def _dequantize(y: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return y.astype(np.float32)
    scale, zero_point = detail["quantization"]
    dequantized: np.ndarray = (y.astype(np.float32) - zero_point) * scale
    return dequantized


def predict(interpreter: Any, x: np.ndarray) -> np.ndarray:
    """Runs samples one at a time (the batch size edge devices use)."""
    input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[0]
    expected = tuple(input_detail["shape"][1:])
    if tuple(x.shape[1:]) != expected:
        raise InputError(f"samples have shape {tuple(x.shape[1:])} but the .tflite expects {expected}")
    outputs = []
    for index in range(len(x)):
        interpreter.set_tensor(input_detail["index"], _quantize(x[index : index + 1], input_detail))
        interpreter.invoke()
        outputs.append(_dequantize(interpreter.get_tensor(output_detail["index"]), output_detail)[0])
    return np.stack(outputs)


def interleave(
    invokers: Sequence[Callable[[], object]],
    *,
    runs: int,
    warmup: int,
    rounds: int = ROUNDS,
    clock: Callable[[], float] = time.perf_counter,
) -> list[list[list[float]]]:
    """Times every invoker ``runs`` times in all, interleaved; returns milliseconds as [model][round][run].

    Warm-up alternates between the models (A B A B ...). The timed runs are split into ``rounds``
    rounds (at most ``runs``); a round runs each model's share back to back, in reversed order every
    other round (A B, B A, A B, ...), so neither model always runs first or on a cooler machine.
    """
    rounds = max(1, min(rounds, runs))
    for _ in range(warmup):
        for invoke in invokers:
            invoke()
    sizes = [runs // rounds + (1 if index < runs % rounds else 0) for index in range(rounds)]
    timings: list[list[list[float]]] = [[[] for _ in range(rounds)] for _ in invokers]
    for round_index, size in enumerate(sizes):
        order = list(range(len(invokers)))
        if round_index % 2:
            order.reverse()
        for model in order:
            invoke = invokers[model]
            for _ in range(size):
                started = clock()
                invoke()
                timings[model][round_index].append((clock() - started) * 1000.0)
    return timings


@dataclass(frozen=True)
class LatencyStats:
    """One model's interleaved timings, summarized."""

    p50_ms: float
    p95_ms: float
    iqr_ms: float
    rounds_ms: list[float]

    @classmethod
    def of(cls, rounds: list[list[float]]) -> LatencyStats:
        timings = np.concatenate([np.asarray(times) for times in rounds])
        p25, p50, p75, p95 = (float(value) for value in np.percentile(timings, [25, 50, 75, 95]))
        return cls(
            p50_ms=round(p50, 6),
            p95_ms=round(p95, 6),
            iqr_ms=round(p75 - p25, 6),
            rounds_ms=[round(float(np.median(times)), 6) for times in rounds],
        )


def latency(models: Sequence[bytes], sample: np.ndarray, spec: Latency) -> list[LatencyStats]:
    """Each model's latency on the same sample with the same threads, timed interleaved."""
    invokers = []
    for model_bytes in models:
        interpreter = make_interpreter(model_bytes, spec.threads)
        detail = interpreter.get_input_details()[0]
        interpreter.set_tensor(detail["index"], _quantize(sample[None], detail))
        invokers.append(interpreter.invoke)
    timings = interleave(invokers, runs=spec.runs, warmup=spec.warmup)
    return [LatencyStats.of(rounds) for rounds in timings]


def top1_accuracy(outputs: np.ndarray, labels: np.ndarray) -> float:
    truth = labels.argmax(-1) if labels.ndim == outputs.ndim and labels.ndim > 1 else labels.reshape(-1)
    return float((outputs.argmax(-1) == truth).mean())


@dataclass(frozen=True)
class Quality:
    """What one model answers on the evaluation samples, and how well."""

    outputs: np.ndarray
    input_type: str
    accuracy: float | None = None
    top1_agreement: float | None = None
    mean_abs_error: float | None = None


def quality(
    model_bytes: bytes,
    x: np.ndarray,
    *,
    threads: int,
    labels: np.ndarray | None = None,
    reference_outputs: np.ndarray | None = None,
) -> Quality:
    """Outputs and accuracy of one model; ``reference_outputs`` (the baseline's) enables fidelity."""
    interpreter = make_interpreter(model_bytes, threads)
    outputs = predict(interpreter, x)
    classifier = outputs.ndim == 2 and outputs.shape[-1] > 1
    accuracy = top1_accuracy(outputs, labels) if labels is not None and classifier else None
    agreement = mae = None
    if reference_outputs is not None:
        mae = float(np.abs(outputs - reference_outputs).mean())
        if classifier:
            agreement = float((outputs.argmax(-1) == reference_outputs.argmax(-1)).mean())
    input_type = np.dtype(interpreter.get_input_details()[0]["dtype"]).name
    return Quality(outputs, input_type, accuracy=accuracy, top1_agreement=agreement, mean_abs_error=mae)


def measure_pair(
    baseline: bytes,
    result: bytes,
    sample: np.ndarray,
    *,
    latency_spec: Latency,
    baseline_quality: Quality,
    result_quality: Quality,
) -> tuple[Metrics, Metrics]:
    """The baseline's and the result's metrics: memory in fresh processes, then latency interleaved."""
    peaks = peak_memory([baseline, result], latency_spec.threads)
    stats = latency([baseline, result], sample, latency_spec)
    baseline_metrics, result_metrics = (
        metrics_of(model_bytes, measured, found, peak_memory_bytes=peak)
        for model_bytes, measured, peak, found in zip(
            (baseline, result), stats, peaks, (baseline_quality, result_quality), strict=True
        )
    )
    return baseline_metrics, result_metrics


def metrics_of(
    model_bytes: bytes, measured: LatencyStats, found: Quality, *, peak_memory_bytes: int | None = None
) -> Metrics:
    """One model's metrics from its bytes, its interleaved timings and its quality."""
    return Metrics(
        size_bytes=len(model_bytes),
        gzip_bytes=len(gzip.compress(model_bytes, compresslevel=9)),
        latency_p50_ms=measured.p50_ms,
        latency_p95_ms=measured.p95_ms,
        latency_iqr_ms=measured.iqr_ms,
        latency_rounds_ms=measured.rounds_ms,
        peak_memory_bytes=peak_memory_bytes,
        accuracy=found.accuracy,
        top1_agreement=found.top1_agreement,
        mean_abs_error=found.mean_abs_error,
        input_type=found.input_type,
    )
