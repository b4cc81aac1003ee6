from __future__ import annotations

import pytest

from edgecompress_contract.spec import Gates
from edgecompress_runner.evaluate import Metrics
from edgecompress_runner.gates import evaluate_gates


def metrics(
    size: int, accuracy: float | None = None, agreement: float | None = None, p50: float = 1.0, gzip: int | None = None
) -> Metrics:
    return Metrics(
        size_bytes=size,
        gzip_bytes=gzip or size,
        latency_p50_ms=p50,
        latency_p95_ms=p50 * 2,
        peak_memory_bytes=None,
        accuracy=accuracy,
        top1_agreement=agreement,
    )


BASE = metrics(1000, accuracy=0.95, p50=2.0, gzip=900)


@pytest.mark.parametrize(
    ("gates", "result", "expected"),
    [
        (Gates(max_accuracy_drop=0.02), metrics(250, accuracy=0.94), {"maxAccuracyDrop": True}),
        (Gates(max_accuracy_drop=0.02), metrics(250, accuracy=0.92), {"maxAccuracyDrop": False}),
        (Gates(max_accuracy_drop=0.01), metrics(250, accuracy=0.94), {"maxAccuracyDrop": True}),
        (Gates(min_size_reduction=0.75), metrics(250, accuracy=0.95), {"minSizeReduction": True}),
        (Gates(min_size_reduction=0.75), metrics(251, accuracy=0.95), {"minSizeReduction": False}),
        (Gates(min_size_reduction=0.5, size_basis="gzip"), metrics(1000, gzip=400), {"minSizeReduction": True}),
        (Gates(min_size_reduction=0.5, size_basis="gzip"), metrics(400, gzip=600), {"minSizeReduction": False}),
        (Gates(max_latency_ms=1.5), metrics(250, p50=1.5), {"maxLatencyMs": True}),
        (Gates(max_latency_ms=1.5), metrics(250, p50=1.6), {"maxLatencyMs": False}),
        (Gates(), metrics(2000), {}),
        (
            Gates(max_accuracy_drop=0.05, min_size_reduction=0.5, max_latency_ms=10),
            metrics(100, accuracy=0.5),
            {"maxAccuracyDrop": False, "minSizeReduction": True, "maxLatencyMs": True},
        ),
    ],
)
def test_gate_outcomes(gates: Gates, result: Metrics, expected: dict[str, bool]) -> None:
    outcome = {gate.name: gate.passed for gate in evaluate_gates(gates, BASE, result)}
    assert outcome == expected


def test_fidelity_is_used_without_labels() -> None:
    base = metrics(1000)
    [gate] = evaluate_gates(Gates(max_accuracy_drop=0.05), base, metrics(300, agreement=0.9))
    assert not gate.passed and gate.actual == pytest.approx(0.1)
    assert "top-1 disagreement" in gate.reason


def test_accuracy_gate_fails_when_nothing_can_be_measured() -> None:
    [gate] = evaluate_gates(Gates(max_accuracy_drop=0.05), metrics(1000), metrics(300))
    assert not gate.passed and gate.actual is None and "not a classifier" in gate.reason


def test_reasons_name_the_numbers() -> None:
    [gate] = evaluate_gates(Gates(min_size_reduction=0.8), BASE, metrics(300, accuracy=0.95))
    assert gate.reason == "bytes size reduced by 70.0%, short of the required 80.0%"
