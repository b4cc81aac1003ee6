"""Pass/fail gates comparing the result with the float baseline. Pure functions, no I/O."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from edgecompress_contract.spec import Gates

from .evaluate import Metrics


@dataclass(frozen=True)
class GateResult:
    name: str
    passed: bool
    actual: float | None
    limit: float
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def accuracy_drop(baseline: Metrics, result: Metrics) -> tuple[float, str] | None:
    """Accuracy points lost; with no labels, the share of top-1 answers that changed."""
    if baseline.accuracy is not None and result.accuracy is not None:
        return baseline.accuracy - result.accuracy, "accuracy"
    if result.top1_agreement is not None:
        return 1.0 - result.top1_agreement, "top-1 disagreement with the baseline"
    return None


def size_reduction(baseline: Metrics, result: Metrics, basis: str) -> float:
    before, after = (
        (baseline.gzip_bytes, result.gzip_bytes) if basis == "gzip" else (baseline.size_bytes, result.size_bytes)
    )
    return 1.0 - after / before


def evaluate_gates(gates: Gates, baseline: Metrics, result: Metrics) -> list[GateResult]:
    results: list[GateResult] = []
    if gates.max_accuracy_drop is not None:
        measured = accuracy_drop(baseline, result)
        if measured is None:
            results.append(
                GateResult(
                    "maxAccuracyDrop",
                    False,
                    None,
                    gates.max_accuracy_drop,
                    "no accuracy or top-1 agreement could be measured (the model is not a classifier)",
                )
            )
        else:
            drop, what = measured
            passed = drop <= gates.max_accuracy_drop + 1e-9
            results.append(
                GateResult(
                    "maxAccuracyDrop",
                    passed,
                    round(drop, 5),
                    gates.max_accuracy_drop,
                    f"{what} dropped by {drop:.2%}, {'within' if passed else 'over'} the allowed "
                    f"{gates.max_accuracy_drop:.2%}",
                )
            )
    if gates.min_size_reduction is not None:
        reduction = size_reduction(baseline, result, gates.size_basis)
        passed = reduction >= gates.min_size_reduction
        results.append(
            GateResult(
                "minSizeReduction",
                passed,
                round(reduction, 5),
                gates.min_size_reduction,
                f"{gates.size_basis} size reduced by {reduction:.1%}, "
                f"{'meeting' if passed else 'short of'} the required {gates.min_size_reduction:.1%}",
            )
        )
    if gates.max_latency_ms is not None:
        latency = result.latency_p50_ms
        passed = latency <= gates.max_latency_ms
        results.append(
            GateResult(
                "maxLatencyMs",
                passed,
                latency,
                gates.max_latency_ms,
                f"median latency {latency:.3f} ms, {'within' if passed else 'over'} the limit "
                f"{gates.max_latency_ms:g} ms",
            )
        )
    return results
