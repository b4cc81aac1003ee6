"""The run report (report.json), the compact summary for the operator, and the printed table."""

from __future__ import annotations

import json
import platform
from importlib import metadata
from typing import Any

from .errors import ExitCode

SUMMARY_LIMIT_BYTES = 4096


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("tensorflow", "tf-keras", "tensorflow-model-optimization", "ai-edge-litert", "edgecompress"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def comparison(baseline: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    compared: dict[str, Any] = {
        "sizeReduction": round(1 - result["size_bytes"] / baseline["size_bytes"], 4),
        "compressionRatio": round(baseline["size_bytes"] / result["size_bytes"], 3),
        "gzipSizeReduction": round(1 - result["gzip_bytes"] / baseline["gzip_bytes"], 4),
        "latencySpeedup": round(baseline["latency_p50_ms"] / max(result["latency_p50_ms"], 1e-9), 3),
    }
    if "accuracy" in baseline and "accuracy" in result:
        compared["accuracyDrop"] = round(baseline["accuracy"] - result["accuracy"], 4)
    if "top1_agreement" in result:
        compared["top1Agreement"] = result["top1_agreement"]
    return compared


def summary_from_report(report: dict[str, Any], report_uri: str, report_sha256: str) -> dict[str, Any]:
    """The compact result the operator reads from the pod's termination message."""
    passed = report["gatesPassed"]
    promotion = report.get("promotion")
    if passed and promotion is not None and not promotion["promoted"]:
        result, code, message = "Failed", ExitCode.INVALID_INPUT, promotion["message"]
    elif passed:
        result, code = "Succeeded", ExitCode.SUCCEEDED
        message = "all gates passed" + (f"; promoted to {promotion['uri']}" if promotion else "")
    else:
        result, code = "GatesFailed", ExitCode.GATES_FAILED
        message = "; ".join(gate["reason"] for gate in report["gates"] if not gate["passed"])
    summary = {
        "result": result,
        "exitCode": int(code),
        "message": message,
        "baseline": _compact(report["baseline"]),
        "output": _compact(report["result"]),
        "comparison": report["comparison"],
        "mode": report["conversion"]["mode"],
        "gates": [
            {"name": gate["name"], "passed": gate["passed"], "actual": gate["actual"]} for gate in report["gates"]
        ],
        "gatesPassed": passed,
        "artifacts": {
            "tflite": report["outputs"]["tflite"],
            "report": {"uri": report_uri, "sha256": report_sha256},
        },
    }
    if promotion is not None:
        summary["promotion"] = {
            key: promotion[key] for key in ("uri", "promoted", "sha256", "reason") if key in promotion
        }
        if not promotion["promoted"]:
            summary["reason"] = promotion["reason"]
    return fit_summary(summary)


def failure_summary(exit_code: ExitCode, reason: str, message: str) -> dict[str, Any]:
    return fit_summary({"result": "Failed", "exitCode": int(exit_code), "reason": reason, "message": message})


def fit_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """Shortens the message until the JSON fits the termination-message limit."""
    while len(json.dumps(summary).encode()) > SUMMARY_LIMIT_BYTES:
        message = summary.get("message", "")
        if len(message) > 40:
            summary["message"] = message[: len(message) // 2] + "..."
        elif "comparison" in summary:
            summary.pop("comparison")
        else:
            summary.pop("baseline", None)
            summary.pop("output", None)
            break
    return summary


_COMPACT_NAMES = {
    "size_bytes": "sizeBytes",
    "gzip_bytes": "gzipBytes",
    "accuracy": "accuracy",
    "top1_agreement": "top1Agreement",
    "latency_p50_ms": "latencyP50Ms",
    "latency_p95_ms": "latencyP95Ms",
}


def _compact(metrics: dict[str, Any]) -> dict[str, Any]:
    return {name: metrics[key] for key, name in _COMPACT_NAMES.items() if key in metrics}


def summary_table(report: dict[str, Any]) -> str:
    """A short human-readable table printed at the end of a run."""
    base, result = report["baseline"], report["result"]
    rows = [("", "baseline (float)", f"result ({report['conversion']['mode']})")]
    rows.append(("size", f"{base['size_bytes']:,} B", f"{result['size_bytes']:,} B"))
    rows.append(("gzip size", f"{base['gzip_bytes']:,} B", f"{result['gzip_bytes']:,} B"))
    if "accuracy" in base:
        rows.append(("accuracy", f"{base['accuracy']:.4f}", f"{result.get('accuracy', float('nan')):.4f}"))
    if "top1_agreement" in result:
        rows.append(("top-1 agreement", "1.0000", f"{result['top1_agreement']:.4f}"))
    rows.append(("latency p50", f"{base['latency_p50_ms']:.3f} ms", f"{result['latency_p50_ms']:.3f} ms"))
    rows.append(("latency p95", f"{base['latency_p95_ms']:.3f} ms", f"{result['latency_p95_ms']:.3f} ms"))
    if base.get("peak_memory_bytes") is not None and result.get("peak_memory_bytes") is not None:
        rows.append(("peak memory", f"{base['peak_memory_bytes']:,} B", f"{result['peak_memory_bytes']:,} B"))
    width = [max(len(row[column]) for row in rows) for column in range(3)]
    lines = ["  ".join(cell.ljust(width[column]) for column, cell in enumerate(row)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in width))
    for step in report["steps"]:
        detail = ""
        if "sparsity" in step:
            detail = f"sparsity {step['sparsity']['overall']:.1%}"
        if "uniqueWeights" in step:
            detail += f" clusters<= {max(step['uniqueWeights'].values(), default=0)}"
        lines.append(f"step {step['type']:<8} {detail.strip():<28} {step.get('seconds', 0):>7.1f} s")
    lines.append(f"speed path: {report['conversion']['speedPath']}")
    for gate in report["gates"]:
        lines.append(f"gate {gate['name']}: {'PASS' if gate['passed'] else 'FAIL'} ({gate['reason']})")
    lines.append(
        f"result: {'PASSED' if report['gatesPassed'] else 'GATES FAILED'} -> {report['outputs']['tflite']['uri']}"
    )
    promotion = report.get("promotion")
    if promotion is not None:
        lines.append(
            f"promoted -> {promotion['uri']}" if promotion["promoted"] else f"NOT PROMOTED: {promotion['message']}"
        )
    return "\n".join(lines)
