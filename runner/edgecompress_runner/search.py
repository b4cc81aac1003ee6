"""The auto step: per-layer sensitivity, then a search over litert-quantizer recipes judged by the gates.

Everything works on the run's float ``.tflite`` (the baseline), so it serves every input format.

*Sensitivity*: each weighted op with at least ``minWeights`` weights is quantized alone at each precision
of the ladder (every other op float) and every output of the model is compared with the float model's on a
few samples: the worst output's SNR in dB and, when some outputs are classifiers, the worst classifier
output's agreement (top-1, or decisions at 0.5 for binary and multilabel outputs). A precision
litert-quantizer does not apply to an op (the file does not shrink by at least a byte per weight, e.g. int4
on a depthwise conv) leaves that op's ladder.

*Candidates*: first the models the step's training trials fine-tuned (kind ``trained``, named like
``trial0-prune50Qat``: each trial's ``trials/<i>/model.tflite``, see ``trials.py``; every one is measured and
none counts toward maxTrials, since its training is already paid for; a trial that failed for good is listed
as unavailable with its reason), then whole-model recipes (dynamic, weight-only int8, float16, and int8 and
int16x8 when the dataset has ``x_train`` to calibrate on), the LiteRT converter's own dynamic-range and int8
quantization of the Keras model or SavedModel (``converterDynamic``, ``converterInt8``: the converter makes
smaller files for some models, e.g. int8 2,776 bytes against litert-quantizer's 2,848 on the tests' token-id
classifier, and the search must never lose to one converter call), then mixed recipes found by
``raise_until_passing``: every analysed layer starts at the lowest precision of its ladder (smaller layers
stay float) and, while a quality gate fails, the layer whose next precision removes the most output noise per
added byte (``noise_removed_per_byte``) moves up one precision. Each candidate is measured for real: bytes,
every output's quality on the evaluation samples against the baseline's outputs (each judged by its task), and
latency timed interleaved with the baseline; ``gates.judge`` gives its verdicts on the per-output comparison
(a model is judged by its worst output).

*Pick*: among the candidates that pass every gate, the best by the objective: size (fewest bytes, then
lowest latency ratio), latency (lowest latency ratio, then bytes) or balanced (lowest size ratio times
latency ratio). With none passing, the closest one (fewest failed gates, then the smallest relative
shortfall) becomes the result, so the run ends with gates failed and that candidate's numbers.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from edgecompress_contract.report import (
    AutoReport,
    Comparison,
    GateResult,
    LayerSensitivity,
    RecipeLine,
    SearchCandidate,
)
from edgecompress_contract.rules import QUALITY_GATES
from edgecompress_contract.spec import LATENCY_RATIO_NOISE, AutoStep, Gates, Latency, PtqMode, SearchObjective

from . import evaluate
from .data import Arrays, take
from .errors import InputError
from .gates import judge
from .kernels import WEIGHTED_OPS
from .progress import logger
from .tasks import fidelity
from .tflite_quantize import (
    CALIBRATED,
    OpScope,
    Precision,
    RecipeEntry,
    calibration_samples,
    op_scopes,
    quantize,
    quantizer_recipe,
)
from .trial_cache import CachedTrial, TrialCache, content_key

__all__ = [
    "Assignment",
    "SearchInputs",
    "SearchResult",
    "TrainedModel",
    "Verdict",
    "decide",
    "latency_ratio_gate",
    "layer_ladders",
    "mixed_recipe",
    "noise_removed_per_byte",
    "raise_until_passing",
    "raising_may_help",
    "run_search",
    "sensitivity_table",
    "worst_output_error",
]

PRECISION_RANK = {
    Precision.WEIGHT_ONLY_INT4: 0,
    Precision.INT4_BLOCKWISE: 1,
    Precision.WEIGHT_ONLY_INT8: 2,
    Precision.DYNAMIC_INT8: 2,
    Precision.FLOAT16: 3,
    Precision.FLOAT: 4,
}
"""Bytes per weight, in order: a layer's ladder goes up this way (int4 blocks carry more scales than channels)."""

CONVERTER_CANDIDATES = (("converterDynamic", PtqMode.DYNAMIC), ("converterInt8", PtqMode.INT8))
"""The converter's own post-training quantizations the search measures beside litert-quantizer's recipes."""

WHOLE_MODEL_CANDIDATES = (
    ("dynamic", Precision.DYNAMIC_INT8),
    ("weightOnlyInt8", Precision.WEIGHT_ONLY_INT8),
    ("float16", Precision.FLOAT16),
    ("int8", Precision.STATIC_INT8),
    ("int16x8", Precision.INT16X8),
)


def worst_output_error(
    reference: Mapping[str, np.ndarray], measured: Mapping[str, np.ndarray], tasks: Mapping[str, str]
) -> tuple[float, float | None]:
    """The lowest SNR (dB) over every output, and the lowest agreement over the classifier outputs (None without).

    Each output is compared by ``tasks.fidelity`` as in the report: agreement of top-1 classes for multiclass
    outputs, of decisions at 0.5 for binary and multilabel ones.
    """
    found = [fidelity(tasks[name], measured[name], values) for name, values in reference.items()]
    agreements = [numbers["agreement"] for numbers in found if "agreement" in numbers]
    return min(numbers["snr_db"] for numbers in found), (min(agreements) if agreements else None)


def _only(scope: str) -> str:
    return f"^{re.escape(scope)}$"


# --- gate access: the only place that knows which gates bound quality ---


def raising_may_help(verdicts: Iterable[GateResult]) -> bool:
    """Whether a gate failed that a higher precision can fix: quality, or speed (int4 weights dequantized per run).

    A gate that could not be measured (minFidelity on a model without a classifier output) is not fixable.
    """
    fixable = {*QUALITY_GATES.values(), LATENCY_RATIO_GATE}
    return any(not verdict.passed and verdict.name in fixable and verdict.actual is not None for verdict in verdicts)


LATENCY_RATIO_GATE = "maxLatencyRatio"


def latency_ratio_gate(limit: float, comparison: Comparison) -> GateResult:
    """The auto step's maxLatencyRatio judged on a comparison timed interleaved with the baseline.

    A median up to ``LATENCY_RATIO_NOISE`` over the limit passes: a file that runs the same kernels as the
    baseline (float16, weights dequantized at load) has a median on either side of 1.0 by timing noise alone,
    and "not slower" must not be decided by a coin toss. The bound is on the median, not on the fastest round:
    one fast round (a quiet moment on a shared machine) passed a file 2.7x slower than float against a 2x limit.
    """
    ratio = round(1.0 / max(comparison.latency_speedup, 1e-9), 3)
    spread = ""
    if comparison.latency_speedup_min is not None and comparison.latency_speedup_max is not None:
        fastest, slowest = (
            round(1.0 / max(speedup, 1e-9), 3)
            for speedup in (comparison.latency_speedup_max, comparison.latency_speedup_min)
        )
        spread = f", {fastest:.3f}-{slowest:.3f}x over {comparison.latency_rounds} rounds"
    if ratio <= limit:
        passed, verdict = True, f"within the allowed {limit:g}x"
    elif ratio <= limit * (1 + LATENCY_RATIO_NOISE):
        passed, verdict = True, f"within the allowed {limit:g}x plus {LATENCY_RATIO_NOISE:.0%} for timing noise"
    else:
        passed, verdict = False, f"over the allowed {limit:g}x plus {LATENCY_RATIO_NOISE:.0%} for timing noise"
    reason = f"median latency {ratio:.3f}x the baseline's (timed interleaved{spread}), {verdict}"
    return GateResult(name=LATENCY_RATIO_GATE, passed=passed, actual=ratio, limit=limit, reason=reason)


# --- the greedy raising, pure ---


@dataclass(frozen=True)
class Verdict:
    """A measured mixed candidate: whether it passed, and whether raising a layer could still help."""

    passed: bool
    raise_more: bool


Assignment = dict[str, Precision]


def raise_until_passing(
    ladders: Mapping[str, Sequence[Precision]],
    priority: Callable[[str, Precision, Precision], float],
    measure: Callable[[Assignment], Verdict],
    *,
    may_continue: Callable[[], bool] = lambda: True,
) -> list[tuple[Assignment, Verdict]]:
    """Mixed candidates from every layer at its lowest precision, raising the most worthwhile layer one step per trial.

    Args:
        ladders: Per layer, its precisions from fewest bytes up (the last one is its top).
        priority: How much raising a layer from one precision to the next is worth; the highest is raised.
        measure: Measures a candidate (every layer's precision) and judges it.
        may_continue: Asked before each trial; False ends the search (budget).

    Returns:
        Every measured assignment with its verdict, in order. It ends at the first that passes, when a
        verdict says raising cannot help, when every layer is at its top, or when the budget ends.
    """
    order = {layer: position for position, layer in enumerate(ladders)}
    levels = dict.fromkeys(ladders, 0)
    trials: list[tuple[Assignment, Verdict]] = []
    while may_continue():
        assignment = {layer: ladders[layer][level] for layer, level in levels.items()}
        verdict = measure(assignment)
        trials.append((assignment, verdict))
        if verdict.passed or not verdict.raise_more:
            break
        raisable = [layer for layer, level in levels.items() if level < len(ladders[layer]) - 1]
        if not raisable:
            break

        def worth(layer: str) -> tuple[float, int]:
            return priority(layer, ladders[layer][levels[layer]], ladders[layer][levels[layer] + 1]), -order[layer]

        levels[max(raisable, key=worth)] += 1
    return trials


# --- sensitivity ---


def sensitivity_table(
    model: bytes,
    layers: Sequence[OpScope],
    precisions: Sequence[Precision],
    samples: Arrays,
    *,
    tasks: Mapping[str, str],
    block_size: int,
    threads: int,
    may_continue: Callable[[], bool] = lambda: True,
) -> list[LayerSensitivity]:
    """Each layer quantized alone at each precision, every output compared with the float model's on ``samples``.

    ``samples`` are keyed by input name; ``tasks`` gives each output's task (classifier outputs are also
    compared by agreement). ``may_continue`` is asked before each layer; layers after a False are left out
    (they stay float).
    """
    float_runner = evaluate.ModelRunner(model, threads)
    reference = float_runner.predict(samples)
    table = []
    for layer in layers:
        if not may_continue():
            break
        for precision in precisions:
            try:
                quantized = quantize(model, [RecipeEntry(_only(layer.scope), precision, block_size)])
            except ValueError:
                quantized = model
            applies = len(model) - len(quantized) >= layer.weights
            snr = agreement = None
            if applies:
                outputs = evaluate.ModelRunner(quantized, threads, names_of=float_runner.signature).predict(samples)
                snr, agreement = worst_output_error(reference, outputs, tasks)
            table.append(
                LayerSensitivity(
                    layer=layer.scope,
                    op=layer.op,
                    weights=layer.weights,
                    precision=precision.value,
                    applies=applies,
                    size_bytes=len(quantized),
                    snr_db=snr,
                    top1_agreement=agreement,
                )
            )
    return table


def layer_ladders(table: Sequence[LayerSensitivity]) -> dict[str, list[Precision]]:
    """Per analysed layer, the precisions that apply to it from fewest bytes up, then float."""
    ladders: dict[str, list[Precision]] = {}
    for row in table:
        ladder = ladders.setdefault(row.layer, [])
        if row.applies:
            ladder.append(Precision(row.precision))
    return {
        layer: sorted(ladder, key=lambda precision: PRECISION_RANK[precision]) + [Precision.FLOAT]
        for layer, ladder in ladders.items()
    }


def noise_removed_per_byte(
    rows: Mapping[tuple[str, Precision], LayerSensitivity],
    layer: str,
    current: Precision,
    higher: Precision,
    *,
    baseline_bytes: int,
) -> float:
    """What raising ``layer`` from ``current`` to ``higher`` buys: output noise power removed per byte added.

    A layer's noise power (relative to the output's power) is 10^(-SNR/10) of its row, 0 at float; its
    bytes are the file's size with only it quantized (the baseline's at float). The most sensitive layer is
    not always the best raise: a large layer that gains little costs many bytes.
    """

    def noise(precision: Precision) -> float:
        row = rows.get((layer, precision))
        return 0.0 if row is None or row.snr_db is None else 10.0 ** (-row.snr_db / 10.0)

    def size(precision: Precision) -> int:
        row = rows.get((layer, precision))
        return baseline_bytes if row is None else row.size_bytes

    return (noise(current) - noise(higher)) / max(size(higher) - size(current), 1)


# --- measuring candidates ---


@dataclass(frozen=True)
class TrainedModel:
    """A training trial's outcome as the search takes it: its .tflite, or why it has none."""

    name: str
    """e.g. trial0-prune50Qat."""
    model: bytes | None
    failure: str | None = None


@dataclass(frozen=True)
class SearchInputs:
    """What the search measures against: the baseline and the evaluation the run judges its result on."""

    baseline: bytes
    x_eval: Arrays
    """Evaluation samples by input name (the run's x_eval)."""
    labels: dict[str, np.ndarray] | None
    """Labels by output name, as ``tasks.label_targets`` made them (None: fidelity only)."""
    tasks: dict[str, str]
    """Each output's task (multiclass, binary, multilabel or regression)."""
    baseline_quality: evaluate.Quality
    gates: Gates
    latency: Latency
    x_train: Arrays | None
    """Training samples by input name: the sensitivity samples and the int8/int16x8 calibration."""
    cache: TrialCache | None = None
    on_trial: Callable[[int, int, str], None] | None = None
    """Told after each candidate: candidates measured, the step's maxTrials, and the best so far (progress)."""
    convert: Callable[[PtqMode, int], bytes] | None = None
    """The LiteRT converter's quantization of the model in a PTQ mode (dynamic, or int8 calibrated on that many
    x_train samples); None for a .tflite input, which has no model to convert."""
    trained: tuple[TrainedModel, ...] = ()
    """The auto step's training trials, in index order (the pipeline's trials phase)."""


@dataclass(frozen=True)
class SearchResult:
    model: bytes
    report: AutoReport


@dataclass
class _Trial:
    candidate: SearchCandidate
    model: bytes


def _recipe_lines(recipe: Sequence[RecipeEntry]) -> list[RecipeLine]:
    return [RecipeLine(scope=entry.scope, precision=entry.precision.value) for entry in recipe]


def mixed_recipe(assignment: Mapping[str, Precision], block_size: int) -> list[RecipeEntry]:
    """Every op float, then each layer not at float at its precision."""
    return [
        RecipeEntry(".*", Precision.FLOAT),
        *(
            RecipeEntry(_only(scope), precision, block_size)
            for scope, precision in assignment.items()
            if precision != Precision.FLOAT
        ),
    ]


@dataclass
class _Measurer:
    """Quantizes and measures candidates, keeping every trial; counts them against the step's budget."""

    inputs: SearchInputs
    step: AutoStep
    deadline: float
    clock: Callable[[], float]
    data_key: str
    """What every candidate's measurements depend on: the baseline and the evaluation samples."""
    trials: list[_Trial] = field(default_factory=list)
    calibration: list[dict[str, np.ndarray]] = field(default_factory=list)
    calibration_key: str = ""

    def counted(self) -> int:
        """Candidates measured that count toward maxTrials: every one but the trained ones."""
        return sum(1 for trial in self.trials if trial.candidate.kind != "trained")

    def planned(self) -> int:
        """The most candidates the search measures: maxTrials and every trained model."""
        return self.step.max_trials + sum(1 for trained in self.inputs.trained if trained.model is not None)

    def budget_left(self) -> bool:
        """Whether another trial fits maxTrials and maxMinutes; the first one always does (a run needs a result)."""
        return not self.trials or (self.counted() < self.step.max_trials and self.clock() < self.deadline)

    def time_left(self) -> bool:
        return self.clock() < self.deadline

    def measure(
        self,
        name: str,
        kind: Literal["wholeModel", "mixed"],
        recipe: Sequence[RecipeEntry],
        precisions: Mapping[str, int] | None = None,
    ) -> _Trial:
        """Quantizes the baseline with a litert-quantizer recipe and measures the result."""
        calibrated = any(entry.precision in CALIBRATED for entry in recipe)
        key = content_key(
            self.data_key,
            self.calibration_key if calibrated else "",
            quantizer_recipe(recipe),
            self.inputs.latency.model_dump(mode="json"),
        )
        calibration = self.calibration if calibrated else ()
        return self._trial(
            name,
            kind,
            key,
            lambda: quantize(self.inputs.baseline, recipe, calibration=calibration),
            recipe=recipe,
            precisions=precisions,
        )

    def measure_trained(self, name: str, model: bytes) -> _Trial:
        """A training trial's .tflite, measured like any candidate (its record keyed by the model's SHA-256)."""
        key = content_key(
            self.data_key, "trained", hashlib.sha256(model).hexdigest(), self.inputs.latency.model_dump(mode="json")
        )
        return self._trial(name, "trained", key, lambda: model, recipe=(), precisions=None)

    def measure_converted(self, name: str, mode: PtqMode, convert: Callable[[PtqMode, int], bytes]) -> _Trial:
        """The LiteRT converter's quantization of the model in ``mode``, measured like any candidate."""
        samples = self.step.representative_samples
        key = content_key(
            self.data_key,
            "converter",
            mode.value,
            self.calibration_key if mode == PtqMode.INT8 else "",
            self.inputs.latency.model_dump(mode="json"),
        )
        return self._trial(name, "converter", key, lambda: convert(mode, samples), recipe=(), precisions=None)

    def _trial(
        self,
        name: str,
        kind: Literal["wholeModel", "mixed", "converter", "trained"],
        key: str,
        make: Callable[[], bytes],
        *,
        recipe: Sequence[RecipeEntry],
        precisions: Mapping[str, int] | None,
    ) -> _Trial:
        started = self.clock()
        inputs = self.inputs
        cached = inputs.cache.trial(key) if inputs.cache is not None else None
        if cached is not None:
            record, model = cached
        else:
            model = make()
            record = self._measured(key, model, started)
            if inputs.cache is not None:
                inputs.cache.keep_trial(record, model)
        verdicts = judge(inputs.gates, record.comparison, record.result)
        if self.step.max_latency_ratio is not None:
            verdicts.append(latency_ratio_gate(self.step.max_latency_ratio, record.comparison))
        candidate = SearchCandidate(
            name=name,
            kind=kind,
            recipe=_recipe_lines(recipe),
            precisions=dict(precisions or {}),
            size_bytes=len(model),
            size_ratio=round(len(model) / len(inputs.baseline), 4),
            accuracy=record.result.accuracy,
            top1_agreement=record.result.top1_agreement,
            snr_db=record.comparison.snr_db,
            outputs=record.comparison.outputs,
            latency_ratio=round(1.0 / max(record.comparison.latency_speedup, 1e-9), 3),
            gates=verdicts,
            passed=all(verdict.passed for verdict in verdicts),
            cached=cached is not None,
            seconds=round(self.clock() - started, 2),
        )
        trial = _Trial(candidate, model)
        self.trials.append(trial)
        fields = candidate.to_wire()
        summary = {
            name: fields.get(name) for name in ("name", "sizeBytes", "top1Agreement", "snrDb", "latencyRatio", "passed")
        }
        logger.info(
            f"trial {len(self.trials)} of at most {self.planned()}: {name}",
            extra={"fields": {"event": "candidate", **summary, "cached": candidate.cached}},
        )
        if inputs.on_trial is not None:
            inputs.on_trial(len(self.trials), self.planned(), self._best_so_far())
        return trial

    def _best_so_far(self) -> str:
        """The pick the step would make now, as the status shows it: name, size ratio, passed or not."""
        candidates = [trial.candidate for trial in self.trials]
        _, index = decide(candidates, SearchObjective(self.step.objective))
        best = candidates[index]
        verdict = "passed" if best.passed else "none passed yet"
        return f"{best.name}: {best.size_ratio:.3f}x size, {best.latency_ratio:.2f}x latency, {verdict}"

    def _measured(self, key: str, model: bytes, started: float) -> CachedTrial:
        """The candidate's quality on the evaluation samples and its latency interleaved with the baseline."""
        inputs = self.inputs
        signature = inputs.baseline_quality.signature
        quality = evaluate.quality(
            model,
            inputs.x_eval,
            threads=inputs.latency.threads,
            tasks=inputs.tasks,
            names_of=signature,
            labels=inputs.labels,
            reference_outputs=inputs.baseline_quality.outputs,
        )
        first = {name: array[0] for name, array in inputs.x_eval.items()}
        baseline_stats, stats = evaluate.latency([inputs.baseline, model], first, inputs.latency, names_of=signature)
        baseline_metrics = evaluate.metrics_of(inputs.baseline, baseline_stats, inputs.baseline_quality)
        metrics = evaluate.metrics_of(model, stats, quality)
        return CachedTrial(
            key=key,
            model_sha256=hashlib.sha256(model).hexdigest(),
            baseline=baseline_metrics,
            result=metrics,
            comparison=Comparison.between(baseline_metrics, metrics),
            seconds=round(self.clock() - started, 2),
        )

    def best_passing_bytes(self) -> int | None:
        sizes = [trial.candidate.size_bytes for trial in self.trials if trial.candidate.passed]
        return min(sizes) if sizes else None


def run_search(
    step: AutoStep, inputs: SearchInputs, *, where: str, clock: Callable[[], float] = time.monotonic
) -> SearchResult:
    """Analyses, searches and picks; the picked (or, with none passing, the closest) model and the report.

    ``where`` is the step's field path for messages.
    """
    started = clock()
    data_key = content_key(
        inputs.baseline, *_array_parts(inputs.x_eval), *_array_parts(inputs.labels or {}), inputs.tasks
    )
    measurer = _Measurer(inputs, step, deadline=started + step.max_minutes * 60.0, clock=clock, data_key=data_key)
    weighted = [found for found in op_scopes(inputs.baseline) if found.op in WEIGHTED_OPS]
    analysed = [layer for layer in weighted if layer.weights >= step.min_weights]
    skipped = [layer.scope for layer in weighted if layer.weights < step.min_weights]
    ladder = sorted(dict.fromkeys(Precision(value) for value in step.precisions), key=PRECISION_RANK.__getitem__)
    source = inputs.x_train if inputs.x_train is not None else inputs.x_eval
    samples = take(source, step.sensitivity_samples)
    table_key = content_key(
        inputs.baseline,
        *_array_parts(samples),
        inputs.tasks,
        [layer.scope for layer in analysed],
        [precision.value for precision in ladder],
        step.block_size,
    )
    table = inputs.cache.sensitivity(table_key) if inputs.cache is not None else None
    if table is None:
        table = sensitivity_table(
            inputs.baseline,
            analysed,
            ladder,
            samples,
            tasks=inputs.tasks,
            block_size=step.block_size,
            threads=inputs.latency.threads,
            may_continue=measurer.time_left,
        )
        if inputs.cache is not None and len({row.layer for row in table}) == len(analysed):
            inputs.cache.keep_sensitivity(table_key, table)
    if inputs.x_train is not None:
        measurer.calibration = calibration_samples(inputs.x_train, step.representative_samples)
        measurer.calibration_key = content_key(*_array_parts(take(inputs.x_train, len(measurer.calibration))))
    unavailable: dict[str, str] = {}
    for trained in inputs.trained:
        if trained.model is None:
            unavailable[trained.name] = trained.failure or "the trial gave no model"
        else:
            measurer.measure_trained(trained.name, trained.model)
    for name, precision in WHOLE_MODEL_CANDIDATES:
        if precision in CALIBRATED and not measurer.calibration:
            unavailable[name] = "needs x_train in the dataset to calibrate"
        elif measurer.budget_left():
            try:
                measurer.measure(name, "wholeModel", [RecipeEntry(".*", precision)])
            except ValueError as refused:  # litert-quantizer refuses some models at some precisions
                unavailable[name] = _refusal(refused)
    for name, mode in CONVERTER_CANDIDATES:
        if inputs.convert is None:
            unavailable[name] = "the model is a .tflite: there is no Keras model or SavedModel to convert"
        elif mode == PtqMode.INT8 and not measurer.calibration:
            unavailable[name] = "needs x_train in the dataset to calibrate"
        elif measurer.budget_left():
            try:
                measurer.measure_converted(name, mode, inputs.convert)
            except InputError as refused:  # the converter refuses some models in some modes
                unavailable[name] = str(refused)
    unavailable_mixed: dict[str, str] = {}
    ladders = layer_ladders(table)
    rows_by_key = {(row.layer, Precision(row.precision)): row for row in table if row.applies}

    def worth(layer: str, current: Precision, higher: Precision) -> float:
        return noise_removed_per_byte(rows_by_key, layer, current, higher, baseline_bytes=len(inputs.baseline))

    def measure_mixed(assignment: Assignment) -> Verdict:
        counts: dict[str, int] = {}
        for precision in assignment.values():
            counts[precision.value] = counts.get(precision.value, 0) + 1
        tried = sum(1 for trial in measurer.trials if trial.candidate.kind == "mixed") + len(unavailable_mixed)
        name = f"mixed-{tried + 1}"
        try:
            trial = measurer.measure(name, "mixed", mixed_recipe(assignment, step.block_size), counts)
        except ValueError as refused:
            unavailable_mixed[name] = _refusal(refused)
            return Verdict(passed=False, raise_more=True)
        best = measurer.best_passing_bytes()
        larger_than_a_pass = (
            step.objective == SearchObjective.SIZE and best is not None and trial.candidate.size_bytes >= best
        )
        return Verdict(
            passed=trial.candidate.passed,
            raise_more=raising_may_help(trial.candidate.gates) and not larger_than_a_pass,
        )

    if ladders:
        raise_until_passing(ladders, worth, measure_mixed, may_continue=measurer.budget_left)
    if not measurer.trials:
        raise InputError(f"{where}: no candidate could be made ({unavailable})")
    stopped = _stopped_because(measurer, started)
    candidates, chosen_index = decide([trial.candidate for trial in measurer.trials], SearchObjective(step.objective))
    report = AutoReport(
        objective=SearchObjective(step.objective).value,
        chosen=candidates[chosen_index].name,
        passed=candidates[chosen_index].passed,
        stopped_because=stopped,
        sensitivity=table,
        skipped_layers=skipped,
        candidates=candidates,
        unavailable={**unavailable, **unavailable_mixed},
        cache=inputs.cache.folder if inputs.cache is not None else None,
        cache_hits=inputs.cache.hits if inputs.cache is not None else 0,
    )
    return SearchResult(model=measurer.trials[chosen_index].model, report=report)


def _array_parts(arrays: Mapping[str, np.ndarray]) -> list[Any]:
    """What a content key takes of named arrays: names, dtypes and shapes, then each array's bytes by name."""
    names = sorted(arrays)
    layout = {name: [arrays[name].dtype.str, list(arrays[name].shape)] for name in names}
    return [layout, *(np.ascontiguousarray(arrays[name]).tobytes() for name in names)]


def _refusal(error: ValueError) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return "litert-quantizer: " + (lines[0][:300] if lines else type(error).__name__)


def _stopped_because(measurer: _Measurer, started: float) -> str:
    if any(trial.candidate.passed and trial.candidate.kind == "mixed" for trial in measurer.trials):
        return "a mixed candidate passed every gate"
    if measurer.counted() >= measurer.step.max_trials:
        return f"maxTrials ({measurer.step.max_trials}) reached"
    if measurer.clock() >= measurer.deadline:
        return f"maxMinutes ({measurer.step.max_minutes:g}) reached after {measurer.clock() - started:.0f} s"
    return (
        "raising ended: every analysed layer reached float, the gates that failed do not bound quality, or (objective "
        "size) a mixed candidate was no smaller than one that passed"
    )


def _objective_key(candidate: SearchCandidate, objective: SearchObjective) -> tuple[float, ...]:
    if objective == SearchObjective.LATENCY:
        return (candidate.latency_ratio, candidate.size_bytes)
    if objective == SearchObjective.BALANCED:
        return (candidate.size_ratio * candidate.latency_ratio, candidate.size_bytes)
    return (candidate.size_bytes, candidate.latency_ratio)


def _shortfall(candidate: SearchCandidate) -> tuple[int, float]:
    """How far a candidate is from passing: its failed gates, then their summed relative shortfall."""
    failed = [verdict for verdict in candidate.gates if not verdict.passed]
    total = 0.0
    for verdict in failed:
        if verdict.actual is None:
            total = math.inf
            break
        over = verdict.actual - verdict.limit if verdict.name.startswith("max") else verdict.limit - verdict.actual
        total += max(over, 0.0) / max(abs(verdict.limit), 1e-6)
    return len(failed), total


def decide(candidates: Sequence[SearchCandidate], objective: SearchObjective) -> tuple[list[SearchCandidate], int]:
    """Every candidate with why it lost, and the index of the pick (the closest one when none passed)."""
    passing = [index for index, candidate in enumerate(candidates) if candidate.passed]
    if passing:
        chosen = min(passing, key=lambda index: (_objective_key(candidates[index], objective), index))
    else:
        chosen = min(range(len(candidates)), key=lambda index: (_shortfall(candidates[index]), index))
    pick = candidates[chosen]
    decided = []
    for index, candidate in enumerate(candidates):
        if index == chosen:
            lost = None if candidate.passed else "no candidate passed every gate; this one came closest"
            decided.append(candidate.model_copy(update={"chosen": True, "lost_because": lost}))
            continue
        decided.append(candidate.model_copy(update={"lost_because": _why_lost(candidate, pick, objective)}))
    return decided, chosen


def _why_lost(candidate: SearchCandidate, pick: SearchCandidate, objective: SearchObjective) -> str:
    if not candidate.passed:
        return "failed " + "; ".join(
            f"{verdict.name}: {verdict.reason}" for verdict in candidate.gates if not verdict.passed
        )
    if objective == SearchObjective.LATENCY:
        return f"latency ratio {candidate.latency_ratio:.3f}, slower than the pick's {pick.latency_ratio:.3f}"
    if objective == SearchObjective.BALANCED:
        score, best = candidate.size_ratio * candidate.latency_ratio, pick.size_ratio * pick.latency_ratio
        return f"balanced score (size ratio x latency ratio) {score:.4f}, above the pick's {best:.4f}"
    if candidate.size_bytes == pick.size_bytes:
        return f"as small as the pick, but latency ratio {candidate.latency_ratio:.3f} above {pick.latency_ratio:.3f}"
    return f"{candidate.size_bytes} bytes, more than the pick's {pick.size_bytes}"
