"""report.json: what a run did and measured, written by the runner next to the .tflite (last, so its
presence means the run finished)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from .spec import API_GROUP, API_VERSION, CompressionJobSpec
from .wire import Record

REPORT_KIND = "CompressionReport"


class Artifact(Record):
    """A file the run read or wrote."""

    uri: str = Field(description="Where the file is.")
    sha256: str = Field(description="SHA-256 of its bytes, hex.")
    bytes: int | None = Field(default=None, description="Its size in bytes.")


class Inputs(Record):
    """The files the run read, with their checksums."""

    model: Artifact = Field(description="The input model as downloaded.")
    student: Artifact | None = Field(default=None, description="The distillation student, if any.")
    dataset: Artifact | None = Field(default=None, description="The dataset, if any.")


class Outputs(Record):
    """The files the run wrote."""

    tflite: Artifact = Field(description="The compressed model.")


class Metrics(Record):
    """What was measured on one .tflite with the LiteRT interpreter."""

    size_bytes: int = Field(description="File size in bytes.")
    gzip_bytes: int = Field(description="Size after gzip -9, in bytes (what pruning saves in a compressed download).")
    latency_p50_ms: float = Field(description="Median single-sample latency in milliseconds.")
    latency_p95_ms: float = Field(description="95th-percentile single-sample latency in milliseconds.")
    peak_memory_bytes: int | None = Field(default=None, description="Peak memory the interpreter added, in bytes.")
    accuracy: float | None = Field(default=None, description="Top-1 accuracy against y_eval (classifiers with labels).")
    top1_agreement: float | None = Field(
        default=None, description="Share of samples whose top-1 class equals the float baseline's."
    )
    mean_abs_error: float | None = Field(
        default=None, description="Mean absolute difference from the baseline's outputs."
    )
    input_type: str = Field(default="float32", description="Element type of the model input.")


class CompactMetrics(Record):
    """The headline numbers of one .tflite (the run summary and the CompressionJob status)."""

    size_bytes: int = Field(description="File size in bytes.")
    gzip_bytes: int = Field(description="Size after gzip -9, in bytes.")
    accuracy: float | None = Field(default=None, description="Top-1 accuracy against y_eval, if labelled.")
    top1_agreement: float | None = Field(default=None, description="Top-1 agreement with the float baseline.")
    latency_p50_ms: float = Field(description="Median single-sample latency in milliseconds.")
    latency_p95_ms: float = Field(description="95th-percentile single-sample latency in milliseconds.")

    @classmethod
    def of(cls, metrics: Metrics) -> CompactMetrics:
        return cls.model_validate(metrics.model_dump(include=set(cls.model_fields)))


class Comparison(Record):
    """The result against the float baseline; the gates judge these numbers."""

    size_reduction: float = Field(description="1 - result size / baseline size (0.75 = 4x smaller).")
    compression_ratio: float = Field(description="Baseline size / result size.")
    gzip_size_reduction: float = Field(description="1 - result gzip size / baseline gzip size.")
    latency_speedup: float = Field(description="Baseline median latency / result median latency.")
    accuracy_drop: float | None = Field(
        default=None, description="Baseline accuracy minus result accuracy (0.01 = one point), when labelled."
    )
    top1_agreement: float | None = Field(default=None, description="Top-1 agreement of the result with the baseline.")

    @classmethod
    def between(cls, baseline: Metrics, result: Metrics) -> Comparison:
        accuracy_drop = None
        if baseline.accuracy is not None and result.accuracy is not None:
            accuracy_drop = round(baseline.accuracy - result.accuracy, 4)
        return cls(
            size_reduction=round(1 - result.size_bytes / baseline.size_bytes, 4),
            compression_ratio=round(baseline.size_bytes / result.size_bytes, 3),
            gzip_size_reduction=round(1 - result.gzip_bytes / baseline.gzip_bytes, 4),
            latency_speedup=round(baseline.latency_p50_ms / max(result.latency_p50_ms, 1e-9), 3),
            accuracy_drop=accuracy_drop,
            top1_agreement=result.top1_agreement,
        )


class GateResult(Record):
    """One gate's verdict."""

    name: str = Field(description="The gate: maxAccuracyDrop, minSizeReduction or maxLatencyMs.")
    passed: bool = Field(description="Whether the result meets it.")
    actual: float | None = Field(default=None, description="The measured value (None when it could not be measured).")
    limit: float = Field(description="The limit from spec.gates.")
    reason: str = Field(description="The verdict in words.")


class Sparsity(Record):
    """Share of exactly-zero kernel weights (biases excluded)."""

    overall: float = Field(description="Over all the layers the step changed.")
    layers: dict[str, float] = Field(default_factory=dict, description="Per layer name.")


class _StepReportBase(Record):
    seconds: float = Field(default=0.0, description="Wall time of the step.")


class _TrainingStepReport(_StepReportBase):
    epochs: int = Field(description="Fine-tuning epochs run.")
    final_metrics: dict[str, float] = Field(default_factory=dict, description="Training metrics after the last epoch.")


class PruneReport(_TrainingStepReport):
    type: Literal["prune"] = "prune"
    schedule: str
    pattern: str
    target_sparsity: float
    begin_step: int
    end_step: int
    frequency: int
    optimizer_steps: int
    sparsity: Sparsity
    skipped_layers: list[str] = Field(default_factory=list)


class ClusterReport(_TrainingStepReport):
    type: Literal["cluster"] = "cluster"
    number_of_clusters: int
    centroid_init: str
    preserve_sparsity: bool
    unique_weights: dict[str, int]
    sparsity: Sparsity
    skipped_layers: list[str] = Field(default_factory=list)


class QatReport(_TrainingStepReport):
    type: Literal["qat"] = "qat"
    scheme: str
    quantized_layers: list[str]
    skipped_layers: list[str] = Field(default_factory=list)
    sparsity: Sparsity | None = None


class PtqReport(_StepReportBase):
    type: Literal["ptq"] = "ptq"
    mode: str
    integer_io: bool = Field(alias="integerIO")
    denylisted_nodes: list[str] = Field(default_factory=list)


class DistillReport(_TrainingStepReport):
    type: Literal["distill"] = "distill"
    temperature: float
    alpha: float
    teacher_parameters: int
    student_parameters: int
    train_agreement_with_teacher: float


StepReport = Annotated[
    PruneReport | ClusterReport | QatReport | PtqReport | DistillReport,
    Field(discriminator="type"),
]


class ConversionReport(Record):
    """How the final .tflite was converted."""

    mode: str = Field(description="float, qat, dynamic, float16, int8 or int16x8.")
    speed_path: str = Field(description="What makes the result faster on a CPU, in words.")
    sparse_encoding: bool = Field(description="Sparse weights encoded for XNNPACK sparse inference.")


class JobReference(Record):
    """The CompressionJob a run belongs to (set by the operator)."""

    namespace: str | None = Field(default=None, description="Its namespace.")
    name: str | None = Field(default=None, description="Its name.")
    uid: str | None = Field(default=None, description="Its uid.")


class Source(Record):
    job: JobReference | None = Field(default=None, description="The CompressionJob that ran this.")


class PromotionOutcome(Record):
    """What promotion did (only attempted when every gate passed)."""

    uri: str = Field(description="The promoted model's URI.")
    promoted: bool = Field(description="Whether the stable location now holds this run's model.")
    record: str | None = Field(default=None, description="URI of promotion.json.")
    sha256: str | None = Field(default=None, description="SHA-256 of the promoted model.")
    unchanged: bool | None = Field(default=None, description="The stable model already had this sha256.")
    replaced: str | None = Field(default=None, description="SHA-256 of the model this one replaced (overwrite).")
    promoted_at: str | None = Field(default=None, description="When it was promoted (RFC 3339).")
    reason: str | None = Field(default=None, description="Why it was not promoted (e.g. PromotionConflict).")
    message: str | None = Field(default=None, description="Why it was not promoted, in words.")


class Report(Record):
    """report.json."""

    api_version: str = Field(default=f"{API_GROUP}/{API_VERSION}", description="Report format version.")
    kind: Literal["CompressionReport"] = "CompressionReport"
    spec: CompressionJobSpec = Field(description="The spec that ran, with every default filled in.")
    inputs: Inputs
    outputs: Outputs
    metric: Literal["accuracy", "fidelity"] = Field(description="What the quality numbers compare.")
    evaluation_samples: int
    evaluation_data: str
    steps: list[StepReport] = Field(default_factory=list)
    conversion: ConversionReport
    baseline: Metrics
    result: Metrics
    comparison: Comparison
    gates: list[GateResult] = Field(default_factory=list)
    gates_passed: bool
    versions: dict[str, str] = Field(default_factory=dict)
    devices: list[str] = Field(default_factory=list)
    timings_seconds: dict[str, float] = Field(default_factory=dict)
    source: Source | None = None
    promotion: PromotionOutcome | None = None
    trusted_code: bool = Field(
        default=False,
        description="Whether Python code from the model files was allowed to run while loading (spec trustCode).",
    )

    def to_wire(self) -> dict[str, object]:
        document = super().to_wire()
        document["spec"] = self.spec.model_dump(mode="json", by_alias=True)
        return document
