"""The spec's cross-field rules, each defined once: its message, its Python check and its CEL twin.

The runner runs the Python checks when it validates a spec (``plan_problems``); the CRD carries
the CEL expressions as ``x-kubernetes-validations`` so the apiserver refuses the same specs with
the same messages. A unit test evaluates every CEL expression against a generated corpus of specs
and asserts the same verdict as the Python check.

CEL sees the object as the user wrote it (the CRD sets no defaults), so expressions spell out the
defaults with ``has(...) ? ... : default``. CEL has no list indexes in comprehensions, so rules
about positions are stated as counts plus the first or last element; the Python checks state the
same condition and report the index.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .spec import (
    KERAS_ONLY_STEP_TYPES,
    TRAINABLE_FORMATS,
    TRAINING_STEP_TYPES,
    AutoStep,
    CompressionJobSpec,
    DistillStep,
    ModelFormat,
    PruneStep,
    PruningAllocation,
    PruningSchedule,
    PtqMode,
    PtqStep,
)

LAST_STEP = "self.steps[size(self.steps) - 1]"


@dataclass(frozen=True)
class Violation:
    """Where a rule is broken (a field path such as ``spec.steps[1].mode``) and what was found there."""

    where: str
    found: str = ""


@dataclass(frozen=True)
class SpecRule:
    """A rule over the whole spec; ``cel`` is evaluated with ``self`` bound to the spec."""

    name: str
    message: str
    cel: str
    field_path: str
    violations: Callable[[CompressionJobSpec], list[Violation]]

    def cel_rule(self) -> dict[str, str]:
        return {"rule": self.cel, "message": self.message, "fieldPath": self.field_path}


@dataclass(frozen=True)
class StepRule:
    """A rule over one step; ``cel`` is evaluated with ``self`` bound to the step object."""

    name: str
    message: str
    cel: str
    field_path: str
    broken: Callable[[Any], str | None]
    """Returns what was found when the typed step breaks the rule, else None."""

    def cel_rule(self) -> dict[str, str]:
        return {"rule": self.cel, "message": self.message, "fieldPath": self.field_path}


def _cel_list(values: frozenset[str]) -> str:
    return "[" + ", ".join(f"'{value}'" for value in sorted(values)) + "]"


def _count(kind: str) -> str:
    return f"self.steps.filter(s, s.type == '{kind}').size()"


def _steps_at(spec: CompressionJobSpec, kind: str) -> list[int]:
    return [index for index, step in enumerate(spec.steps) if step.type == kind]


def _at_most_one(kind: str) -> SpecRule:
    def violations(spec: CompressionJobSpec) -> list[Violation]:
        found = len(_steps_at(spec, kind))
        return [Violation("spec.steps", f"found {found}")] if found > 1 else []

    return SpecRule(
        name=f"at-most-one-{kind}",
        message=f"at most one {kind} step",
        cel=f"{_count(kind)} <= 1",
        field_path=".steps",
        violations=violations,
    )


def _ptq_last(spec: CompressionJobSpec) -> list[Violation]:
    last = len(spec.steps) - 1
    return [
        Violation(f"spec.steps[{index}]", f"found {spec.steps[index + 1].type!r} after it")
        for index in _steps_at(spec, "ptq")
        if index != last
    ]


def _distill_first(spec: CompressionJobSpec) -> list[Violation]:
    return [Violation(f"spec.steps[{index}]") for index in _steps_at(spec, "distill") if index != 0]


def _reduce_filters_first(spec: CompressionJobSpec) -> list[Violation]:
    first = 1 if spec.steps[0].type == "distill" else 0
    return [
        Violation(f"spec.steps[{index}]", f"found {spec.steps[index - 1].type!r} before it")
        for index in _steps_at(spec, "reduceFilters")
        if index != first
    ]


_UNSPLITTABLE_FORMATS = frozenset({ModelFormat.SAVEDMODEL.value, ModelFormat.TFLITE.value})


def _split_needs_keras(spec: CompressionJobSpec) -> list[Violation]:
    if spec.output.split is not None and spec.model.format in _UNSPLITTABLE_FORMATS:
        return [Violation("spec.output.split", f"found {spec.model.format}")]
    return []


def _split_without_qat(spec: CompressionJobSpec) -> list[Violation]:
    if spec.output.split is not None and _steps_at(spec, "qat"):
        return [Violation("spec.output.split", "found a qat step")]
    return []


def _split_without_auto(spec: CompressionJobSpec) -> list[Violation]:
    if spec.output.split is not None and _steps_at(spec, "auto"):
        return [Violation("spec.output.split", "found an auto step")]
    return []


def _only_ptq_after_qat(spec: CompressionJobSpec) -> list[Violation]:
    qats = _steps_at(spec, "qat")
    if not qats:
        return []
    after = [step.type for step in spec.steps[qats[-1] + 1 :]]
    return [] if after in ([], ["ptq"]) else [Violation("spec.steps", f"found {after} after qat")]


def _ptq_skip_after_qat(spec: CompressionJobSpec) -> list[Violation]:
    if not _steps_at(spec, "qat"):
        return []
    return [
        Violation(f"spec.steps[{index}].skipLayers")
        for index, step in enumerate(spec.steps)
        if isinstance(step, PtqStep) and (step.skip_layers or step.skip_first_and_last)
    ]


def _training_needs_dataset(spec: CompressionJobSpec) -> list[Violation]:
    if spec.dataset is not None:
        return []
    return [
        Violation(f"spec.steps[{index}]", f"found {step.type}")
        for index, step in enumerate(spec.steps)
        if step.type in TRAINING_STEP_TYPES
    ]


CALIBRATED_MODES = frozenset({PtqMode.INT8.value, PtqMode.INT16X8.value})


def _calibration_needs_dataset(spec: CompressionJobSpec) -> list[Violation]:
    if spec.dataset is not None:
        return []
    return [
        Violation(f"spec.steps[{index}].mode", f"found {step.mode}")
        for index, step in enumerate(spec.steps)
        if isinstance(step, PtqStep) and step.mode in CALIBRATED_MODES
    ]


def _format_refuses_steps(name: str, message: str, model_format: ModelFormat, step_types: frozenset[str]) -> SpecRule:
    """A rule that refuses these step types for an input model of this format."""

    def violations(spec: CompressionJobSpec) -> list[Violation]:
        if spec.model.format != model_format:
            return []
        return [
            Violation(f"spec.steps[{index}]", f"found {step.type}")
            for index, step in enumerate(spec.steps)
            if step.type in step_types
        ]

    return SpecRule(
        name=name,
        message=message,
        cel=f"self.model.format != '{model_format.value}' || !self.steps.exists(s, s.type in {_cel_list(step_types)})",
        field_path=".model.format",
        violations=violations,
    )


def _tflite_float_io(spec: CompressionJobSpec) -> list[Violation]:
    if spec.model.format != ModelFormat.TFLITE:
        return []
    return [
        Violation(f"spec.steps[{index}].integerIO")
        for index, step in enumerate(spec.steps)
        if isinstance(step, PtqStep) and step.integer_io
    ]


QUALITY_GATES = {"max_accuracy_drop": "maxAccuracyDrop", "min_fidelity": "minFidelity", "min_snr_db": "minSnrDb"}
"""The gates that bound a result's quality (Python name: wire name); the auto search needs one of them."""


def _auto_alone(spec: CompressionJobSpec) -> list[Violation]:
    if not _steps_at(spec, "auto") or len(spec.steps) == 1:
        return []
    return [Violation("spec.steps", f"found {[step.type for step in spec.steps]}")]


def _auto_needs_quality_gate(spec: CompressionJobSpec) -> list[Violation]:
    if not _steps_at(spec, "auto") or any(getattr(spec.gates, name) is not None for name in QUALITY_GATES):
        return []
    return [Violation("spec.gates")]


HAS_TRIALS = "self.steps.exists(s, s.type == 'auto' && has(s.trials) && size(s.trials) > 0)"


def _trial_steps(spec: CompressionJobSpec) -> list[int]:
    return [index for index, step in enumerate(spec.steps) if isinstance(step, AutoStep) and step.trials]


def _trials_need_dataset(spec: CompressionJobSpec) -> list[Violation]:
    if spec.dataset is not None:
        return []
    return [Violation(f"spec.steps[{index}].trials") for index in _trial_steps(spec)]


def _trials_need_keras(spec: CompressionJobSpec) -> list[Violation]:
    if spec.model.format in TRAINABLE_FORMATS:
        return []
    return [
        Violation(f"spec.steps[{index}].trials", f"found format {spec.model.format}") for index in _trial_steps(spec)
    ]


def same_folder(first: str, second: str) -> bool:
    """Two URIs name the same folder when they differ at most by one trailing slash."""
    return first == second or first + "/" == second or second + "/" == first


def _promotion_elsewhere(spec: CompressionJobSpec) -> list[Violation]:
    if spec.promotion is not None and same_folder(spec.promotion.uri, spec.output.uri):
        return [Violation("spec.promotion.uri")]
    return []


def _duplicate_outputs(spec: CompressionJobSpec) -> list[Violation]:
    seen: set[str] = set()
    violations = []
    for index, setting in enumerate(spec.evaluation.outputs):
        if setting.name in seen:
            violations.append(Violation(f"spec.evaluation.outputs[{index}].name", f"found {setting.name!r} again"))
        seen.add(setting.name)
    return violations


SPEC_RULES: tuple[SpecRule, ...] = (
    SpecRule(
        name="ptq-last",
        message="ptq must be the last step",
        cel=f"{_count('ptq')} == 0 || ({_count('ptq')} == 1 && {LAST_STEP}.type == 'ptq')",
        field_path=".steps",
        violations=_ptq_last,
    ),
    SpecRule(
        name="distill-first",
        message="distill must be the first step, it replaces the model",
        cel=f"{_count('distill')} == 0 || ({_count('distill')} == 1 && self.steps[0].type == 'distill')",
        field_path=".steps",
        violations=_distill_first,
    ),
    *(_at_most_one(kind) for kind in ("ptq", "qat", "distill", "reduceFilters")),
    SpecRule(
        name="reduce-filters-first",
        message=(
            "reduceFilters must be the first step, or the second after distill (its fine-tuning would undo the "
            "zeros and shared values of earlier steps)"
        ),
        cel=(
            f"{_count('reduceFilters')} == 0 || ({_count('reduceFilters')} == 1 && "
            "(self.steps[0].type == 'reduceFilters' || (size(self.steps) >= 2 && "
            "self.steps[0].type == 'distill' && self.steps[1].type == 'reduceFilters')))"
        ),
        field_path=".steps",
        violations=_reduce_filters_first,
    ),
    SpecRule(
        name="only-ptq-after-qat",
        message="only ptq may follow qat (the model is already quantized)",
        cel=(
            f"{_count('qat')} == 0 || {LAST_STEP}.type == 'qat' || (size(self.steps) >= 2 && "
            f"self.steps[size(self.steps) - 2].type == 'qat' && {LAST_STEP}.type == 'ptq')"
        ),
        field_path=".steps",
        violations=_only_ptq_after_qat,
    ),
    SpecRule(
        name="ptq-skip-after-qat",
        message=(
            "after qat, list the layers to keep float on the qat step (the converter takes QAT's quantization as it is)"
        ),
        cel=(
            f"{_count('qat')} == 0 || !self.steps.exists(s, s.type == 'ptq' && "
            "((has(s.skipLayers) && size(s.skipLayers) > 0) || (has(s.skipFirstAndLast) && s.skipFirstAndLast)))"
        ),
        field_path=".steps",
        violations=_ptq_skip_after_qat,
    ),
    SpecRule(
        name="training-needs-dataset",
        message="prune, cluster, qat, distill and reduceFilters fine-tune the model and need spec.dataset",
        cel=f"has(self.dataset) || !self.steps.exists(s, s.type in {_cel_list(TRAINING_STEP_TYPES)})",
        field_path=".dataset",
        violations=_training_needs_dataset,
    ),
    SpecRule(
        name="calibration-needs-dataset",
        message="ptq int8 and int16x8 need spec.dataset for representative samples",
        cel=(
            "has(self.dataset) || !self.steps.exists(s, s.type == 'ptq' && has(s.mode) && "
            f"s.mode in {_cel_list(CALIBRATED_MODES)})"
        ),
        field_path=".dataset",
        violations=_calibration_needs_dataset,
    ),
    _format_refuses_steps(
        "keras-only-steps",
        "prune, cluster, qat and reduceFilters need a Keras model (format keras or h5); a SavedModel can only be "
        "converted with ptq",
        ModelFormat.SAVEDMODEL,
        KERAS_ONLY_STEP_TYPES,
    ),
    _format_refuses_steps(
        "tflite-ptq-only",
        "a tflite model (spec.model.format) can only be quantized by a ptq step; prune, cluster, qat, distill and "
        "reduceFilters train a Keras model",
        ModelFormat.TFLITE,
        TRAINING_STEP_TYPES,
    ),
    SpecRule(
        name="tflite-float-io",
        message="integerIO is not available for a tflite model (spec.model.format): its input and output stay float",
        cel=(
            f"self.model.format != '{ModelFormat.TFLITE.value}' || "
            "!self.steps.exists(s, s.type == 'ptq' && has(s.integerIO) && s.integerIO)"
        ),
        field_path=".steps",
        violations=_tflite_float_io,
    ),
    SpecRule(
        name="split-needs-keras",
        message="splitting needs the model's Keras layers (format keras or h5), not a SavedModel or a tflite model",
        cel=f"!has(self.output.split) || !(self.model.format in {_cel_list(_UNSPLITTABLE_FORMATS)})",
        field_path=".output.split",
        violations=_split_needs_keras,
    ),
    SpecRule(
        name="split-without-qat",
        message=(
            "splitting converts each part with post-training quantization at most; a QAT model's parts would lose "
            "the ranges at their boundaries"
        ),
        cel="!has(self.output.split) || !self.steps.exists(s, s.type == 'qat')",
        field_path=".output.split",
        violations=_split_without_qat,
    ),
    SpecRule(
        name="split-without-auto",
        message=(
            "splitting converts each part with the run's conversion plan; an auto step's pick is a per-layer "
            "litert-quantizer recipe the parts would not carry"
        ),
        cel="!has(self.output.split) || !self.steps.exists(s, s.type == 'auto')",
        field_path=".output.split",
        violations=_split_without_auto,
    ),
    SpecRule(
        name="auto-alone",
        message="an auto step must be the only step (it searches recipes on the float model itself)",
        cel="!self.steps.exists(s, s.type == 'auto') || size(self.steps) == 1",
        field_path=".steps",
        violations=_auto_alone,
    ),
    SpecRule(
        name="auto-needs-quality-gate",
        message=(
            f"an auto step needs a quality gate ({', '.join(sorted(QUALITY_GATES.values()))}), "
            "else the most aggressive candidate would always win"
        ),
        cel=(
            "!self.steps.exists(s, s.type == 'auto') || (has(self.gates) && ("
            + " || ".join(f"has(self.gates.{wire})" for wire in sorted(QUALITY_GATES.values()))
            + "))"
        ),
        field_path=".gates",
        violations=_auto_needs_quality_gate,
    ),
    SpecRule(
        name="unique-output-names",
        message="each output may be named once in spec.evaluation.outputs",
        cel=(
            "!has(self.evaluation) || !has(self.evaluation.outputs) || "
            "self.evaluation.outputs.all(o, self.evaluation.outputs.filter(p, p.name == o.name).size() == 1)"
        ),
        field_path=".evaluation.outputs",
        violations=_duplicate_outputs,
    ),
    SpecRule(
        name="trials-need-dataset",
        message="the auto step's trials fine-tune the model and need spec.dataset",
        cel=f"has(self.dataset) || !{HAS_TRIALS}",
        field_path=".dataset",
        violations=_trials_need_dataset,
    ),
    SpecRule(
        name="trials-need-keras",
        message="the auto step's trials fine-tune the model and need a Keras model (spec.model.format keras or h5)",
        cel=f"self.model.format in {_cel_list(TRAINABLE_FORMATS)} || !{HAS_TRIALS}",
        field_path=".model.format",
        violations=_trials_need_keras,
    ),
    SpecRule(
        name="promotion-elsewhere",
        message="must differ from spec.output.uri (the stable copy needs its own folder)",
        cel=(
            "!has(self.promotion) || !(self.promotion.uri == self.output.uri || "
            "self.promotion.uri + '/' == self.output.uri || self.promotion.uri == self.output.uri + '/')"
        ),
        field_path=".promotion.uri",
        violations=_promotion_elsewhere,
    ),
)


def _integer_io(step: Any) -> str | None:
    if isinstance(step, PtqStep) and step.integer_io and step.mode != PtqMode.INT8:
        return f"not {step.mode}"
    return None


def _two_four_target(step: Any) -> str | None:
    if isinstance(step, PruneStep) and step.pattern == "2:4" and step.target_sparsity != 0.5:
        return f"not {step.target_sparsity}"
    return None


def _initial_below_target(step: Any) -> str | None:
    if (
        isinstance(step, PruneStep)
        and step.schedule == PruningSchedule.POLYNOMIAL_DECAY
        and step.initial_sparsity >= step.target_sparsity
    ):
        return f"{step.initial_sparsity} >= {step.target_sparsity}"
    return None


def _sensitivity_one_shot(step: Any) -> str | None:
    if (
        isinstance(step, PruneStep)
        and step.allocation == PruningAllocation.SENSITIVITY
        and (step.schedule != PruningSchedule.ONE_SHOT or step.pattern != "unstructured")
    ):
        return f"schedule {PruningSchedule(step.schedule).value}, pattern {step.pattern}"
    return None


def _end_after_begin(step: Any) -> str | None:
    if isinstance(step, PruneStep) and step.end_step is not None and step.end_step <= step.begin_step:
        return f"{step.end_step} <= {step.begin_step}"
    return None


def _trainable_student(step: Any) -> str | None:
    if isinstance(step, DistillStep) and step.student.format not in TRAINABLE_FORMATS:
        return f"found {step.student.format}"
    return None


STEP_RULES: tuple[StepRule, ...] = (
    StepRule(
        name="integer-io-int8",
        message="only valid with mode int8",
        cel="!has(self.integerIO) || !self.integerIO || self.mode == 'int8'",
        field_path=".integerIO",
        broken=_integer_io,
    ),
    StepRule(
        name="two-four-target",
        message="pattern 2:4 means exactly 0.5",
        cel="!has(self.pattern) || self.pattern != '2:4' || !has(self.targetSparsity) || self.targetSparsity == 0.5",
        field_path=".targetSparsity",
        broken=_two_four_target,
    ),
    StepRule(
        name="initial-below-target",
        message="must be below targetSparsity",
        cel=(
            f"self.type != 'prune' || (has(self.schedule) && self.schedule != "
            f"'{PruningSchedule.POLYNOMIAL_DECAY.value}') || "
            "(has(self.initialSparsity) ? self.initialSparsity : 0.0) < "
            "(has(self.targetSparsity) ? self.targetSparsity : 0.5)"
        ),
        field_path=".initialSparsity",
        broken=_initial_below_target,
    ),
    StepRule(
        name="sensitivity-one-shot",
        message="sensitivity needs schedule oneShot and pattern unstructured (the shares come from the refit)",
        cel=(
            f"!has(self.allocation) || self.allocation != '{PruningAllocation.SENSITIVITY.value}' || "
            f"(has(self.schedule) && self.schedule == '{PruningSchedule.ONE_SHOT.value}' && "
            "(!has(self.pattern) || self.pattern == 'unstructured'))"
        ),
        field_path=".allocation",
        broken=_sensitivity_one_shot,
    ),
    StepRule(
        name="end-after-begin",
        message="must be greater than beginStep",
        cel="!has(self.endStep) || self.endStep > (has(self.beginStep) ? self.beginStep : 0)",
        field_path=".endStep",
        broken=_end_after_begin,
    ),
    StepRule(
        name="trainable-student",
        message="the student must be trainable (keras or h5)",
        cel=f"!has(self.student) || self.student.format in {_cel_list(TRAINABLE_FORMATS)}",
        field_path=".student.format",
        broken=_trainable_student,
    ),
)


def _describe(where: str, message: str, found: str) -> str:
    return f"{where}: {message}" + (f" ({found})" if found else "")


def plan_problems(spec: CompressionJobSpec) -> list[str]:
    """Every broken cross-field rule, as a message that starts with the field at fault."""
    problems: list[str] = []
    for index, step in enumerate(spec.steps):
        for step_rule in STEP_RULES:
            found = step_rule.broken(step)
            if found is not None:
                problems.append(_describe(f"spec.steps[{index}]{step_rule.field_path}", step_rule.message, found))
    for spec_rule in SPEC_RULES:
        problems.extend(
            _describe(violation.where, spec_rule.message, violation.found) for violation in spec_rule.violations(spec)
        )
    return problems
