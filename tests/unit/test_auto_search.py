"""The auto search's pure parts: greedy raising on an injected measurement, ladders, the pick, the spec rules."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edgecompress_contract.report import GateResult, LayerSensitivity, SearchCandidate
from edgecompress_contract.spec import SearchObjective, SpecError, parse_spec
from edgecompress_runner.search import (
    Assignment,
    Verdict,
    decide,
    latency_ratio_gate,
    layer_ladders,
    mixed_recipe,
    noise_removed_per_byte,
    raise_until_passing,
    raising_may_help,
    worst_output_error,
)
from edgecompress_runner.tflite_quantize import Precision

INT4, BLOCK4, INT8, FP16, FLOAT = (
    Precision.WEIGHT_ONLY_INT4,
    Precision.INT4_BLOCKWISE,
    Precision.WEIGHT_ONLY_INT8,
    Precision.FLOAT16,
    Precision.FLOAT,
)
LADDERS = {"conv": [INT4, INT8, FLOAT], "fc": [INT4, BLOCK4, INT8, FLOAT], "dw": [INT8, FLOAT]}
# The error each layer adds alone at each precision (what the sensitivity table gives as -SNR).
ERRORS = {
    ("conv", INT4): 3.0, ("conv", INT8): 0.2,
    ("fc", INT4): 5.0, ("fc", BLOCK4): 2.0, ("fc", INT8): 0.1,
    ("dw", INT8): 0.5,
}  # fmt: skip


def error(layer: str, precision: Precision) -> float:
    return ERRORS.get((layer, precision), 0.0)


def worst_first(layer: str, current: Precision, higher: Precision) -> float:
    return error(layer, current)


def additive_measure(limit: float, calls: list[Assignment]) -> Any:
    """A model whose total error is the sum of its layers' errors; it passes at or under ``limit``."""

    def measure(assignment: Assignment) -> Verdict:
        calls.append(dict(assignment))
        total = sum(error(layer, precision) for layer, precision in assignment.items())
        return Verdict(passed=total <= limit, raise_more=True)

    return measure


def test_raising_starts_lowest_and_raises_the_worst_layer_one_step_at_a_time() -> None:
    calls: list[Assignment] = []
    trials = raise_until_passing(LADDERS, worst_first, additive_measure(3.0, calls))
    assert calls == [
        {"conv": INT4, "fc": INT4, "dw": INT8},  # 8.5
        {"conv": INT4, "fc": BLOCK4, "dw": INT8},  # fc was worst (5.0): 5.5
        {"conv": INT8, "fc": BLOCK4, "dw": INT8},  # conv (3.0) beats fc's 2.0: 2.7, passes
    ]
    assert [verdict.passed for _, verdict in trials] == [False, False, True]


def test_raising_ends_at_the_top_of_every_ladder_when_nothing_passes() -> None:
    calls: list[Assignment] = []
    trials = raise_until_passing(LADDERS, worst_first, additive_measure(-1.0, calls))
    assert calls[-1] == dict.fromkeys(LADDERS, FLOAT)
    # One trial per rung above the start: 2 + 3 + 1 raises, plus the start.
    assert len(trials) == 7 and not any(verdict.passed for _, verdict in trials)


def test_raising_stops_when_the_verdict_says_it_cannot_help_or_the_budget_ends() -> None:
    calls: list[Assignment] = []
    trials = raise_until_passing(LADDERS, worst_first, lambda found: Verdict(passed=False, raise_more=False))
    assert len(trials) == 1
    budget = iter([True, True, False])
    trials = raise_until_passing(LADDERS, worst_first, additive_measure(-1.0, calls), may_continue=lambda: next(budget))
    assert len(trials) == 2


def test_equal_errors_raise_the_earlier_layer() -> None:
    calls: list[Assignment] = []
    raise_until_passing({"a": [INT4, FLOAT], "b": [INT4, FLOAT]}, lambda layer, current, higher: 1.0,
                        additive_measure(-1.0, calls))  # fmt: skip
    assert calls[1] == {"a": FLOAT, "b": INT4}


def row(layer: str, precision: Precision, applies: bool, snr: float | None = None, size: int = 0) -> LayerSensitivity:
    return LayerSensitivity(layer=layer, op="CONV_2D", weights=4096, precision=precision.value, applies=applies,
                            snr_db=snr, size_bytes=size)  # fmt: skip


def test_ladders_keep_what_applies_in_byte_order_with_float_on_top() -> None:
    table = [row("conv", INT8, True, 50), row("conv", INT4, True, 30), row("conv", BLOCK4, False),
             row("dw", INT4, False), row("dw", FP16, True, 90)]  # fmt: skip
    assert layer_ladders(table) == {"conv": [INT4, INT8, FLOAT], "dw": [FP16, FLOAT]}


def test_the_worthwhile_raise_removes_the_most_noise_per_byte() -> None:
    rows = {(found.layer, Precision(found.precision)): found for found in [
        row("big", INT4, True, snr=30.0, size=100_000), row("big", BLOCK4, True, snr=33.0, size=116_000),
        row("small", INT4, True, snr=35.0, size=100_000), row("small", INT8, True, snr=60.0, size=109_000),
    ]}  # fmt: skip
    big = noise_removed_per_byte(rows, "big", INT4, BLOCK4, baseline_bytes=400_000)
    small = noise_removed_per_byte(rows, "small", INT4, INT8, baseline_bytes=400_000)
    assert big == pytest.approx((1e-3 - 10**-3.3) / 16_000) and small == pytest.approx((10**-3.5 - 1e-6) / 9_000)
    assert small > big  # the noisier layer is not the better raise: it costs more bytes for less
    to_float = noise_removed_per_byte(rows, "small", INT8, FLOAT, baseline_bytes=400_000)
    assert to_float == pytest.approx(1e-6 / 291_000)


def test_mixed_recipe_names_each_layer_exactly_and_leaves_float_layers_out() -> None:
    recipe = mixed_recipe({"m/conv;": INT4, "m/fc(1);": FLOAT}, 64)
    assert [(entry.scope, entry.precision, entry.block_size) for entry in recipe] == [
        (".*", FLOAT, 32), (r"^m/conv;$", INT4, 64)]  # fmt: skip


def test_sensitivity_error_is_the_worst_output_snr_and_the_worst_classifier_agreement() -> None:
    reference = {
        "value": np.array([[3.0], [4.0]]),  # regression
        "pitch": np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]]),  # multiclass
        "tags": np.array([[0.9, 0.2], [0.4, 0.8]]),  # multilabel: decisions at 0.5
    }
    tasks = {"value": "regression", "pitch": "multiclass", "tags": "multilabel"}
    assert worst_output_error(reference, reference, tasks) == (200.0, 1.0)  # identical: the SNR cap
    measured = {
        "value": reference["value"] + np.array([[0.3], [0.4]]),  # 20 dB
        "pitch": np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]]),  # second sample's class changed: 50 %
        "tags": np.array([[0.9, 0.2], [0.6, 0.8]]),  # one of four decisions changed: 75 %
    }
    snr, agreement = worst_output_error(reference, measured, tasks)
    assert snr == pytest.approx(10 * np.log10(sum(np.square(reference["pitch"]).flat) / 0.18), abs=1e-3)
    assert snr < 20.0 and agreement == 0.5
    regression_only = worst_output_error({"value": reference["value"]}, {"value": measured["value"]}, tasks)
    assert regression_only == (pytest.approx(20.0), None)


def candidate(name: str, size: int, latency: float, passed: bool, *, agreement: float = 1.0) -> SearchCandidate:
    gate = GateResult(name="maxAccuracyDrop", passed=passed, actual=round(1 - agreement, 4), limit=0.01,
                      reason="top-1 disagreement")  # fmt: skip
    return SearchCandidate(name=name, kind="wholeModel", recipe=[], size_bytes=size, size_ratio=size / 1000,
                           latency_ratio=latency, gates=[gate], passed=passed)  # fmt: skip


CANDIDATES = [
    candidate("dynamic", 260, 2.4, True),
    candidate("float16", 500, 1.0, True),
    candidate("weightOnlyInt8", 262, 0.9, True),
    candidate("mixed-1", 140, 1.2, False, agreement=0.95),
]


@pytest.mark.parametrize(
    ("objective", "winner"),
    [(SearchObjective.SIZE, "dynamic"), (SearchObjective.LATENCY, "weightOnlyInt8"),
     (SearchObjective.BALANCED, "weightOnlyInt8")],
)  # fmt: skip
def test_the_pick_is_the_best_passing_candidate_by_objective(objective: SearchObjective, winner: str) -> None:
    decided, chosen = decide(CANDIDATES, objective)
    assert decided[chosen].name == winner and decided[chosen].chosen and decided[chosen].lost_because is None
    assert all(found.lost_because for index, found in enumerate(decided) if index != chosen)
    assert decided[3].lost_because.startswith("failed maxAccuracyDrop")


def test_why_a_passing_candidate_lost_names_the_objective() -> None:
    decided, _ = decide(CANDIDATES, SearchObjective.SIZE)
    assert decided[2].lost_because == "262 bytes, more than the pick's 260"
    decided, _ = decide(CANDIDATES, SearchObjective.BALANCED)
    assert "balanced score" in (decided[0].lost_because or "")


def test_with_none_passing_the_closest_candidate_is_the_result() -> None:
    failing = [
        candidate("int4", 100, 1.0, False, agreement=0.80),
        candidate("int8", 250, 1.0, False, agreement=0.985),
        candidate("float16", 500, 1.0, False, agreement=0.97),
    ]
    decided, chosen = decide(failing, SearchObjective.SIZE)
    assert decided[chosen].name == "int8"
    assert (decided[chosen].lost_because or "").startswith("no candidate passed")


def spec(steps: list[dict[str, Any]], gates: dict[str, Any] | None = None) -> Any:
    document: dict[str, Any] = {"model": {"uri": "/m.tflite", "format": "tflite"}, "steps": steps,
                                "output": {"uri": "/out"}}  # fmt: skip
    if gates is not None:
        document["gates"] = gates
    return parse_spec(document)


def test_auto_is_the_only_step_and_needs_a_quality_gate() -> None:
    found = spec([{"type": "auto", "objective": "balanced"}], {"maxAccuracyDrop": 0.01})
    assert found.steps[0].objective == "balanced" and found.steps[0].precisions[0] == "weightOnlyInt4"
    with pytest.raises(SpecError, match=r"spec\.steps: an auto step must be the only step"):
        spec([{"type": "auto"}, {"type": "ptq", "mode": "dynamic"}], {"maxAccuracyDrop": 0.01})
    with pytest.raises(
        SpecError, match=r"spec\.gates: an auto step needs a quality gate \(maxAccuracyDrop, minFidelity, minSnrDb\)"
    ):
        spec([{"type": "auto"}], {"minSizeReduction": 0.5})
    for gate, limit in (("minFidelity", 0.98), ("minSnrDb", 25.0)):
        assert spec([{"type": "auto"}], {gate: limit, "minSizeReduction": 0.5}).gates.model_dump(by_alias=True)[gate]
    with pytest.raises(SpecError, match=r"spec\.steps\[0\]\.precisions\[0\]: Input should be"):
        spec([{"type": "auto", "precisions": ["int2"]}], {"maxAccuracyDrop": 0.01})


def test_latency_ratio_gate_judges_the_interleaved_ratio() -> None:
    from edgecompress_contract.report import Comparison

    def comparison(speedup: float) -> Comparison:
        return Comparison(size_reduction=0.7, compression_ratio=3.3, gzip_size_reduction=0.7, latency_speedup=speedup)

    slower = latency_ratio_gate(1.0, comparison(0.8))
    assert (slower.name, slower.passed, slower.actual, slower.limit) == ("maxLatencyRatio", False, 1.25, 1.0)
    assert "1.250x the baseline's" in slower.reason and "over the allowed 1x" in slower.reason
    assert latency_ratio_gate(1.0, comparison(1.0)).passed and latency_ratio_gate(1.5, comparison(0.8)).passed

    def rounds(median: float, fastest: float) -> Comparison:
        return comparison(median).model_copy(
            update={
                "latency_speedup_min": min(median, fastest) - 0.02,
                "latency_speedup_max": fastest,
                "latency_rounds": 5,
            }
        )

    noise = latency_ratio_gate(1.0, rounds(0.96, 1.02))
    assert noise.passed and noise.actual == 1.042 and "within the allowed 1x plus 5% for timing noise" in noise.reason
    one_fast_round = latency_ratio_gate(2.0, rounds(0.36, 0.55))
    assert not one_fast_round.passed and one_fast_round.actual == 2.778
    assert "1.818-2.941x over 5 rounds" in one_fast_round.reason and "over the allowed 2x" in one_fast_round.reason
    edge = latency_ratio_gate(2.0, comparison(1 / 2.1))
    assert edge.passed and edge.actual == 2.1 and not latency_ratio_gate(2.0, comparison(1 / 2.11)).passed


def test_raising_helps_only_against_a_failed_gate_it_can_move() -> None:
    def verdict(name: str, passed: bool, actual: float | None) -> GateResult:
        return GateResult(name=name, passed=passed, actual=actual, limit=30.0, reason="")

    assert raising_may_help([verdict("minSnrDb", False, 28.5)])
    assert raising_may_help([verdict("minFidelity", False, 0.95), verdict("minSnrDb", True, 40.0)])
    assert not raising_may_help([verdict("minSizeReduction", False, 0.5), verdict("minSnrDb", True, 40.0)])
    # No classifier output: minFidelity cannot be measured, so no precision can make it pass.
    assert not raising_may_help([verdict("minFidelity", False, None)])
