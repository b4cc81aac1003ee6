"""The compact run result: the runner writes it to the pod's termination message (at most 4 KiB),
the operator copies it into ``status.result``."""

from __future__ import annotations

import json
from typing import Literal

from pydantic import Field

from .exit_codes import ExitCode
from .report import Artifact, CompactMetrics, Comparison, Report
from .wire import Record

SUMMARY_LIMIT_BYTES = 4096
"""Kubernetes keeps at most 4096 bytes of a termination message."""


class GateSummary(Record):
    """One gate's verdict, without its wording."""

    name: str = Field(
        description=(
            "The gate: maxAccuracyDrop, minSizeReduction, maxLatencyMs, minFidelity, minSnrDb, "
            "or an auto step's maxLatencyRatio."
        )
    )
    passed: bool = Field(description="Whether the result meets it.")
    actual: float | None = Field(default=None, description="The measured value.")


class ReportArtifact(Record):
    uri: str = Field(description="Where report.json is.")
    sha256: str = Field(description="SHA-256 of report.json, hex.")


class Artifacts(Record):
    """What the run wrote."""

    tflite: Artifact = Field(description="The compressed model.")
    report: ReportArtifact = Field(description="The full report (report.json).")
    html: Artifact | None = Field(default=None, description="The report as a page (report.html), when it was drawn.")


class PromotionSummary(Record):
    """Where the model was promoted, or why not."""

    uri: str = Field(description="The promoted model's URI.")
    promoted: bool = Field(description="Whether the stable location now holds this run's model.")
    sha256: str | None = Field(default=None, description="SHA-256 of the promoted model.")
    reason: str | None = Field(default=None, description="Why it was not promoted.")


RunResult = Literal["Succeeded", "GatesFailed", "Failed"]


class RunSummary(Record):
    """The runner's result: outcome, exit code, headline numbers and artifacts."""

    result: RunResult = Field(description="Succeeded, GatesFailed or Failed.")
    exit_code: int = Field(
        description=(
            "The runner's exit code: 0, 20 bad input, 21 gates failed, 22 infrastructure, 23 native crash, "
            "1 unexpected; 128 + N when stopped by signal N."
        )
    )
    message: str = Field(default="", description="The outcome in words.")
    reason: str | None = Field(default=None, description="Why it failed, as a CamelCase reason.")
    baseline: CompactMetrics | None = Field(default=None, description="The float baseline .tflite.")
    output: CompactMetrics | None = Field(default=None, description="The compressed .tflite.")
    comparison: Comparison | None = Field(default=None, description="The compressed model against the baseline.")
    mode: str | None = Field(default=None, description="How the result was converted (float, qat, int8, ...).")
    gates: list[GateSummary] | None = Field(default=None, description="Each gate's verdict.")
    gates_passed: bool | None = Field(default=None, description="Whether every gate passed.")
    artifacts: Artifacts | None = Field(default=None, description="The files the run wrote.")
    promotion: PromotionSummary | None = Field(default=None, description="Promotion, when the spec asks for it.")

    @classmethod
    def from_report(cls, report: Report, *, report_uri: str, report_sha256: str) -> RunSummary:
        promotion = report.promotion
        reason = None
        if report.gates_passed and promotion is not None and not promotion.promoted:
            result: RunResult = "Failed"
            code, message, reason = ExitCode.INVALID_INPUT, promotion.message or "", promotion.reason
        elif report.gates_passed:
            result, code = "Succeeded", ExitCode.SUCCEEDED
            message = "all gates passed" + (f"; promoted to {promotion.uri}" if promotion else "")
        else:
            result, code = "GatesFailed", ExitCode.GATES_FAILED
            message = "; ".join(gate.reason for gate in report.gates if not gate.passed)
        summary = cls(
            result=result,
            exit_code=int(code),
            message=message,
            reason=reason,
            baseline=CompactMetrics.of(report.baseline),
            output=CompactMetrics.of(report.result),
            comparison=report.comparison,
            mode=report.conversion.mode,
            gates=[GateSummary(name=gate.name, passed=gate.passed, actual=gate.actual) for gate in report.gates],
            gates_passed=report.gates_passed,
            artifacts=Artifacts(
                tflite=report.outputs.tflite,
                report=ReportArtifact(uri=report_uri, sha256=report_sha256),
                html=report.outputs.html,
            ),
            promotion=None
            if promotion is None
            else PromotionSummary(
                uri=promotion.uri, promoted=promotion.promoted, sha256=promotion.sha256, reason=promotion.reason
            ),
        )
        return summary.fitted()

    @classmethod
    def failure(cls, exit_code: int, reason: str, message: str) -> RunSummary:
        return cls(result="Failed", exit_code=int(exit_code), reason=reason, message=message).fitted()

    def encoded(self) -> bytes:
        return json.dumps(self.to_wire(), separators=(",", ":")).encode()

    def fitted(self) -> RunSummary:
        """Shortens the message, then drops detail, until it fits a termination message."""
        summary = self
        while len(summary.encoded()) > SUMMARY_LIMIT_BYTES:
            if len(summary.message) > 40:
                summary = summary.model_copy(update={"message": summary.message[: len(summary.message) // 2] + "..."})
            elif summary.comparison is not None and summary.comparison.outputs:
                summary = summary.model_copy(
                    update={"comparison": summary.comparison.model_copy(update={"outputs": []})}
                )
            elif summary.comparison is not None:
                summary = summary.model_copy(update={"comparison": None})
            else:
                return summary.model_copy(update={"baseline": None, "output": None})
        return summary
