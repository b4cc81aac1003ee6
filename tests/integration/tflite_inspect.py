"""Reads weights back out of a .tflite, so tests check the artifact itself, not the runner's numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np

WEIGHTED_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}


def interpreter(path: Path):  # type: ignore[no-untyped-def]
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    # Without the default XNNPACK delegate, so the ops and their weights stay visible.
    model = Interpreter(
        model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    model.allocate_tensors()
    return model


def weight_tensors(path: Path) -> dict[str, np.ndarray]:
    """The kernel of every conv / fully-connected op, by op output name."""
    model = interpreter(path)
    tensors = model.get_tensor_details()
    found = {}
    for op in model._get_ops_details():
        if op["op_name"] in WEIGHTED_OPS:
            kernel = tensors[op["inputs"][1]]
            found[tensors[op["outputs"][0]]["name"]] = model.get_tensor(kernel["index"])
    return found


def op_types(path: Path) -> list[tuple[str, str]]:
    """(op, output dtype) for every op, e.g. ('FULLY_CONNECTED', 'float32')."""
    model = interpreter(path)
    tensors = model.get_tensor_details()
    return [(op["op_name"], np.dtype(tensors[op["outputs"][0]]["dtype"]).name) for op in model._get_ops_details()]


def zero_fraction(kernels: dict[str, np.ndarray]) -> float:
    zeros = sum(int((kernel == 0).sum()) for kernel in kernels.values())
    return zeros / sum(kernel.size for kernel in kernels.values())


def stored_weight_dtypes(path: Path) -> dict[str, str]:
    """The stored type of every conv / fully-connected kernel, by op output name.

    A kernel that a DEQUANTIZE op produces (float16 and weight-only int8 files) is stored as that op's input.
    """
    model = interpreter(path)
    tensors = model.get_tensor_details()
    ops = model._get_ops_details()
    dequantized_from = {op["outputs"][0]: op["inputs"][0] for op in ops if op["op_name"] == "DEQUANTIZE"}
    found = {}
    for op in ops:
        if op["op_name"] in WEIGHTED_OPS:
            kernel = op["inputs"][1]
            stored = tensors[dequantized_from.get(kernel, kernel)]
            found[tensors[op["outputs"][0]]["name"]] = np.dtype(stored["dtype"]).name
    return found
