"""The CompressionJob spec: the single source of truth for the runner, the CRD and the docs.

Field names are camelCase on the wire (Kubernetes convention) and snake_case in Python.
Every cross-field rule lives in ``rules.py`` (with its CEL twin for the CRD) and runs when a
spec is validated, so a bad spec is rejected before any download or training starts.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, ValidationInfo, model_validator

from .exit_codes import ExitCode
from .wire import StrictWire

API_GROUP = "edgecompress.io"
API_VERSION = "v1alpha1"
KIND = "CompressionJob"
# The runner pod receives its job in this environment variable (set by the operator).
JOB_ENV = "EDGECOMPRESS_JOB"
TRIAL_INDEX_ENV = "JOB_COMPLETION_INDEX"
"""Which trial a trial pod runs: Kubernetes sets it in every pod of an Indexed Job."""
SOURCE_ENV = "EDGECOMPRESS_SOURCE_JOB"
# Set to "true" on a runner pod only when the operator allows spec trustCode (operator allowTrustedCode).
ALLOW_TRUSTED_CODE_ENV = "EDGECOMPRESS_ALLOW_TRUSTED_CODE"

# The runner pod's scratch volume (emptyDir at /tmp) holds at most this many bytes (set by the operator).
SCRATCH_LIMIT_ENV = "EDGECOMPRESS_SCRATCH_LIMIT_BYTES"
SCRATCH_SIZE_PATTERN = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"
"""A Kubernetes quantity of bytes, e.g. 200Gi or 500M."""

URI_PATTERN = r"^(s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]/.*|file://.+|[^:]+)$"


class SpecError(ValueError):
    """The job spec is invalid; nothing was started."""

    exit_code = ExitCode.INVALID_INPUT
    reason = "InvalidSpec"


_Strict = StrictWire


class ModelFormat(str, Enum):
    KERAS = "keras"
    H5 = "h5"
    SAVEDMODEL = "savedmodel"
    TFLITE = "tflite"


class ModelSource(_Strict):
    """Where a trained model lives and how it was saved."""

    uri: str = Field(
        pattern=URI_PATTERN,
        max_length=2048,
        description="Location of the model: s3://bucket/key, file:///path or a plain local path.",
    )
    format: ModelFormat = Field(
        description=(
            "How the model was saved: 'keras' (a .keras file: tf-keras, or Keras 3, which is rebuilt as a "
            "tf-keras model for training steps and otherwise exported by Keras 3), 'h5' (HDF5) or "
            "'savedmodel' (a SavedModel directory packed as .tar.gz, .tgz or .zip). "
            "A SavedModel can only be converted and post-training quantized, not fine-tuned. "
            "'tflite' (a float LiteRT flatbuffer, e.g. exported from Keras 3, PyTorch or JAX) is the baseline "
            "itself and can only be quantized by a ptq step (litert-quantizer), with float input and output."
        )
    )
    trust_code: bool = Field(
        default=False,
        description=(
            "Allow Python code stored in the model file to run while it loads (Lambda layers and other "
            "serialized Python functions; for 'keras' this also turns off Keras safe_mode). By default "
            "such models are refused before they are built. In a cluster this is honoured only when the "
            "operator allows it (Helm value operator.config.allowTrustedCode); set it only for models "
            "whose author you trust, as their code runs with the runner's S3 credentials."
        ),
    )


class DatasetSource(_Strict):
    """The data used for fine-tuning, calibration and evaluation."""

    uri: str = Field(
        pattern=URI_PATTERN,
        max_length=2048,
        description=(
            "A NumPy .npz file with arrays x_train, y_train, x_eval, y_eval (one input, one output), or, for "
            "several inputs or outputs, x_train/<input>, x_eval/<input>, y_train/<output>, y_eval/<output> named "
            "as in the .tflite signature. The y_* labels are optional (per output): without them, fine-tuning of "
            "prune, cluster and qat steps distills from the input model's outputs (soft targets), with them it "
            "mixes labels and soft targets; evaluation reports fidelity instead of accuracy without them. A URI "
            "ending in / (or a local folder) is a prefix of .npz shards with those arrays (every shard the same "
            "names, per-sample shapes and dtypes; x_eval/y_eval in any of them): fine-tuning streams the shards "
            "in bounded memory and only the evaluation, calibration and held-out slices are kept in memory."
        ),
    )


class FineTune(_Strict):
    """Training settings used by steps that fine-tune the model."""

    epochs: int = Field(default=2, ge=1, le=1000, description="Fine-tuning epochs.")
    batch_size: int = Field(default=32, ge=1, le=65536, description="Mini-batch size.")
    learning_rate: float = Field(default=1e-4, gt=0, le=1, description="Adam learning rate for fine-tuning.")
    validation_split: float = Field(
        default=0.1,
        ge=0,
        le=0.5,
        description=(
            "prune, cluster and qat: share of x_train held out (a seeded random slice) to measure fidelity to "
            "the input model after every epoch; the best epoch's weights are kept (for prune, among the epochs "
            "after the target sparsity is reached). 0 trains on all of x_train and keeps the last epoch."
        ),
    )
    freeze_batch_norm: bool = Field(
        default=True,
        description=(
            "prune, cluster and qat: keep BatchNormalization statistics and parameters as trained (the layers "
            "run in inference mode while fine-tuning), so small fine-tuning sets do not shift them."
        ),
    )


class _LayerwiseStep(_Strict):
    skip_layers: list[Annotated[str, Field(max_length=253)]] = Field(
        default_factory=list,
        max_length=256,
        description=(
            "Names of layers this step must leave untouched (they stay float / dense). "
            "Use it for sensitive layers and for layers tfmot cannot handle."
        ),
    )
    skip_first_and_last: bool = Field(
        default=False,
        description="Also leave the first and the last layer with weights untouched.",
    )


class PruningSchedule(str, Enum):
    POLYNOMIAL_DECAY = "polynomialDecay"
    CONSTANT_SPARSITY = "constantSparsity"
    ONE_SHOT = "oneShot"


class PruningAllocation(str, Enum):
    UNIFORM = "uniform"
    SENSITIVITY = "sensitivity"


ONE_SHOT_REFIT_SAMPLES = 512
"""Training samples a oneShot prune step refits on (the first ones; its normal equations sum every position)."""


class PruneStep(_LayerwiseStep):
    """Magnitude pruning (tfmot prune_low_magnitude), fine-tuned, then stripped."""

    type: Literal["prune"] = Field(description="Step type.")
    schedule: PruningSchedule = Field(
        default=PruningSchedule.POLYNOMIAL_DECAY,
        description=(
            "Sparsity schedule: polynomialDecay (initial -> target) or constantSparsity, tfmot's magnitude pruning "
            "during fine-tuning; or oneShot: the target at once before fine-tuning, each pruned layer cut where "
            "its refit loses least (greedy Optimal Brain Surgeon steps; 2:4 keeps each block's two largest) and "
            "the kept weights refit by least squares to the float layer's outputs (to their mean over positions "
            "for a linear layer read only by global average pooling) on up to "
            f"{ONE_SHOT_REFIT_SAMPLES} training samples, "
            "layer after layer, then fine-tuned with those masks fixed (initialSparsity, beginStep, endStep and "
            "frequency do not apply)."
        ),
    )
    initial_sparsity: float = Field(default=0.0, ge=0, lt=1, description="Starting sparsity for polynomialDecay.")
    target_sparsity: float = Field(default=0.5, gt=0, lt=1, description="Fraction of weights set to zero at the end.")
    begin_step: int = Field(default=0, ge=0, description="Optimizer step at which pruning starts.")
    end_step: int | None = Field(
        default=None,
        ge=1,
        description="Optimizer step at which the target is reached (default: last fine-tuning step).",
    )
    frequency: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Prune every N optimizer steps. Default: chosen so that pruning happens at least "
            "ten times during fine-tuning. A value larger than the pruning window is rejected "
            "at run time because it would silently reach 0 % sparsity."
        ),
    )
    pattern: Literal["unstructured", "2:4"] = Field(
        default="unstructured",
        description="'2:4' keeps two of every four weights (structured sparsity, target 0.5).",
    )
    allocation: PruningAllocation = Field(
        default=PruningAllocation.UNIFORM,
        description=(
            "How targetSparsity is shared among the pruned layers: uniform (each layer at targetSparsity, as "
            "tfmot prunes) or sensitivity (oneShot, unstructured: each layer cut in eighths, up to 7/8, where "
            "its refit to the float layer's outputs loses least, until targetSparsity of all pruned weights "
            "are cut; layers that cannot be refit stay at targetSparsity)."
        ),
    )
    layer_distillation: float = Field(
        default=0.0,
        ge=0,
        le=1000,
        description=(
            "Weight of intermediate-layer distillation in fine-tuning: each pruned layer's output is also fitted "
            "to the step's input model's on the same samples (squared error over that output's mean square, "
            "averaged over the layers), added to the outputs' loss with this weight; 0 fits the model's outputs "
            "only."
        ),
    )
    fine_tune: FineTune = Field(default_factory=FineTune, description="Fine-tuning settings.")


class CentroidInit(str, Enum):
    KMEANS_PLUS_PLUS = "kmeansPlusPlus"
    LINEAR = "linear"
    DENSITY_BASED = "densityBased"
    RANDOM = "random"


class ClusterStep(_LayerwiseStep):
    """Weight clustering (tfmot cluster_weights), fine-tuned, then stripped."""

    type: Literal["cluster"] = Field(description="Step type.")
    number_of_clusters: int = Field(default=16, ge=2, le=256, description="Distinct weight values per layer.")
    centroid_init: CentroidInit = Field(
        default=CentroidInit.KMEANS_PLUS_PLUS, description="How cluster centroids are initialised."
    )
    fine_tune: FineTune = Field(default_factory=FineTune, description="Fine-tuning settings.")


class QatStep(_LayerwiseStep):
    """Int8 quantization-aware training.

    After prune or cluster steps the sparsity- / cluster-preserving schemes are used so the
    earlier gains survive.
    """

    type: Literal["qat"] = Field(description="Step type.")
    fine_tune: FineTune = Field(default_factory=FineTune, description="Fine-tuning settings.")


class PtqMode(str, Enum):
    DYNAMIC = "dynamic"
    FLOAT16 = "float16"
    INT8 = "int8"
    INT16X8 = "int16x8"


class PtqStep(_LayerwiseStep):
    """Post-training quantization by the LiteRT converter (litert-quantizer for a tflite model); always the last step.

    Skipped layers are kept float through the converter's quantization denylist (litert-quantizer: a recipe
    entry that leaves the layer's ops unquantized).
    """

    type: Literal["ptq"] = Field(description="Step type.")
    mode: PtqMode = Field(
        description=(
            "dynamic (int8 weights, float activations), float16 (half-precision weights), "
            "int8 (full integer from representative samples), int16x8 (int16 activations, "
            "int8 weights)."
        )
    )
    representative_samples: int = Field(
        default=200,
        ge=1,
        le=100000,
        description="Training samples used to calibrate activation ranges (int8, int16x8).",
    )
    integer_io: bool = Field(
        default=False,
        alias="integerIO",
        description=(
            "int8 only: make the model's float inputs and outputs int8 instead of float32 (integer inputs such "
            "as token ids stay as they are; not for a tflite model)."
        ),
    )


class FilterCriterion(str, Enum):
    L1 = "l1"
    L2 = "l2"


class ReduceFiltersStep(_LayerwiseStep):
    """Filter reduction (structured channel pruning): removes whole output channels and rebuilds the model smaller.

    Conv1D/Conv2D, SeparableConv2D (its pointwise filters) and Dense layers lose their weakest output channels;
    every layer that reads those channels (BatchNormalization, DepthwiseConv2D, the next layer's input) is
    shrunk with them, and channels joined by an Add (or another merge) are removed identically. Channels of
    the model's outputs are kept. The smaller model is then fine-tuned, distilling from the input model.
    """

    type: Literal["reduceFilters"] = Field(description="Step type.")
    target_reduction: float = Field(
        default=0.5,
        gt=0,
        lt=1,
        description="Share of each layer's output channels to remove (before rounding up to roundTo).",
    )
    criterion: FilterCriterion = Field(
        default=FilterCriterion.L1,
        description=(
            "How a channel's importance is measured: l1 or l2 norm of its filter, scaled by the following "
            "BatchNormalization's gamma / sqrt(variance + epsilon); summed over the layers an Add joins."
        ),
    )
    min_channels: int = Field(default=8, ge=1, le=65536, description="Fewest output channels a layer keeps.")
    round_to: int = Field(
        default=8,
        ge=1,
        le=1024,
        description="Kept channels are rounded up to a multiple of this (fast kernels); 1 does not round.",
    )
    layers: list[Annotated[str, Field(max_length=253)]] = Field(
        default_factory=list,
        max_length=256,
        description=(
            "Reduce only the channels of these layers (and those joined with them). Empty: every layer that can "
            "be reduced. A listed layer whose channels cannot be reduced is an error naming why."
        ),
    )
    fine_tune: FineTune = Field(default_factory=FineTune, description="Fine-tuning settings.")


class DistillStep(_Strict):
    """Knowledge distillation: trains a smaller student from the input model (the teacher).

    The student replaces the model for all later steps.
    """

    type: Literal["distill"] = Field(description="Step type.")
    student: ModelSource = Field(description="The untrained or pre-trained student model.")
    temperature: float = Field(default=4.0, gt=0, le=100, description="Softmax temperature for the soft targets.")
    alpha: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="Weight of the hard-label loss; 1 - alpha weighs the teacher's soft targets.",
    )
    fine_tune: FineTune = Field(
        default_factory=lambda: FineTune(epochs=10, learning_rate=1e-3),
        description="Student training settings.",
    )


class SearchObjective(str, Enum):
    SIZE = "size"
    LATENCY = "latency"
    BALANCED = "balanced"


class LayerPrecision(str, Enum):
    """A precision the auto step may give one layer (the values of the runner's litert-quantizer precisions)."""

    WEIGHT_ONLY_INT4 = "weightOnlyInt4"
    INT4_BLOCKWISE = "int4Blockwise"
    WEIGHT_ONLY_INT8 = "weightOnlyInt8"
    DYNAMIC_INT8 = "dynamicInt8"
    FLOAT16 = "float16"


class TrainingPreset(str, Enum):
    """A training recipe the auto step can try as a trial (see ``edgecompress_contract.trials.preset_steps``)."""

    QAT = "qat"
    PRUNE30_QAT = "prune30Qat"
    PRUNE50_QAT = "prune50Qat"
    CLUSTER16_QAT = "cluster16Qat"
    PRUNE50_INT8 = "prune50Int8"


class TrainingTrial(_Strict):
    """A fine-tuning recipe the auto step tries beside its post-training candidates."""

    preset: TrainingPreset = Field(
        description=(
            "The recipe: qat (int8 quantization-aware training), prune30Qat / prune50Qat (magnitude pruning to 30 % / "
            "50 % sparsity, then QAT that keeps the sparsity), cluster16Qat (16 weight clusters per layer, then QAT "
            "that keeps them) or prune50Int8 (pruning to 50 %, then int8 post-training quantization)."
        )
    )
    fine_tune: FineTune = Field(
        default_factory=FineTune, description="Fine-tuning settings of every step of the recipe."
    )
    skip_layers: list[Annotated[str, Field(max_length=253)]] = Field(
        default_factory=list,
        max_length=256,
        description=(
            "Layers every step of the recipe leaves untouched (they stay float): sensitive layers, and layers tfmot "
            "cannot prune, cluster or quantize (a trial that meets one fails with the layer named)."
        ),
    )


LATENCY_RATIO_NOISE = 0.05
"""How far over maxLatencyRatio a median latency ratio may be and still pass: timing noise, not a slower file."""


class AutoStep(_Strict):
    """Searches quantization recipes on the float .tflite and keeps the best one that passes spec.gates.

    Candidates are whole-model recipes (dynamic, float16, weight-only int8, and int8 and int16x8 when the
    dataset has x_train) and per-layer mixed recipes: every layer starts at its lowest precision and the
    most sensitive layers are raised one precision at a time until the gates pass. Each candidate is
    quantized by litert-quantizer and measured (bytes, fidelity, latency interleaved with the baseline);
    the report lists every candidate and why it lost. Training recipes (``trials``) are fine-tuned as jobs of
    their own and their .tflite files measured as candidates too. Always the only step.
    """

    type: Literal["auto"] = Field(description="Step type.")
    objective: SearchObjective = Field(
        default=SearchObjective.SIZE,
        description=(
            "What the pick minimizes among the candidates that pass every gate: size (bytes, then latency), "
            "latency (median latency, then bytes) or balanced (size ratio times latency ratio to the baseline: "
            "a candidate twice as slow must be twice as small to tie)."
        ),
    )
    max_trials: int = Field(
        default=20,
        ge=1,
        le=1000,
        description=(
            "Most candidates quantized and measured. The trials' trained models are not counted: they are measured "
            "first, every one, since their training is already paid for."
        ),
    )
    max_minutes: float = Field(
        default=30.0, gt=0, le=1440, description="Wall-time budget of the search (sensitivity analysis included)."
    )
    precisions: list[LayerPrecision] = Field(
        default_factory=lambda: [
            LayerPrecision.WEIGHT_ONLY_INT4,
            LayerPrecision.INT4_BLOCKWISE,
            LayerPrecision.WEIGHT_ONLY_INT8,
            LayerPrecision.FLOAT16,
        ],
        min_length=1,
        max_length=5,
        description=(
            "The per-layer ladder, from fewest bytes per weight up (float is always its top): weightOnlyInt4, "
            "int4Blockwise, weightOnlyInt8 or dynamicInt8, float16. A precision litert-quantizer cannot apply "
            "to a layer is left out of that layer's ladder."
        ),
    )
    block_size: Literal[32, 64, 128, 256] = Field(
        default=32, description="Input values per quantization block of int4Blockwise."
    )
    min_weights: int = Field(
        default=1024,
        ge=0,
        description=(
            "Layers with fewer weights stay float in mixed candidates and are not analysed (reported as "
            "skipped): they cost few bytes and are often the most sensitive (a classifier's head)."
        ),
    )
    sensitivity_samples: int = Field(
        default=32,
        ge=1,
        le=10000,
        description="Samples (x_train, else the evaluation inputs) each layer's sensitivity is measured on.",
    )
    representative_samples: int = Field(
        default=200,
        ge=1,
        le=100000,
        description="Training samples used to calibrate the int8 and int16x8 whole-model candidates.",
    )
    max_latency_ratio: float | None = Field(
        default=None,
        gt=0,
        description=(
            "A gate of this step: the result's median latency, timed interleaved with the float baseline, at most "
            "this many times the baseline's (1.0: not slower than float); a median up to "
            f"{LATENCY_RATIO_NOISE:.0%} over it counts as within it (timing noise: a file that runs the baseline's "
            "kernels has a median on either side of 1.0). Candidates over it lose, and the result is judged on it "
            "like on spec.gates (gate maxLatencyRatio)."
        ),
    )
    trials: list[TrainingTrial] = Field(
        default_factory=list,
        max_length=32,
        description=(
            "Training recipes tried as candidates (they need a Keras model and spec.dataset). Trial i runs as its own "
            "job on the input model, writing its model.tflite and report.json to trials/<i>/ under spec.output.uri; "
            "the search measures each trial's .tflite like its other candidates. A cluster runs them as the pods of "
            "one Indexed Job, parallelism at once, each with the runner's GPUs, before the search; a local run runs "
            "them one after another. A trial already run on the same model, dataset and recipe is not run again (its "
            "trials/<i>/trial.json is read instead). A trial that fails for good (bad input, a layer tfmot cannot "
            "handle, a native crash) is listed as unavailable with its reason; the search goes on without it."
        ),
    )
    parallelism: int = Field(
        default=1,
        ge=1,
        le=32,
        description="Trial pods run at once on a cluster (each counts against the operator's concurrency limit).",
    )
    cache_uri: str | None = Field(
        default=None,
        alias="cacheURI",
        pattern=URI_PATTERN,
        max_length=2048,
        description=(
            "A folder for content-addressed trial records (default: trials/ in spec.output.uri): a re-run, or a "
            "search with other gates or a wider budget, reads the candidates measured before instead of measuring "
            "them again. New records are written with the artifacts."
        ),
    )


Step = Annotated[
    PruneStep | ClusterStep | QatStep | PtqStep | DistillStep | ReduceFiltersStep | AutoStep,
    Field(discriminator="type"),
]
TRAINING_STEP_TYPES = frozenset({"prune", "cluster", "qat", "distill", "reduceFilters"})
# Steps that wrap or rebuild the input model's layers, so it must be a Keras model (not a SavedModel).
KERAS_ONLY_STEP_TYPES = frozenset({"prune", "cluster", "qat", "reduceFilters"})
# Formats a distillation student may have: it is trained, so it must be a Keras model.
TRAINABLE_FORMATS = frozenset({ModelFormat.KERAS.value, ModelFormat.H5.value})


class Metric(str, Enum):
    AUTO = "auto"
    ACCURACY = "accuracy"
    FIDELITY = "fidelity"


class Latency(_Strict):
    """How latency is measured with the LiteRT interpreter (XNNPACK)."""

    threads: int = Field(default=1, ge=1, le=64, description="Interpreter threads.")
    runs: int = Field(default=50, ge=1, le=100000, description="Timed single-sample invocations.")
    warmup: int = Field(default=5, ge=0, le=1000, description="Untimed invocations first.")


class OutputTask(str, Enum):
    MULTICLASS = "multiclass"
    BINARY = "binary"
    MULTILABEL = "multilabel"
    REGRESSION = "regression"


CLASSIFIER_TASKS = frozenset({OutputTask.MULTICLASS.value, OutputTask.BINARY.value, OutputTask.MULTILABEL.value})


class OutputSetting(_Strict):
    """How one model output is judged."""

    name: str = Field(
        min_length=1,
        max_length=253,
        description="The output's name in the .tflite signature (for tf-keras models, the output layer's name).",
    )
    task: OutputTask = Field(
        description=(
            "multiclass (top-1 over the last axis), binary or multilabel (decisions thresholded at 0.5), or "
            "regression (any other values, e.g. dense maps). Overrides the task inferred from the baseline's outputs."
        )
    )


class Evaluation(_Strict):
    """How the baseline and the result .tflite are compared."""

    metric: Metric = Field(
        default=Metric.AUTO,
        description=(
            "accuracy (top-1 versus y_eval), fidelity (top-1 agreement and mean absolute error "
            "versus the float baseline), or auto: accuracy when labels exist, else fidelity."
        ),
    )
    samples: int = Field(default=1000, ge=1, le=1000000, description="Evaluation samples taken from x_eval.")
    latency: Latency = Field(default_factory=Latency, description="Latency measurement.")
    outputs: list[OutputSetting] = Field(
        default_factory=list,
        max_length=64,
        description=(
            "The task of some outputs, by name; the others' task is inferred from the baseline's outputs "
            "(see the README). A name the model does not have is an error."
        ),
    )


class Gates(_Strict):
    """Conditions the result must meet; every unset gate is not checked."""

    max_accuracy_drop: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description=(
            "Largest allowed drop of accuracy (absolute, 0.01 = one point) of the worst classifier output. "
            "With the fidelity metric or an unlabelled output, 1 - agreement with the baseline is compared instead."
        ),
    )
    min_size_reduction: float | None = Field(
        default=None,
        ge=0,
        lt=1,
        description="Smallest allowed size reduction, 1 - result/baseline (0.75 = 4x smaller).",
    )
    size_basis: Literal["bytes", "gzip"] = Field(
        default="bytes",
        description=(
            "Compare file sizes as stored (bytes) or gzip-compressed (gzip: what pruning alone "
            "saves in a compressed download)."
        ),
    )
    max_latency_ms: float | None = Field(
        default=None, gt=0, description="Largest allowed median (p50) latency in milliseconds."
    )
    min_fidelity: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description=(
            "Smallest allowed agreement with the float baseline (top-1 for multiclass outputs, decisions at 0.5 "
            "for binary and multilabel ones), of the worst classifier output. Fails when no output is a classifier."
        ),
    )
    min_snr_db: float | None = Field(
        default=None,
        ge=-100,
        le=300,
        description=(
            "Smallest allowed signal-to-noise ratio of the result's outputs against the baseline's, in dB "
            "(10 log10(sum baseline^2 / sum (result - baseline)^2)), of the worst output of any task."
        ),
    )


class Split(_Strict):
    """Split the converted model into parts that run one after the other (e.g. on different devices)."""

    after: list[Annotated[str, Field(min_length=1, max_length=253)]] = Field(
        min_length=1,
        max_length=32,
        description=(
            "Layer names, in order: a part ends after each of them (each must depend on the previous one). "
            "Part i+1 starts from the outputs of part i and from any earlier tensor it still needs."
        ),
    )


class Output(_Strict):
    """Where the artifacts go."""

    uri: str = Field(
        pattern=URI_PATTERN,
        max_length=2048,
        description=(
            "A folder: s3://bucket/prefix/ or a local path. It receives model.tflite, then report.html with "
            "its plots in plots/, then report.json (written last: its presence means the run finished)."
        ),
    )
    overwrite: bool = Field(
        default=False,
        description=(
            "Replace the result of an earlier run found at this location: its report, page, plots and split parts "
            "are removed first (a run with fewer parts, or none, leaves no stale ones)."
        ),
    )
    split: Split | None = Field(
        default=None,
        description=(
            "Also write the result split into parts: model.part0.tflite, model.part1.tflite, ... and split.json "
            "(each part's inputs and outputs, and the order to run them), converted like model.tflite and checked "
            "to reproduce its outputs."
        ),
    )


K8S_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


class Credentials(_Strict):
    """Where the runner pod gets its S3 credentials."""

    secret_name: str = Field(
        pattern=K8S_NAME_PATTERN,
        max_length=253,
        description=(
            "A Secret in the job's namespace whose keys become the runner's environment: "
            "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and optionally AWS_SESSION_TOKEN, "
            "AWS_DEFAULT_REGION, AWS_ENDPOINT_URL. Without it the pod uses its workload identity."
        ),
    )


class Toleration(_Strict):
    """A Kubernetes toleration for the runner pod."""

    key: str | None = Field(default=None, max_length=316, description="Taint key; empty with Exists matches all.")
    operator: Literal["Exists", "Equal"] | None = Field(default=None, description="Exists or Equal (default).")
    value: str | None = Field(default=None, max_length=63, description="Taint value for Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to tolerate; empty matches all."
    )
    toleration_seconds: int | None = Field(default=None, ge=0, description="How long a NoExecute taint is tolerated.")


class Resources(_Strict):
    """Compute resources of the runner container (Kubernetes quantities)."""

    requests: dict[str, str] = Field(
        default_factory=dict, max_length=16, description="Requested resources, e.g. cpu: '4', memory: 16Gi."
    )
    limits: dict[str, str] = Field(
        default_factory=dict, max_length=16, description="Resource limits, e.g. memory: 24Gi."
    )


class Execution(_Strict):
    """How the operator runs the runner as a batch Job; unset fields take the operator's defaults."""

    image: str | None = Field(default=None, max_length=512, description="Runner image.")
    gpus: int | None = Field(
        default=None,
        ge=0,
        le=16,
        description=(
            "nvidia.com/gpu to request; 0 runs on CPU. Unset: the operator's default (1) when a step trains "
            "(prune, cluster, qat, distill, reduceFilters), else 0: post-training quantization and the auto search "
            "run on the CPU."
        ),
    )
    resources: Resources | None = Field(default=None, description="CPU / memory requests and limits.")
    node_selector: dict[str, str] = Field(
        default_factory=dict, max_length=32, description="Node labels the runner pod must match."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=32, description="Tolerations, e.g. for tainted GPU nodes."
    )
    priority_class_name: str | None = Field(default=None, max_length=253, description="PriorityClass of the pod.")
    service_account_name: str | None = Field(
        default=None, max_length=253, description="ServiceAccount of the pod (workload identity for S3)."
    )
    backoff_limit: int | None = Field(
        default=None, ge=0, le=20, description="Retries after infrastructure failures (Job backoffLimit)."
    )
    active_deadline_seconds: int | None = Field(
        default=None, ge=1, description="Wall-clock limit of the whole Job in seconds."
    )
    scratch_size_limit: str | None = Field(
        default=None,
        pattern=SCRATCH_SIZE_PATTERN,
        max_length=32,
        description=(
            "Size limit of the runner's scratch volume (the emptyDir at /tmp that receives the model, the dataset "
            "and the intermediate files), e.g. 200Gi (operator default 100Gi). The runner refuses the job before "
            "downloading when the model and dataset would not fit."
        ),
    )
    ttl_seconds_after_finished: int | None = Field(
        default=None,
        ge=0,
        description=(
            "Delete the finished runner Job (not the artifacts) this many seconds after its outcome is recorded in "
            "the status (operator default 7 days). The operator deletes it, so the outcome is never lost to it."
        ),
    )


class Promotion(_Strict):
    """Where a run that passes every gate publishes its model for deployments (GitOps) to pick up."""

    uri: str = Field(
        pattern=URI_PATTERN,
        max_length=2048,
        description=(
            "A stable folder, e.g. s3://models/digits/stable/ or a versioned s3://models/digits/v3/. It receives "
            "model.tflite, then promotion.json (source job, sha256, results). Only written when all gates pass."
        ),
    )
    overwrite: bool = Field(
        default=False,
        description=(
            "Replace a promoted model.tflite whose sha256 differs. Without it such a run fails with "
            "PromotionConflict and the promoted model stays as it was."
        ),
    )


class Checkpoints(_Strict):
    """Checkpoints of fine-tuning under <output>/checkpoints/, so a restarted run resumes instead of starting over."""

    enabled: bool = Field(
        default=True,
        description=(
            "Write checkpoints: the weights each finished fine-tuning step kept, and the running step's weights, "
            "optimizer state and position at every epoch end and every everyMinutes. A run of the same spec on the "
            "same inputs and output (a retried pod) reuses the finished steps and resumes the running one."
        ),
    )
    every_minutes: float = Field(
        default=10,
        gt=0,
        le=1440,
        description="Also checkpoint within an epoch when this many minutes passed since the last checkpoint.",
    )
    keep: bool = Field(
        default=False,
        description="Leave the checkpoints after the run finished (default: deleted once report.json is written).",
    )


class CompressionJobSpec(_Strict):
    """What to compress, how, how to check it, and where the result goes."""

    model: ModelSource = Field(description="The trained input model.")
    dataset: DatasetSource | None = Field(
        default=None,
        description="Data for fine-tuning, calibration and evaluation (needed by all but float16/dynamic-only jobs).",
    )
    steps: list[Step] = Field(
        min_length=1,
        max_length=16,
        description="Compression steps in order. ptq, when present, must be the last; auto must be the only one.",
    )
    evaluation: Evaluation = Field(default_factory=Evaluation, description="Evaluation settings.")
    seed: int = Field(
        default=0,
        ge=0,
        le=2**31 - 1,
        description=(
            "Seed of every random choice of the run (training shuffles, dropout, wrapper and centroid "
            "initialisation, distillation order, random evaluation inputs); TensorFlow's ops run "
            "deterministically, so two runs of one spec with the same runner image and hardware give the same "
            "model.tflite. Another seed gives another draw."
        ),
    )
    gates: Gates = Field(default_factory=Gates, description="Pass/fail conditions.")
    output: Output = Field(description="Where the .tflite and report.json are written.")
    checkpoints: Checkpoints = Field(
        default_factory=Checkpoints, description="Checkpoints of fine-tuning, for resuming a restarted run."
    )
    promotion: Promotion | None = Field(
        default=None, description="Copy the model to a stable location when every gate passes (GitOps)."
    )
    credentials: Credentials | None = Field(default=None, description="S3 credentials for the runner pod.")
    execution: Execution | None = Field(
        default=None, description="Kubernetes settings of the runner Job (ignored by a local run)."
    )
    suspend: bool = Field(
        default=False, description="Suspend the runner Job (true) or let it run (false); the only mutable field."
    )
    queue_name: str | None = Field(
        default=None,
        pattern=K8S_NAME_PATTERN,
        max_length=63,
        description="Kueue LocalQueue: sets the kueue.x-k8s.io/queue-name label on the Job.",
    )

    @model_validator(mode="after")
    def _check_plan(self, info: ValidationInfo) -> CompressionJobSpec:
        from .rules import plan_problems

        if info.context and info.context.get(SKIP_RULES):
            return self
        problems = plan_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self


SKIP_RULES = "skipCrossFieldRules"
"""Validation context key: check fields only (the CEL parity test judges each rule on its own)."""


def _field_path(loc: tuple[int | str, ...]) -> str:
    path = "spec"
    step_tags = {"prune", "cluster", "qat", "ptq", "distill", "reduceFilters", "auto"}
    for index, part in enumerate(loc):
        if isinstance(part, int):
            path += f"[{part}]"
        elif index > 0 and loc[index - 1] != "type" and part in step_tags and isinstance(loc[index - 1], int):
            continue
        else:
            path += f".{part}"
    return path


def format_validation_error(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "value_error" and not item["loc"]:
            lines.append(message)
        else:
            lines.append(f"{_field_path(tuple(item['loc']))}: {message}")
    return "; ".join(lines)


def parse_spec(document: dict[str, Any]) -> CompressionJobSpec:
    """Validate a whole CompressionJob object or just its spec."""
    if not isinstance(document, dict):
        raise SpecError(f"the job must be a mapping, not {type(document).__name__}")
    if "kind" in document or "apiVersion" in document:
        if document.get("kind") != KIND:
            raise SpecError(f"kind: expected {KIND!r}, got {document.get('kind')!r}")
        expected = f"{API_GROUP}/{API_VERSION}"
        if document.get("apiVersion") != expected:
            raise SpecError(f"apiVersion: expected {expected!r}, got {document.get('apiVersion')!r}")
        if not isinstance(document.get("spec"), dict):
            raise SpecError("spec: a CompressionJob needs a spec mapping")
        document = document["spec"]
    try:
        return CompressionJobSpec.model_validate(document)
    except ValidationError as error:
        raise SpecError(format_validation_error(error)) from None


def load_spec_text(text: str) -> CompressionJobSpec:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise SpecError(f"the job is not valid YAML: {error}") from None
    return parse_spec(document)


def spec_json_schema() -> dict[str, Any]:
    """JSON Schema of the spec with camelCase names (the CRD is generated from this)."""
    return CompressionJobSpec.model_json_schema(by_alias=True)


def spec_reference_markdown() -> str:
    """The spec reference in the README, generated from the schema (a test keeps them equal)."""
    from .docs import reference_markdown

    return reference_markdown(CompressionJobSpec, "spec.")
