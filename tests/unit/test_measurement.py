"""Honest measurement without TensorFlow: interleaved timing with a fake clock, the speed-up from paired rounds,
and a speed path that follows the measured ratio."""

from __future__ import annotations

import pytest

from edgecompress_contract.report import Comparison, ConversionReport, MacShare, Metrics
from edgecompress_runner.evaluate import LatencyStats, interleave
from edgecompress_runner.kernels import speed_path


class FakeDevice:
    """A clock that only moves when a model runs, each model taking its own (possibly changing) time."""

    def __init__(self, costs: dict[str, list[float]]) -> None:
        self.now = 0.0
        self.costs = costs
        self.calls: list[str] = []

    def clock(self) -> float:
        return self.now

    def invoker(self, name: str):  # type: ignore[no-untyped-def]
        def invoke() -> None:
            costs = self.costs[name]
            self.now += costs[min(len(self.calls), len(costs) - 1)] / 1000.0
            self.calls.append(name)

        return invoke


def runs(calls: list[str]) -> list[tuple[str, int]]:
    """Run-length encoding: [('A', 3), ('B', 3), ...]."""
    blocks: list[tuple[str, int]] = []
    for name in calls:
        if blocks and blocks[-1][0] == name:
            blocks[-1] = (name, blocks[-1][1] + 1)
        else:
            blocks.append((name, 1))
    return blocks


def test_interleave_alternates_the_models_and_spreads_the_runs_over_rounds() -> None:
    device = FakeDevice({"A": [2.0], "B": [1.0]})
    timings = interleave([device.invoker("A"), device.invoker("B")], runs=10, warmup=2, rounds=4, clock=device.clock)
    # Warm-up alternates A B A B; then rounds of 3, 3, 2, 2 runs each, the order flipping every round.
    assert device.calls[:4] == ["A", "B", "A", "B"]
    assert runs(device.calls[4:]) == [("A", 3), ("B", 6), ("A", 5), ("B", 4), ("A", 2)]
    assert [len(model_round) for model_round in timings[0]] == [3, 3, 2, 2]
    assert sum(map(len, timings[1])) == 10
    assert all(value == pytest.approx(2.0) for model_round in timings[0] for value in model_round)
    assert all(value == pytest.approx(1.0) for model_round in timings[1] for value in model_round)


def test_interleave_never_runs_more_rounds_than_runs() -> None:
    device = FakeDevice({"A": [1.0], "B": [1.0]})
    timings = interleave([device.invoker("A"), device.invoker("B")], runs=2, warmup=0, rounds=5, clock=device.clock)
    assert [len(model_rounds) for model_rounds in timings] == [2, 2]
    assert device.calls == ["A", "B", "B", "A"]


def test_load_that_hits_both_models_alike_cancels_out_of_the_speed_up() -> None:
    # The machine gets 3x slower half-way through; the result is 2x faster throughout. Timed one after
    # the other, the result would look slower; interleaved, every round's ratio is 2.
    device = FakeDevice({"A": [2.0], "B": [1.0]})
    slow_after = 20

    def loaded(name: str):  # type: ignore[no-untyped-def]
        invoke = device.invoker(name)

        def run() -> None:
            before = device.now
            invoke()
            if len(device.calls) > slow_after:
                device.now += 2 * (device.now - before)

        return run

    timings = interleave([loaded("A"), loaded("B")], runs=20, warmup=0, rounds=4, clock=device.clock)
    baseline, result = (LatencyStats.of(model_rounds) for model_rounds in timings)
    assert baseline.rounds_ms[0] == pytest.approx(2.0) and baseline.rounds_ms[-1] == pytest.approx(6.0)
    comparison = Comparison.between(metrics(baseline), metrics(result))
    assert comparison.latency_speedup == pytest.approx(2.0)
    assert comparison.latency_rounds == 4
    assert comparison.latency_speedup_min == comparison.latency_speedup_max == pytest.approx(2.0)


def metrics(stats: LatencyStats) -> Metrics:
    return Metrics(
        size_bytes=1000,
        gzip_bytes=900,
        latency_p50_ms=stats.p50_ms,
        latency_p95_ms=stats.p95_ms,
        latency_iqr_ms=stats.iqr_ms,
        latency_rounds_ms=stats.rounds_ms,
    )


def timed(p50: float, rounds: list[float]) -> Metrics:
    return Metrics(size_bytes=1000, gzip_bytes=900, latency_p50_ms=p50, latency_p95_ms=p50, latency_rounds_ms=rounds)


def test_speed_up_is_the_median_of_per_round_ratios() -> None:
    comparison = Comparison.between(timed(2.0, [2.0, 4.0, 2.0]), timed(1.0, [1.0, 1.0, 2.0]))
    assert comparison.latency_speedup == pytest.approx(2.0)
    assert (comparison.latency_speedup_min, comparison.latency_speedup_max) == (1.0, 4.0)
    assert comparison.latency_rounds == 3


def test_speed_up_without_rounds_falls_back_to_the_medians() -> None:
    comparison = Comparison.between(timed(3.0, []), timed(1.5, []))
    assert comparison.latency_speedup == pytest.approx(2.0)
    assert comparison.latency_rounds is None and comparison.latency_speedup_min is None


def conversion(mode: str, share: MacShare, sparse: bool = False) -> ConversionReport:
    return ConversionReport(mode=mode, speed_path="", sparse_encoding=sparse, macs=1000, mac_share=share)


def measured(ratio: float) -> Comparison:
    return Comparison.between(timed(ratio, [ratio] * 5), timed(1.0, [1.0] * 5))


@pytest.mark.parametrize("ratio", [0.52, 0.77, 0.94, 0.99, 1.0, 1.04, 1.14, 1.8, 3.0])
def test_speed_path_follows_the_measured_ratio(ratio: float) -> None:
    text = speed_path(conversion("int8", MacShare(int8=0.92, float32=0.08)), measured(ratio))
    assert text.startswith("MACs: 92% in int8 kernels, 8% in float32 kernels")
    assert "5 interleaved rounds" in text
    assert ("faster" in text) == (ratio > 1.05)
    assert ("slower" in text) == (ratio < 1 / 1.05)
    if ratio > 1.05:
        assert f"{ratio:.2f}x faster" in text
    if ratio < 1 / 1.05:
        assert f"{1 / ratio:.2f}x slower" in text


def test_a_float16_result_that_is_not_faster_is_not_called_faster() -> None:
    text = speed_path(conversion("float16", MacShare(float16=1.0)), measured(0.99))
    assert "faster" not in text and "about as fast" in text
    assert "100% in float32 kernels on float16 weights" in text


def test_speed_path_names_sparse_weights_and_says_when_speed_is_unmeasured() -> None:
    text = speed_path(conversion("float", MacShare(float32=1.0), sparse=True))
    assert "XNNPACK sparse inference" in text and text.endswith("speed not measured")


def test_speed_path_lists_kernels_by_share_and_never_rounds_a_share_to_zero() -> None:
    text = speed_path(conversion("dynamic", MacShare(hybrid=0.75, float32=0.249, int8=0.001)), measured(1.5))
    assert text.startswith(
        "MACs: 75% in hybrid kernels (int8 weights, float activations), 25% in float32 kernels, <1% in int8 kernels;"
    )
