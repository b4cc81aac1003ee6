"""Conversion to .tflite with the LiteRT converter, including post-training quantization.

Layers to keep float in PTQ go through the quantization debugger's denylist, which takes
the converted graph's node (output tensor) names; ``denylisted_nodes`` maps Keras layer names
to those nodes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgecompress_contract.spec import PtqMode, PtqStep

from .errors import InputError
from .tfcompat import tf

WEIGHTED_OPS = frozenset(
    {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "CONV_3D", "BATCH_MATMUL"}
)


@dataclass(frozen=True)
class Conversion:
    mode: str
    speed_path: str
    denylisted_nodes: tuple[str, ...]


def speed_path(mode: str, sparse: bool, denylisted: bool) -> str:
    """What makes the result faster on a CPU, in words for the report."""
    paths = {
        "float": "float32 kernels (XNNPACK)",
        "dynamic": "dynamic range: int8 weights, float activations (hybrid kernels); smaller, modest speed-up",
        "float16": "float16 weights, computed in float32 on most CPUs (XNNPACK): smaller, not faster",
        "int8": "full-integer int8 kernels (XNNPACK/ruy): smaller and faster",
        "int16x8": "int16 activations with int8 weights (reference kernels): accurate, often slower than int8",
        "qat": "full-integer int8 kernels from QAT (XNNPACK/ruy): smaller and faster",
    }
    text = paths[mode]
    if sparse:
        text += "; sparse weights encoded for XNNPACK sparse inference (float subgraphs only)"
    if denylisted:
        text += "; denylisted layers stay float (quantize/dequantize around them)"
    return text


def representative_dataset(x: np.ndarray, samples: int) -> Any:
    chosen = x[: min(samples, len(x))]

    def generate() -> Iterator[list[np.ndarray]]:
        for index in range(len(chosen)):
            yield [chosen[index : index + 1]]

    return generate


def _ops(model_bytes: bytes) -> list[tuple[str, list[str], list[str]]]:
    """(op, output names, names of its weight and bias inputs) for every op."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model_bytes)  # not allocated: no delegate rewrites the ops
    tensors = interpreter.get_tensor_details()
    return [
        (
            op["op_name"],
            [tensors[i]["name"] for i in op["outputs"] if i >= 0],
            [tensors[i]["name"] for i in op["inputs"][1:] if i >= 0] if op["op_name"] in WEIGHTED_OPS else [],
        )
        for op in interpreter._get_ops_details()
    ]


def denylisted_nodes(float_model: bytes, layer_names: list[str], first_and_last: bool, where: str) -> list[str]:
    """Node names of the converted graph that belong to the given layers.

    ``float_model`` is the model about to be quantized, converted without optimizations; QAT
    wraps layers as ``quant_<name>``, so both spellings match.
    """
    ops = [op for op in _ops(float_model) if op[0] not in ("QUANTIZE", "DEQUANTIZE")]
    nodes: list[str] = []
    for layer in layer_names:
        spellings = {layer, f"quant_{layer}"}

        def belongs(name: str) -> bool:
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
    ptq: PtqStep | None,
    qat_applied: bool,
    sparse: bool,
    x_calibration: np.ndarray | None,
    denylist: list[str],
    float_layers: bool = False,
) -> tuple[bytes, Conversion]:
    """Converts with the optimizations the plan asks for; returns the .tflite bytes.

    ``float_layers`` says the model already has layers QAT left float, so float kernels must
    stay allowed next to the int8 ones.
    """
    mode = ptq.mode if ptq else ("qat" if qat_applied else "float")
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
    if mode == PtqMode.INT8 and float_layers:
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
    conversion = Conversion(
        mode=str(mode), speed_path=speed_path(str(mode), sparse, bool(denylist)), denylisted_nodes=tuple(denylist)
    )
    return model_bytes, conversion


def _convert_with_denylist(converter: Any, denylist: list[str]) -> bytes:
    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=denylist)
    debug_data = converter.representative_dataset
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=debug_data, debug_options=options
    )
    return bytes(debugger.get_nondebug_quantized_model())
