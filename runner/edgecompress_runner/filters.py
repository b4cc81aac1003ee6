"""Filter reduction (structured channel pruning): fewer output channels, a smaller tf-keras model, fine-tuned.

The model's layer calls are classified (``classify``) and their channels followed through the graph
(``channels.channel_graph``), which groups the channels that must go together. In every reducible group
the channels are ranked by the l1/l2 norm of their filters (scaled by the BatchNormalization that follows
a producer, since that scale is what the channel finally carries), summed over the group's producers
after normalising each by its mean, and the weakest are removed. The model is rebuilt with
``clone_model`` (producers get fewer filters; everything else is recreated from its config so its
shapes follow) and each layer's weights are sliced from the original's. The smaller model is then
fine-tuned like every other step: distilling from the input model, BatchNorm frozen, best held-out
epoch kept.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecompress_contract.report import ChannelGroup, FilterLayer, ReducedSpeed, ReduceFiltersReport
from edgecompress_contract.spec import FilterCriterion, Latency, ReduceFiltersStep

from .channels import ChannelGraph, GraphNode, Group, Role, channel_graph, channels_to_keep, kept_indices
from .errors import InputError
from .keras_graph import LayerCall, input_names, layer_calls, output_names, require_graph_model, weight_short_name
from .progress import Progress
from .tfcompat import keras, tf

if TYPE_CHECKING:
    from .compress import TrainingData
    from .data import Arrays

_PRODUCERS = {"Conv1D", "Conv2D", "SeparableConv1D", "SeparableConv2D", "Dense"}
_CHANNELWISE = {
    "Activation",
    "ActivityRegularization",
    "AlphaDropout",
    "AveragePooling1D",
    "AveragePooling2D",
    "BatchNormalization",
    "Cropping1D",
    "Cropping2D",
    "DepthwiseConv2D",
    "Dropout",
    "ELU",
    "GaussianDropout",
    "GaussianNoise",
    "GlobalAveragePooling1D",
    "GlobalAveragePooling2D",
    "GlobalMaxPooling1D",
    "GlobalMaxPooling2D",
    "LeakyReLU",
    "MaxPooling1D",
    "MaxPooling2D",
    "PReLU",
    "ReLU",
    "SpatialDropout1D",
    "SpatialDropout2D",
    "ThresholdedReLU",
    "UpSampling1D",
    "UpSampling2D",
    "ZeroPadding1D",
    "ZeroPadding2D",
}
_MERGES = {"Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"}


def _last_axis(axis: Any, rank: int) -> bool:
    axes = axis if isinstance(axis, list | tuple) else [axis]
    return len(axes) == 1 and axes[0] in (-1, rank - 1)


def classify(call: LayerCall) -> tuple[Role, str]:
    """The call's role for channels, and why it is opaque when it is."""
    layer = call.layer
    kind = type(layer).__name__
    rank = len(call.node.outputs.shape) if hasattr(call.node.outputs, "shape") else 0
    config = layer.get_config()
    if len(call.outputs) != 1:
        return Role.OPAQUE, f"read by {kind} {layer.name!r}, which has several outputs"
    if config.get("data_format", "channels_last") != "channels_last":
        return Role.OPAQUE, f"read by {kind} {layer.name!r}, which is channels_first"
    if kind in _PRODUCERS:
        if config.get("groups", 1) != 1:
            return Role.OPAQUE, f"read by grouped {kind} {layer.name!r}"
        return Role.PRODUCER, ""
    if kind == "DepthwiseConv2D" and config.get("depth_multiplier", 1) != 1:
        return Role.OPAQUE, f"read by DepthwiseConv2D {layer.name!r} with depth_multiplier > 1"
    if kind == "BatchNormalization" and not _last_axis(config.get("axis", -1), rank):
        return Role.OPAQUE, f"read by BatchNormalization {layer.name!r} over another axis than channels"
    if kind == "Softmax" and _last_axis(config.get("axis", -1), rank):
        return Role.PASS, ""
    if kind in _CHANNELWISE:
        return Role.PASS, ""
    if kind in _MERGES:
        return Role.MERGE, ""
    if kind == "Concatenate" and _last_axis(config.get("axis", -1), rank):
        return Role.CONCAT, ""
    return Role.OPAQUE, f"read by {kind} {layer.name!r}, which filter reduction does not follow"


def _channels(tensor: Any) -> int:
    size = tensor.shape[-1] if len(tensor.shape) else None
    return int(size) if size is not None else 0


@dataclass(frozen=True)
class ModelChannels:
    """A model's layer calls with the graph of their channels."""

    calls: list[LayerCall]
    graph: ChannelGraph
    consumers: dict[str, list[LayerCall]]


def model_channels(model: Any, pinned_layers: dict[str, str], step: str) -> ModelChannels:
    """Follows ``model``'s channels; ``pinned_layers`` keep theirs (with the reason)."""
    require_graph_model(model, step)
    calls = list(layer_calls(model))
    nodes = []
    consumers: dict[str, list[LayerCall]] = {}
    calls_per_layer: dict[str, int] = {}
    for call in calls:
        calls_per_layer[call.layer.name] = calls_per_layer.get(call.layer.name, 0) + 1
        for tensor in call.inputs:
            consumers.setdefault(tensor, []).append(call)
    for call in calls:
        role, why = classify(call)
        if calls_per_layer[call.layer.name] > 1:
            role, why = Role.OPAQUE, f"read by {call.layer.name!r}, which is called more than once"
        output = tf.nest.flatten(call.node.outputs)[0]
        nodes.append(GraphNode(call.layer.name, role, call.inputs, call.outputs, _channels(output), why))
    inputs = dict(zip(input_names(model), (_channels(tensor) for tensor in model.inputs), strict=True))
    graph = channel_graph(nodes, inputs=inputs, outputs=output_names(model), pinned_layers=pinned_layers)
    return ModelChannels(calls, graph, consumers)


def _filters(layer: Any) -> np.ndarray:
    """The producer's kernel with output channels last (the pointwise kernel of a separable convolution)."""
    name = "pointwise_kernel" if "Separable" in type(layer).__name__ else "kernel"
    return np.asarray(getattr(layer, name).numpy())


def _batch_norm_scale(layer: Any) -> np.ndarray | None:
    weights = {weight_short_name(weight): weight.numpy() for weight in layer.weights}
    if "moving_variance" not in weights:
        return None
    scale = 1.0 / np.sqrt(weights["moving_variance"] + float(layer.epsilon))
    return np.asarray(np.abs(weights.get("gamma", 1.0) * scale))


def channel_scores(
    model: Any, producers: Sequence[str], channels: ModelChannels, criterion: FilterCriterion
) -> np.ndarray:
    """Importance of each channel of a group: each producer's filter norms (times its BatchNorm's scale),
    normalised by their mean, summed over the producers."""
    total: np.ndarray | None = None
    calls = {call.layer.name: call for call in channels.calls}
    for name in producers:
        layer = model.get_layer(name)
        kernel = _filters(layer)
        flat = kernel.reshape(-1, kernel.shape[-1])
        norms = np.abs(flat).sum(axis=0) if criterion == FilterCriterion.L1 else np.sqrt((flat**2).sum(axis=0))
        readers = channels.consumers.get(calls[name].outputs[0], [])
        if len(readers) == 1 and type(readers[0].layer).__name__ == "BatchNormalization":
            scale = _batch_norm_scale(readers[0].layer)
            if scale is not None:
                norms = norms * scale
        norms = norms / max(float(norms.mean()), 1e-12)
        total = norms if total is None else total + norms
    assert total is not None
    return total


def _expand(indices: list[int], multiplier: int) -> list[int]:
    return [index * multiplier + offset for index in indices for offset in range(multiplier)]


def sliced_weights(layer: Any, kept_in: list[int] | None, kept_out: list[int] | None) -> list[np.ndarray]:
    """``layer``'s weights keeping input channels ``kept_in`` and output channels ``kept_out`` (None: all)."""
    kind = type(layer).__name__
    values = []
    for weight in layer.weights:
        value = np.asarray(weight.numpy())
        name = weight_short_name(weight)
        if kept_in is not None:
            if name in ("kernel", "depthwise_kernel"):
                value = np.take(value, kept_in, axis=-2)
            elif name == "pointwise_kernel":
                multiplier = layer.depth_multiplier
                value = np.take(value, _expand(kept_in, multiplier), axis=-2)
            elif kind in ("BatchNormalization", "DepthwiseConv2D") or name == "alpha":
                value = np.take(value, kept_in, axis=-1)
        if kept_out is not None and name in ("kernel", "pointwise_kernel", "bias") and kind in _PRODUCERS:
            value = np.take(value, kept_out, axis=-1)
        values.append(value)
    return values


def _spatial(shape: Sequence[int | None]) -> int | None:
    sizes = list(shape[1:-1])
    return None if any(size is None for size in sizes) else math.prod(int(size or 0) for size in sizes)


def layer_macs(layer: Any) -> int | None:
    """Multiply-accumulates of one call with batch 1 (conv, separable, depthwise and dense layers)."""
    kind = type(layer).__name__
    input_shape, output_shape = layer.input_shape, layer.output_shape
    if not isinstance(output_shape, tuple) or not isinstance(input_shape, tuple):
        return None
    positions = _spatial(output_shape)
    if positions is None or input_shape[-1] is None or output_shape[-1] is None:
        return None
    channels_in, channels_out = int(input_shape[-1]), int(output_shape[-1])
    window = math.prod(int(size) for size in getattr(layer, "kernel_size", (1,)))
    if kind in ("Conv1D", "Conv2D", "Dense"):
        return positions * window * channels_in * channels_out
    if kind in ("SeparableConv1D", "SeparableConv2D"):
        expanded = channels_in * int(layer.depth_multiplier)
        return positions * (window * expanded + expanded * channels_out)
    if kind == "DepthwiseConv2D":
        return positions * window * channels_out
    return None


def _layer_rows(before: Any, after: Any) -> list[FilterLayer]:
    rows = []
    for layer in before.layers:
        if not layer.weights:
            continue
        reduced = after.get_layer(layer.name)
        output_before, output_after = layer.output_shape, reduced.output_shape
        rows.append(
            FilterLayer(
                name=layer.name,
                layer_type=type(layer).__name__,
                channels_before=int(output_before[-1]) if isinstance(output_before, tuple) else 0,
                channels_after=int(output_after[-1]) if isinstance(output_after, tuple) else 0,
                parameters_before=layer.count_params(),
                parameters_after=reduced.count_params(),
                macs_before=layer_macs(layer),
                macs_after=layer_macs(reduced),
            )
        )
    return rows


def _total(values: list[int | None]) -> int | None:
    known = [value for value in values if value is not None]
    return sum(known) if known else None


def rebuild(model: Any, channels: ModelChannels, kept: dict[int, list[int]]) -> Any:
    """A new model with only the ``kept`` channels of each group (by group root), weights sliced from ``model``."""
    graph = channels.graph
    calls = {call.layer.name: call for call in channels.calls}
    new_sizes: dict[str, int] = {}
    for name, call in calls.items():
        if classify(call)[0] is Role.PRODUCER:
            root = graph.root(graph.layouts[call.outputs[0]][0])
            if root in kept:
                new_sizes[name] = len(kept[root])

    def clone(layer: Any) -> Any:
        config = layer.get_config()
        if layer.name in new_sizes:
            config["units" if "units" in config else "filters"] = new_sizes[layer.name]
        return layer.__class__.from_config(config)

    reduced = keras.models.clone_model(model, clone_function=clone)
    for name, call in calls.items():
        layout = graph.input_layouts.get(name)
        kept_in = kept_indices(layout, kept, graph) if layout is not None else None
        kept_out = None
        if name in new_sizes:
            kept_out = kept[graph.root(graph.layouts[call.outputs[0]][0])]
        if call.layer.weights:
            reduced.get_layer(name).set_weights(sliced_weights(call.layer, kept_in, kept_out))
    return reduced


def _chosen_groups(
    groups: list[Group], step: ReduceFiltersStep, channels: ModelChannels, where: str
) -> tuple[list[Group], list[Group]]:
    """(groups to reduce, groups left) honouring ``step.layers``: a listed layer that cannot be reduced is an error."""
    reducible = [group for group in groups if group.reducible]
    if not step.layers:
        return reducible, [group for group in groups if not group.reducible]
    known = {call.layer.name: call for call in channels.calls}
    unknown = sorted(set(step.layers) - set(known))
    if unknown:
        raise InputError(f"{where}.layers: unknown layers {unknown}; the model has {sorted(known)}")
    chosen: list[Group] = []
    for name in step.layers:
        group = next((group for group in groups if name in group.producers), None)
        if group is None:
            raise InputError(
                f"{where}.layers: layer {name!r} ({type(known[name].layer).__name__}) has no filters to reduce"
            )
        if not group.reducible:
            raise InputError(
                f"{where}.layers: the channels of layer {name!r} cannot be reduced: {'; '.join(group.pins)}"
            )
        if group not in chosen:
            chosen.append(group)
    return chosen, [group for group in groups if group not in chosen]


@dataclass(frozen=True)
class Reduction:
    """The reduced model (before fine-tuning) and what was removed."""

    model: Any
    groups: list[ChannelGroup]
    skipped: list[str]


def reduce_channels(model: Any, step: ReduceFiltersStep, *, skipped: set[str], where: str) -> Reduction:
    """Removes the weakest channels of every reducible group; the model returned is not trained yet."""
    channels = model_channels(model, {name: f"{name!r} is in skipLayers" for name in skipped}, where)
    groups = [group for group in channels.graph.groups() if group.producers]
    chosen, left = _chosen_groups(groups, step, channels, where)
    kept: dict[int, list[int]] = {}
    reports = []
    for group in chosen:
        keep = channels_to_keep(
            group.size, reduction=step.target_reduction, min_channels=step.min_channels, round_to=step.round_to
        )
        reason = None
        if keep < group.size:
            scores = channel_scores(model, group.producers, channels, FilterCriterion(step.criterion))
            # Stable ranking: ties keep the lower index, so the choice is reproducible.
            order = np.argsort(-scores, kind="stable")
            kept[channels.graph.root(group.spaces[0])] = sorted(int(index) for index in order[:keep])
        else:
            reason = f"minChannels {step.min_channels} and roundTo {step.round_to} keep all {group.size}"
        reports.append(
            ChannelGroup(layers=list(group.producers), channels_before=group.size, channels_after=keep, reason=reason)
        )
    for group in left:
        reason = "; ".join(group.pins) if group.pins else "not listed in layers"
        reports.append(
            ChannelGroup(
                layers=list(group.producers), channels_before=group.size, channels_after=group.size, reason=reason
            )
        )
    if not kept:
        raise InputError(
            f"{where}: no channels can be removed: "
            + "; ".join(f"{report.layers}: {report.reason}" for report in reports)
        )
    position = {call.layer.name: index for index, call in enumerate(channels.calls)}
    reports.sort(key=lambda report: min(position[name] for name in report.layers))
    return Reduction(rebuild(model, channels, kept), reports, sorted(skipped))


def reduce_filters(
    model: Any,
    step: ReduceFiltersStep,
    *,
    index: int,
    data: TrainingData,
    progress: Progress,
) -> tuple[Any, ReduceFiltersReport]:
    """Reduces the filters of ``model`` as ``step`` says, then fine-tunes the smaller model toward the input
    model's outputs (``data.reference``)."""
    from .compress import fine_tune, layers_to_skip, training_targets

    name = f"steps[{index}] reduceFilters"
    where = f"spec.steps[{index}]"
    skipped = layers_to_skip(model, step.skip_layers, step.skip_first_and_last, name)
    reduction = reduce_channels(model, step, skipped=skipped, where=where)
    reduced = reduction.model
    targets = training_targets(reduced, data, name, step.fine_tune)
    metrics, validation = fine_tune(reduced, targets, settings=step.fine_tune, progress=progress, step=name)
    rows = _layer_rows(model, reduced)
    return reduced, ReduceFiltersReport(
        criterion=FilterCriterion(step.criterion).value,
        target_reduction=step.target_reduction,
        groups=reduction.groups,
        layers=rows,
        parameters_before=int(model.count_params()),
        parameters_after=int(reduced.count_params()),
        macs_before=_total([row.macs_before for row in rows]),
        macs_after=_total([row.macs_after for row in rows]),
        skipped_layers=reduction.skipped,
        epochs=step.fine_tune.epochs,
        final_metrics=metrics,
        validation=validation,
    )


def speed_against_unreduced_int8(
    input_model: Any, *, baseline: bytes, result: bytes, x_calibration: Arrays, sample: Arrays, latency: Latency
) -> ReducedSpeed:
    """Times the result with the float baseline and with the input model converted to int8 (calibrated on
    ``x_calibration``), interleaved: what filter reduction gains over quantization alone. ``sample`` holds one
    sample per input, by input name."""
    from edgecompress_contract.spec import PtqMode, PtqStep

    from . import convert, evaluate
    from .planning import ConversionPlan

    int8_plan = ConversionPlan(ptq=PtqStep(type="ptq", mode=PtqMode.INT8))
    unreduced_int8, _ = convert.convert(
        tf.lite.TFLiteConverter.from_keras_model(input_model), plan=int8_plan, x_calibration=x_calibration
    )
    names_of = evaluate.ModelRunner(baseline, latency.threads).signature
    stats = evaluate.latency([baseline, result, unreduced_int8], sample, latency, names_of=names_of)
    base, reduced, int8 = (np.asarray(measured.rounds_ms) for measured in stats)
    return ReducedSpeed(
        unreduced_int8_bytes=len(unreduced_int8),
        speedup_vs_float=round(float(np.median(base / reduced)), 3),
        speedup_vs_unreduced_int8=round(float(np.median(int8 / reduced)), 3),
        rounds=len(reduced),
    )
