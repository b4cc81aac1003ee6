"""Float .tflite input models: the checks before one is used, and quantization with litert-quantizer.

A ``.tflite`` given as ``model.format: tflite`` is untrusted bytes: ``read_float_tflite`` accepts only
a LiteRT flatbuffer whose ops are all builtins (no custom or Flex op is ever run), whose tensors are
not quantized yet, and that the interpreter can allocate. That file is the baseline.

``quantize`` applies a *recipe*: an ordered list of (op scope regex, precision), where an op's scope
is its output tensor names joined by ``;`` with a trailing ``;`` (litert-quantizer's scope, e.g.
``model/conv/Relu;model/conv/Conv2D;``) and a later entry overrides an earlier one for the ops it
matches. ``op_scopes`` lists those scopes, so a per-layer search can try one precision per op. The
spec's ptq modes map to recipes in ``ptq_recipe``; ``calibration_samples`` turns a dataset's
``x_train`` arrays (keyed by signature input name) into the one-sample dicts calibration needs.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from edgecompress_contract.spec import PtqMode, PtqStep

from .errors import InputError

__all__ = [
    "BLOCK_SIZES",
    "OpScope",
    "Precision",
    "RecipeEntry",
    "calibration_samples",
    "only_signature",
    "kept_float_scopes",
    "op_scopes",
    "ptq_recipe",
    "quantize",
    "quantize_ptq",
    "quantizer_recipe",
    "read_float_tflite",
]

TFLITE_IDENTIFIER = b"TFL3"
BLOCK_SIZES = (32, 64, 128, 256)
"""The block sizes litert-quantizer supports for blockwise weights."""


class Precision(str, Enum):
    """What one op (its weights, and its activations for the static ones) is stored and computed in."""

    FLOAT = "float"
    """Left as it is."""
    FLOAT16 = "float16"
    """float16 weights, dequantized to float32 when the model loads."""
    DYNAMIC_INT8 = "dynamicInt8"
    """int8 weights per channel; activations quantized on the fly (hybrid kernels)."""
    WEIGHT_ONLY_INT8 = "weightOnlyInt8"
    """int8 weights per channel, dequantized before a float op."""
    WEIGHT_ONLY_INT4 = "weightOnlyInt4"
    """int4 weights per channel, dequantized before a float op."""
    INT4_BLOCKWISE = "int4Blockwise"
    """int4 weights per block of ``block_size`` input values, float activations quantized on the fly.

    litert-quantizer (0.11) supports blockwise int4 weights only with this dynamic compute, not dequantized
    before a float op; ops it cannot quantize so (e.g. a conv whose input depth is not a multiple of the
    block) stay float."""
    STATIC_INT8 = "staticInt8"
    """int8 weights and activations (activation ranges from calibration)."""
    INT16X8 = "int16x8"
    """int16 activations and int8 weights (activation ranges from calibration)."""


CALIBRATED = frozenset({Precision.STATIC_INT8, Precision.INT16X8})


@dataclass(frozen=True)
class RecipeEntry:
    """The precision of the ops whose scope ``scope`` (a regex, ``re.search``) matches."""

    scope: str
    precision: Precision
    block_size: int = 32
    """Input values per quantization block; only for INT4_BLOCKWISE."""

    def __post_init__(self) -> None:
        if self.block_size not in BLOCK_SIZES:
            raise ValueError(f"block_size {self.block_size}: litert-quantizer supports {list(BLOCK_SIZES)}")
        re.compile(self.scope)


@dataclass(frozen=True)
class OpScope:
    """An op of the main subgraph: its type (e.g. CONV_2D) and its scope, what recipe regexes are matched with."""

    op: str
    scope: str
    weights: int = 0
    """Elements of its constant weight tensor (its second input, when stored in the file); 0 for other ops."""


def quantizer_recipe(recipe: Sequence[RecipeEntry], *, float_io: bool = True) -> list[dict[str, Any]]:
    """The litert-quantizer recipe (its JSON form) for ``recipe``; pure, no model needed.

    With ``float_io`` the model's inputs and outputs stay float32 (statically quantized models get a
    QUANTIZE op after the input and a DEQUANTIZE op before the output), as with the converter's int8.
    """
    from litert_quantizer import qtyping
    from litert_quantizer.algorithm_manager import AlgorithmName
    from litert_quantizer.recipe_manager import RecipeManager

    scopes = [entry.scope for entry in recipe]
    repeated = sorted({scope for scope in scopes if scopes.count(scope) > 1})
    if repeated:
        # The quantizer keeps a scope at its first position when it is set again, so order would not decide.
        raise ValueError(f"each scope may appear once in a recipe; repeated: {repeated}")
    every_op = qtyping.TFLOperationName.ALL_SUPPORTED
    manager = RecipeManager()
    for entry in recipe:
        if entry.precision == Precision.FLOAT:
            manager.add_quantization_config(entry.scope, every_op, algorithm_key=AlgorithmName.NO_QUANTIZE)
        elif entry.precision == Precision.FLOAT16:
            manager.add_weight_only_config(entry.scope, every_op, 16, algorithm_key=AlgorithmName.FLOAT_CASTING)
        elif entry.precision == Precision.DYNAMIC_INT8:
            manager.add_dynamic_config(entry.scope, every_op, 8)
        elif entry.precision == Precision.WEIGHT_ONLY_INT8:
            manager.add_weight_only_config(entry.scope, every_op, 8)
        elif entry.precision == Precision.WEIGHT_ONLY_INT4:
            manager.add_weight_only_config(entry.scope, every_op, 4)
        elif entry.precision == Precision.INT4_BLOCKWISE:
            granularity = qtyping.QuantGranularity(f"BLOCKWISE_{entry.block_size}")
            manager.add_dynamic_config(entry.scope, every_op, 4, granularity=granularity)
        else:
            activation_bits = 16 if entry.precision == Precision.INT16X8 else 8
            manager.add_static_config(entry.scope, every_op, activation_bits, 8)
    if float_io and any(entry.precision in CALIBRATED for entry in recipe):
        for boundary in (qtyping.TFLOperationName.INPUT, qtyping.TFLOperationName.OUTPUT):
            manager.add_quantization_config(".*", boundary, algorithm_key=AlgorithmName.NO_QUANTIZE)
    recipe_json: list[dict[str, Any]] = manager.get_quantization_recipe()
    return recipe_json


def quantize(
    float_model: bytes,
    recipe: Sequence[RecipeEntry],
    *,
    calibration: Sequence[Mapping[str, np.ndarray]] = (),
    float_io: bool = True,
) -> bytes:
    """The quantized .tflite: ``recipe`` applied to ``float_model`` by litert-quantizer.

    ``calibration`` holds samples of the model's (single) signature as ``{input name: array with a
    batch dimension}``; static precisions need them. Each activation's range is its minimum and
    maximum over all samples, as in the converter's calibration (litert-quantizer's default, a moving
    average of per-sample ranges, clips the extremes: on the digits CNN it gave about 8x the converter's
    output error). Errors of the quantizer surface as ValueError.
    """
    from litert_quantizer import calibrator, quantizer, recipe_manager

    recipe_json = quantizer_recipe(recipe, float_io=float_io)
    engine = quantizer.Quantizer(bytearray(float_model))
    engine.load_quantization_recipe(recipe_json)
    ranges = None
    if engine.need_calibration:
        if not calibration:
            raise ValueError("static int8 and int16x8 precisions need calibration samples")
        signature, _ = only_signature(float_model)
        manager = recipe_manager.RecipeManager()
        manager.load_quantization_recipe(recipe_json)
        recorder = calibrator.Calibrator(
            bytearray(float_model), num_threads=os.cpu_count() or 1, qsv_update_func=_widest_range
        )
        # Its progress bar would interleave with the runner's JSON log lines on stderr.
        with contextlib.redirect_stderr(io.StringIO()):
            recorder.calibrate({signature: list(calibration)}, manager)
        ranges = recorder.get_model_qsvs()
    try:
        result = engine.quantize(ranges, enable_progress_report=False)
    except RuntimeError as error:
        raise ValueError(str(error)) from error
    assert result.quantized_model is not None
    return bytes(result.quantized_model)


def _widest_range(seen: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """A tensor's calibration statistics after one more sample: the smallest minimum and the largest maximum."""
    return {**seen, **new, "min": np.minimum(seen["min"], new["min"]), "max": np.maximum(seen["max"], new["max"])}


def only_signature(model: bytes) -> tuple[str, list[str]]:
    """The key and the input names of the model's signature; calibration runs one."""
    from ai_edge_litert.interpreter import Interpreter

    signatures = Interpreter(model_content=model).get_signature_list()
    if len(signatures) != 1:
        raise ValueError(f"calibration needs a model with one signature; this one has {len(signatures)}")
    ((key, details),) = signatures.items()
    return str(key), [str(name) for name in details["inputs"]]


def op_scopes(model: bytes) -> list[OpScope]:
    """Every op of the main subgraph with its scope, in graph order (QUANTIZE/DEQUANTIZE ops included)."""
    from ai_edge_litert.tools import flatbuffer_utils
    from litert_quantizer.utils import tfl_flatbuffer_utils

    parsed = tfl_flatbuffer_utils.read_model(bytearray(model))
    graph = parsed.subgraphs[0]
    buffers = parsed.buffers or []

    def weights(op: Any) -> int:
        inputs = list(op.inputs) if op.inputs is not None else []
        if len(inputs) < 2 or inputs[1] < 0:
            return 0
        tensor = graph.tensors[inputs[1]]
        buffer = buffers[tensor.buffer] if 0 < tensor.buffer < len(buffers) else None
        if buffer is None or (buffer.data is None and not buffer.size):
            return 0
        return int(np.prod(tensor.shape)) if tensor.shape is not None else 0

    return [
        OpScope(
            op=flatbuffer_utils.opcode_to_name(parsed, op.opcodeIndex) or "CUSTOM",
            scope=tfl_flatbuffer_utils.get_op_scope(op, graph.tensors),
            weights=weights(op),
        )
        for op in graph.operators
    ]


def kept_float_scopes(model: bytes, layers: Sequence[str], *, first_and_last: bool, where: str) -> list[str]:
    """The scopes of the weighted ops that belong to the named layers (and the first and last, if asked).

    An op belongs to a layer when one of its output names has the layer's name as a path component
    (``model/<layer>/...``, how TensorFlow names ops); a name that matches no op is refused.
    """
    from .kernels import WEIGHTED_OPS

    weighted = [found.scope for found in op_scopes(model) if found.op in WEIGHTED_OPS]
    kept: list[str] = []
    for layer in layers:
        pattern = re.compile(rf"(^|[/;]){re.escape(layer)}([/;:]|$)")
        matches = [scope for scope in weighted if pattern.search(scope)]
        if not matches:
            raise InputError(
                f"{where}.skipLayers: layer {layer!r} matches no conv, fully-connected or matmul op of the model "
                f"(their scopes: {_shown([repr(scope) for scope in weighted])})"
            )
        kept.extend(matches)
    if first_and_last and weighted:
        kept.extend([weighted[0], weighted[-1]])
    return sorted(set(kept))


def _shown(names: Sequence[str], limit: int = 8) -> str:
    listed = ", ".join(names[:limit])
    return listed + (f" and {len(names) - limit} more" if len(names) > limit else "")


PTQ_PRECISIONS = {
    PtqMode.DYNAMIC: Precision.DYNAMIC_INT8,
    PtqMode.FLOAT16: Precision.FLOAT16,
    PtqMode.INT8: Precision.STATIC_INT8,
    PtqMode.INT16X8: Precision.INT16X8,
}


def ptq_recipe(mode: PtqMode | str, kept_float: Sequence[str] = ()) -> list[RecipeEntry]:
    """The recipe of a spec ptq mode: every op at the mode's precision, the listed scopes (exactly) float."""
    return [
        RecipeEntry(".*", PTQ_PRECISIONS[PtqMode(mode)]),
        *(RecipeEntry(f"^{re.escape(scope)}$", Precision.FLOAT) for scope in kept_float),
    ]


def calibration_samples(x: dict[str, np.ndarray], count: int) -> list[dict[str, np.ndarray]]:
    """The first ``count`` samples of the arrays (keyed by signature input name) as one dict per sample,
    each with a batch of 1: the form litert-quantizer calibrates on."""
    samples = min(count, *(len(array) for array in x.values()))
    return [{name: array[index : index + 1] for name, array in x.items()} for index in range(samples)]


QUANTIZED_TYPES = ("INT8", "UINT8", "INT16", "INT4", "FLOAT16")
"""Types of stored weights that mean the model is quantized already."""


def read_float_tflite(path: Path, source: str) -> bytes:
    """The bytes of a float .tflite the runner may run; anything else is refused with the reason.

    Checked in this order, so that nothing from the file runs before it is known to be builtin ops only:
    the LiteRT file identifier; the flatbuffer parses; no custom (including Flex) ops; no quantized
    tensors or weights; the interpreter builds (verifying the flatbuffer) and allocates it.
    """
    model = path.read_bytes()
    if len(model) < 8 or model[4:8] != TFLITE_IDENTIFIER:
        raise InputError(f"{source}: not a LiteRT (.tflite) flatbuffer: the file identifier is not 'TFL3'")
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    try:
        parsed = flatbuffer_utils.read_model_from_bytearray(bytearray(model))
    except Exception as error:  # a damaged flatbuffer raises anything from struct.error to IndexError
        raise InputError(f"{source}: not a readable .tflite flatbuffer ({type(error).__name__}: {error})") from None
    custom = sorted(
        {
            _text(code.customCode) or "unnamed"
            for code in parsed.operatorCodes or []
            if max(code.builtinCode, code.deprecatedBuiltinCode) == schema.BuiltinOperator.CUSTOM
        }
    )
    if custom:
        raise InputError(
            f"{source}: the model has custom ops the runner does not run: {', '.join(custom)}. "
            "Only builtin LiteRT ops are allowed (Flex ops are TensorFlow ops run through a custom op); "
            "export the model with builtin ops only"
        )
    type_names = {value: name for name, value in vars(schema.TensorType).items() if not name.startswith("_")}
    buffers = parsed.buffers or []

    def stored(tensor: Any) -> bool:
        if not 0 < tensor.buffer < len(buffers):
            return False
        buffer = buffers[tensor.buffer]
        return buffer.data is not None or bool(buffer.size)  # size: weights stored after the flatbuffer (> 2 GiB)

    quantized = [
        f"{_text(tensor.name)!r} ({type_names.get(tensor.type, tensor.type)})"
        for graph in parsed.subgraphs or []
        for tensor in graph.tensors or []
        if (stored(tensor) and type_names.get(tensor.type) in QUANTIZED_TYPES)
        or (
            tensor.quantization is not None and tensor.quantization.scale is not None and len(tensor.quantization.scale)
        )
    ]
    if quantized:
        raise InputError(
            f"{source}: the model is already quantized (quantized tensors: {_shown(quantized, 4)}); "
            "give the float32 model to quantize it"
        )
    from ai_edge_litert.interpreter import Interpreter

    try:
        Interpreter(model_content=model).allocate_tensors()
    except (RuntimeError, ValueError) as error:
        raise InputError(f"{source}: LiteRT cannot load the model ({_first_line(error)})") from None
    return model


def _text(name: bytes | str | None) -> str:
    return name.decode(errors="replace") if isinstance(name, bytes) else (name or "")


def _first_line(error: BaseException) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(error).__name__


def quantize_ptq(
    float_model: bytes, ptq: PtqStep | None, *, x_calibration: dict[str, np.ndarray] | None, where: str
) -> tuple[bytes, list[str]]:
    """A spec ptq step applied to a float .tflite: the quantized bytes and the op scopes kept float.

    Without a ptq step the file is the result as it is. ``where`` is the step's field path for messages.
    """
    if ptq is None:
        return float_model, []
    kept = kept_float_scopes(float_model, ptq.skip_layers, first_and_last=ptq.skip_first_and_last, where=where)
    recipe = ptq_recipe(ptq.mode, kept)
    calibration: list[dict[str, np.ndarray]] = []
    if any(entry.precision in CALIBRATED for entry in recipe):
        if x_calibration is None:
            raise InputError(f"{where}.mode: {ptq.mode} calibrates on the dataset's x_train, which is missing")
        calibration = calibration_samples(x_calibration, ptq.representative_samples)
    try:
        return quantize(float_model, recipe, calibration=calibration), kept
    except Exception as error:  # litert-quantizer raises ValueError, RuntimeError and others on models it cannot handle
        raise InputError(f"{where}: litert-quantizer cannot quantize the model ({_first_line(error)})") from None
