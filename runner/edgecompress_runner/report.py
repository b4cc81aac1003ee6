"""What the run report records of its environment, and the table printed at the end of a run.

report.json itself is the contract's typed ``Report`` and the operator's summary its ``RunSummary``.
"""

from __future__ import annotations

import platform
from importlib import metadata

from edgecompress_contract.report import AutoReport, ClusterReport, PruneReport, QatReport, Report


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in (
        "tensorflow",
        "tf-keras",
        "tensorflow-model-optimization",
        "ai-edge-litert",
        "litert-quantizer",
        "edgecompress",
    ):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def _output_rows(report: Report) -> list[tuple[str, str, str]]:
    """Per output: accuracy (or error to the labels), agreement, SNR; one output's rows are not prefixed."""
    baseline = {output.name: output for output in report.baseline.outputs}
    several = len(report.result.outputs) > 1
    rows = []
    for output in report.result.outputs:
        base = baseline.get(output.name)
        prefix = f"{output.name} ({output.task}) " if several else ""
        if base is not None and base.accuracy is not None:
            accuracy = output.accuracy if output.accuracy is not None else float("nan")
            rows.append((f"{prefix}accuracy", f"{base.accuracy:.4f}", f"{accuracy:.4f}"))
        if base is not None and base.label_mean_abs_error is not None and output.label_mean_abs_error is not None:
            rows.append(
                (f"{prefix}MAE to labels", f"{base.label_mean_abs_error:.4g}", f"{output.label_mean_abs_error:.4g}")
            )
        if output.agreement is not None:
            rows.append(
                (f"{prefix}{'agreement' if several else 'top-1 agreement'}", "1.0000", f"{output.agreement:.4f}")
            )
        if output.snr_db is not None:
            rows.append((f"{prefix}SNR", "", f"{output.snr_db:.1f} dB"))
    return rows


def summary_rows(report: Report) -> list[tuple[str, str, str]]:
    """The baseline against the result, as text: a header row, then one row per number (the table and the page)."""
    base, result = report.baseline, report.result
    rows = [("", "baseline (float)", f"result ({report.conversion.mode})")]
    rows.append(("size", f"{base.size_bytes:,} B", f"{result.size_bytes:,} B"))
    rows.append(("gzip size", f"{base.gzip_bytes:,} B", f"{result.gzip_bytes:,} B"))
    rows.extend(_output_rows(report))
    rows.append(("latency p50", f"{base.latency_p50_ms:.3f} ms", f"{result.latency_p50_ms:.3f} ms"))
    rows.append(("latency p95", f"{base.latency_p95_ms:.3f} ms", f"{result.latency_p95_ms:.3f} ms"))
    if base.peak_memory_bytes is not None and result.peak_memory_bytes is not None:
        rows.append(("peak memory", f"{base.peak_memory_bytes:,} B", f"{result.peak_memory_bytes:,} B"))
    return rows


def summary_table(report: Report) -> str:
    """A short human-readable table printed at the end of a run."""
    rows = summary_rows(report)
    width = [max(len(row[column]) for row in rows) for column in range(3)]
    lines = ["  ".join(cell.ljust(width[column]) for column, cell in enumerate(row)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in width))
    for step in report.steps:
        detail = ""
        if isinstance(step, PruneReport | ClusterReport | QatReport) and step.sparsity is not None:
            detail = f"sparsity {step.sparsity.overall:.1%}"
        if isinstance(step, ClusterReport):
            detail += f" clusters<= {max(step.unique_weights.values(), default=0)}"
        if isinstance(step, AutoReport):
            detail = f"picked {step.chosen} of {len(step.candidates)}"
        lines.append(f"step {step.type:<8} {detail.strip():<28} {step.seconds:>7.1f} s")
    lines.append(f"speed path: {report.conversion.speed_path}")
    for gate in report.gates:
        lines.append(f"gate {gate.name}: {'PASS' if gate.passed else 'FAIL'} ({gate.reason})")
    lines.append(f"result: {'PASSED' if report.gates_passed else 'GATES FAILED'} -> {report.outputs.tflite.uri}")
    promotion = report.promotion
    if promotion is not None:
        lines.append(f"promoted -> {promotion.uri}" if promotion.promoted else f"NOT PROMOTED: {promotion.message}")
    return "\n".join(lines)
