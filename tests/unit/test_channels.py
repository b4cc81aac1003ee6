"""Channel groups on hand-made layer graphs (no TensorFlow): what filter reduction may remove together."""

from __future__ import annotations

import pytest

from edgecompress_runner.channels import GraphNode, Group, Role, channel_graph, channels_to_keep, kept_indices


def node(layer: str, role: Role, inputs: list[str], channels: int = 0, why: str = "") -> GraphNode:
    return GraphNode(layer, role, tuple(inputs), (layer,), channels, why)


def residual_block() -> list[GraphNode]:
    """stem -> [conv a -> bn] + [1x1 shortcut] -> add -> head (the model output)."""
    return [
        node("stem", Role.PRODUCER, ["image"], 8),
        node("stem_relu", Role.PASS, ["stem"]),
        node("branch", Role.PRODUCER, ["stem_relu"], 16),
        node("branch_bn", Role.PASS, ["branch"]),
        node("shortcut", Role.PRODUCER, ["stem_relu"], 16),
        node("add", Role.MERGE, ["branch_bn", "shortcut"]),
        node("head", Role.PRODUCER, ["add"], 4),
    ]


def groups_by_producers(groups: list[Group]) -> dict[tuple[str, ...], tuple[str, ...]]:
    return {tuple(sorted(group.producers)): group.pins for group in groups if group.producers}


def test_an_add_joins_both_branches_into_one_group_and_outputs_keep_their_channels() -> None:
    graph = channel_graph(residual_block(), inputs={"image": 1}, outputs=["head"], pinned_layers={})
    found = groups_by_producers(graph.groups())
    assert found == {("stem",): (), ("branch", "shortcut"): (), ("head",): ("model output",)}
    # The add's output and both branches share one channel space root.
    roots = {graph.root(graph.layouts[tensor][0]) for tensor in ("branch", "branch_bn", "shortcut", "add")}
    assert len(roots) == 1


def test_skipping_one_branch_pins_the_whole_group() -> None:
    graph = channel_graph(
        residual_block(), inputs={"image": 1}, outputs=["head"], pinned_layers={"shortcut": "'shortcut' is skipped"}
    )
    found = groups_by_producers(graph.groups())
    assert found[("branch", "shortcut")] == ("'shortcut' is skipped",)
    assert not next(group for group in graph.groups() if "branch" in group.producers).reducible


def test_an_opaque_reader_pins_what_it_reads_and_makes_fixed_channels() -> None:
    nodes = [
        node("conv", Role.PRODUCER, ["image"], 8),
        node("flatten", Role.OPAQUE, ["conv"], 512, why="read by Flatten 'flatten'"),
        node("dense", Role.PRODUCER, ["flatten"], 32),
        node("out", Role.PRODUCER, ["dense"], 3),
    ]
    graph = channel_graph(nodes, inputs={"image": 3}, outputs=["out"], pinned_layers={})
    found = groups_by_producers(graph.groups())
    assert found[("conv",)] == ("read by Flatten 'flatten'",)
    assert found[("dense",)] == ()
    assert graph.input_layouts["dense"] == graph.layouts["flatten"]


def test_a_concatenation_lays_its_inputs_side_by_side() -> None:
    nodes = [
        node("left", Role.PRODUCER, ["image"], 8),
        node("right", Role.PRODUCER, ["image"], 16),
        node("concat", Role.CONCAT, ["left", "right"]),
        node("mix", Role.PRODUCER, ["concat"], 4),
    ]
    graph = channel_graph(nodes, inputs={"image": 3}, outputs=["mix"], pinned_layers={})
    left, right = (graph.root(graph.layouts[name][0]) for name in ("left", "right"))
    assert graph.layouts["concat"] == [left, right]
    # The reader of the concatenation keeps the left's channels 0 and 5 and the right's 1 and 2.
    assert kept_indices(graph.input_layouts["mix"], {left: [0, 5], right: [1, 2]}, graph) == [0, 5, 9, 10]
    assert {group.producers: group.reducible for group in graph.groups() if group.producers} == {
        ("left",): True,
        ("right",): True,
        ("mix",): False,
    }


def test_merging_concatenations_of_different_layouts_pins_them() -> None:
    nodes = [
        node("a", Role.PRODUCER, ["image"], 8),
        node("b", Role.PRODUCER, ["image"], 8),
        node("c", Role.PRODUCER, ["image"], 16),
        node("ab", Role.CONCAT, ["a", "b"]),
        node("add", Role.MERGE, ["ab", "c"]),
        node("out", Role.PRODUCER, ["add"], 2),
    ]
    graph = channel_graph(nodes, inputs={"image": 3}, outputs=["out"], pinned_layers={})
    pinned = [group for group in graph.groups() if group.producers and group.producers != ("out",)]
    assert len(pinned) == 3 and not any(group.reducible for group in pinned)


def test_model_inputs_are_never_reduced() -> None:
    graph = channel_graph(
        [node("conv", Role.PRODUCER, ["image"], 8), node("out", Role.PRODUCER, ["conv"], 2)],
        inputs={"image": 3},
        outputs=["out"],
        pinned_layers={},
    )
    input_group = next(group for group in graph.groups() if not group.producers)
    assert input_group.pins == ("model input",) and not input_group.reducible


@pytest.mark.parametrize(
    ("channels", "reduction", "min_channels", "round_to", "kept"),
    [
        (64, 0.5, 8, 8, 32),
        (32, 0.5, 8, 8, 16),
        (16, 0.5, 8, 8, 8),
        (8, 0.5, 8, 8, 8),  # minChannels keeps them all
        (40, 0.5, 8, 8, 24),  # 20 rounds up to 24
        (5, 0.5, 1, 8, 5),  # rounding up never exceeds what there is
        (10, 0.3, 1, 1, 7),
        (100, 0.75, 1, 1, 25),
    ],
)
def test_kept_channels_round_up_and_respect_the_minimum(
    channels: int, reduction: float, min_channels: int, round_to: int, kept: int
) -> None:
    assert channels_to_keep(channels, reduction=reduction, min_channels=min_channels, round_to=round_to) == kept
