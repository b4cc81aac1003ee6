"""Pass/fail gates comparing the result with the float baseline. Pure functions, no I/O.

The gates judge the numbers of the report's ``Comparison`` (computed once, in the contract), so the
report, the summary and the verdicts can never disagree.
"""

from __future__ import annotations

from edgecompress_contract.report import Comparison, GateResult, Metrics
from edgecompress_contract.spec import Gates

__all__ = ["GateResult", "accuracy_drop", "evaluate_gates", "judge", "size_reduction"]


def accuracy_drop(comparison: Comparison) -> tuple[float, str] | None:
    """Accuracy points lost; with no labels, the share of top-1 answers that changed."""
    if comparison.accuracy_drop is not None:
        return comparison.accuracy_drop, "accuracy"
    if comparison.top1_agreement is not None:
        return 1.0 - comparison.top1_agreement, "top-1 disagreement with the baseline"
    return None


def size_reduction(comparison: Comparison, basis: str) -> float:
    return comparison.gzip_size_reduction if basis == "gzip" else comparison.size_reduction


def evaluate_gates(gates: Gates, baseline: Metrics, result: Metrics) -> list[GateResult]:
    """The verdicts for a result measured against its baseline."""
    return judge(gates, Comparison.between(baseline, result), result)


def judge(gates: Gates, comparison: Comparison, result: Metrics) -> list[GateResult]:
    """Every set gate's verdict on ``comparison`` (and the result's own median latency, timed interleaved)."""
    results: list[GateResult] = []
    if gates.max_accuracy_drop is not None:
        limit = gates.max_accuracy_drop
        measured = accuracy_drop(comparison)
        if measured is None:
            reason = "no accuracy or top-1 agreement could be measured (the model is not a classifier)"
            results.append(GateResult(name="maxAccuracyDrop", passed=False, actual=None, limit=limit, reason=reason))
        else:
            drop, what = measured
            passed = drop <= limit + 1e-9
            reason = f"{what} dropped by {drop:.2%}, {'within' if passed else 'over'} the allowed {limit:.2%}"
            results.append(
                GateResult(name="maxAccuracyDrop", passed=passed, actual=round(drop, 5), limit=limit, reason=reason)
            )
    if gates.min_size_reduction is not None:
        limit = gates.min_size_reduction
        reduction = size_reduction(comparison, gates.size_basis)
        passed = reduction >= limit
        reason = (
            f"{gates.size_basis} size reduced by {reduction:.1%}, "
            f"{'meeting' if passed else 'short of'} the required {limit:.1%}"
        )
        results.append(
            GateResult(name="minSizeReduction", passed=passed, actual=round(reduction, 5), limit=limit, reason=reason)
        )
    if gates.max_latency_ms is not None:
        limit = gates.max_latency_ms
        latency = result.latency_p50_ms
        passed = latency <= limit
        how = " (timed interleaved with the baseline)" if result.latency_rounds_ms else ""
        reason = f"median latency {latency:.3f} ms{how}, {'within' if passed else 'over'} the limit {limit:g} ms"
        results.append(GateResult(name="maxLatencyMs", passed=passed, actual=latency, limit=limit, reason=reason))
    return results
