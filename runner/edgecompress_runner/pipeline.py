"""One compression run: download, baseline, steps, convert, evaluate, gates, upload.

All computing happens before the first upload (only report.html's text is written after the
promotion it shows). The .tflite is uploaded first, then (when every gate passed and the spec asks)
promoted, then report.html and its plots, and report.json last, so a report's presence means the
run finished.

The run is a list of phases (fetch, baseline, the auto step's training trials when it has any, one per
step, convert, evaluate, publish) that read and fill one ``RunState``; ``PhaseClock`` announces each phase
and records its wall time.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np

from edgecompress_contract.exit_codes import NOT_RETRIED
from edgecompress_contract.report import (
    Artifact,
    Comparison,
    ConversionReport,
    DatasetShards,
    GateResult,
    Inputs,
    Metrics,
    Outputs,
    PromotionOutcome,
    PromotionSource,
    PtqReport,
    Quantizer,
    ReduceFiltersReport,
    Report,
    Source,
    StepReport,
)
from edgecompress_contract.spec import (
    TRAINING_STEP_TYPES,
    ClusterStep,
    CompressionJobSpec,
    DistillStep,
    ModelSource,
    PruneStep,
    PtqMode,
    PtqStep,
    QatStep,
)
from edgecompress_contract.summary import RunSummary
from edgecompress_contract.trials import TRIALS_FOLDER, trials_of

from .checkpoints import RunCheckpoints, fingerprint
from .data import Arrays, Dataset, samples, take
from .disk import check_downloads_fit
from .errors import ExitCode, InputError, PromotionConflict, RunnerError
from .evaluate import Quality, Signature
from .progress import Progress, Sink, logger
from .promotion import PROMOTED_MODEL, promote
from .report import versions
from .report_html import HTML_NAME, PLOT_FILES
from .search import SearchInputs, TrainedModel
from .steps import CompressionStep, StepContext, build_steps
from .storage import Storage, join_uri, local_path, sha256_of, storage_for
from .tasks import label_targets, output_tasks
from .trial_cache import TrialCache

if TYPE_CHECKING:
    from .split import SplitResult

KERAS_TRAINING_STEPS = (PruneStep, ClusterStep, QatStep)
TFLITE_NAME = "model.tflite"
REPORT_NAME = "report.json"
UNLABELED_EVAL_SAMPLES = 100

_T = TypeVar("_T")


@dataclass(frozen=True)
class RunOutcome:
    report: Report
    summary: RunSummary

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode(self.summary.exit_code)


Phase = tuple[str, int, Callable[["RunState"], None]]
"""A phase: its name in progress events and timings, its fine-tuning epochs, and what it does."""


def plan_phases(spec: CompressionJobSpec) -> list[str]:
    """The phases of a run in order; their names appear in progress events."""
    return [name for name, _, _ in _phases(spec, build_steps(spec.steps))]


def _phases(spec: CompressionJobSpec, steps: list[CompressionStep[Any]]) -> list[Phase]:
    return [
        ("download", 0, _fetch),
        ("baseline", 0, _baseline),
        *([("trials", 0, _trials)] if trials_of(spec) else []),
        *((step.phase, step.epochs, _step_phase(step)) for step in steps),
        ("convert", 0, _convert),
        ("evaluate", 0, _evaluate),
        *([("split", 0, _split)] if spec.output.split is not None else []),
        ("upload", 0, _publish),
    ]


class PhaseClock:
    """Announces each phase (a progress event) and records its wall time."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.started = time.monotonic()
        self.timings: dict[str, float] = {}
        self._current: tuple[str, float] | None = None

    @contextmanager
    def phase(self, name: str, epochs: int = 0) -> Iterator[None]:
        self.progress.start(name, epochs)
        self._current = (name, time.monotonic())
        try:
            yield
        finally:
            self.timings[name] = self.elapsed()
            self._current = None

    def elapsed(self) -> float:
        """Seconds since the running phase started."""
        return time.monotonic() - self._current[1] if self._current else 0.0

    def seconds(self) -> dict[str, float]:
        """Every phase's seconds so far (the running one up to now) and the total."""
        timings = dict(self.timings)
        if self._current is not None:
            timings[self._current[0]] = self.elapsed()
        timings["total"] = time.monotonic() - self.started
        return {name: round(value, 2) for name, value in timings.items()}


@dataclass
class RunState:
    """What the phases share; each phase fills the fields the later ones read."""

    spec: CompressionJobSpec
    work_dir: Path
    steps: list[CompressionStep[Any]]
    clock: PhaseClock
    source: Source | None
    storages: dict[str, Storage] = field(default_factory=dict)
    # fetch
    artifacts: dict[str, Artifact] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    dataset: Dataset | None = None
    dataset_shards: DatasetShards | None = None
    metric: Literal["accuracy", "fidelity"] = "fidelity"
    # baseline
    step_context: StepContext | None = None
    baseline_tflite: bytes = b""
    x_eval: Arrays | None = None
    tasks: dict[str, str] = field(default_factory=dict)
    labels: dict[str, np.ndarray] | None = None
    baseline_quality: Quality | None = None
    # steps and convert
    step_reports: list[StepReport] = field(default_factory=list)
    conversion: ConversionReport | None = None
    tflite_file: Path | None = None
    # evaluate
    baseline: Metrics | None = None
    result: Metrics | None = None
    comparison: Comparison | None = None
    gates: list[GateResult] = field(default_factory=list)
    # split
    split: SplitResult | None = None
    # publish
    outcome: RunOutcome | None = None

    @property
    def progress(self) -> Progress:
        return self.clock.progress

    def storage(self, uri: str) -> Storage:
        scheme = uri.split("://", 1)[0] if "://" in uri else ""
        if scheme not in self.storages:
            self.storages[scheme] = storage_for(uri)
        return self.storages[scheme]


def _ready(value: _T | None) -> _T:
    assert value is not None, "phases ran out of order"
    return value


def run(
    spec: CompressionJobSpec,
    work_dir: Path,
    *,
    progress_bar: bool = False,
    sinks: list[Sink] | None = None,
    source: Source | None = None,
) -> RunOutcome:
    """Runs the job; raises RunnerError subclasses for anything that stops it.

    ``source`` identifies the job (the operator passes its namespace, name and uid); it is
    recorded in the report and in the promotion record. Every random source is seeded with
    ``spec.seed`` before the first phase, so a run gives the same bytes each time.
    """
    steps = build_steps(spec.steps)
    phases = _phases(spec, steps)
    progress = Progress([name for name, _, _ in phases], bar=progress_bar, sinks=sinks)
    state = RunState(spec=spec, work_dir=work_dir, steps=steps, clock=PhaseClock(progress), source=source)
    _check_output_is_free(state)
    from .tfcompat import seed_run

    seed_run(spec.seed)
    try:
        for name, epochs, phase in phases:
            with state.clock.phase(name, epochs):
                phase(state)
    except RunnerError as error:
        checkpoints = state.step_context.checkpoints if state.step_context is not None else None
        if checkpoints is not None and error.exit_code in NOT_RETRIED:
            checkpoints.remove()  # no retry will resume from them
        raise
    progress.finish()
    return _ready(state.outcome)


def _check_output_is_free(state: RunState) -> None:
    report_uri = join_uri(state.spec.output.uri, REPORT_NAME)
    if not state.spec.output.overwrite and state.storage(state.spec.output.uri).exists(report_uri):
        raise InputError(
            f"spec.output.uri: {report_uri} already holds a finished run; choose another output "
            "or set output.overwrite: true"
        )


def _download(state: RunState, role: str, uri: str, destination: Path) -> None:
    state.storage(uri).download(uri, destination)
    state.files[role] = destination
    state.artifacts[role] = Artifact(uri=uri, sha256=sha256_of(destination), bytes=destination.stat().st_size)


def _input_name(uri: str, fallback: str) -> str:
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    return name or fallback


def _fetch(state: RunState) -> None:
    """Downloads the model, the files steps ask for and the dataset; checks the data fits the plan."""
    from .data import load_dataset
    from .streaming import is_sharded

    spec = state.spec
    state.work_dir.mkdir(parents=True, exist_ok=True)
    downloads = [("spec.model.uri", "model", spec.model.uri, "input-" + _input_name(spec.model.uri, "model"))]
    for step in state.steps:
        for role, uri in step.inputs().items():
            downloads.append((f"spec.steps[{step.index}].{role}.uri", role, uri, f"{role}-{_input_name(uri, role)}"))
    sharded = spec.dataset is not None and is_sharded(spec.dataset.uri)
    if spec.dataset is not None and not sharded:
        downloads.append(("spec.dataset.uri", "dataset", spec.dataset.uri, "dataset.npz"))
    check_downloads_fit({field: state.storage(uri).size(uri) for field, _, uri, _ in downloads}, state.work_dir)
    for _, role, uri, name in downloads:
        _download(state, role, uri, state.work_dir / name)
    if spec.dataset is not None and sharded:
        _scan_shards(state, spec.dataset.uri)
    elif spec.dataset is not None:
        state.dataset = load_dataset(state.files["dataset"], spec.dataset.uri)
    if state.dataset is not None:
        for step in state.steps:
            step.check(state.dataset)
    labelled = state.dataset is not None and state.dataset.has_labels
    metric: str = spec.evaluation.metric
    if metric == "auto":
        metric = "accuracy" if labelled else "fidelity"
    if metric == "accuracy" and not labelled:
        raise InputError("spec.evaluation.metric: accuracy needs labels (y_eval) in the dataset")
    state.metric = "accuracy" if metric == "accuracy" else "fidelity"


def _scan_shards(state: RunState, uri: str) -> None:
    """Checks a sharded dataset and keeps its evaluation, calibration and held-out slices (see ``streaming``)."""
    from .compress import CALIBRATION_SAMPLES
    from .streaming import scan

    steps = state.spec.steps
    state.dataset, state.dataset_shards = scan(
        uri,
        state.storage(uri),
        state.work_dir,
        eval_samples=state.spec.evaluation.samples,
        calibration_samples=max(
            [CALIBRATION_SAMPLES, *(step.representative_samples for step in steps if isinstance(step, PtqStep))]
        ),
        held_out_shares=[step.fine_tune.validation_split for step in steps if isinstance(step, KERAS_TRAINING_STEPS)],
    )
    shards = state.dataset_shards
    state.artifacts["dataset"] = Artifact(uri=uri, sha256=shards.sha256, bytes=shards.bytes)


def _baseline(state: RunState) -> None:
    """Loads the model, converts it plainly to float and takes its outputs: what every result is compared with.

    The dataset's arrays are bound to the model's input and output names here, and each output's task is
    settled (spec.evaluation.outputs, else inferred from these outputs). Latency and memory are measured in
    the evaluate phase, interleaved with the result's.
    """
    from . import convert, evaluate, model_io

    spec, dataset = state.spec, state.dataset
    loaded = model_io.load_model(
        state.files["model"],
        spec.model.format,
        spec.model.uri,
        state.work_dir,
        trust_code=spec.model.trust_code,
        keras_needed_by=next(
            (step.phase for step in state.steps if step.spec.type in TRAINING_STEP_TYPES),
            "spec.output.split" if spec.output.split is not None else None,
        ),
    )
    _check_split(spec, loaded.keras_model)
    if loaded.tflite is not None:
        state.baseline_tflite = loaded.tflite
    else:
        state.baseline_tflite, _ = convert.convert(loaded.converter(), plan=convert.FLOAT_PLAN)
    runner = evaluate.ModelRunner(state.baseline_tflite, spec.evaluation.latency.threads)
    signature = runner.signature
    if dataset is not None:
        dataset = dataset.bind([tensor.model_tensor() for tensor in signature.inputs], signature.output_names)
        state.dataset = dataset
        state.x_eval = take(dataset.x_eval, spec.evaluation.samples)
    else:
        state.x_eval = _random_inputs(signature, spec.seed)
    outputs = runner.predict(state.x_eval)
    raw_labels = take(dataset.y_eval, spec.evaluation.samples) if dataset is not None else {}
    state.tasks = output_tasks(spec.evaluation.outputs, outputs, raw_labels)
    if state.metric == "accuracy":
        state.labels = {
            name: label_targets(state.tasks[name], labels, outputs[name], _label_array(name, signature, dataset))
            for name, labels in raw_labels.items()
        }
    state.step_context = StepContext(
        loaded=loaded,
        dataset=dataset,
        files=state.files,
        work_dir=state.work_dir,
        progress=state.progress,
        keras_model=loaded.keras_model,
        tasks=state.tasks,
        seed=spec.seed,
        strategy=_training_strategy(state),
    )
    state.step_context.checkpoints = _checkpoints(state, state.step_context.replicas)
    state.baseline_quality = evaluate.assess(signature, outputs, tasks=state.tasks, labels=state.labels)
    state.step_context.search_inputs = SearchInputs(
        baseline=state.baseline_tflite,
        x_eval=state.x_eval,
        labels=state.labels,
        tasks=state.tasks,
        baseline_quality=state.baseline_quality,
        gates=spec.gates,
        latency=spec.evaluation.latency,
        x_train=dataset.x_train if dataset is not None else None,
        cache=TrialCache(
            join_uri(spec.output.uri, TRIALS_FOLDER), state.storage(spec.output.uri), state.work_dir / TRIALS_FOLDER
        ),
        convert=None if loaded.tflite is not None else _converter_ptq(loaded, dataset),
    )


def _trials(state: RunState) -> None:
    """The auto step's training trials, in order: each read from its record when it has one for these inputs (a
    cluster ran them as an Indexed Job before this run), else run here; their models go to the search.

    Each trial's own files are removed from the work folder once its results are in its output folder.
    """
    from .trials import InputDigests, run_trial

    spec, context = state.spec, _ready(state.step_context)
    dataset = state.artifacts.get("dataset")
    digests = InputDigests(model=state.artifacts["model"].sha256, dataset=dataset.sha256 if dataset else None)
    count = len(trials_of(spec))
    trained: list[TrainedModel] = []
    for index in range(count):
        work = state.work_dir / "trial-runs" / str(index)
        outcome = run_trial(spec, index, work_dir=work, digests=digests, storage=state.storage(spec.output.uri))
        shutil.rmtree(work, ignore_errors=True)
        trained.append(TrainedModel(name=outcome.name, model=outcome.model, failure=outcome.failure))
        record = outcome.record
        logger.info(
            f"trial {index + 1} of {count}: {outcome.name} "
            + ("read from its record" if outcome.served else f"ran in {record.seconds:.1f} s"),
            extra={
                "fields": {
                    "event": "trainingTrial",
                    "name": outcome.name,
                    "served": outcome.served,
                    "exitCode": record.exit_code,
                    "sizeBytes": record.size_bytes,
                }
            },
        )
        state.progress.trial(index + 1, count, None)
    context.search_inputs = replace(_ready(context.search_inputs), trained=tuple(trained))


def _converter_ptq(loaded: Any, dataset: Dataset | None) -> Callable[[PtqMode, int], bytes]:
    """The LiteRT converter's PTQ of the loaded model, for the auto step's converter candidates."""

    def quantized(mode: PtqMode, representative_samples: int) -> bytes:
        from . import convert
        from .planning import ConversionPlan

        ptq = PtqStep.model_validate(
            {"type": "ptq", "mode": mode.value, "representativeSamples": representative_samples}
        )
        calibration = dataset.x_train if dataset is not None and mode != PtqMode.DYNAMIC else None
        model, _ = convert.convert(loaded.converter(), plan=ConversionPlan(ptq=ptq), x_calibration=calibration)
        return model

    return quantized


def _training_strategy(state: RunState) -> Any:
    """MirroredStrategy when a step trains and several GPUs are visible (see distribute.py), else None."""
    if not any(step.epochs for step in state.steps):
        return None
    from .distribute import training_strategy

    return training_strategy()


def _checkpoints(state: RunState, replicas: int) -> RunCheckpoints | None:
    """The run's checkpoints, keyed by the spec's training fields and the inputs' sha256 (see checkpoints.py)."""
    spec = state.spec
    if not spec.checkpoints.enabled or not any(step.epochs for step in state.steps):
        return None
    return RunCheckpoints(
        state.storage(spec.output.uri),
        spec.output.uri,
        fingerprint(spec, state.artifacts, versions(), replicas=replicas),
        state.work_dir,
        every_minutes=spec.checkpoints.every_minutes,
    )


def _label_array(name: str, signature: Signature, dataset: Dataset | None) -> str:
    array = "y_eval" if len(signature.outputs) == 1 else f"y_eval/{name}"
    return f"{dataset.source}: {array}" if dataset is not None else array


def _random_inputs(signature: Signature, seed: int) -> Arrays:
    """Uniform random samples for a model evaluated without a dataset (float inputs of known shape only)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for tensor in signature.inputs:
        if any(dim is None for dim in tensor.shape):
            shown = tuple("?" if dim is None else dim for dim in tensor.shape)
            raise InputError(f"spec.dataset: the model input {tensor.name!r} {shown} has unknown sizes; give a dataset")
        if tensor.dtype.kind != "f":
            raise InputError(
                f"spec.dataset: the model input {tensor.name!r} takes {tensor.dtype} values (e.g. token ids), "
                "which random inputs cannot stand for; give a dataset"
            )
        shape = (UNLABELED_EVAL_SAMPLES, *(int(dim or 0) for dim in tensor.shape))
        arrays[tensor.name] = rng.random(shape, dtype=np.float32)
    return arrays


def _check_split(spec: CompressionJobSpec, model: Any) -> None:
    """Checks the split layers on the input model before any training (the steps keep its layer names and
    graph, unless distill replaces the model)."""
    if spec.output.split is None or any(isinstance(step, DistillStep) for step in spec.steps):
        return
    from .split import WHERE, plan_parts

    if model is None:
        raise InputError(f"{WHERE}: splitting needs a tf-keras model (its layer graph); {spec.model.uri} is not one")
    plan_parts(model, spec.output.split)


def _step_phase(step: CompressionStep[Any]) -> Callable[[RunState], None]:
    def apply(state: RunState) -> None:
        report = _ready(state.step_context).run(step)
        if report is not None:
            state.step_reports.append(report.model_copy(update={"seconds": round(state.clock.elapsed(), 2)}))

    return apply


def _convert(state: RunState) -> None:
    """Converts the model the steps left with the plan they made; ptq's skip lists become a denylist.

    A .tflite input is quantized by litert-quantizer instead (its skip lists become float recipe entries).
    """
    from . import convert

    context = _ready(state.step_context)
    plan, ptq = context.plan, context.plan.ptq
    where = f"spec.steps[{len(state.spec.steps) - 1}]"
    calibration = state.dataset.x_train if state.dataset is not None else None
    quantizer: Quantizer = "converter"
    if plan.searched_model is not None:
        result_tflite, denylist = plan.searched_model, list[str]()
        state.conversion = convert.conversion_report(plan.mode, result_tflite, quantizer=plan.searched_quantizer)
    elif context.loaded.tflite is not None:
        from .tflite_quantize import quantize_ptq

        quantizer = "litertQuantizer"
        result_tflite, denylist = quantize_ptq(context.loaded.tflite, ptq, x_calibration=calibration, where=where)
        state.conversion = convert.conversion_report(plan.mode, result_tflite, quantizer=quantizer)
    else:
        result_tflite, denylist = _convert_with_converter(state, where=where, calibration=calibration)
    if ptq is not None:
        state.step_reports.append(
            PtqReport(
                mode=ptq.mode,
                quantizer=quantizer,
                integerIO=ptq.integer_io,
                denylisted_nodes=denylist,
                seconds=round(state.clock.elapsed(), 2),
            )
        )
    state.tflite_file = state.work_dir / TFLITE_NAME
    state.tflite_file.write_bytes(result_tflite)


def _convert_with_converter(state: RunState, *, where: str, calibration: Arrays | None) -> tuple[bytes, list[str]]:
    """The LiteRT converter's result for the Keras model or SavedModel, and the nodes its denylist kept float."""
    from . import convert
    from .tfcompat import tf

    context = _ready(state.step_context)
    plan, keras_model = context.plan, context.keras_model
    converter = (
        tf.lite.TFLiteConverter.from_keras_model(keras_model) if keras_model is not None else context.loaded.converter()
    )
    denylist: list[str] = []
    ptq = plan.ptq
    if ptq is not None and (ptq.skip_layers or ptq.skip_first_and_last):
        graph = (
            state.baseline_tflite
            if keras_model is None
            else tf.lite.TFLiteConverter.from_keras_model(keras_model).convert()
        )
        denylist = convert.denylisted_nodes(graph, ptq.skip_layers, ptq.skip_first_and_last, where)
    if calibration is not None and len(calibration) > 1 and denylist:
        raise InputError(
            f"{where}.skipLayers: keeping layers float is not supported for a model "
            "with several inputs (the quantization debugger takes inputs by position)"
        )
    result_tflite, state.conversion = convert.convert(
        converter, plan=plan, x_calibration=calibration, denylist=denylist
    )
    return result_tflite, denylist


def _evaluate(state: RunState) -> None:
    """Measures the result, then both models' memory and latency, and judges the result against the gates.

    The result's outputs are taken like the baseline's; memory is measured in a fresh process per model,
    latency with the two models interleaved; the speed path is worded from the file and the measured speed-up.
    """
    from . import evaluate
    from .gates import judge
    from .kernels import speed_path

    spec, x_eval, baseline_quality = state.spec, _ready(state.x_eval), _ready(state.baseline_quality)
    result_tflite = _ready(state.tflite_file).read_bytes()
    result_quality = evaluate.quality(
        result_tflite,
        x_eval,
        threads=spec.evaluation.latency.threads,
        tasks=state.tasks,
        names_of=baseline_quality.signature,
        labels=state.labels,
        reference_outputs=baseline_quality.outputs,
    )
    state.baseline, state.result = evaluate.measure_pair(
        state.baseline_tflite,
        result_tflite,
        {name: array[0] for name, array in x_eval.items()},
        latency_spec=spec.evaluation.latency,
        baseline_quality=baseline_quality,
        result_quality=result_quality,
    )
    state.comparison = Comparison.between(state.baseline, state.result)
    conversion = _ready(state.conversion)
    state.conversion = conversion.model_copy(update={"speed_path": speed_path(conversion, state.comparison)})
    step_gates = [verdict for step in state.steps for verdict in step.gates(state.comparison)]
    state.gates = judge(state.spec.gates, state.comparison, state.result) + step_gates
    _time_filter_reduction(state, result_tflite)


def _time_filter_reduction(state: RunState, result_tflite: bytes) -> None:
    """After filter reduction, times the result against int8 of the unreduced model too (into its step report)."""
    from .filters import speed_against_unreduced_int8

    reduced = [index for index, report in enumerate(state.step_reports) if isinstance(report, ReduceFiltersReport)]
    if not reduced or state.dataset is None or state.dataset.x_train is None:
        return
    context = _ready(state.step_context)
    speed = speed_against_unreduced_int8(
        context.loaded.require_keras("evaluate"),
        baseline=state.baseline_tflite,
        result=result_tflite,
        x_calibration=state.dataset.x_train,
        sample={name: array[0] for name, array in _ready(state.x_eval).items()},
        latency=state.spec.evaluation.latency,
    )
    index = reduced[0]
    state.step_reports[index] = state.step_reports[index].model_copy(update={"speed": speed})


def _split(state: RunState) -> None:
    """Splits the result into parts at the spec's layers and checks them against the unsplit result."""
    from . import split

    context = _ready(state.step_context)
    model = context.keras_model if context.keras_model is not None else context.loaded.keras_model
    if model is None:
        raise InputError(f"{split.WHERE}: splitting needs a tf-keras model; this model has no Keras layers here")
    x_eval, x_train = _ready(state.x_eval), state.dataset.x_train if state.dataset is not None else None
    if len(x_eval) != 1:
        raise InputError(f"{split.WHERE}: only single-input models can be split; this one has inputs {sorted(x_eval)}")
    state.split = split.split_model(
        model,
        _ready(state.spec.output.split),
        plan=context.plan,
        whole=_ready(state.tflite_file).read_bytes(),
        x_eval=next(iter(x_eval.values())),
        x_calibration=next(iter(x_train.values())) if x_train else None,
        latency=state.spec.evaluation.latency,
        work_dir=state.work_dir,
    )


def _artifact(path: Path, uri: str) -> Artifact:
    return Artifact(uri=uri, sha256=sha256_of(path), bytes=path.stat().st_size)


def _publish(state: RunState) -> None:
    """Uploads the .tflite (and its split parts), promotes it when every gate passed, then report.html and its
    plots, and report.json last."""
    from .tfcompat import tf

    spec, tflite_file, context = state.spec, _ready(state.tflite_file), _ready(state.step_context)
    output = state.storage(spec.output.uri)
    report_uri = join_uri(spec.output.uri, REPORT_NAME)
    tflite_uri = join_uri(spec.output.uri, TFLITE_NAME)
    tflite = _artifact(tflite_file, tflite_uri)
    split_files = [*state.split.files, state.split.manifest] if state.split is not None else []
    split_artifacts = [_artifact(path, join_uri(spec.output.uri, path.name)) for path in split_files]
    report = Report(
        spec=spec,
        inputs=Inputs.model_validate(
            {
                **state.artifacts,
                "dataset_shards": state.dataset_shards,
                "model_keras3": context.loaded.keras3,
                "student_keras3": context.student_keras3,
            }
        ),
        outputs=Outputs(
            tflite=tflite, parts=split_artifacts[:-1], manifest=split_artifacts[-1] if split_artifacts else None
        ),
        metric=state.metric,
        evaluation_samples=samples(_ready(state.x_eval)),
        evaluation_data="dataset x_eval" if state.dataset is not None else "random uniform inputs (no dataset)",
        steps=state.step_reports,
        conversion=_ready(state.conversion),
        baseline=_ready(state.baseline),
        result=_ready(state.result),
        comparison=_ready(state.comparison),
        gates=state.gates,
        gates_passed=all(gate.passed for gate in state.gates),
        versions=versions(),
        devices=[device.name for device in tf.config.list_physical_devices()],
        replicas=context.replicas,
        replica_devices=context.replica_devices,
        source=state.source,
        trusted_code=any(source.trust_code for source in _model_sources(spec)),
        split=state.split.report if state.split is not None else None,
        resumption=context.checkpoints.resumption() if context.checkpoints is not None else None,
    )
    plots = _draw_plots(report)
    if spec.output.overwrite:
        output.delete(report_uri)
        for name in (HTML_NAME, *PLOT_FILES.values()):
            output.delete(join_uri(spec.output.uri, name))
        for uri in _earlier_split_files(output, spec.output.uri):
            output.delete(uri)
    for step in state.steps:
        step.publish()
    output.upload(tflite_file, tflite_uri)
    for path, artifact in zip(split_files, split_artifacts, strict=True):
        output.upload(path, artifact.uri)
    promotion = None
    if report.gates_passed and spec.promotion is not None:
        promotion = _promote(state, report)
    report = report.model_copy(update={"promotion": promotion, "timings_seconds": state.clock.seconds()})
    report = _publish_page(state, report, plots)
    report_file = state.work_dir / REPORT_NAME
    report_file.write_text(json.dumps(report.to_wire(), indent=2) + "\n")
    output.upload(report_file, report_uri)
    if context.checkpoints is not None and not spec.checkpoints.keep:
        context.checkpoints.remove()
    summary = RunSummary.from_report(report, report_uri=report_uri, report_sha256=sha256_of(report_file))
    state.outcome = RunOutcome(report=report, summary=summary)


def _earlier_split_files(output: Storage, folder: str) -> list[str]:
    """The parts and manifest an earlier split left in the output folder: a new run may make fewer parts, or
    none, and stale ones beside its model would be read as its own."""
    from .split import is_split_file

    if not folder.startswith("s3://") and not local_path(folder).is_dir():
        return []  # a first run: nothing was written there yet
    return [uri for uri in output.list(folder) if is_split_file(uri.rsplit("/", 1)[-1])]


def _draw_plots(report: Report) -> dict[str, bytes]:
    """The page's plots, drawn before the first upload; a plot that cannot be drawn costs the page, never the run."""
    from .report_html import plot_pngs

    try:
        return plot_pngs(report)
    except Exception as error:
        logger.warning("the plots of %s could not be drawn, left out: %r", HTML_NAME, error)
        return {}


def _publish_page(state: RunState, report: Report, plots: dict[str, bytes]) -> Report:
    """Writes and uploads the plots, then report.html (before report.json); the report with them as outputs.

    The page shows this report as it is before they are added (its own checksum cannot be in it).
    """
    from .report_html import render_report_html

    folder = state.spec.output.uri
    try:
        page = render_report_html(report, plots)
    except Exception as error:
        logger.warning("%s could not be drawn, left out: %r", HTML_NAME, error)
        return report
    files = {PLOT_FILES[name]: png for name, png in plots.items()} | {HTML_NAME: page.encode()}
    artifacts: dict[str, Artifact] = {}
    for name, content in files.items():
        path = state.work_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        artifacts[name] = _artifact(path, join_uri(folder, name))
    output = state.storage(folder)
    for name, artifact in artifacts.items():
        output.upload(state.work_dir / name, artifact.uri)
    outputs = report.outputs.model_copy(
        update={
            "html": artifacts[HTML_NAME],
            "plots": {name: artifacts[PLOT_FILES[name]] for name in plots},
        }
    )
    return report.model_copy(update={"outputs": outputs})


def _promote(state: RunState, report: Report) -> PromotionOutcome:
    """Promotes a passing model; a conflict is recorded (the run's own output is complete) and fails the run."""
    promotion = _ready(state.spec.promotion)
    source = PromotionSource(
        job=report.source.job if report.source else None,
        output=report.outputs.tflite.uri,
        report=join_uri(report.spec.output.uri, REPORT_NAME),
        comparison=report.comparison,
    )
    try:
        return promote(
            promotion,
            _ready(state.tflite_file),
            source=source,
            storage=state.storage(promotion.uri),
            work_dir=state.work_dir,
        )
    except PromotionConflict as error:
        return PromotionOutcome(
            uri=join_uri(promotion.uri, PROMOTED_MODEL), promoted=False, reason=error.reason, message=str(error)
        )


def _model_sources(spec: CompressionJobSpec) -> list[ModelSource]:
    """The input model and the distillation student, if any: every model file the run loads."""
    return [spec.model, *(step.student for step in spec.steps if isinstance(step, DistillStep))]
