"""Pass/fail gates comparing the result with the float baseline. Pure functions, no I/O.

The gates judge the numbers of the report's ``Comparison`` (computed once, in the contract), so the
report, the summary and the verdicts can never disagree. A model with several outputs is judged by its
worst output; every output's number is in the gate's reason.
"""

from __future__ import annotations

from edgecompress_contract.report import Comparison, GateResult, Metrics, OutputComparison
from edgecompress_contract.spec import Gates

__all__ = ["GateResult", "accuracy_drop", "evaluate_gates", "judge", "size_reduction"]


def _output_drop(output: OutputComparison) -> tuple[float, str] | None:
    if output.accuracy_drop is not None:
        return output.accuracy_drop, "accuracy"
    if output.agreement is not None:
        return 1.0 - output.agreement, "agreement with the baseline"
    return None


def accuracy_drop(comparison: Comparison) -> tuple[float, str] | None:
    """Accuracy points lost by the worst classifier output; unlabelled, the share of its answers that changed."""
    if len(comparison.outputs) > 1:
        drops = {
            output.name: found
            for output in comparison.outputs
            if output.classifier and (found := _output_drop(output)) is not None
        }
        if not drops:
            return None
        worst = max(drops, key=lambda name: drops[name][0])
        every = _each({name: drop for name, (drop, _) in drops.items()}, ".2%")
        return drops[worst][0], f"{drops[worst][1]} of output {worst!r}{every}"
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


def _each(values: dict[str, float], shown: str) -> str:
    """Every output's value, when there are several."""
    if len(values) < 2:
        return ""
    return " (" + ", ".join(f"{name} {value:{shown}}" for name, value in values.items()) + ")"


def _at_least(
    name: str, limit: float, values: dict[str, float], *, several: bool, what: str, shown: str, missing: str
) -> GateResult:
    """The verdict of a lower limit on the worst of ``values`` (by output name); ``missing`` when there is none."""
    if not values:
        return GateResult(name=name, passed=False, actual=None, limit=limit, reason=missing)
    worst = min(values, key=lambda output: values[output])
    value = values[worst]
    passed = value >= limit - 1e-9
    which = f" of output {worst!r}" if several else ""
    reason = (
        f"{what}{which} {value:{shown}}{_each(values, shown)}, "
        f"{'meeting' if passed else 'short of'} the required {limit:{shown}}"
    )
    return GateResult(name=name, passed=passed, actual=round(value, 5), limit=limit, reason=reason)


def _min_fidelity(limit: float, comparison: Comparison) -> GateResult:
    agreements = {
        output.name: output.agreement
        for output in comparison.outputs
        if output.classifier and output.agreement is not None
    }
    if not comparison.outputs and comparison.top1_agreement is not None:
        agreements = {"output": comparison.top1_agreement}
    return _at_least(
        "minFidelity",
        limit,
        agreements,
        several=len(comparison.outputs) > 1,
        what="agreement with the baseline",
        shown=".2%",
        missing="no output is a classifier, so no agreement could be measured (use minSnrDb for other outputs)",
    )


def _min_snr(limit: float, comparison: Comparison) -> GateResult:
    ratios = {output.name: output.snr_db for output in comparison.outputs if output.snr_db is not None}
    if not comparison.outputs and comparison.snr_db is not None:
        ratios = {"output": comparison.snr_db}
    return _at_least(
        "minSnrDb",
        limit,
        ratios,
        several=len(comparison.outputs) > 1,
        what="signal-to-noise ratio (dB)",
        shown=".2f",
        missing="no signal-to-noise ratio could be measured",
    )


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
    if gates.min_fidelity is not None:
        results.append(_min_fidelity(gates.min_fidelity, comparison))
    if gates.min_snr_db is not None:
        results.append(_min_snr(gates.min_snr_db, comparison))
    return results
