"""Channel groups of a layer graph: which output channels must be removed together (pure, no TensorFlow).

A tensor's last axis is a sequence of *channel spaces* (one per producing layer; a Concatenate joins
several). Layers that keep channels one for one (BatchNormalization, activations, pooling,
DepthwiseConv2D...) pass their input's spaces on; a merge (Add, Multiply...) unites the spaces of its
inputs, so they are pruned identically (a union-find); a layer the reduction does not understand
(Flatten, Reshape, a custom layer...) pins every space it reads. The spaces of the model's inputs and
outputs are pinned too, so the model's interface keeps its shape. A group is the union of spaces: it
can be reduced when nothing pinned it and every layer producing it may be reduced.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum


class Role(Enum):
    PRODUCER = "producer"
    """Makes new output channels from its input (Conv2D, SeparableConv2D, Dense)."""
    PASS = "pass"
    """Output channel i is computed from input channel i only."""
    MERGE = "merge"
    """Element-wise over inputs of equal channels (Add, Multiply, ...): their channels are joined."""
    CONCAT = "concat"
    """Concatenates its inputs' channels."""
    OPAQUE = "opaque"
    """Anything else: the channels it reads cannot be removed, and its outputs are new, fixed channels."""


@dataclass(frozen=True)
class GraphNode:
    """One call of a layer: its role, the tensors it reads and writes, and its output channel count."""

    layer: str
    role: Role
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    channels: int
    why_opaque: str = ""


@dataclass
class _Space:
    size: int
    producers: list[str] = field(default_factory=list)
    pins: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Group:
    """Channel spaces joined by merges; ``pins`` say why it cannot be reduced (empty: it can)."""

    spaces: tuple[int, ...]
    size: int
    producers: tuple[str, ...]
    pins: tuple[str, ...]

    @property
    def reducible(self) -> bool:
        return not self.pins and bool(self.producers)


@dataclass
class ChannelGraph:
    """Channel spaces, the layout of every tensor's last axis, and the groups of spaces."""

    spaces: list[_Space]
    layouts: dict[str, list[int]]
    parent: list[int]
    input_layouts: dict[str, list[int]]
    """Per layer, the layout of its (first) input: what its weights' input axis is sliced by."""

    def root(self, space: int) -> int:
        while self.parent[space] != space:
            self.parent[space] = self.parent[self.parent[space]]
            space = self.parent[space]
        return space

    def groups(self) -> list[Group]:
        members: dict[int, list[int]] = {}
        for space in range(len(self.spaces)):
            members.setdefault(self.root(space), []).append(space)
        found = []
        for spaces in members.values():
            producers = [name for space in spaces for name in self.spaces[space].producers]
            pins = [pin for space in spaces for pin in self.spaces[space].pins]
            if not producers and not pins:
                pins = ["no layer makes these channels"]
            found.append(
                Group(tuple(spaces), self.spaces[spaces[0]].size, tuple(producers), tuple(dict.fromkeys(pins)))
            )
        return found

    def group_of(self, layer: str) -> Group | None:
        """The group of ``layer``'s output channels, if it produces any."""
        return next((group for group in self.groups() if layer in group.producers), None)


def _new_space(graph: ChannelGraph, size: int, *, producer: str | None = None, pin: str | None = None) -> int:
    graph.spaces.append(_Space(size, [producer] if producer else [], [pin] if pin else []))
    graph.parent.append(len(graph.spaces) - 1)
    return len(graph.spaces) - 1


def _pin(graph: ChannelGraph, layout: Iterable[int], reason: str) -> None:
    for space in layout:
        graph.spaces[space].pins.append(reason)


def _unite(graph: ChannelGraph, first: int, second: int) -> None:
    first, second = graph.root(first), graph.root(second)
    if first != second:
        graph.parent[second] = first


def channel_graph(
    nodes: Iterable[GraphNode],
    *,
    inputs: dict[str, int],
    outputs: Iterable[str],
    pinned_layers: dict[str, str],
) -> ChannelGraph:
    """Follows the channels through ``nodes`` (in topological order).

    Args:
        nodes: the layer calls, each after the calls whose outputs it reads.
        inputs: the model's input tensors and their channel counts.
        outputs: the model's output tensors (their channels are kept).
        pinned_layers: producers whose channels must be kept, with the reason (e.g. skipLayers).

    Returns:
        The graph; ``groups()`` gives what can be reduced together.
    """
    graph = ChannelGraph(spaces=[], layouts={}, parent=[], input_layouts={})
    for tensor, size in inputs.items():
        graph.layouts[tensor] = [_new_space(graph, size, pin="model input")]
    for node in nodes:
        layouts = [graph.layouts[tensor] for tensor in node.inputs]
        if layouts:
            graph.input_layouts[node.layer] = layouts[0]
        if node.role is Role.PRODUCER:
            space = _new_space(graph, node.channels, producer=node.layer, pin=pinned_layers.get(node.layer))
            graph.layouts[node.outputs[0]] = [space]
        elif node.role is Role.PASS:
            graph.layouts[node.outputs[0]] = layouts[0]
        elif node.role is Role.CONCAT:
            graph.layouts[node.outputs[0]] = [space for layout in layouts for space in layout]
        elif node.role is Role.MERGE and _same_segments(graph, layouts):
            for layout in layouts[1:]:
                for first, second in zip(layouts[0], layout, strict=True):
                    _unite(graph, first, second)
            graph.layouts[node.outputs[0]] = layouts[0]
        else:
            reason = node.why_opaque or f"read by {node.layer!r}, whose channels are not matched one for one"
            for layout in layouts:
                _pin(graph, layout, reason)
            for tensor in node.outputs:
                graph.layouts[tensor] = [_new_space(graph, node.channels, pin=f"made by {node.layer!r}")]
    for tensor in outputs:
        _pin(graph, graph.layouts[tensor], "model output")
    return graph


def _same_segments(graph: ChannelGraph, layouts: list[list[int]]) -> bool:
    sizes = [[graph.spaces[space].size for space in layout] for layout in layouts]
    return all(size == sizes[0] for size in sizes)


def channels_to_keep(channels: int, *, reduction: float, min_channels: int, round_to: int) -> int:
    """Channels kept of ``channels``: the share ``1 - reduction``, rounded up to a multiple of ``round_to``,
    at least ``min_channels``, never more than there are."""
    kept = math.ceil(channels * (1 - reduction) - 1e-9)
    kept = math.ceil(kept / round_to) * round_to
    return min(channels, max(kept, min_channels))


def kept_indices(layout: list[int], kept: dict[int, list[int]], graph: ChannelGraph) -> list[int]:
    """Indices of a tensor's last axis that survive: each space's kept channels, offset by the spaces before it."""
    indices: list[int] = []
    offset = 0
    for space in layout:
        size = graph.spaces[space].size
        indices.extend(offset + index for index in kept.get(graph.root(space), range(size)))
        offset += size
    return indices
