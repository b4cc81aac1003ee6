"""Model splitting: the result cut at named layers into .tflite parts that run one after the other.

Each layer call belongs to the part after the last split layer it depends on, so a part reads the tensors
it needs from earlier parts even when a residual connection crosses the cut. Every part is built as a
tf-keras model over the original layers (``keras_graph.replay`` from new inputs at the boundary tensors),
converted with the run's conversion plan (int8 parts are calibrated on the boundary activations of the
calibration samples), and checked: the parts run in order with the LiteRT interpreter must reproduce the
unsplit .tflite's outputs on the evaluation samples (the largest difference is reported). Tensors cross the
boundaries in float32.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecompress_contract.report import SplitManifest, SplitPart, SplitPartMetrics, SplitReport, SplitTensor
from edgecompress_contract.spec import Latency, Split

from .errors import InputError
from .evaluate import interleave
from .keras_graph import (
    LayerCall,
    input_names,
    layer_calls,
    named_tensors,
    output_names,
    replay,
    require_graph_model,
)
from .planning import ConversionPlan
from .tfcompat import keras

MANIFEST_NAME = "split.json"
WHERE = "spec.output.split"


def part_file(index: int) -> str:
    return f"model.part{index}.tflite"


def is_split_file(name: str) -> bool:
    """Whether a file name in the output folder is one a split writes: a part or the manifest."""
    return name == MANIFEST_NAME or re.fullmatch(r"model\.part\d+\.tflite", name) is not None


@dataclass(frozen=True)
class PartPlan:
    """The calls of one part and the tensors it reads and writes, by name."""

    calls: list[LayerCall]
    inputs: list[str]
    outputs: list[str]


def plan_parts(model: Any, split: Split) -> list[PartPlan]:
    """Assigns every layer call to a part; each split layer must depend on the one before it.

    Raises:
        InputError: a split layer is unknown, called more than once, not after the previous one, or has
            nothing after it.
    """
    require_graph_model(model, WHERE)
    calls = list(layer_calls(model))
    by_layer: dict[str, list[LayerCall]] = {}
    for call in calls:
        by_layer.setdefault(call.layer.name, []).append(call)
    unknown = [name for name in split.after if name not in by_layer]
    if unknown:
        raise InputError(f"{WHERE}.after: unknown layers {unknown}; the model has {sorted(by_layer)}")
    for index, name in enumerate(split.after):
        if len(by_layer[name]) > 1:
            raise InputError(f"{WHERE}.after[{index}]: layer {name!r} is called more than once; split elsewhere")
    split_outputs = {by_layer[name][0].outputs[0]: index for index, name in enumerate(split.after)}
    # depends[t]: the split layers tensor t depends on (its own split layer included).
    depends: dict[str, set[int]] = {name: set() for name in input_names(model)}
    part_of: dict[str, int] = {}
    for call in calls:
        upstream = set().union(*(depends[tensor] for tensor in call.inputs)) if call.inputs else set()
        part = max(upstream) + 1 if upstream else 0
        part_of[call.layer.name] = part
        for tensor in call.outputs:
            depends[tensor] = upstream | ({split_outputs[tensor]} if tensor in split_outputs else set())
    for index, name in enumerate(split.after):
        if part_of[name] != index:
            previous = split.after[index - 1] if index else None
            raise InputError(
                f"{WHERE}.after[{index}]: layer {name!r} does not come after {previous!r}; "
                "each split layer must depend on the one before it"
            )
    parts = [[call for call in calls if part_of[call.layer.name] == index] for index in range(len(split.after) + 1)]
    if not parts[-1]:
        raise InputError(f"{WHERE}.after: nothing is computed after layer {split.after[-1]!r}")
    return _boundaries(model, parts)


def _boundaries(model: Any, parts: list[list[LayerCall]]) -> list[PartPlan]:
    made_in: dict[str, int] = {name: -1 for name in input_names(model)}
    for index, calls in enumerate(parts):
        for call in calls:
            made_in.update(dict.fromkeys(call.outputs, index))
    finals = output_names(model)
    read_later: dict[str, int] = {}
    for index, calls in enumerate(parts):
        for call in calls:
            for tensor in call.inputs:
                read_later[tensor] = max(read_later.get(tensor, -1), index)
    plans = []
    for index, calls in enumerate(parts):
        inputs = [t for t in dict.fromkeys(t for call in calls for t in call.inputs) if made_in[t] < index]
        made = [t for call in calls for t in call.outputs]
        outputs = [t for t in made if t in finals or read_later.get(t, -1) > index]
        plans.append(PartPlan(calls, inputs, outputs))
    return plans


def _safe(name: str) -> str:
    return name.replace(":", "_").replace("@", "_")


def part_models(model: Any, plans: list[PartPlan]) -> list[Any]:
    """A tf-keras model per part over ``model``'s own layers, its inputs named after the boundary tensors."""
    tensors = named_tensors(model)
    built = []
    for plan in plans:
        new_inputs = {
            name: keras.Input(shape=tensors[name].shape[1:], dtype=tensors[name].dtype, name=_safe(name))
            for name in plan.inputs
        }
        known = replay(plan.calls, dict(new_inputs))
        built.append(keras.Model(list(new_inputs.values()), [known[name] for name in plan.outputs]))
    return built


@dataclass(frozen=True)
class SplitResult:
    """The parts' files, the manifest, and what was measured on them."""

    files: list[Path]
    manifest: Path
    report: SplitReport


class _Runner:
    """One .tflite run through its signature, inputs and outputs by the split's tensor names."""

    def __init__(self, model_bytes: bytes, inputs: dict[str, str], outputs: dict[str, str], threads: int) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_content=model_bytes, num_threads=threads)
        self.interpreter.allocate_tensors()
        runner = self.interpreter.get_signature_runner()
        self.inputs = {name: runner.get_input_details()[key] for name, key in inputs.items()}
        self.outputs = {name: runner.get_output_details()[key] for name, key in outputs.items()}

    def feed(self, values: dict[str, np.ndarray]) -> None:
        for name, detail in self.inputs.items():
            self.interpreter.set_tensor(detail["index"], values[name].astype(detail["dtype"]))

    def __call__(self, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.feed(values)
        self.interpreter.invoke()
        return {name: self.interpreter.get_tensor(detail["index"]) for name, detail in self.outputs.items()}


def _run_all(runners: list[_Runner], x: dict[str, np.ndarray], samples: int) -> list[dict[str, np.ndarray]]:
    results = []
    for index in range(samples):
        values = {name: array[index : index + 1] for name, array in x.items()}
        for runner in runners:
            values.update(runner(values))
        results.append(values)
    return results


def split_model(
    model: Any,
    split: Split,
    *,
    plan: ConversionPlan,
    whole: bytes,
    x_eval: np.ndarray,
    x_calibration: np.ndarray | None,
    latency: Latency,
    work_dir: Path,
) -> SplitResult:
    """Splits ``model`` (the Keras model ``whole`` was converted from) and checks the parts against ``whole``.

    Args:
        model: the tf-keras model the result was converted from.
        split: where to cut.
        plan: the conversion plan of the result; every part is converted with it.
        whole: the unsplit .tflite, which the parts must reproduce.
        x_eval: evaluation samples (single-input models; the first input of multi-input ones).
        x_calibration: calibration samples for int8 and int16x8 parts.
        latency: interpreter threads and timed runs.
        work_dir: where the part files and the manifest are written.

    Raises:
        InputError: the split layers are wrong, or the plan cannot be applied per part.
    """
    from . import convert
    from .tfcompat import tf

    if plan.ptq is not None and (plan.ptq.skip_layers or plan.ptq.skip_first_and_last or plan.ptq.integer_io):
        raise InputError(f"{WHERE}: a ptq step with skipLayers, skipFirstAndLast or integerIO cannot be split")
    plans = plan_parts(model, split)
    models = part_models(model, plans)
    model_inputs = input_names(model)
    if len(model_inputs) != 1:
        raise InputError(f"{WHERE}: only single-input models can be split, this one has {len(model_inputs)} inputs")
    calibration_values = _boundary_values(models, plans, model_inputs[0], x_calibration)
    files, parts_bytes, manifest_parts = [], [], []
    for index, (part_plan, part) in enumerate(zip(plans, models, strict=True)):
        calibration = (
            {_safe(name): calibration_values[name] for name in part_plan.inputs} if calibration_values else None
        )
        part_bytes, _ = convert.convert(
            tf.lite.TFLiteConverter.from_keras_model(part), plan=plan, x_calibration=calibration
        )
        path = work_dir / part_file(index)
        path.write_bytes(part_bytes)
        files.append(path)
        parts_bytes.append(part_bytes)
        manifest_parts.append(
            SplitPart(
                file=part_file(index),
                inputs=[_described(name, tensor) for name, tensor in zip(part_plan.inputs, part.inputs, strict=True)],
                outputs=[
                    _described(name, tensor) for name, tensor in zip(part_plan.outputs, part.outputs, strict=True)
                ],
                layers=[call.layer.name for call in part_plan.calls],
            )
        )
    finals = output_names(model)
    manifest = SplitManifest(model_inputs=model_inputs, model_outputs=finals, parts=manifest_parts)
    manifest_file = work_dir / MANIFEST_NAME
    manifest_file.write_text(manifest.model_dump_json(by_alias=True, indent=2) + "\n")
    runners = [
        _Runner(
            part_bytes,
            {name: _safe(name) for name in part_plan.inputs},
            dict(zip(part_plan.outputs, part.output_names, strict=True)),
            latency.threads,
        )
        for part_bytes, part_plan, part in zip(parts_bytes, plans, models, strict=True)
    ]
    whole_runner = _Runner(
        whole,
        {model_inputs[0]: model.input_names[0]},
        dict(zip(finals, model.output_names, strict=True)),
        latency.threads,
    )
    report = _verify(runners, whole_runner, finals, {model_inputs[0]: x_eval}, parts_bytes, latency)
    return SplitResult(files=files, manifest=manifest_file, report=report)


def _described(name: str, tensor: Any) -> SplitTensor:
    return SplitTensor(name=name, shape=[None if size is None else int(size) for size in tensor.shape], dtype="float32")


def _boundary_values(
    models: list[Any], plans: list[PartPlan], model_input: str, x: np.ndarray | None
) -> dict[str, np.ndarray]:
    """Every boundary tensor on the calibration samples, computed by the Keras parts in order."""
    if x is None:
        return {}
    values: dict[str, np.ndarray] = {model_input: x}
    for part, part_plan in zip(models, plans, strict=True):
        produced = part.predict([values[name] for name in part_plan.inputs], verbose=0)
        produced = produced if isinstance(produced, list) else [produced]
        values.update(zip(part_plan.outputs, (np.asarray(value) for value in produced), strict=True))
    return values


def _verify(
    runners: list[_Runner],
    whole: _Runner,
    finals: list[str],
    x: dict[str, np.ndarray],
    parts_bytes: list[bytes],
    latency: Latency,
) -> SplitReport:
    samples = len(next(iter(x.values())))
    chained = _run_all(runners, x, samples)
    reference = _run_all([whole], x, samples)
    largest = 0.0
    agreeing: list[bool] = []
    for got, expected in zip(chained, reference, strict=True):
        for name in finals:
            largest = max(largest, float(np.abs(got[name] - expected[name]).max()))
        first, wanted = got[finals[0]], expected[finals[0]]
        if first.ndim == 2 and first.shape[-1] > 1:
            agreeing.append(bool(first.argmax(-1)[0] == wanted.argmax(-1)[0]))
    sample = chained[0]
    for runner in [whole, *runners]:
        runner.feed(sample)
    timings = interleave(
        [runner.interpreter.invoke for runner in [whole, *runners]], runs=latency.runs, warmup=latency.warmup
    )
    medians = [float(np.median(np.concatenate([np.asarray(times) for times in rounds]))) for rounds in timings]
    return SplitReport(
        parts=[
            SplitPartMetrics(file=part_file(index), size_bytes=len(part_bytes), latency_p50_ms=round(median, 6))
            for index, (part_bytes, median) in enumerate(zip(parts_bytes, medians[1:], strict=True))
        ],
        whole_latency_p50_ms=round(medians[0], 6),
        max_abs_diff=largest,
        top1_agreement=round(float(np.mean(agreeing)), 4) if agreeing else None,
    )
