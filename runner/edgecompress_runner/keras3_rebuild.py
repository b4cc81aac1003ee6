"""Rebuilding a Keras 3 model as a tf-keras model, so tensorflow-model-optimization can train it.

A Sequential or Functional model of built-in layers is rebuilt from its saved config, one layer at a
time, and the Keras 3 layers' weights are copied into the new layers in order. The translation is
defined by the two libraries' own signatures, not by a list of known layers:

* a layer (or initializer, regularizer, constraint) is the class of the same name in the matching
  tf-keras namespace; a class tf-keras lacks, a custom class or a Keras 3 operation (``x + y`` on
  symbolic tensors) blocks the rebuild;
* each config option is passed on when the tf-keras class accepts it (its ``__init__`` parameters
  along the class hierarchy, and what tf-keras' base ``Layer`` takes through ``**kwargs``), renamed
  where the two libraries call it differently; an option tf-keras lacks is dropped when it holds the
  Keras 3 default (the value in the config of the class built from only its required arguments), and
  otherwise blocks the rebuild;
* dtype policies become their names, activations must exist in ``tf_keras.activations``;
* Functional graphs are replayed from each layer's inbound nodes (Keras 3 records calls as
  ``args``/``kwargs`` with ``keras_history`` references; the layers are called the same way).

The rebuilt model is then run beside the Keras 3 model on seeded inputs: the outputs must agree within
``RELATIVE_TOLERANCE`` of the output scale, or the rebuild is refused (same names and options do not
always mean the same computation, e.g. ``hard_sigmoid``). Nothing here imports a module named in the
file: classes are only looked up in Keras' and tf-keras' own namespaces.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .model_io import _first_line
from .tfcompat import keras, tf

RELATIVE_TOLERANCE = 1e-5
VERIFICATION_SAMPLES = 8
VERIFICATION_SEED = 0
UNKNOWN_DIMENSION_SIZE = 8

# What tf-keras' base Layer.__init__ accepts through **kwargs (tf_keras/src/engine/base_layer.py).
_TF_KERAS_LAYER_KWARGS = frozenset(
    {
        "input_dim",
        "input_shape",
        "batch_input_shape",
        "batch_size",
        "weights",
        "activity_regularizer",
        "autocast",
        "implementation",
    }
)
# Options the two libraries name differently: (class name, Keras 3 name) -> tf-keras name.
_RENAMED_OPTIONS = {
    ("InputLayer", "batch_shape"): "batch_input_shape",
    ("LeakyReLU", "negative_slope"): "alpha",
}
_FLOAT_DTYPE_POLICIES = frozenset({"DTypePolicy", "FloatDTypePolicy"})
_NESTED_MODELS = frozenset({"Functional", "Sequential", "Model"})
_MISSING = object()


class RebuildRefused(Exception):
    """The model cannot be rebuilt in tf-keras; the message names the layer and what blocks it."""


@dataclass(frozen=True)
class Rebuilt:
    """A tf-keras model computing what the Keras 3 model computes, and how closely that was checked."""

    model: Any
    max_abs_difference: float
    tolerance: float
    samples: int


def rebuild_in_tf_keras(keras3_model: Any, saved_config: dict[str, Any]) -> Rebuilt:
    """The tf-keras twin of ``keras3_model`` (loaded by Keras 3 from a file whose config.json is ``saved_config``).

    Raises RebuildRefused naming the layer (and option) that has no tf-keras equivalent, or saying by
    how much the rebuilt model's outputs differ; also for anything else tf-keras fails on, since the
    caller's fallback (refusing training, converting the Keras 3 export) holds for every such case.
    """
    try:
        return _rebuild(keras3_model, saved_config)
    except RebuildRefused:
        raise
    except Exception as error:  # tf-keras and Keras 3 raise many types for graphs they cannot build or run
        raise RebuildRefused(f"tf-keras could not rebuild it ({type(error).__name__}: {_first_line(error)})") from None


def _rebuild(keras3_model: Any, saved_config: Any) -> Rebuilt:
    class_name = saved_config.get("class_name") if isinstance(saved_config, dict) else None
    config = saved_config.get("config") if isinstance(saved_config, dict) else None
    if class_name not in ("Sequential", "Functional") or not isinstance(config, dict):
        raise RebuildRefused(f"the model is a {class_name}, not a Sequential or Functional model")
    if not isinstance(config.get("layers"), list):
        raise RebuildRefused(f"the {class_name} config lists no layers")
    model = _sequential(config) if class_name == "Sequential" else _functional(config)
    model.trainable = bool(config.get("trainable", True))
    _copy_weights(keras3_model, model)
    return _verified(keras3_model, model)


def _sequential(config: dict[str, Any]) -> Any:
    model = keras.Sequential(name=config.get("name"))
    for entry in config["layers"]:
        model.add(_layer(entry))
    if not model.built and config.get("build_input_shape"):
        model.build(tuple(config["build_input_shape"]))
    return model


History = tuple[str, int, int]


def _functional(config: dict[str, Any]) -> Any:
    """Replays the Keras 3 graph: every layer is called on its recorded inputs once those exist."""
    tensors: dict[History, Any] = {}
    calls: list[tuple[str, Any, int, dict[str, Any]]] = []
    for entry in config["layers"]:
        layer = _layer(entry)
        if entry.get("class_name") == "InputLayer":
            tensors[(layer.name, 0, 0)] = layer.output
            continue
        for node_index, node in enumerate(entry.get("inbound_nodes") or []):
            calls.append((layer.name, layer, node_index, node))
    while calls:
        ready = [call for call in calls if all(ref in tensors for ref in _references(call[3]))]
        if not ready:
            name, _, _, node = calls[0]
            missing = [ref for ref in _references(node) if ref not in tensors]
            raise RebuildRefused(f"layer {name!r} takes inputs that no layer produces: {missing}")
        for call in ready:
            calls.remove(call)
            name, layer, node_index, node = call
            outputs = _call(layer, node, tensors)
            for tensor_index, tensor in enumerate(tf.nest.flatten(outputs)):
                tensors[(name, node_index, tensor_index)] = tensor
    inputs = _structure(config.get("input_layers"), tensors, "input_layers")
    outputs = _structure(config.get("output_layers"), tensors, "output_layers")
    return keras.Model(inputs=inputs, outputs=outputs, name=config.get("name"))


def _call(layer: Any, node: dict[str, Any], tensors: dict[History, Any]) -> Any:
    if not isinstance(node, dict) or "args" not in node:
        raise RebuildRefused(f"layer {layer.name!r}: its inbound nodes are not in the Keras 3 format")
    args = _with_tensors(node["args"], tensors)
    kwargs = {key: _with_tensors(value, tensors) for key, value in (node.get("kwargs") or {}).items()}
    kwargs = {key: value for key, value in kwargs.items() if value is not None}
    accepted = inspect.signature(layer.call).parameters
    takes_any = any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in accepted.values())
    unknown = sorted(key for key in kwargs if key not in accepted and not takes_any)
    if unknown:
        raise RebuildRefused(f"layer {layer.name!r} is called with {', '.join(unknown)}, which tf-keras' call lacks")
    try:
        return layer(*args, **kwargs)
    except Exception as error:  # tf-keras raises many types for a call it cannot build
        raise RebuildRefused(
            f"layer {layer.name!r}: tf-keras cannot call it like Keras 3 did ({_first_line(error)})"
        ) from None


def _keras_history(node: Any) -> History | None:
    if isinstance(node, dict) and node.get("class_name") == "__keras_tensor__":
        history = node.get("config", {}).get("keras_history")
        if isinstance(history, list) and len(history) == 3:
            return (str(history[0]), int(history[1]), int(history[2]))
    return None


def _references(node: Any) -> Iterator[History]:
    history = _keras_history(node)
    if history is not None:
        yield history
    elif isinstance(node, dict):
        for value in node.values():
            yield from _references(value)
    elif isinstance(node, list):
        for value in node:
            yield from _references(value)


def _with_tensors(node: Any, tensors: dict[History, Any]) -> Any:
    history = _keras_history(node)
    if history is not None:
        return tensors[history]
    if isinstance(node, dict):
        return {key: _with_tensors(value, tensors) for key, value in node.items()}
    if isinstance(node, list):
        return [_with_tensors(value, tensors) for value in node]
    return node


def _structure(layout: Any, tensors: dict[History, Any], field: str) -> Any:
    """The model's inputs or outputs in the saved layout: one [name, node, index], a list, or a dict of them."""
    if isinstance(layout, list) and len(layout) == 3 and isinstance(layout[0], str) and isinstance(layout[1], int):
        history = (layout[0], layout[1], int(layout[2]))
        if history not in tensors:
            raise RebuildRefused(f"the model's {field} name {list(history)}, which no layer produces")
        return tensors[history]
    if isinstance(layout, list) and layout:
        return [_structure(item, tensors, field) for item in layout]
    if isinstance(layout, dict) and layout:
        return {key: _structure(item, tensors, field) for key, item in layout.items()}
    raise RebuildRefused(f"the model's {field} are not in a layout tf-keras can build: {layout!r}")


def _layer(entry: dict[str, Any]) -> Any:
    label = _label_of(entry)
    if entry.get("class_name") in _NESTED_MODELS:
        raise RebuildRefused(f"{label} is a nested model; tfmot needs its layers in the outer model")
    return _instance(entry, "layers", label)


_NAMESPACES = {
    "layers": ("keras.layers", "layers"),
    "initializers": ("keras.initializers", "initializers"),
    "regularizers": ("keras.regularizers", "regularizers"),
    "constraints": ("keras.constraints", "constraints"),
}
_NAMESPACE_OF_MODULE = {module: kind for kind, (module, _) in _NAMESPACES.items()}


def _instance(entry: dict[str, Any], kind: str, label: str) -> Any:
    """The tf-keras object for one serialized Keras 3 object of the given namespace."""
    import keras as keras3

    class_name = entry.get("class_name")
    module = entry.get("module")
    registered = entry.get("registered_name")
    config = entry.get("config")
    if not isinstance(class_name, str) or not isinstance(config, dict):
        raise RebuildRefused(f"{label} is not a serialized Keras object")
    if isinstance(module, str) and module.startswith("keras.src.ops."):
        raise RebuildRefused(
            f"{label} is the Keras 3 operation {module}.{class_name} (math on symbolic tensors, e.g. x * y), "
            "which tf-keras cannot rebuild; use a layer instead (e.g. keras.layers.Multiply, Add)"
        )
    if module not in (None, _NAMESPACES[kind][0]) or (registered not in (None, class_name)):
        origin = registered if registered not in (None, class_name) else f"{module}.{class_name}"
        raise RebuildRefused(f"{label} is {origin}, not a built-in Keras {kind[:-1]} with a tf-keras equivalent")
    keras3_class = getattr(getattr(keras3, _NAMESPACES[kind][1]), class_name, None)
    tf_keras_class = getattr(getattr(keras, _NAMESPACES[kind][1]), class_name, None)
    if keras3_class is None or tf_keras_class is None:
        raise RebuildRefused(f"{label} has no tf-keras equivalent (tf-keras {keras.__version__} lacks {class_name})")
    options = _options(class_name, config, keras3_class, tf_keras_class, label)
    try:
        return tf_keras_class(**options)
    except Exception as error:  # tf-keras raises many types for options it cannot take
        raise RebuildRefused(f"{label}: tf-keras cannot build it from its options ({_first_line(error)})") from None


def _options(
    class_name: str, config: dict[str, Any], keras3_class: type, tf_keras_class: type, label: str
) -> dict[str, Any]:
    accepted = _parameters(tf_keras_class)
    if issubclass(tf_keras_class, keras.layers.Layer):
        accepted |= _TF_KERAS_LAYER_KWARGS
    defaults: dict[str, Any] | None = None
    options: dict[str, Any] = {}
    for key, value in config.items():
        target = _RENAMED_OPTIONS.get((class_name, key), key)
        if target in accepted:
            options[target] = _value(key, value, label)
            continue
        if defaults is None:
            defaults = _keras3_defaults(keras3_class, config)
        if defaults.get(key, _MISSING) != value:
            raise RebuildRefused(
                f"{label} sets {key}={value!r}, an option tf-keras {keras.__version__} lacks for {class_name}"
            )
    return options


def _parameters(cls: type) -> set[str]:
    """The keyword parameters of ``cls.__init__`` along its class hierarchy."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            for name, parameter in inspect.signature(vars(klass)["__init__"]).parameters.items():
                if name != "self" and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                    names.add(name)
    return names


def _keras3_defaults(keras3_class: type, config: dict[str, Any]) -> dict[str, Any]:
    """The config Keras 3 gives the class built from only its required arguments (taken from ``config``)."""
    parameters = inspect.signature(keras3_class).parameters.values()
    required = {
        parameter.name: config[parameter.name]
        for parameter in parameters
        if parameter.default is inspect.Parameter.empty
        and parameter.name != "self"
        and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
        and parameter.name in config
    }
    try:
        return dict(keras3_class(**required).get_config())
    except Exception:  # a class that cannot be built this way has no known defaults: every option counts
        return {}


def _value(key: str, value: Any, label: str) -> Any:
    if key == "dtype":
        return _dtype(value, label)
    if (key == "activation" or key.endswith("_activation")) and isinstance(value, str):
        if not callable(getattr(keras.activations, value, None)):
            raise RebuildRefused(f"{label} sets {key}={value!r}, an activation tf-keras {keras.__version__} lacks")
        return value
    if isinstance(value, dict) and "class_name" in value and "config" in value:
        kind = _NAMESPACE_OF_MODULE.get(str(value.get("module")))
        if kind is None:
            origin = f"{value.get('module')}.{value.get('class_name')}"
            raise RebuildRefused(f"{label} sets {key} to {origin}, which has no tf-keras equivalent")
        nested_label = f"{label} {key}" if kind != "layers" else _label_of(value)
        return _instance(value, kind, nested_label)
    return value


def _label_of(entry: dict[str, Any]) -> str:
    config = entry.get("config")
    name = config.get("name") if isinstance(config, dict) else None
    return f"layer {name!r} ({entry.get('class_name')})"


def _dtype(value: Any, label: str) -> Any:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and value.get("class_name") in _FLOAT_DTYPE_POLICIES:
        return value.get("config", {}).get("name")
    kind = value.get("class_name") if isinstance(value, dict) else type(value).__name__
    raise RebuildRefused(f"{label} has dtype policy {kind}, which tf-keras lacks (a quantized Keras 3 layer)")


def _copy_weights(keras3_model: Any, model: Any) -> None:
    """Copies each layer's weights by name, in the order both libraries create them, after checking their shapes."""
    for layer in model.layers:
        try:
            source = keras3_model.get_layer(layer.name)
        except ValueError:
            raise RebuildRefused(f"layer {layer.name!r} of the rebuilt model is not in the Keras 3 model") from None
        weights = [np.asarray(weight) for weight in source.get_weights()]
        expected = [tuple(weight.shape) for weight in layer.weights]
        found = [weight.shape for weight in weights]
        if found != expected:
            raise RebuildRefused(
                f"layer {layer.name!r} ({type(layer).__name__}) holds weights of shapes {found} in Keras 3 "
                f"but {expected} in tf-keras"
            )
        if weights:
            layer.set_weights(weights)


def _verified(keras3_model: Any, model: Any) -> Rebuilt:
    inputs = _verification_inputs(model)
    expected = [np.asarray(output) for output in tf.nest.flatten(keras3_model(inputs, training=False))]
    actual = [np.asarray(output) for output in tf.nest.flatten(model(inputs, training=False))]
    if [output.shape for output in expected] != [output.shape for output in actual]:
        raise RebuildRefused(
            f"the rebuilt model outputs shapes {[o.shape for o in actual]}, Keras 3 {[o.shape for o in expected]}"
        )
    scale = max([1.0, *(float(np.max(np.abs(output))) for output in expected if output.size)])
    tolerance = RELATIVE_TOLERANCE * scale
    difference = max(
        (float(np.max(np.abs(got.astype(np.float64) - want))) for got, want in zip(actual, expected, strict=True)),
        default=0.0,
    )
    if not difference <= tolerance:
        culprit = _first_differing_layer(keras3_model, model, inputs)
        raise RebuildRefused(
            f"the rebuilt tf-keras model's outputs differ from Keras 3's by up to {difference:.3g} "
            f"(allowed {tolerance:.3g}) on {VERIFICATION_SAMPLES} seeded inputs"
            + (f", first at layer {culprit!r} ({type(model.get_layer(culprit)).__name__})" if culprit else "")
        )
    return Rebuilt(model=model, max_abs_difference=difference, tolerance=tolerance, samples=VERIFICATION_SAMPLES)


def _first_differing_layer(keras3_model: Any, model: Any, inputs: Any) -> str | None:
    """The first layer (in the rebuilt model's order) whose own output differs beyond the tolerance, if
    both libraries can expose the layers' outputs (layers called once)."""
    import keras as keras3

    names = [
        layer.name
        for layer in model.layers
        if not isinstance(layer, keras.layers.InputLayer) and len(layer.inbound_nodes) == 1
    ]
    try:
        keras3_inputs = keras3_model.inputs[0] if len(keras3_model.inputs) == 1 else keras3_model.inputs
        if isinstance(inputs, dict):
            keras3_inputs = keras3_model.input
        ours = keras.Model(model.input, [model.get_layer(name).output for name in names])
        theirs = keras3.Model(keras3_inputs, [keras3_model.get_layer(name).output for name in names])
        actual = ours(inputs, training=False)
        expected = theirs(inputs, training=False)
    except Exception:  # a layer whose output cannot be exposed: the message goes without a name
        return None
    for name, got, want in zip(names, actual, expected, strict=True):
        want_array = np.asarray(want)
        scale = max(1.0, float(np.max(np.abs(want_array))) if want_array.size else 1.0)
        if not float(np.max(np.abs(np.asarray(got) - want_array), initial=0.0)) <= RELATIVE_TOLERANCE * scale:
            return str(name)
    return None


def _verification_inputs(model: Any) -> Any:
    """Seeded inputs in the structure of the (rebuilt) model's inputs: normal floats, integers valid for every
    Embedding."""
    rng = np.random.default_rng(VERIFICATION_SEED)
    vocabulary = min(
        (int(layer.input_dim) for layer in model.layers if isinstance(layer, keras.layers.Embedding)), default=2
    )

    def sample(tensor: Any) -> np.ndarray:
        shape = [
            VERIFICATION_SAMPLES,
            *(UNKNOWN_DIMENSION_SIZE if dim is None else int(dim) for dim in tensor.shape[1:]),
        ]
        dtype = np.dtype(tf.as_dtype(tensor.dtype).as_numpy_dtype)
        if dtype.kind in "iu":
            return rng.integers(0, vocabulary, size=shape).astype(dtype)
        if dtype.kind == "b":
            return rng.random(shape) < 0.5
        return rng.standard_normal(shape).astype(dtype)

    make: Callable[[Any], np.ndarray] = sample
    return tf.nest.map_structure(make, model.input)
