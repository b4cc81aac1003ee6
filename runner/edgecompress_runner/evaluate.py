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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from edgecompress_contract.report import Metrics, OutputMetrics, TensorInfo
from edgecompress_contract.spec import Latency, OutputTask

from . import tasks as tasks_module
from .data import ModelTensor, samples
from .errors import InputError

__all__ = [
    "Metrics",
    "ModelRunner",
    "Quality",
    "Signature",
    "interleave",
    "measure_pair",
    "metrics_of",
    "peak_memory",
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


@dataclass(frozen=True)
class Tensor:
    """One input or output of a .tflite: its signature name, tensor index, type, per-sample shape and quantization."""

    name: str
    index: int
    dtype: np.dtype
    shape: tuple[int | None, ...]
    scale: float
    zero_point: int

    @classmethod
    def of(cls, name: str, detail: dict[str, Any]) -> Tensor:
        scale, zero_point = detail["quantization"]
        return cls(
            name=name,
            index=int(detail["index"]),
            dtype=np.dtype(detail["dtype"]),
            shape=tuple(None if dim < 0 else int(dim) for dim in detail["shape_signature"][1:]),
            scale=float(scale),
            zero_point=int(zero_point),
        )

    @property
    def quantized(self) -> bool:
        return self.scale != 0 and self.dtype.kind in "iu"

    def model_tensor(self) -> ModelTensor:
        return ModelTensor(name=self.name, shape=self.shape, dtype=self.dtype)

    def info(self) -> TensorInfo:
        return TensorInfo(
            name=self.name, dtype=self.dtype.name, shape=[-1 if dim is None else dim for dim in self.shape]
        )


@dataclass(frozen=True)
class Signature:
    """A model's inputs and outputs by name, in signature order."""

    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]

    @property
    def output_names(self) -> list[str]:
        return [tensor.name for tensor in self.outputs]


def _plain_name(tensor_name: str) -> str:
    """A tensor name without the converter's decorations: ``serving_default_audio:0`` -> ``audio``."""
    name = tensor_name.split(":", 1)[0]
    return name.removeprefix("serving_default_")


def signature_of(interpreter: Any) -> Signature:
    """Inputs and outputs named as the .tflite's signature names them (the converter's tensor names without one).

    The runner feeds and reads the main subgraph, so a signature of another subgraph is not used.
    """
    keys = interpreter.get_signature_list()
    if keys:
        key = "serving_default" if "serving_default" in keys else sorted(keys)[0]
        runner = interpreter.get_signature_runner(key)
        main_inputs = {int(detail["index"]) for detail in interpreter.get_input_details()}
        named_inputs = runner.get_input_details()
        if {int(detail["index"]) for detail in named_inputs.values()} == main_inputs:
            return Signature(
                inputs=tuple(Tensor.of(name, detail) for name, detail in named_inputs.items()),
                outputs=tuple(Tensor.of(name, detail) for name, detail in runner.get_output_details().items()),
            )
    return Signature(
        inputs=tuple(Tensor.of(_plain_name(d["name"]), d) for d in interpreter.get_input_details()),
        outputs=tuple(Tensor.of(_plain_name(d["name"]), d) for d in interpreter.get_output_details()),
    )


def _renamed(tensors: tuple[Tensor, ...], reference: tuple[Tensor, ...], role: str) -> tuple[Tensor, ...]:
    """``tensors`` named as in ``reference``: by name (QAT's ``quant_`` prefix aside), or by position for one."""
    wanted = {tensor.name for tensor in reference}
    if len(tensors) == 1 and len(reference) == 1:
        return (replace(tensors[0], name=reference[0].name),)
    renamed = tuple(replace(tensor, name=tensor.name.removeprefix("quant_")) for tensor in tensors)
    found = [tensor.name for tensor in renamed]
    if sorted(found) != sorted(wanted):
        raise InputError(f"the compressed model's {role} {found} are not the input model's {sorted(wanted)}")
    return renamed


class ModelRunner:
    """A .tflite in the LiteRT interpreter, fed every input by name and read at every output.

    An input with unknown sizes is resized to the samples given (all samples of one array share a shape).
    """

    def __init__(self, model_bytes: bytes, threads: int, *, names_of: Signature | None = None) -> None:
        """``names_of`` (the baseline's signature) renames this model's inputs and outputs to the baseline's."""
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_content=model_bytes, num_threads=threads)
        self.signature = signature_of(self.interpreter)
        if names_of is not None:
            self.signature = Signature(
                inputs=_renamed(self.signature.inputs, names_of.inputs, "inputs"),
                outputs=_renamed(self.signature.outputs, names_of.outputs, "outputs"),
            )
        self.interpreter.allocate_tensors()
        self._shapes = {
            tensor.name: tuple(self.interpreter.get_tensor(tensor.index).shape) for tensor in self.signature.inputs
        }

    def feed(self, sample: Mapping[str, np.ndarray]) -> None:
        """Sets every input from a batch of one sample per input name."""
        resized = False
        for tensor in self.signature.inputs:
            shape = tuple(sample[tensor.name].shape)
            if self._shapes[tensor.name] != shape:
                self.interpreter.resize_tensor_input(tensor.index, shape, strict=False)
                self._shapes[tensor.name] = shape
                resized = True
        if resized:
            self.interpreter.allocate_tensors()
        for tensor in self.signature.inputs:
            self.interpreter.set_tensor(tensor.index, _to_input(sample[tensor.name], tensor))

    def invoke(self) -> None:
        self.interpreter.invoke()

    def read(self) -> dict[str, np.ndarray]:
        """Every output of the last invocation, dequantized, without the batch axis."""
        return {
            tensor.name: _from_output(self.interpreter.get_tensor(tensor.index), tensor)[0]
            for tensor in self.signature.outputs
        }

    def predict(self, x: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs samples one at a time (the batch size edge devices use); every output by name."""
        count = samples(dict(x))
        collected: dict[str, list[np.ndarray]] = {tensor.name: [] for tensor in self.signature.outputs}
        for index in range(count):
            self.feed({name: array[index : index + 1] for name, array in x.items()})
            self.invoke()
            for name, value in self.read().items():
                collected[name].append(value)
        return {name: np.stack(values) for name, values in collected.items()}


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


def _to_input(x: np.ndarray, tensor: Tensor) -> np.ndarray:
    """Samples in the input's type: quantized from real values for an int8 input, cast otherwise (token ids stay
    integers)."""
    if not tensor.quantized:
        return x.astype(tensor.dtype, copy=False)
    info = np.iinfo(tensor.dtype)
    real = x.astype(np.float32)
    quantized: np.ndarray = np.clip(np.round(real / tensor.scale + tensor.zero_point), info.min, info.max)
    return quantized.astype(tensor.dtype)


def _from_output(y: np.ndarray, tensor: Tensor) -> np.ndarray:
    if not tensor.quantized:
        return y.astype(np.float32) if y.dtype != np.float32 else y.copy()
    dequantized: np.ndarray = (y.astype(np.float32) - tensor.zero_point) * tensor.scale
    return dequantized


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


def latency(
    models: Sequence[bytes], sample: Mapping[str, np.ndarray], spec: Latency, *, names_of: Signature
) -> list[LatencyStats]:
    """Each model's latency on the same sample (one per input) with the same threads, timed interleaved."""
    invokers = []
    for model_bytes in models:
        runner = ModelRunner(model_bytes, spec.threads, names_of=names_of)
        runner.feed({name: array[None] for name, array in sample.items()})
        invokers.append(runner.invoke)
    timings = interleave(invokers, runs=spec.runs, warmup=spec.warmup)
    return [LatencyStats.of(rounds) for rounds in timings]


@dataclass(frozen=True)
class Quality:
    """What one model answers on the evaluation samples (every output by name), and how well."""

    outputs: dict[str, np.ndarray]
    signature: Signature
    per_output: list[OutputMetrics]

    def headline(self) -> dict[str, Any]:
        """The Metrics fields this quality fills: aggregates (the worst output), inputs and outputs."""
        return {
            **Metrics.aggregates(self.per_output),
            "input_type": self.signature.inputs[0].dtype.name if self.signature.inputs else "float32",
            "inputs": [tensor.info() for tensor in self.signature.inputs],
            "outputs": self.per_output,
        }


def quality(
    model_bytes: bytes,
    x: Mapping[str, np.ndarray],
    *,
    threads: int,
    tasks: Mapping[str, str],
    names_of: Signature,
    labels: Mapping[str, np.ndarray] | None = None,
    reference_outputs: Mapping[str, np.ndarray] | None = None,
) -> Quality:
    """Every output of one model on ``x`` (its inputs and outputs named as in ``names_of``), judged by ``assess``."""
    runner = ModelRunner(model_bytes, threads, names_of=names_of)
    return assess(runner.signature, runner.predict(x), tasks=tasks, labels=labels, reference_outputs=reference_outputs)


def assess(
    signature: Signature,
    outputs: dict[str, np.ndarray],
    *,
    tasks: Mapping[str, str],
    labels: Mapping[str, np.ndarray] | None = None,
    reference_outputs: Mapping[str, np.ndarray] | None = None,
) -> Quality:
    """Every output with its task: ``labels`` (as ``tasks.label_targets`` made them) give accuracy,
    ``reference_outputs`` (the baseline's) give fidelity."""
    per_output = []
    for tensor in signature.outputs:
        name, values = tensor.name, outputs[tensor.name]
        task = tasks[name]
        found: dict[str, float] = {}
        if labels is not None and name in labels:
            found.update(tasks_module.label_quality(task, values, labels[name]))
        if reference_outputs is not None:
            found.update(tasks_module.fidelity(task, values, reference_outputs[name]))
        per_output.append(OutputMetrics(name=name, task=OutputTask(task), dtype=tensor.dtype.name, **found))
    return Quality(outputs=outputs, signature=signature, per_output=per_output)


def measure_pair(
    baseline: bytes,
    result: bytes,
    sample: Mapping[str, np.ndarray],
    *,
    latency_spec: Latency,
    baseline_quality: Quality,
    result_quality: Quality,
) -> tuple[Metrics, Metrics]:
    """The baseline's and the result's metrics: memory in fresh processes, then latency interleaved."""
    peaks = peak_memory([baseline, result], latency_spec.threads)
    stats = latency([baseline, result], sample, latency_spec, names_of=baseline_quality.signature)
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
        **found.headline(),
    )
