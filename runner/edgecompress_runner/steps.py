"""The step types: one class per spec step, found through a registry keyed by the spec's step class.

Each class applies its step to the current model (``apply`` returns the contract's step report) and
says what the step means for the conversion (``contribute`` returns an updated ``ConversionPlan``):
prune makes the float result sparse-encoded and QAT sparsity-preserving, cluster makes QAT
cluster-preserving, QAT makes the conversion integer, and ptq is only recorded here because the
converter applies it. A new step type is a new class here plus its spec and report models.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import numpy as np

from edgecompress_contract.report import (
    AutoReport,
    ClusterReport,
    Comparison,
    DistillReport,
    GateResult,
    Keras3Load,
    PruneReport,
    QatReport,
    Quantizer,
    ReduceFiltersReport,
    StepReport,
)
from edgecompress_contract.spec import (
    AutoStep,
    ClusterStep,
    DistillStep,
    PruneStep,
    PtqStep,
    QatStep,
    ReduceFiltersStep,
    Step,
)

from .data import Arrays, Dataset, ModelTensor, check_inputs, training_arrays
from .errors import InputError
from .planning import ConversionPlan
from .progress import Progress

if TYPE_CHECKING:
    from .checkpoints import RunCheckpoints, StepCheckpoint
    from .compress import TrainingData
    from .model_io import LoadedModel
    from .search import SearchInputs
    from .trial_cache import TrialCache

SpecT = TypeVar("SpecT", PruneStep, ClusterStep, QatStep, PtqStep, DistillStep, ReduceFiltersStep, AutoStep)
ReportT = TypeVar("ReportT", PruneReport, ClusterReport, QatReport, DistillReport, ReduceFiltersReport, AutoReport)


@dataclass
class StepContext:
    """What the steps share: the model so far, the plan so far, the data, and the files steps asked for."""

    loaded: LoadedModel
    dataset: Dataset | None
    files: dict[str, Path]
    work_dir: Path
    progress: Progress
    keras_model: Any = None
    plan: ConversionPlan = ConversionPlan()
    tasks: dict[str, str] = field(default_factory=dict)
    reference: dict[str, np.ndarray] | None = None
    student_keras3: Keras3Load | None = None
    search_inputs: SearchInputs | None = None
    """The baseline and the evaluation the run judges its result on (set once the baseline is measured)."""
    seed: int = 0
    checkpoints: RunCheckpoints | None = None
    strategy: Any = None
    teacher: Any = None
    training: TrainingData | None = None

    def run(self, step: CompressionStep[Any]) -> StepReport | None:
        """Applies ``step`` and adds what it contributes to the plan (and, for a sharded dataset, what it
        streamed); a step that trains runs in ``strategy``'s scope when there is one (several GPUs: see
        distribute.py).

        A step that trains starts from a seed of its own (the run's seed and its index), so what it draws does
        not depend on what earlier steps drew, and a restarted run that reuses them draws the same.
        """
        self.training = None
        if step.epochs:
            from .tfcompat import seed_run

            seed_run(self.step_seed(step))
        if step.epochs and self.strategy is not None:
            from .distribute import copy_into_scope

            with self.strategy.scope():
                self.keras_model = copy_into_scope(self.model(step.phase))
                report = step.apply(self)
        else:
            report = step.apply(self)
        if self.training is not None and self.training.streams and report is not None:
            report = report.model_copy(update={"streaming": self.training.streams[-1].report(step.epochs)})
        self.plan = step.contribute(self.plan, report)
        return report

    @property
    def replicas(self) -> int:
        return int(self.strategy.num_replicas_in_sync) if self.strategy is not None else 1

    @property
    def replica_devices(self) -> list[str]:
        return list(self.strategy.extended.worker_devices) if self.strategy is not None else []

    def step_seed(self, step: CompressionStep[Any]) -> int:
        digest = hashlib.sha256(f"{self.seed}/{step.index}".encode()).digest()
        return int.from_bytes(digest[:4], "big") % 2**31

    def checkpoint(self, step: CompressionStep[Any]) -> StepCheckpoint:
        """Where ``step`` checkpoints its fine-tuning (nowhere when checkpoints are off)."""
        from .checkpoints import StepCheckpoint

        return StepCheckpoint(self.checkpoints, step.index, self.step_seed(step))

    def model(self, phase: str) -> Any:
        """The model the next step works on (the input model until a step replaces it)."""
        return self.loaded.require_keras(phase) if self.keras_model is None else self.keras_model

    def training_data(self, phase: str) -> TrainingData:
        """x_train, its labels, the input model's outputs on it and each output's task."""
        from .compress import TrainingData

        if self.dataset is None:
            raise InputError(f"{phase}: fine-tuning needs a dataset")
        x, y = training_arrays(self.dataset, phase)
        if self.dataset.shards is None:
            return TrainingData(x=x, y=y, reference=self.reference_outputs(phase, x), tasks=self.tasks)
        reference = self.reference_outputs(phase, x)
        if self.teacher is None:
            from .tfcompat import keras

            model = self.loaded.require_keras(phase)
            self.teacher = keras.models.clone_model(model)
            self.teacher.set_weights(model.get_weights())
        self.training = TrainingData(
            x=x, y=y, reference=reference, tasks=self.tasks, shards=self.dataset.shards, teacher=self.teacher
        )
        return self.training

    def reference_outputs(self, phase: str, x: Arrays) -> dict[str, np.ndarray]:
        """The input (float) model's outputs on x_train by output name, which fine-tuning distills from.

        Computed once, by the first step that fine-tunes and before it trains: tfmot's wrappers reuse the
        input model's layer objects, so its weights change as soon as a step trains. (For a sharded dataset,
        ``x`` is the first samples, and an untouched copy of the model, ``teacher``, serves the stream.)
        """
        from .compress import output_names, predict_named

        if self.reference is None:
            model = self.loaded.require_keras(phase)
            self.reference = predict_named(model, x, output_names(model, list(self.tasks), phase))
        return self.reference


class CompressionStep(ABC, Generic[SpecT]):
    """One step of the spec, at its position in the list."""

    spec_class: ClassVar[type[Any]]

    def __init__(self, spec: SpecT, index: int) -> None:
        self.spec: SpecT = spec
        self.index = index

    @property
    def phase(self) -> str:
        """The step's name in progress events, timings and messages, e.g. ``steps[0] prune``."""
        return f"steps[{self.index}] {self.spec.type}"

    @property
    def epochs(self) -> int:
        fine_tune = getattr(self.spec, "fine_tune", None)
        return fine_tune.epochs if fine_tune is not None else 0

    def inputs(self) -> dict[str, str]:
        """Extra files the step needs downloaded, by their name in the report's inputs."""
        return {}

    def check(self, dataset: Dataset | None) -> None:
        """Fails before any work when the dataset cannot serve this step."""

    @abstractmethod
    def apply(self, context: StepContext) -> StepReport | None:
        """Applies the step to ``context.keras_model``; None when the converter applies it (ptq)."""

    def contribute(self, plan: ConversionPlan, report: StepReport | None) -> ConversionPlan:
        """What this step, as applied, changes in the conversion."""
        return plan

    def publish(self) -> None:
        """Uploads what the step keeps beyond the run; called in the upload phase, before the model."""

    def gates(self, comparison: Comparison) -> list[GateResult]:
        """Gates the step itself sets, judged on the result like spec.gates."""
        return []


_REGISTRY: dict[type[Any], type[CompressionStep[Any]]] = {}

_StepClass = TypeVar("_StepClass", bound=type[CompressionStep[Any]])


def registers(spec_class: type[Any]) -> Callable[[_StepClass], _StepClass]:
    """Class decorator: the step class that runs ``spec_class`` steps."""

    def register(step_class: _StepClass) -> _StepClass:
        step_class.spec_class = spec_class
        _REGISTRY[spec_class] = step_class
        return step_class

    return register


def build_steps(steps: list[Step]) -> list[CompressionStep[Any]]:
    """The step objects for the spec's steps, in order."""
    return [_REGISTRY[type(step)](step, index) for index, step in enumerate(steps)]


def _report(report: StepReport | None, kind: type[ReportT]) -> ReportT:
    assert isinstance(report, kind), f"expected a {kind.__name__}"
    return report


@registers(PruneStep)
class Prune(CompressionStep[PruneStep]):
    def __init__(self, spec: PruneStep, index: int) -> None:
        super().__init__(spec, index)
        # Per pruned layer, the weights tfmot pruned in it (set by apply, passed on through the plan).
        self.pruned_weights: dict[str, tuple[str, ...]] = {}

    def apply(self, context: StepContext) -> PruneReport:
        from . import compress

        data = context.training_data(self.phase)
        model = context.model(self.phase)
        context.keras_model, report, self.pruned_weights = compress.prune(
            model,
            self.spec,
            index=self.index,
            data=data,
            progress=context.progress,
            checkpoint=context.checkpoint(self),
        )
        return report

    def contribute(self, plan: ConversionPlan, report: StepReport | None) -> ConversionPlan:
        return replace(
            plan,
            pruned_layers=tuple(_report(report, PruneReport).sparsity.layers),
            pruned_weights=tuple(self.pruned_weights.items()),
        )


@registers(ReduceFiltersStep)
class ReduceFilters(CompressionStep[ReduceFiltersStep]):
    """Removes whole output channels; the smaller model is an ordinary tf-keras model for the later steps."""

    def apply(self, context: StepContext) -> ReduceFiltersReport:
        from . import filters

        data = context.training_data(self.phase)
        model = context.model(self.phase)
        context.keras_model, report = filters.reduce_filters(
            model, self.spec, index=self.index, data=data, progress=context.progress
        )
        return report


@registers(ClusterStep)
class Cluster(CompressionStep[ClusterStep]):
    def apply(self, context: StepContext) -> ClusterReport:
        from . import compress

        data = context.training_data(self.phase)
        model = context.model(self.phase)
        context.keras_model, report = compress.cluster(
            model,
            self.spec,
            index=self.index,
            data=data,
            preserve_sparsity=bool(context.plan.pruned_layers),
            progress=context.progress,
            checkpoint=context.checkpoint(self),
        )
        return report

    def contribute(self, plan: ConversionPlan, report: StepReport | None) -> ConversionPlan:
        return replace(plan, clustered=True)


@registers(QatStep)
class Qat(CompressionStep[QatStep]):
    def apply(self, context: StepContext) -> QatReport:
        from . import compress

        data = context.training_data(self.phase)
        model = context.model(self.phase)
        context.keras_model, report = compress.qat(
            model,
            self.spec,
            index=self.index,
            data=data,
            pruned_weights=dict(context.plan.pruned_weights),
            clustered=context.plan.clustered,
            progress=context.progress,
            checkpoint=context.checkpoint(self),
        )
        return report

    def contribute(self, plan: ConversionPlan, report: StepReport | None) -> ConversionPlan:
        return replace(plan, qat_applied=True, qat_kept_float=bool(_report(report, QatReport).skipped_layers))


@registers(PtqStep)
class Ptq(CompressionStep[PtqStep]):
    """Post-training quantization happens in the converter; the step only sets the plan's mode."""

    def check(self, dataset: Dataset | None) -> None:
        if self.spec.mode in ("int8", "int16x8") and dataset is not None and dataset.x_train is None:
            raise InputError(
                f"spec.steps[{self.index}].mode: {self.spec.mode} calibrates on x_train, "
                "which the dataset does not have"
            )

    def apply(self, context: StepContext) -> None:
        return None

    def contribute(self, plan: ConversionPlan, report: StepReport | None) -> ConversionPlan:
        return replace(plan, ptq=self.spec)


@registers(DistillStep)
class Distill(CompressionStep[DistillStep]):
    """Trains the student from the current model; the student replaces the model for later steps."""

    def inputs(self) -> dict[str, str]:
        return {"student": self.spec.student.uri}

    def apply(self, context: StepContext) -> DistillReport:
        from . import compress, model_io

        data = context.training_data(self.phase)
        teacher = context.model(self.phase)
        student_source = self.spec.student
        student = model_io.load_model(
            context.files["student"],
            student_source.format,
            student_source.uri,
            context.work_dir,
            trust_code=student_source.trust_code,
            keras_needed_by=f"{self.phase} student",
        )
        student_model = student.require_keras(f"{self.phase} student")
        context.student_keras3 = student.keras3
        if context.dataset is not None:
            _check_student_inputs(student_model, context.dataset, student_source.uri)
        context.keras_model, report = compress.distill(
            teacher,
            student_model,
            self.spec,
            data=data,
            progress=context.progress,
            checkpoint=context.checkpoint(self),
        )
        return report


def _check_student_inputs(student: Any, dataset: Dataset, source: str) -> None:
    """The dataset must fit the student's inputs as it fits the teacher's (one input: by position)."""
    from .tfcompat import tf

    tensors = [
        ModelTensor(name=name, shape=tuple(tensor.shape[1:]), dtype=np.dtype(tf.as_dtype(tensor.dtype).as_numpy_dtype))
        for name, tensor in zip(student.input_names, student.inputs, strict=True)
    ]
    for split in ("x_train", "x_eval"):
        arrays = getattr(dataset, split)
        if arrays is None:
            continue
        if len(tensors) == 1 and len(arrays) == 1:
            arrays = {tensors[0].name: next(iter(arrays.values()))}
        check_inputs(arrays, tensors, split, source)


@registers(AutoStep)
class Auto(CompressionStep[AutoStep]):
    """Searches recipes on the float baseline (``search.run_search``); the pick is the result as it is."""

    def __init__(self, spec: AutoStep, index: int) -> None:
        super().__init__(spec, index)
        self.picked: bytes | None = None
        self.picked_by: Quantizer = "litertQuantizer"
        self.cache: TrialCache | None = None

    def apply(self, context: StepContext) -> AutoReport:
        from .search import run_search
        from .storage import storage_for
        from .trial_cache import TrialCache

        inputs = context.search_inputs
        assert inputs is not None, "the baseline phase sets the search inputs"
        inputs = replace(inputs, on_trial=context.progress.trial)
        if self.spec.cache_uri is not None:
            cache = TrialCache(self.spec.cache_uri, storage_for(self.spec.cache_uri), context.work_dir / "trials")
            inputs = replace(inputs, cache=cache)
        self.cache = inputs.cache
        found = run_search(self.spec, inputs, where=f"spec.steps[{self.index}]")
        self.picked = found.model
        (chosen,) = [candidate for candidate in found.report.candidates if candidate.chosen]
        self.picked_by = "converter" if chosen.kind in ("converter", "trained") else "litertQuantizer"
        return found.report

    def contribute(self, plan: ConversionPlan, report: StepReport | None) -> ConversionPlan:
        return replace(plan, searched_model=self.picked, searched_quantizer=self.picked_by)

    def publish(self) -> None:
        if self.cache is not None:
            self.cache.publish()

    def gates(self, comparison: Comparison) -> list[GateResult]:
        from .search import latency_ratio_gate

        limit = self.spec.max_latency_ratio
        return [] if limit is None else [latency_ratio_gate(limit, comparison)]
