"""What a .tflite computes in, read from the file itself, and the report's speed path in words.

Every conv / fully-connected / matmul op is classified by the kind of kernel LiteRT runs for it
(from the types of its activation input and its weights) and weighted by its multiply-accumulates
at batch size 1. ``speed_path`` combines those shares with the speed-up measured against the float
baseline, so the words never claim a speed the measurement does not show.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edgecompress_contract.report import Comparison, ConversionReport, MacShare

__all__ = ["KernelProfile", "kernel_profile", "speed_path"]

INT8, INT16, HYBRID, FLOAT16, DEQUANTIZED, FLOAT32 = "int8", "int16", "hybrid", "float16", "dequantized", "float32"

_KERNEL_WORDS = {
    INT8: "int8 kernels",
    INT16: "int16x8 kernels",
    HYBRID: "hybrid kernels (int8 weights, float activations)",
    FLOAT16: "float32 kernels on float16 weights (dequantized at load)",
    DEQUANTIZED: "float32 kernels on int8 weights dequantized at load",
    FLOAT32: "float32 kernels",
}

SAME_SPEED_TOLERANCE = 0.05
"""Speed-ups within this of 1 are reported as "about as fast"."""


@dataclass(frozen=True)
class KernelProfile:
    """Multiply-accumulates per kernel kind, and whether any weights are sparse-encoded."""

    macs: dict[str, int]
    sparse: bool

    @property
    def total(self) -> int:
        return sum(self.macs.values())

    def share(self) -> MacShare | None:
        total = self.total
        if total == 0:
            return None
        return MacShare.model_validate({kind: round(count / total, 4) for kind, count in self.macs.items()})


def _shape(tensor: Any) -> list[int]:
    """Static shape, unknown sizes (batch) counted as 1."""
    return [max(int(dim), 1) for dim in (tensor.shape if tensor.shape is not None else [])]


def _op_macs(name: str, inputs: Sequence[Any], output: Any) -> int:
    out = math.prod(_shape(output))
    weights = _shape(inputs[1]) if len(inputs) > 1 and inputs[1] is not None else []
    if name == "CONV_2D" and len(weights) == 4:
        return out * weights[1] * weights[2] * weights[3]
    if name == "DEPTHWISE_CONV_2D" and len(weights) == 4:
        return out * weights[1] * weights[2]
    if name == "CONV_3D" and len(weights) == 5:
        return out * weights[0] * weights[1] * weights[2] * weights[3]
    if name == "TRANSPOSE_CONV" and len(weights) == 4 and len(inputs) > 2 and inputs[2] is not None:
        return math.prod(_shape(inputs[2])) * weights[0] * weights[1] * weights[2]
    if name == "FULLY_CONNECTED" and len(weights) == 2:
        return out * weights[1]
    if name == "BATCH_MATMUL" and inputs[0] is not None and _shape(inputs[0]):
        return out * _shape(inputs[0])[-1]
    return math.prod(weights) if weights else 0


WEIGHTED_OPS = frozenset(
    {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "CONV_3D", "BATCH_MATMUL"}
)


def kernel_profile(model_bytes: bytes) -> KernelProfile:
    """Reads the ops of every subgraph with LiteRT's schema reader (no interpreter, no delegate)."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    types = schema.TensorType
    integer = {types.INT8, types.UINT8, types.INT4}
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))
    macs = dict.fromkeys(_KERNEL_WORDS, 0)
    sparse = False
    for graph in model.subgraphs:
        tensors = graph.tensors or []
        sparse = sparse or any(tensor.sparsity is not None for tensor in tensors)
        dequantized_from: dict[int, int] = {}  # DEQUANTIZE output tensor -> the stored tensor's type
        for op in graph.operators or []:
            name = flatbuffer_utils.opcode_to_name(model, op.opcodeIndex) or "CUSTOM"
            if name == "DEQUANTIZE" and op.inputs is not None and op.outputs is not None and int(op.inputs[0]) >= 0:
                for index in op.outputs:
                    dequantized_from[int(index)] = tensors[int(op.inputs[0])].type
        for op in graph.operators or []:
            name = flatbuffer_utils.opcode_to_name(model, op.opcodeIndex) or "CUSTOM"
            if name not in WEIGHTED_OPS or op.outputs is None or len(op.outputs) == 0:
                continue
            indices = [int(index) for index in (op.inputs if op.inputs is not None else [])]
            inputs = [tensors[index] if index >= 0 else None for index in indices]
            activation = inputs[2] if name == "TRANSPOSE_CONV" and len(inputs) > 2 else inputs[0]
            weights = inputs[1] if len(inputs) > 1 else None
            if activation is None or weights is None:
                continue
            if activation.type in integer:
                kind = INT8
            elif activation.type == types.INT16:
                kind = INT16
            elif weights.type in integer:
                kind = HYBRID
            elif indices[1] in dequantized_from:
                kind = FLOAT16 if dequantized_from[indices[1]] == types.FLOAT16 else DEQUANTIZED
            else:
                kind = FLOAT32
            macs[kind] += _op_macs(name, inputs, tensors[int(op.outputs[0])])
    return KernelProfile(macs=macs, sparse=sparse)


def speed_path(conversion: ConversionReport, comparison: Comparison | None = None) -> str:
    """The kernels the result runs in, and its measured speed against the float baseline, in words.

    "faster" appears only when the measured speed-up is above 1 (by more than the tolerance).
    """
    parts: list[str] = []
    share = conversion.mac_share
    if share is None:
        parts.append("no conv/matmul ops")
    else:
        kinds = sorted(
            ((value, kind) for kind, value in share.model_dump().items() if value > 0), key=lambda item: -item[0]
        )
        words = [f"{_percent(value)} in {_KERNEL_WORDS[kind]}" for value, kind in kinds]
        parts.append("MACs: " + ", ".join(words))
    if conversion.sparse_encoding:
        parts.append("sparse weights encoded for XNNPACK sparse inference (float subgraphs only)")
    parts.append(_measured_speed(comparison))
    return "; ".join(parts)


def _percent(share: float) -> str:
    return "<1%" if share < 0.005 else f"{share:.0%}"


def _measured_speed(comparison: Comparison | None) -> str:
    if comparison is None:
        return "speed not measured"
    ratio = comparison.latency_speedup
    how = (
        f"median of {comparison.latency_rounds} interleaved rounds, "
        f"{comparison.latency_speedup_min:.2f}-{comparison.latency_speedup_max:.2f}x"
        if comparison.latency_rounds
        else "median latencies"
    )
    if ratio > 1 + SAME_SPEED_TOLERANCE:
        return f"{ratio:.2f}x faster than the float baseline ({how})"
    if ratio < 1 / (1 + SAME_SPEED_TOLERANCE):
        return f"{1 / max(ratio, 1e-9):.2f}x slower than the float baseline ({ratio:.2f}x its speed; {how})"
    return f"about as fast as the float baseline ({ratio:.2f}x; {how})"
