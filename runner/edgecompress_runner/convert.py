"""Conversion to .tflite with the LiteRT converter, including post-training quantization.

Layers to keep float in PTQ go through the quantization debugger's denylist, which takes
the converted graph's node (output tensor) names; ``denylisted_nodes`` maps Keras layer names
to those nodes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from edgecompress_contract.report import ConversionReport, Quantizer
from edgecompress_contract.spec import PtqMode

from .data import Arrays
from .data import samples as count_samples
from .errors import InputError
from .kernels import WEIGHTED_OPS, kernel_profile, speed_path
from .planning import FLOAT_PLAN, ConversionPlan
from .tfcompat import tf

__all__ = ["FLOAT_PLAN", "ConversionPlan", "conversion_report", "convert", "denylisted_nodes"]


def representative_dataset(x: Arrays, samples: int) -> Any:
    """Calibration samples one at a time: a list for a single-input model (the converter feeds it by position,
    so a model whose input was renamed, e.g. a distilled student, still calibrates), else a dict by input name."""
    count = min(samples, count_samples(x))

    def generate() -> Iterator[list[np.ndarray] | dict[str, np.ndarray]]:
        for index in range(count):
            sample = {name: array[index : index + 1] for name, array in x.items()}
            yield list(sample.values()) if len(sample) == 1 else sample

    return generate


def _ops(model_bytes: bytes) -> list[tuple[str, list[str], list[str]]]:
    """(op, output names, names of its weight and bias inputs) for every op of the main subgraph.

    Read from the flatbuffer with LiteRT's schema reader, so the ops are exactly those stored in the
    file (no interpreter, no delegate rewrites them).
    """
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))
    graph = model.subgraphs[0]

    def names(indices: Sequence[int]) -> list[str]:
        return [_text(graph.tensors[index].name) for index in indices if index >= 0]

    ops = []
    for op in graph.operators:
        name = flatbuffer_utils.opcode_to_name(model, op.opcodeIndex) or "CUSTOM"
        ops.append((name, names(op.outputs), names(op.inputs[1:]) if name in WEIGHTED_OPS else []))
    return ops


def _text(name: bytes | str) -> str:
    return name.decode() if isinstance(name, bytes) else name


def denylisted_nodes(float_model: bytes, layer_names: list[str], first_and_last: bool, where: str) -> list[str]:
    """Node names of the converted graph that belong to the given layers.

    ``float_model`` is the model about to be quantized, converted without optimizations; QAT
    wraps layers as ``quant_<name>``, so both spellings match.
    """
    ops = [op for op in _ops(float_model) if op[0] not in ("QUANTIZE", "DEQUANTIZE")]
    nodes: list[str] = []
    for layer in layer_names:
        spellings = {layer, f"quant_{layer}"}

        def belongs(name: str, spellings: set[str] = spellings) -> bool:
            return any(spellings & set(part.split("/")) for part in name.split(";"))

        # A model's last op is named after the model output, so its weights identify it.
        matches = [outputs[0] for _, outputs, weights in ops if outputs and any(map(belongs, outputs + weights))]
        if not matches:
            raise InputError(f"{where}.skipLayers: layer {layer!r} is not found in the converted model")
        nodes.extend(matches)
    if first_and_last:
        weighted = [outputs[0] for op, outputs, _ in ops if op in WEIGHTED_OPS and outputs]
        nodes.extend(weighted[:1] + weighted[-1:])
    return sorted(set(nodes))


def convert(
    converter: Any,
    *,
    plan: ConversionPlan,
    x_calibration: Arrays | None = None,
    denylist: Sequence[str] = (),
) -> tuple[bytes, ConversionReport]:
    """Converts with the optimizations the plan asks for; returns the .tflite bytes and how."""
    ptq, mode, sparse, denylist = plan.ptq, plan.mode, plan.sparse, list(denylist)
    if denylist and mode not in (PtqMode.INT8, PtqMode.INT16X8):
        raise InputError(f"ptq.skipLayers: keeping layers float needs mode int8 or int16x8, not {mode}")
    optimizations = []
    if mode != "float":
        optimizations.append(tf.lite.Optimize.DEFAULT)
    if sparse:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    converter.optimizations = optimizations
    if mode == PtqMode.FLOAT16:
        converter.target_spec.supported_types = [tf.float16]
    if mode == PtqMode.INT8 and plan.qat_kept_float:
        # QAT's ranges quantize the annotated layers; calibrating here would quantize the rest too.
        assert ptq is not None
        if ptq.integer_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    elif mode in (PtqMode.INT8, PtqMode.INT16X8):
        assert ptq is not None and x_calibration is not None
        converter.representative_dataset = representative_dataset(x_calibration, ptq.representative_samples)
        if mode == PtqMode.INT16X8:
            ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
        else:
            ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if denylist:
            ops.append(tf.lite.OpsSet.TFLITE_BUILTINS)
        converter.target_spec.supported_ops = ops
        if ptq.integer_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    try:
        if denylist:
            model_bytes = _convert_with_denylist(converter, denylist)
        else:
            model_bytes = converter.convert()
    except InputError:
        raise
    except Exception as error:  # the converter raises ConverterError and plain RuntimeErrors
        lines = [line for line in str(error).splitlines() if line.strip()]
        detail = "; ".join(lines[:3])[:600]
        raise InputError(f"conversion ({mode}) failed: {detail}") from None
    return model_bytes, conversion_report(mode, model_bytes)


def conversion_report(mode: str, model_bytes: bytes, *, quantizer: Quantizer = "converter") -> ConversionReport:
    """How the file was converted and what its ops compute in; the speed path until the speed is measured."""
    profile = kernel_profile(model_bytes)
    conversion = ConversionReport(
        mode=mode,
        quantizer=quantizer,
        speed_path="",
        sparse_encoding=profile.sparse,
        macs=profile.total,
        mac_share=profile.share(),
    )
    return conversion.model_copy(update={"speed_path": speed_path(conversion)})


def _convert_with_denylist(converter: Any, denylist: list[str]) -> bytes:
    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=denylist)
    debug_data = converter.representative_dataset
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=debug_data, debug_options=options
    )
    return bytes(debugger.get_nondebug_quantized_model())
