"""Measuring a .tflite with the LiteRT interpreter: outputs, accuracy/fidelity, size, latency, memory."""

from __future__ import annotations

import gzip
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgecompress_contract.report import Metrics
from edgecompress_contract.spec import Latency

from .errors import InputError

__all__ = ["Metrics", "input_signature", "measure", "predict"]


def _read_proc_status(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Linux: writing 5 to clear_refs resets the process's peak RSS (VmHWM)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def make_interpreter(model_bytes: bytes, threads: int) -> tuple[Any, int | None]:
    """The interpreter, allocated and invoked once, with the peak RSS it added (None off Linux)."""
    from ai_edge_litert.interpreter import Interpreter

    before = _read_proc_status("VmRSS")
    measured = before is not None and _reset_peak_rss()
    interpreter = Interpreter(model_content=model_bytes, num_threads=threads)
    if len(interpreter.get_input_details()) != 1:
        raise InputError(
            f"the model has {len(interpreter.get_input_details())} inputs; only single-input models are supported"
        )
    interpreter.allocate_tensors()
    interpreter.invoke()
    peak = _read_proc_status("VmHWM") if measured else None
    return interpreter, (max(peak - before, 0) if peak is not None and before is not None else None)


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


def latency_ms(interpreter: Any, sample: np.ndarray, runs: int, warmup: int) -> tuple[float, float]:
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], _quantize(sample[None], detail))
    for _ in range(warmup):
        interpreter.invoke()
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        interpreter.invoke()
        timings.append((time.perf_counter() - started) * 1000.0)
    return float(np.percentile(timings, 50)), float(np.percentile(timings, 95))


def top1_accuracy(outputs: np.ndarray, labels: np.ndarray) -> float:
    truth = labels.argmax(-1) if labels.ndim == outputs.ndim and labels.ndim > 1 else labels.reshape(-1)
    return float((outputs.argmax(-1) == truth).mean())


def measure(
    model_bytes: bytes,
    x: np.ndarray,
    *,
    latency: Latency,
    labels: np.ndarray | None = None,
    reference_outputs: np.ndarray | None = None,
) -> tuple[Metrics, np.ndarray]:
    """All metrics for one model; ``reference_outputs`` (the baseline's) enables fidelity."""
    interpreter, peak = make_interpreter(model_bytes, latency.threads)
    outputs = predict(interpreter, x)
    p50, p95 = latency_ms(interpreter, x[0], latency.runs, latency.warmup)
    classifier = outputs.ndim == 2 and outputs.shape[-1] > 1
    accuracy = top1_accuracy(outputs, labels) if labels is not None and classifier else None
    agreement = mae = None
    if reference_outputs is not None:
        mae = float(np.abs(outputs - reference_outputs).mean())
        if classifier:
            agreement = float((outputs.argmax(-1) == reference_outputs.argmax(-1)).mean())
    metrics = Metrics(
        size_bytes=len(model_bytes),
        gzip_bytes=len(gzip.compress(model_bytes, compresslevel=9)),
        latency_p50_ms=round(p50, 4),
        latency_p95_ms=round(p95, 4),
        peak_memory_bytes=peak,
        accuracy=accuracy,
        top1_agreement=agreement,
        mean_abs_error=mae,
        input_type=np.dtype(interpreter.get_input_details()[0]["dtype"]).name,
    )
    return metrics, outputs
