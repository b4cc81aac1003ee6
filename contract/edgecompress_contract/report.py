"""report.json: what a run did and measured, written by the runner next to the .tflite (last, so its
presence means the run finished)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from .spec import API_GROUP, API_VERSION, CLASSIFIER_TASKS, CompressionJobSpec, OutputTask
from .wire import Record

REPORT_KIND = "CompressionReport"

Quantizer = Literal["converter", "litertQuantizer"]
"""What quantized the model: the LiteRT converter (Keras and SavedModel inputs) or litert-quantizer (tflite input)."""
_QUANTIZER_DESCRIPTION = (
    "converter (the LiteRT converter, for keras, h5 and savedmodel inputs) or litertQuantizer (litert-quantizer "
    "recipes applied to a float tflite input)."
)


class Artifact(Record):
    """A file the run read or wrote."""

    uri: str = Field(description="Where the file is.")
    sha256: str = Field(description="SHA-256 of its bytes, hex.")
    bytes: int | None = Field(default=None, description="Its size in bytes.")


class Keras3Load(Record):
    """How a model saved with Keras 3 was used: rebuilt in tf-keras for training, or exported for conversion only."""

    keras_version: str = Field(description="The Keras version that saved the model (its metadata.json).")
    rebuilt_in_tf_keras: bool = Field(
        description=(
            "Rebuilt as a tf-keras model from its config and weights, so tfmot could train it; false: exported "
            "by Keras 3 to a SavedModel, which is converted and post-training quantized only."
        )
    )
    max_abs_difference: float | None = Field(
        default=None,
        description="Largest difference between the rebuilt model's outputs and Keras 3's on the verification inputs.",
    )
    tolerance: float | None = Field(
        default=None,
        description="The largest difference accepted: 1e-5 times the largest Keras 3 output magnitude (at least 1).",
    )
    verification_samples: int | None = Field(
        default=None, description="Seeded random inputs both models were run on (inference mode)."
    )


class ShardFile(Record):
    """One shard of a sharded dataset."""

    uri: str = Field(description="Where the shard is.")
    sha256: str = Field(description="SHA-256 of its bytes, hex.")
    bytes: int = Field(description="Its size in bytes.")
    train_samples: int = Field(description="Its x_train samples.")


class DatasetShards(Record):
    """A dataset given as a prefix of .npz shards: what the run found there."""

    count: int = Field(description="Shards under the prefix.")
    train_samples: int = Field(description="x_train samples over all shards.")
    bytes: int = Field(description="Size of all shards in bytes.")
    sha256: str = Field(default="", description="SHA-256 of the lines '<uri> <sha256>' of every shard, in order.")
    files: list[ShardFile] = Field(default_factory=list, description="Each shard, in name order.")


class Inputs(Record):
    """The files the run read, with their checksums."""

    model: Artifact = Field(description="The input model as downloaded.")
    student: Artifact | None = Field(default=None, description="The distillation student, if any.")
    dataset: Artifact | None = Field(default=None, description="The dataset, if any.")
    dataset_shards: DatasetShards | None = Field(
        default=None, description="The shards, when the dataset is a prefix of .npz shards (streamed)."
    )
    model_keras3: Keras3Load | None = Field(
        default=None, description="How the input model was used, when Keras 3 saved it."
    )
    student_keras3: Keras3Load | None = Field(
        default=None, description="How the distillation student was used, when Keras 3 saved it."
    )


class Outputs(Record):
    """The files the run wrote."""

    tflite: Artifact = Field(description="The compressed model.")
    parts: list[Artifact] = Field(
        default_factory=list, description="With output.split: the parts model.part0.tflite, ... in run order."
    )
    manifest: Artifact | None = Field(default=None, description="With output.split: split.json, the parts' manifest.")
    html: Artifact | None = Field(
        default=None,
        description=(
            "report.html: this report as one self-contained page (inline CSS, the plots embedded, no script), "
            "written before report.json; left out when it could not be drawn (the run does not fail for it)."
        ),
    )
    plots: dict[str, Artifact] = Field(
        default_factory=dict,
        description=(
            "The page's plots as PNG files in plots/, by name: paretoSize and paretoLatency (every auto candidate's "
            "size or latency ratio against its fidelity, with the Pareto front) and sensitivity (the per-layer "
            "sensitivity table as a heat map); only those with data (none without an auto step)."
        ),
    )


class TensorInfo(Record):
    """One input of a .tflite, as its signature reports it."""

    name: str = Field(description="Its name in the signature.")
    dtype: str = Field(description="Element type (int8 when quantized, int32 for token ids, ...).")
    shape: list[int] = Field(description="Shape of one sample (batch dimension excluded); -1 for an unknown size.")


class OutputMetrics(Record):
    """One output of a .tflite on the evaluation samples; fidelity numbers only on the result (vs the baseline)."""

    name: str = Field(description="Its name in the signature.")
    task: OutputTask = Field(
        description="multiclass, binary, multilabel or regression (inferred from the baseline, or spec.evaluation)."
    )
    dtype: str = Field(description="Element type of the output tensor.")
    accuracy: float | None = Field(
        default=None,
        description=(
            "Classifiers with labels: share of right top-1 classes (multiclass) or of right decisions at 0.5 "
            "(binary, multilabel: over every label)."
        ),
    )
    label_mean_abs_error: float | None = Field(
        default=None, description="Regression outputs with labels: mean absolute error to the labels."
    )
    agreement: float | None = Field(
        default=None,
        description=(
            "Classifiers: share of top-1 classes (decisions at 0.5 for binary, multilabel) equal to the baseline's."
        ),
    )
    snr_db: float | None = Field(
        default=None,
        description=(
            "Signal-to-noise ratio against the baseline's outputs, 10 log10(sum baseline^2 / sum error^2), in dB "
            "(capped at 200 dB: identical outputs)."
        ),
    )
    cosine_similarity: float | None = Field(
        default=None, description="Mean over samples of the cosine similarity with the baseline's output."
    )
    mean_abs_error: float | None = Field(
        default=None, description="Mean absolute difference from the baseline's outputs."
    )

    @property
    def classifier(self) -> bool:
        return self.task in CLASSIFIER_TASKS


def _worst(values: list[float | None], *, lowest: bool) -> float | None:
    present = [value for value in values if value is not None]
    if not present:
        return None
    return min(present) if lowest else max(present)


class Metrics(Record):
    """What was measured on one .tflite with the LiteRT interpreter.

    Latency is timed in the evaluate phase with the baseline and the result interleaved (rounds of
    each model's runs back to back, on the same sample and threads), so load on the machine falls on
    both alike.
    """

    size_bytes: int = Field(description="File size in bytes.")
    gzip_bytes: int = Field(description="Size after gzip -9, in bytes (what pruning saves in a compressed download).")
    latency_p50_ms: float = Field(description="Median single-sample latency over every timed run, in milliseconds.")
    latency_p95_ms: float = Field(description="95th-percentile single-sample latency in milliseconds.")
    latency_iqr_ms: float | None = Field(
        default=None, description="Interquartile range (p75 - p25) of the timed runs, in milliseconds."
    )
    latency_rounds_ms: list[float] = Field(
        default_factory=list,
        description=(
            "Median latency of each interleaved round, in milliseconds, in round order (round i of the "
            "baseline and of the result ran back to back); their min and max are the spread across rounds."
        ),
    )
    peak_memory_bytes: int | None = Field(
        default=None,
        description=(
            "Peak resident memory of loading the .tflite from bytes, allocating and invoking it once, in a fresh "
            "process with the LiteRT runtime imported (its VmHWM growth; includes the interpreter's and "
            "XNNPACK's start-up). None off Linux."
        ),
    )
    accuracy: float | None = Field(
        default=None,
        description="Accuracy against y_eval of the worst labelled classifier output (the only one, usually).",
    )
    top1_agreement: float | None = Field(
        default=None,
        description=(
            "Share of samples whose top-1 class (decision, for binary and multilabel outputs) equals the float "
            "baseline's, of the worst classifier output."
        ),
    )
    mean_abs_error: float | None = Field(
        default=None, description="Mean absolute difference from the baseline's outputs, of the worst output."
    )
    snr_db: float | None = Field(
        default=None, description="Signal-to-noise ratio against the baseline's outputs in dB, of the worst output."
    )
    input_type: str = Field(
        default="float32", description="Element type of the model input (the first in signature order)."
    )
    inputs: list[TensorInfo] = Field(default_factory=list, description="Every input, in signature order.")
    outputs: list[OutputMetrics] = Field(
        default_factory=list, description="Every output, in signature order, with its task and numbers."
    )

    @classmethod
    def aggregates(cls, outputs: list[OutputMetrics]) -> dict[str, float | None]:
        """The headline fields over several outputs: the worst output of each (the only one's for one output)."""
        return {
            "accuracy": _worst([output.accuracy for output in outputs if output.classifier], lowest=True),
            "top1_agreement": _worst([output.agreement for output in outputs if output.classifier], lowest=True),
            "mean_abs_error": _worst([output.mean_abs_error for output in outputs], lowest=False),
            "snr_db": _worst([output.snr_db for output in outputs], lowest=True),
        }


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


class OutputComparison(Record):
    """One output of the result against the same output of the baseline."""

    name: str = Field(description="The output's name in the signature.")
    task: OutputTask = Field(description="multiclass, binary, multilabel or regression.")
    accuracy_drop: float | None = Field(
        default=None, description="Baseline accuracy minus result accuracy, for labelled classifier outputs."
    )
    agreement: float | None = Field(default=None, description="Agreement with the baseline (classifiers).")
    snr_db: float | None = Field(default=None, description="Signal-to-noise ratio against the baseline, in dB.")
    cosine_similarity: float | None = Field(default=None, description="Mean cosine similarity with the baseline.")
    mean_abs_error: float | None = Field(default=None, description="Mean absolute difference from the baseline.")

    @classmethod
    def between(cls, baseline: OutputMetrics, result: OutputMetrics) -> OutputComparison:
        drop = None
        if baseline.accuracy is not None and result.accuracy is not None:
            drop = round(baseline.accuracy - result.accuracy, 4)
        return cls(
            name=result.name,
            task=result.task,
            accuracy_drop=drop,
            agreement=result.agreement,
            snr_db=result.snr_db,
            cosine_similarity=result.cosine_similarity,
            mean_abs_error=result.mean_abs_error,
        )

    @property
    def classifier(self) -> bool:
        return self.task in CLASSIFIER_TASKS


class Comparison(Record):
    """The result against the float baseline; the gates judge these numbers."""

    size_reduction: float = Field(description="1 - result size / baseline size (0.75 = 4x smaller).")
    compression_ratio: float = Field(description="Baseline size / result size.")
    gzip_size_reduction: float = Field(description="1 - result gzip size / baseline gzip size.")
    latency_speedup: float = Field(
        description=(
            "Baseline latency / result latency (> 1: the result is faster): the median over interleaved rounds of "
            "each round's ratio of medians."
        )
    )
    latency_speedup_min: float | None = Field(default=None, description="The lowest per-round speed-up.")
    latency_speedup_max: float | None = Field(default=None, description="The highest per-round speed-up.")
    latency_rounds: int | None = Field(default=None, description="Interleaved rounds the speed-up is the median of.")
    accuracy_drop: float | None = Field(
        default=None, description="Baseline accuracy minus result accuracy (0.01 = one point), when labelled."
    )
    top1_agreement: float | None = Field(
        default=None, description="Top-1 agreement of the result with the baseline (worst classifier output)."
    )
    snr_db: float | None = Field(
        default=None, description="Signal-to-noise ratio of the result against the baseline in dB (worst output)."
    )
    outputs: list[OutputComparison] = Field(
        default_factory=list,
        description="Per output (the aggregate fields above are the worst output's); left out of a summary too large.",
    )

    @classmethod
    def between(cls, baseline: Metrics, result: Metrics) -> Comparison:
        baseline_outputs = {output.name: output for output in baseline.outputs}
        outputs = [
            OutputComparison.between(baseline_outputs[output.name], output)
            for output in result.outputs
            if output.name in baseline_outputs
        ]
        accuracy_drop = _worst([output.accuracy_drop for output in outputs if output.classifier], lowest=False)
        if not outputs and baseline.accuracy is not None and result.accuracy is not None:
            accuracy_drop = round(baseline.accuracy - result.accuracy, 4)
        paired = len(baseline.latency_rounds_ms) == len(result.latency_rounds_ms) > 0
        if paired:
            rounds = zip(baseline.latency_rounds_ms, result.latency_rounds_ms, strict=True)
            ratios = [base / max(measured, 1e-9) for base, measured in rounds]
        else:
            ratios = [baseline.latency_p50_ms / max(result.latency_p50_ms, 1e-9)]
        return cls(
            size_reduction=round(1 - result.size_bytes / baseline.size_bytes, 4),
            compression_ratio=round(baseline.size_bytes / result.size_bytes, 3),
            gzip_size_reduction=round(1 - result.gzip_bytes / baseline.gzip_bytes, 4),
            latency_speedup=round(_median(ratios), 3),
            latency_speedup_min=round(min(ratios), 3) if paired else None,
            latency_speedup_max=round(max(ratios), 3) if paired else None,
            latency_rounds=len(ratios) if paired else None,
            accuracy_drop=accuracy_drop,
            top1_agreement=result.top1_agreement,
            snr_db=result.snr_db,
            outputs=outputs,
        )


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


class GateResult(Record):
    """One gate's verdict."""

    name: str = Field(
        description=(
            "The gate: maxAccuracyDrop, minSizeReduction, maxLatencyMs, minFidelity, minSnrDb, "
            "or an auto step's maxLatencyRatio."
        )
    )
    passed: bool = Field(description="Whether the result meets it.")
    actual: float | None = Field(default=None, description="The measured value (None when it could not be measured).")
    limit: float = Field(description="The limit from spec.gates.")
    reason: str = Field(description="The verdict in words.")


class Sparsity(Record):
    """Share of exactly-zero weights among those tfmot prunes (e.g. the pointwise kernel of a SeparableConv2D,
    not its depthwise one); after a cluster step, among the kernels (biases excluded)."""

    overall: float = Field(description="Over all the layers the step changed.")
    layers: dict[str, float] = Field(default_factory=dict, description="Per layer name.")


class _StepReportBase(Record):
    """Common to every step report."""

    seconds: float = Field(default=0.0, description="Wall time of the step.")


class Validation(Record):
    """Fidelity to the input model on the held-out slice of x_train, before and after fine-tuning."""

    metric: Literal["top1Agreement", "meanAbsError", "worstOutputFidelity"] = Field(
        description=(
            "top1Agreement (one classifier output, higher is better), meanAbsError (one other output, lower is "
            "better) or worstOutputFidelity (several outputs: the lowest of each output's agreement, for "
            "classifiers, or 1 - sum of squared errors / sum of squared reference values; higher is better)."
        )
    )
    samples: int = Field(description="Held-out samples (not trained on).")
    start: float = Field(description="Fidelity of the compressed model before fine-tuning.")
    end: float = Field(description="Fidelity of the weights the step kept.")
    best_epoch: int = Field(description="The epoch whose weights were kept (0: the weights before fine-tuning).")
    ended_worse: bool = Field(description="Whether the kept weights are less faithful than before fine-tuning.")


class Streaming(Record):
    """How a fine-tuning step read a sharded dataset: streamed through tf.data, shard by shard."""

    shards: int = Field(description="Shards of the dataset.")
    shards_read: int = Field(description="Shards read to the end over all epochs (shards x epochs when complete).")
    samples_per_epoch: int = Field(description="Training samples per epoch (x_train less the held-out slice).")
    samples_seen: int = Field(description="Training samples read over all epochs.")
    held_out: int = Field(description="Samples held out for validation (kept in memory, not trained on).")
    epochs: int = Field(description="Epochs streamed.")


class _TrainingStepReport(_StepReportBase):
    """Common to the steps that fine-tune."""

    epochs: int = Field(description="Fine-tuning epochs run.")
    final_metrics: dict[str, float] = Field(default_factory=dict, description="Training metrics after the last epoch.")
    validation: Validation | None = Field(
        default=None, description="Held-out fidelity before and after fine-tuning (prune, cluster, qat)."
    )
    streaming: Streaming | None = Field(
        default=None, description="What the step streamed, when the dataset is a prefix of shards."
    )


class PruneReport(_TrainingStepReport):
    """A prune step: the schedule it ran and the sparsity it reached."""

    type: Literal["prune"] = Field(default="prune", description="Step type.")
    schedule: str = Field(description="polynomialDecay, constantSparsity or oneShot.")
    pattern: str = Field(description="unstructured or 2:4.")
    target_sparsity: float = Field(description="The spec's target sparsity.")
    begin_step: int = Field(description="Optimizer step at which pruning started.")
    end_step: int = Field(description="Optimizer step at which the target was reached.")
    frequency: int = Field(description="Pruned every this many optimizer steps (oneShot: more than it ran).")
    optimizer_steps: int = Field(description="Optimizer steps of fine-tuning.")
    sparsity: Sparsity = Field(description="Sparsity of the pruned layers after stripping.")
    skipped_layers: list[str] = Field(default_factory=list, description="Layers left dense.")
    refit_layers: list[str] = Field(
        default_factory=list,
        description=(
            "oneShot: the layers whose kept weights were refit to the float layer's outputs (the other pruned "
            "layers were cut by magnitude alone)."
        ),
    )
    allocation: str = Field(default="uniform", description="uniform or sensitivity (the spec's allocation).")
    layer_targets: dict[str, float] = Field(
        default_factory=dict,
        description="sensitivity: the share of its pruned weights each layer was cut to (sparsity.layers: reached).",
    )


class ClusterReport(_TrainingStepReport):
    """A cluster step: how many distinct values each kernel kept."""

    type: Literal["cluster"] = Field(default="cluster", description="Step type.")
    number_of_clusters: int = Field(description="Clusters per layer.")
    centroid_init: str = Field(description="How centroids were initialised.")
    preserve_sparsity: bool = Field(description="Zeros of an earlier prune step were kept.")
    unique_weights: dict[str, int] = Field(description="Distinct kernel values per layer after stripping.")
    sparsity: Sparsity = Field(description="Sparsity of the clustered layers.")
    skipped_layers: list[str] = Field(default_factory=list, description="Layers left as they were.")


class QatReport(_TrainingStepReport):
    """A qat step: which layers were fake-quantized, with which scheme."""

    type: Literal["qat"] = Field(default="qat", description="Step type.")
    scheme: str = Field(description="The tfmot quantization scheme (prune- or cluster-preserving after those steps).")
    quantized_layers: list[str] = Field(description="Layers annotated for quantization.")
    skipped_layers: list[str] = Field(default_factory=list, description="Layers kept float.")
    sparsity: Sparsity | None = Field(default=None, description="Sparsity kept from a prune step, if any.")


class PtqReport(_StepReportBase):
    """The ptq step, applied by the converter or, for a tflite input, by litert-quantizer."""

    type: Literal["ptq"] = Field(default="ptq", description="Step type.")
    mode: str = Field(description="dynamic, float16, int8 or int16x8.")
    quantizer: Quantizer = Field(default="converter", description=_QUANTIZER_DESCRIPTION)
    integer_io: bool = Field(alias="integerIO", description="int8 input and output tensors.")
    denylisted_nodes: list[str] = Field(
        default_factory=list,
        description="Graph nodes kept float (for litert-quantizer: the op scopes, output tensor names, kept float).",
    )


class DistillReport(_TrainingStepReport):
    """A distill step: the student trained from the teacher."""

    type: Literal["distill"] = Field(default="distill", description="Step type.")
    temperature: float = Field(description="Softmax temperature of the soft targets.")
    alpha: float = Field(description="Weight of the hard-label loss (0 without labels).")
    teacher_parameters: int = Field(description="Parameters of the input model.")
    student_parameters: int = Field(description="Parameters of the student.")
    train_agreement_with_teacher: float = Field(
        description=(
            "Top-1 agreement with the teacher on x_train (several outputs: the worst output's agreement, or "
            "1 - squared error / squared teacher output for outputs that are not classifiers)."
        )
    )


class FilterLayer(Record):
    """One layer's size before and after filter reduction."""

    name: str = Field(description="Layer name.")
    layer_type: str = Field(description="Keras class, e.g. Conv2D.")
    channels_before: int = Field(description="Output channels of the input model's layer.")
    channels_after: int = Field(description="Output channels of the reduced layer.")
    parameters_before: int = Field(description="Weights (trainable or not) before.")
    parameters_after: int = Field(description="Weights after.")
    macs_before: int | None = Field(
        default=None, description="Multiply-accumulates of one inference (batch 1) before; None for unknown sizes."
    )
    macs_after: int | None = Field(default=None, description="Multiply-accumulates of one inference after.")


class ChannelGroup(Record):
    """Channels that must be removed together: a layer's output channels and those an Add or other merge joins."""

    layers: list[str] = Field(description="The layers whose output channels these are.")
    channels_before: int = Field(description="Channels before.")
    channels_after: int = Field(description="Channels kept.")
    reason: str | None = Field(default=None, description="Why the group kept every channel, if it did.")


class ReducedSpeed(Record):
    """The result's latency against the float model and against int8 of the unreduced model, timed together."""

    unreduced_int8_bytes: int = Field(description="Size of the input model converted with int8 PTQ, in bytes.")
    speedup_vs_float: float = Field(
        description="Float baseline latency / result latency: the median over interleaved rounds of the ratios."
    )
    speedup_vs_unreduced_int8: float = Field(
        description="Unreduced int8 latency / result latency (> 1: the result is faster than int8 alone)."
    )
    rounds: int = Field(description="Interleaved rounds of the three models the ratios are medians of.")


class ReduceFiltersReport(_TrainingStepReport):
    """A reduceFilters step: which channels were removed, and what that saved."""

    type: Literal["reduceFilters"] = Field(default="reduceFilters", description="Step type.")
    criterion: str = Field(description="l1 or l2.")
    target_reduction: float = Field(description="The spec's share of channels to remove.")
    groups: list[ChannelGroup] = Field(description="Every channel group, reduced or not.")
    layers: list[FilterLayer] = Field(description="Every layer with weights, before and after.")
    parameters_before: int = Field(description="Parameters of the model before.")
    parameters_after: int = Field(description="Parameters of the model after.")
    macs_before: int | None = Field(default=None, description="Multiply-accumulates of the weighted layers before.")
    macs_after: int | None = Field(default=None, description="Multiply-accumulates of the weighted layers after.")
    skipped_layers: list[str] = Field(default_factory=list, description="Layers whose output channels were kept.")
    speed: ReducedSpeed | None = Field(
        default=None,
        description=(
            "The final result timed with the float baseline and with int8 PTQ of the unreduced model (needs "
            "x_train for calibration)."
        ),
    )


class LayerSensitivity(Record):
    """The error one layer adds when it alone is quantized at one precision (every other op stays float)."""

    layer: str = Field(description="The op's scope (its output tensor names, as litert-quantizer matches them).")
    op: str = Field(description="The op type, e.g. CONV_2D.")
    weights: int = Field(description="Elements of its weight tensor.")
    precision: str = Field(description="The precision tried.")
    applies: bool = Field(
        description="Whether litert-quantizer quantized the layer so (else it stays out of its ladder)."
    )
    size_bytes: int = Field(description="The model's bytes with only this layer quantized so.")
    snr_db: float | None = Field(
        default=None,
        description=(
            "Signal-to-noise ratio of the model's outputs against the float model's, in dB (higher: less error), "
            "of the worst output."
        ),
    )
    top1_agreement: float | None = Field(
        default=None,
        description=(
            "Agreement with the float model (top-1 classes; decisions at 0.5 for binary and multilabel outputs) of "
            "the worst classifier output; None when no output is a classifier."
        ),
    )


class RecipeLine(Record):
    """One entry of a candidate's recipe: the ops whose scope matches get this precision (later entries win)."""

    scope: str = Field(description="Regex over op scopes ('.*': every op).")
    precision: str = Field(description="float, float16, dynamicInt8, weightOnlyInt8, weightOnlyInt4, ...")


class SearchCandidate(Record):
    """One recipe the auto step quantized and measured."""

    name: str = Field(description="e.g. dynamic, float16, int8, converterDynamic, mixed-3, trial0-prune50Qat.")
    kind: Literal["wholeModel", "mixed", "converter", "trained"] = Field(
        description=(
            "One precision for every op, one per layer (both by litert-quantizer), the LiteRT converter's own "
            "post-training quantization of the Keras model or SavedModel, or the .tflite a training trial "
            "(spec.steps[0].trials) fine-tuned and wrote to trials/<index>/."
        )
    )
    recipe: list[RecipeLine] = Field(
        description="The litert-quantizer recipe (empty for converter and trained candidates)."
    )
    precisions: dict[str, int] = Field(
        default_factory=dict, description="Mixed candidates: how many analysed layers got each precision."
    )
    size_bytes: int = Field(description="File size in bytes.")
    size_ratio: float = Field(description="Size / baseline size.")
    accuracy: float | None = Field(
        default=None, description="Accuracy against y_eval of the worst labelled classifier output, when labelled."
    )
    top1_agreement: float | None = Field(
        default=None, description="Agreement with the baseline of the worst classifier output."
    )
    snr_db: float | None = Field(
        default=None, description="SNR against the baseline on the evaluation samples in dB, of the worst output."
    )
    outputs: list[OutputComparison] = Field(
        default_factory=list, description="Every output against the baseline's (what the gates judged)."
    )
    latency_ratio: float = Field(
        description="Median latency / the baseline's, timed interleaved with it (< 1: faster than float)."
    )
    gates: list[GateResult] = Field(default_factory=list, description="Each gate's verdict on this candidate.")
    passed: bool = Field(description="Whether it passed every gate.")
    chosen: bool = Field(default=False, description="Whether it became the run's result.")
    lost_because: str | None = Field(default=None, description="Why it was not chosen.")
    cached: bool = Field(default=False, description="Its measurements came from the trial cache.")
    seconds: float = Field(default=0.0, description="Wall time to quantize and measure it.")


class AutoReport(_StepReportBase):
    """The auto step: the sensitivity table, every candidate with its measurements, and the pick."""

    type: Literal["auto"] = Field(default="auto", description="Step type.")
    objective: str = Field(description="size, latency or balanced.")
    chosen: str = Field(description="The candidate that became the result (the closest one when none passed).")
    passed: bool = Field(description="Whether any candidate passed every gate.")
    stopped_because: str = Field(description="Why the search ended, in words.")
    sensitivity: list[LayerSensitivity] = Field(default_factory=list, description="Per layer and precision.")
    skipped_layers: list[str] = Field(
        default_factory=list, description="Weighted ops below minWeights: not analysed, float in mixed candidates."
    )
    candidates: list[SearchCandidate] = Field(default_factory=list, description="Every candidate, in trial order.")
    unavailable: dict[str, str] = Field(
        default_factory=dict, description="Candidates that could not be made, with the reason."
    )
    cache: str | None = Field(default=None, description="Where the trial records are kept (the step's cacheURI).")
    cache_hits: int = Field(
        default=0, description="Records read from the cache instead of measured (candidates and the sensitivity table)."
    )


class TrialRecord(Record):
    """trials/<index>/trial.json: how one training trial of the auto step ended, written after its other files.

    Its presence means the trial finished, either way; a run of the same trial on the same inputs (the same
    ``key``) reads it instead of training again.
    """

    index: int = Field(description="The trial's index in spec.steps[0].trials (its Indexed Job completion index).")
    preset: str = Field(description="The trial's training preset, e.g. prune50Qat.")
    key: str = Field(
        description=(
            "SHA-256 content key of what the trial's result depends on: its job (the preset's steps, fine-tuning, "
            "evaluation, seed; not the URIs), the input model's and the dataset's SHA-256 and the tool versions."
        )
    )
    exit_code: int = Field(
        description="The trial run's exit code: 0, or a failure that fails again (1, 20, 21, 23; see RunSummary)."
    )
    reason: str | None = Field(default=None, description="Why it failed, as a CamelCase reason.")
    message: str = Field(default="", description="The outcome in words.")
    model_sha256: str | None = Field(
        default=None, description="A success: SHA-256 of trials/<index>/model.tflite, checked when the record is read."
    )
    size_bytes: int | None = Field(default=None, description="A success: the size of its model.tflite in bytes.")
    seconds: float = Field(description="Wall time of the trial's run.")

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0


StepReport = Annotated[
    PruneReport | ClusterReport | QatReport | PtqReport | DistillReport | ReduceFiltersReport | AutoReport,
    Field(discriminator="type"),
]


class MacShare(Record):
    """Share of the multiply-accumulates of one inference by the kind of kernel that runs them (sums to 1)."""

    int8: float = Field(default=0.0, description="int8 activations and int8 weights: full-integer kernels.")
    int16: float = Field(default=0.0, description="int16 activations with int8 weights: int16x8 kernels.")
    hybrid: float = Field(
        default=0.0, description="float activations with int8 weights: dynamic-range (hybrid) kernels."
    )
    float16: float = Field(
        default=0.0, description="float32 kernels on weights stored as float16 and dequantized to float32 at load."
    )
    dequantized: float = Field(
        default=0.0, description="float32 kernels on weights stored as int8 and dequantized to float32 at load."
    )
    float32: float = Field(default=0.0, description="float32 kernels on float32 weights.")


class ConversionReport(Record):
    """How the final .tflite was converted, and what its ops compute in (read back from the file)."""

    mode: str = Field(description="float, qat, dynamic, float16, int8, int16x8 or auto.")
    quantizer: Quantizer = Field(default="converter", description=_QUANTIZER_DESCRIPTION)
    speed_path: str = Field(
        description=(
            "What the result runs in on a CPU and how its measured speed compares with the float baseline, in words."
        )
    )
    sparse_encoding: bool = Field(
        description="The file holds sparse-encoded weights (XNNPACK sparse inference for float subgraphs)."
    )
    macs: int | None = Field(
        default=None,
        description=(
            "Multiply-accumulates of one inference (batch 1) in the conv, depthwise-conv, transpose-conv, "
            "fully-connected and batch-matmul ops of the file."
        ),
    )
    mac_share: MacShare | None = Field(
        default=None, description="Share of those multiply-accumulates by the kind of kernel that runs them."
    )


class SplitTensor(Record):
    """A tensor passed between parts, named after the Keras layer that produces it."""

    name: str = Field(description="The producing layer's name (with :i for its i-th output, when it has several).")
    shape: list[int | None] = Field(description="Its shape, batch first.")
    dtype: str = Field(description="Element type at the part's boundary, e.g. float32.")


class SplitPart(Record):
    """One part of a split model."""

    file: str = Field(description="File name next to model.tflite, e.g. model.part0.tflite.")
    inputs: list[SplitTensor] = Field(description="What the part reads: model inputs or earlier parts' outputs.")
    outputs: list[SplitTensor] = Field(description="What it writes: tensors later parts read, and model outputs.")
    layers: list[str] = Field(description="The Keras layers it computes, in order.")


class SplitManifest(Record):
    """split.json: how to run the parts of a split model in order to get the whole model's outputs."""

    api_version: str = Field(default=f"{API_GROUP}/{API_VERSION}", description="Manifest format version.")
    kind: Literal["SplitManifest"] = "SplitManifest"
    model_inputs: list[str] = Field(description="Names of the whole model's inputs.")
    model_outputs: list[str] = Field(description="Names of the whole model's outputs, in order.")
    parts: list[SplitPart] = Field(description="The parts in run order; each reads only tensors named before it.")


class SplitPartMetrics(Record):
    """What was measured on one part."""

    file: str = Field(description="The part's file name.")
    size_bytes: int = Field(description="File size in bytes.")
    latency_p50_ms: float = Field(description="Median single-sample latency, timed interleaved with the other parts.")


class SplitReport(Record):
    """The split result, checked against the unsplit .tflite on the evaluation samples."""

    parts: list[SplitPartMetrics] = Field(description="Each part, in run order.")
    whole_latency_p50_ms: float = Field(description="Median latency of the unsplit model, timed with the parts.")
    max_abs_diff: float = Field(
        description="Largest absolute difference between the parts run in order and the unsplit model, any output."
    )
    top1_agreement: float | None = Field(
        default=None, description="Top-1 agreement of the parts with the unsplit model (class-score outputs)."
    )


class JobReference(Record):
    """The CompressionJob a run belongs to (set by the operator)."""

    namespace: str | None = Field(default=None, description="Its namespace.")
    name: str | None = Field(default=None, description="Its name.")
    uid: str | None = Field(default=None, description="Its uid.")


class Source(Record):
    """Who asked for the run."""

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


class PromotionSource(Record):
    """Where a promoted model came from."""

    job: JobReference | None = Field(default=None, description="The CompressionJob that produced it.")
    output: str = Field(description="The run's own model.tflite.")
    report: str = Field(description="The run's report.json.")
    comparison: Comparison = Field(description="The model against its float baseline.")


class PromotionRecord(Record):
    """promotion.json in the stable folder, written after model.tflite: its presence means the promotion is done."""

    api_version: str = Field(default=f"{API_GROUP}/{API_VERSION}", description="Record format version.")
    kind: Literal["PromotionRecord"] = "PromotionRecord"
    model: Artifact = Field(description="The promoted model.")
    source: PromotionSource = Field(description="The run it came from.")
    promoted_at: str = Field(description="When it was promoted (RFC 3339).")


class Resumption(Record):
    """How a run restarted on the checkpoints of an earlier, interrupted attempt of the same job."""

    checkpoints: str = Field(description="The folder the checkpoints were read from.")
    fingerprint: str = Field(
        description="SHA-256 of the spec's training fields, the inputs' sha256 and the library versions they match."
    )
    reused_steps: list[int] = Field(
        default_factory=list, description="Indexes of the steps whose finished model was reused, not run again."
    )
    resumed_step: int | None = Field(default=None, description="Index of the step whose fine-tuning was resumed.")
    resumed_from_epoch: int | None = Field(
        default=None, description="Epochs of that step finished before the restart (training went on from there)."
    )
    resumed_from_batch: int | None = Field(
        default=None,
        description="Mini-batches of the next epoch done before the restart, when the checkpoint was within an epoch.",
    )
    random_layers: list[str] = Field(
        default_factory=list,
        description=(
            "Layers drawing random numbers while training (Dropout, noise): their draws after the restart are not "
            "those of an uninterrupted run, so the bytes may differ from one; empty: the same bytes as an "
            "uninterrupted run."
        ),
    )


class Report(Record):
    """report.json: what a run read, did, measured and decided."""

    api_version: str = Field(default=f"{API_GROUP}/{API_VERSION}", description="Report format version.")
    kind: Literal["CompressionReport"] = Field(default="CompressionReport", description="CompressionReport.")
    spec: CompressionJobSpec = Field(description="The spec that ran, with every default filled in.")
    inputs: Inputs = Field(description="The files the run read, with their checksums.")
    outputs: Outputs = Field(description="The files the run wrote.")
    metric: Literal["accuracy", "fidelity"] = Field(description="What the quality numbers compare.")
    evaluation_samples: int = Field(description="Samples the baseline and the result were evaluated on.")
    evaluation_data: str = Field(description="Where those samples came from.")
    steps: list[StepReport] = Field(default_factory=list, description="What each step did, in order.")
    conversion: ConversionReport = Field(description="How the final .tflite was converted.")
    baseline: Metrics = Field(description="The float .tflite of the input model.")
    result: Metrics = Field(description="The compressed .tflite.")
    comparison: Comparison = Field(description="The result against the baseline.")
    gates: list[GateResult] = Field(default_factory=list, description="Each gate's verdict.")
    gates_passed: bool = Field(description="Whether every gate passed.")
    versions: dict[str, str] = Field(default_factory=dict, description="Versions of Python and the libraries used.")
    devices: list[str] = Field(default_factory=list, description="Devices TensorFlow saw.")
    replicas: int = Field(
        default=1,
        description=(
            "Replicas fine-tuning ran on: more than 1 with tf.distribute.MirroredStrategy over several GPUs, each "
            "taking fineTune.batchSize samples of every mini-batch (the global batch is batchSize x replicas)."
        ),
    )
    replica_devices: list[str] = Field(
        default_factory=list, description="The devices of those replicas (empty: TensorFlow's default device)."
    )
    timings_seconds: dict[str, float] = Field(default_factory=dict, description="Wall time per phase and in total.")
    source: Source | None = Field(
        default=None, description="The CompressionJob that ran this, when run by the operator."
    )
    promotion: PromotionOutcome | None = Field(default=None, description="What promotion did, when the spec asks.")
    split: SplitReport | None = Field(default=None, description="The split parts' sizes, latency and fidelity.")
    trusted_code: bool = Field(
        default=False,
        description="Whether Python code from the model files was allowed to run while loading (spec trustCode).",
    )
    resumption: Resumption | None = Field(
        default=None, description="Set when the run resumed from an interrupted attempt's checkpoints."
    )

    def to_wire(self) -> dict[str, object]:
        document = super().to_wire()
        document["spec"] = self.spec.model_dump(mode="json", by_alias=True)
        return document
