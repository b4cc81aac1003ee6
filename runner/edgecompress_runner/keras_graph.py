"""The layer calls of a tf-keras Functional (or Sequential) model, in order, with the tensors between them.

Filter reduction follows channels along these calls and model splitting re-applies a run of them to new
inputs. tf-keras keeps the calls as ``Node`` objects (``model._nodes_by_depth``); their public methods
(``keras_inputs``, ``outputs``, ``map_arguments``) give the tensors, so a call's arguments (e.g. an
Add's list, a ``training`` flag) are replayed as they were.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .errors import UnsupportedLayerError
from .tfcompat import keras, tf


def weight_short_name(weight: Any) -> str:
    """A layer weight's own name without its layer's scope or the ``:0`` suffix, e.g. ``kernel``."""
    return str(weight.name).rsplit("/", 1)[-1].split(":")[0]


@dataclass(frozen=True)
class LayerCall:
    """One call of a layer in the model: the tensors it reads and writes, by name."""

    layer: Any
    node: Any
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def require_graph_model(model: Any, step: str) -> None:
    """Filter reduction and splitting need the model's layer graph: a Functional or Sequential tf-keras model."""
    if not getattr(model, "_is_graph_network", False):
        raise UnsupportedLayerError(
            f"{step}: the model is not a Functional or Sequential tf-keras model, so its layer graph is unknown"
        )
    nested = [layer.name for layer in model.layers if isinstance(layer, keras.Model)]
    if nested:
        raise UnsupportedLayerError(
            f"{step}: layers {nested} are nested models; build the outer model from their layers' outputs"
        )


def tensor_names(model: Any) -> dict[int, str]:
    """Every tensor of the model by ``id``: named after its layer, with ``:i`` for a layer's i-th output when it
    has several, and ``@k`` for its k-th call when it is called more than once. The input layers count too
    (a Sequential model does not list them in ``layers``)."""
    names: dict[int, str] = {}
    calls: dict[str, int] = {}
    for node in _nodes_in_order(model):
        call = calls.get(node.layer.name, 0)
        calls[node.layer.name] = call + 1
        outputs = tf.nest.flatten(node.outputs)
        for index, tensor in enumerate(outputs):
            names[id(tensor)] = (
                node.layer.name + (f":{index}" if len(outputs) > 1 else "") + (f"@{call}" if call else "")
            )
    return names


def named_tensors(model: Any) -> dict[str, Any]:
    """The model's tensors (Keras symbolic tensors, with shape and dtype) by their names in ``tensor_names``."""
    names = tensor_names(model)
    return {names[id(tensor)]: tensor for node in _nodes_in_order(model) for tensor in tf.nest.flatten(node.outputs)}


def _nodes_in_order(model: Any) -> list[Any]:
    return [node for depth in sorted(model._nodes_by_depth, reverse=True) for node in model._nodes_by_depth[depth]]


def layer_calls(model: Any) -> Iterator[LayerCall]:
    """The model's layer calls (not its inputs) in topological order."""
    names = tensor_names(model)
    for node in _nodes_in_order(model):
        if node.is_input:
            continue
        yield LayerCall(
            layer=node.layer,
            node=node,
            inputs=tuple(names[id(tensor)] for tensor in node.keras_inputs),
            outputs=tuple(names[id(tensor)] for tensor in tf.nest.flatten(node.outputs)),
        )


def input_names(model: Any) -> list[str]:
    names = tensor_names(model)
    return [names[id(tensor)] for tensor in model.inputs]


def output_names(model: Any) -> list[str]:
    names = tensor_names(model)
    return [names[id(tensor)] for tensor in model.outputs]


def replay(calls: list[LayerCall], known: dict[str, Any]) -> dict[str, Any]:
    """Applies ``calls`` in order to the tensors in ``known`` (by name); returns ``known`` with their outputs.

    The layers are the model's own objects, so a model built from the result shares their weights.
    """
    for call in calls:
        # map_arguments pops one value per use from lists keyed by the tensors' ids.
        values: dict[str, list[Any]] = {}
        for tensor, name in zip(call.node.keras_inputs, call.inputs, strict=True):
            values.setdefault(str(id(tensor)), []).append(known[name])
        args, kwargs = call.node.map_arguments(values)
        produced = tf.nest.flatten(call.layer(*args, **kwargs))
        known.update(zip(call.outputs, produced, strict=True))
    return known
