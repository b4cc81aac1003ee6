"""One compression run: download, baseline, steps, convert, evaluate, gates, upload.

All computing happens before the first upload. The .tflite is uploaded first, then (when every
gate passed and the spec asks) promoted, and report.json last, so a report's presence means the
run finished.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecompress_contract.spec import API_GROUP, API_VERSION, CompressionJobSpec, DistillStep, Promotion, PtqStep

from .errors import ExitCode, InputError, PromotionConflict
from .progress import Progress, Sink
from .promotion import PROMOTED_MODEL, promote
from .report import comparison, summary_from_report, versions
from .storage import Storage, join_uri, sha256_of, storage_for

TFLITE_NAME = "model.tflite"
REPORT_NAME = "report.json"
UNLABELED_EVAL_SAMPLES = 100


@dataclass(frozen=True)
class RunOutcome:
    report: dict[str, Any]
    summary: dict[str, Any]

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode(self.summary["exitCode"])


def plan_phases(spec: CompressionJobSpec) -> list[str]:
    """The phases of a run in order; their names appear in progress events."""
    steps = [f"steps[{index}] {step.type}" for index, step in enumerate(spec.steps)]
    return ["download", "baseline", *steps, "convert", "evaluate", "upload"]


def _fetch(uri: str, destination: Path, storages: dict[str, Storage]) -> dict[str, Any]:
    storage = _storage(uri, storages)
    storage.download(uri, destination)
    return {"uri": uri, "sha256": sha256_of(destination), "bytes": destination.stat().st_size}


def _storage(uri: str, storages: dict[str, Storage]) -> Storage:
    scheme = uri.split("://", 1)[0] if "://" in uri else ""
    if scheme not in storages:
        storages[scheme] = storage_for(uri)
    return storages[scheme]


def _input_name(uri: str, fallback: str) -> str:
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    return name or fallback


def run(
    spec: CompressionJobSpec,
    work_dir: Path,
    progress_bar: bool = False,
    sinks: list[Sink] | None = None,
    source: dict[str, Any] | None = None,
) -> RunOutcome:
    """Runs the job; raises RunnerError subclasses for anything that stops it.

    ``source`` identifies the job (the operator passes its namespace, name and uid); it is
    recorded in the report and in the promotion record.
    """
    from . import convert, evaluate, model_io
    from .data import check_input_shape, load_dataset
    from .gates import evaluate_gates
    from .tfcompat import tf

    started = time.monotonic()
    timings: dict[str, float] = {}
    storages: dict[str, Storage] = {}
    progress = Progress(plan_phases(spec), bar=progress_bar, sinks=sinks)
    output = _storage(spec.output.uri, storages)
    report_uri = join_uri(spec.output.uri, REPORT_NAME)
    tflite_uri = join_uri(spec.output.uri, TFLITE_NAME)
    if not spec.output.overwrite and output.exists(report_uri):
        raise InputError(
            f"spec.output.uri: {report_uri} already holds a finished run; choose another output "
            "or set output.overwrite: true"
        )

    progress.start("download")
    work_dir.mkdir(parents=True, exist_ok=True)
    inputs: dict[str, Any] = {}
    model_file = work_dir / ("input-" + _input_name(spec.model.uri, "model"))
    inputs["model"] = _fetch(spec.model.uri, model_file, storages)
    distill_step = next((step for step in spec.steps if isinstance(step, DistillStep)), None)
    student_file = None
    if distill_step is not None:
        student_file = work_dir / ("student-" + _input_name(distill_step.student.uri, "student"))
        inputs["student"] = _fetch(distill_step.student.uri, student_file, storages)
    dataset = None
    if spec.dataset is not None:
        dataset_file = work_dir / "dataset.npz"
        inputs["dataset"] = _fetch(spec.dataset.uri, dataset_file, storages)
        dataset = load_dataset(dataset_file, spec.dataset.uri)
        last = spec.steps[-1]
        if isinstance(last, PtqStep) and last.mode in ("int8", "int16x8") and dataset.x_train is None:
            raise InputError(
                f"spec.steps[{len(spec.steps) - 1}].mode: {last.mode} calibrates on x_train, "
                "which the dataset does not have"
            )
    metric: str = spec.evaluation.metric
    if metric == "auto":
        metric = "accuracy" if dataset is not None and dataset.has_labels else "fidelity"
    if metric == "accuracy" and (dataset is None or not dataset.has_labels):
        raise InputError("spec.evaluation.metric: accuracy needs labels (y_eval) in the dataset")
    timings["download"] = time.monotonic() - started

    progress.start("baseline")
    phase_started = time.monotonic()
    loaded = model_io.load_model(
        model_file, spec.model.format, spec.model.uri, work_dir, trust_code=spec.model.trust_code
    )
    baseline_bytes, _ = convert.convert(loaded.converter(), None, False, False, None, [])
    expected_shape = evaluate.input_signature(baseline_bytes)
    if dataset is not None:
        check_input_shape(dataset, expected_shape, spec.dataset.uri if spec.dataset else "")
        x_eval = dataset.x_eval[: spec.evaluation.samples]
        y_eval = dataset.y_eval[: spec.evaluation.samples] if dataset.y_eval is not None else None
    else:
        if any(dim is None for dim in expected_shape):
            raise InputError(f"spec.dataset: the model input {expected_shape} has unknown sizes; give a dataset")
        rng = np.random.default_rng(0)
        x_eval = rng.random((UNLABELED_EVAL_SAMPLES, *[int(dim or 0) for dim in expected_shape]), dtype=np.float32)
        y_eval = None
    latency = spec.evaluation.latency
    labels = y_eval if metric == "accuracy" else None
    baseline, baseline_outputs = evaluate.measure(
        baseline_bytes, x_eval, labels, None, latency.threads, latency.runs, latency.warmup
    )
    timings["baseline"] = time.monotonic() - phase_started

    applied = _apply_steps(spec, loaded, dataset, student_file, work_dir, progress, timings)
    keras_model, step_results, ptq = applied.keras_model, applied.results, applied.ptq
    pruned_layers, qat_applied = applied.pruned_layers, applied.qat_applied

    progress.start("convert")
    phase_started = time.monotonic()
    converter = tf.lite.TFLiteConverter.from_keras_model(keras_model) if keras_model is not None else loaded.converter()
    denylist: list[str] = []
    where = f"spec.steps[{len(spec.steps) - 1}]"
    if ptq is not None and (ptq.skip_layers or ptq.skip_first_and_last):
        graph = (
            baseline_bytes if keras_model is None else tf.lite.TFLiteConverter.from_keras_model(keras_model).convert()
        )
        denylist = convert.denylisted_nodes(graph, ptq.skip_layers, ptq.skip_first_and_last, where)
    final_mode = ptq.mode if ptq else ("qat" if qat_applied else "float")
    sparse = bool(pruned_layers) and final_mode in ("float", "float16")
    calibration = dataset.x_train if dataset is not None else None
    result_bytes, conversion = convert.convert(
        converter, ptq, qat_applied, sparse, calibration, denylist, float_layers=applied.qat_kept_float
    )
    if ptq is not None:
        step_results.append(
            {
                "type": "ptq",
                "mode": ptq.mode,
                "integerIO": ptq.integer_io,
                "denylistedNodes": denylist,
                "seconds": round(time.monotonic() - phase_started, 2),
            }
        )
    tflite_file = work_dir / TFLITE_NAME
    tflite_file.write_bytes(result_bytes)
    timings["convert"] = time.monotonic() - phase_started

    progress.start("evaluate")
    phase_started = time.monotonic()
    result, _ = evaluate.measure(
        result_bytes, x_eval, labels, baseline_outputs, latency.threads, latency.runs, latency.warmup
    )
    gate_results = evaluate_gates(spec.gates, baseline, result)
    timings["evaluate"] = time.monotonic() - phase_started

    progress.start("upload")
    phase_started = time.monotonic()
    tflite_record = {"uri": tflite_uri, "sha256": sha256_of(tflite_file), "bytes": tflite_file.stat().st_size}
    report: dict[str, Any] = {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": "CompressionReport",
        "spec": spec.model_dump(mode="json", by_alias=True),
        "inputs": inputs,
        "outputs": {"tflite": tflite_record},
        "metric": metric,
        "evaluationSamples": int(len(x_eval)),
        "evaluationData": "dataset x_eval" if dataset is not None else "random uniform inputs (no dataset)",
        "steps": step_results,
        "conversion": {"mode": conversion.mode, "speedPath": conversion.speed_path, "sparseEncoding": sparse},
        "baseline": baseline.as_dict(),
        "result": result.as_dict(),
        "comparison": comparison(baseline.as_dict(), result.as_dict()),
        "gates": [gate.as_dict() for gate in gate_results],
        "gatesPassed": all(gate.passed for gate in gate_results),
        "versions": versions(),
        "devices": [device.name for device in tf.config.list_physical_devices()],
        "timingsSeconds": {key: round(value, 2) for key, value in timings.items()},
        "trustedCode": spec.model.trust_code or bool(distill_step and distill_step.student.trust_code),
    }
    if source:
        report["source"] = source
    if spec.output.overwrite:
        output.delete(report_uri)
    output.upload(tflite_file, tflite_uri)
    if report["gatesPassed"] and spec.promotion is not None:
        report["promotion"] = _promote(spec.promotion, tflite_file, report, storages, work_dir)
    report["timingsSeconds"]["upload"] = round(time.monotonic() - phase_started, 2)
    report["timingsSeconds"]["total"] = round(time.monotonic() - started, 2)
    report_file = work_dir / REPORT_NAME
    report_file.write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
    output.upload(report_file, report_uri)
    progress.finish()
    return RunOutcome(report=report, summary=summary_from_report(report, report_uri, sha256_of(report_file)))


def _promote(
    promotion: Promotion, tflite_file: Path, report: dict[str, Any], storages: dict[str, Storage], work_dir: Path
) -> dict[str, Any]:
    """Promotes a passing model; a conflict is recorded (the run's own output is complete) and fails the run."""
    source = {
        "job": report.get("source", {}).get("job"),
        "output": report["outputs"]["tflite"]["uri"],
        "report": join_uri(report["spec"]["output"]["uri"], REPORT_NAME),
        "comparison": report["comparison"],
    }
    source = {key: value for key, value in source.items() if value is not None}
    try:
        return promote(promotion, tflite_file, source, _storage(promotion.uri, storages), work_dir)
    except PromotionConflict as error:
        return {
            "uri": join_uri(promotion.uri, PROMOTED_MODEL),
            "promoted": False,
            "reason": error.reason,
            "message": str(error),
        }


@dataclass
class AppliedSteps:
    """The model after the training steps, and what later conversion needs to know of them."""

    keras_model: Any
    results: list[dict[str, Any]] = field(default_factory=list)
    pruned_layers: list[str] = field(default_factory=list)
    clustered: bool = False
    qat_applied: bool = False
    qat_kept_float: bool = False
    ptq: PtqStep | None = None


def _apply_steps(
    spec: CompressionJobSpec,
    loaded: Any,
    dataset: Any,
    student_file: Path | None,
    work_dir: Path,
    progress: Progress,
    timings: dict[str, float],
) -> AppliedSteps:
    """Runs the training steps in order; the ptq step is only recorded (conversion applies it)."""
    from . import compress, model_io
    from .data import check_input_shape, training_arrays

    applied = AppliedSteps(keras_model=loaded.keras_model)
    for index, step in enumerate(spec.steps):
        phase = f"steps[{index}] {step.type}"
        fine_tune = getattr(step, "fine_tune", None)
        progress.start(phase, fine_tune.epochs if fine_tune else 0)
        phase_started = time.monotonic()
        if step.type == "ptq":
            applied.ptq = step
            continue
        assert dataset is not None
        x_train, y_train = training_arrays(dataset, phase)
        model = loaded.require_keras(phase) if applied.keras_model is None else applied.keras_model
        if isinstance(step, DistillStep):
            assert student_file is not None
            student = model_io.load_model(
                student_file, step.student.format, step.student.uri, work_dir, trust_code=step.student.trust_code
            )
            check_input_shape(dataset, tuple(student.keras_model.input_shape[1:]), step.student.uri)
            applied.keras_model, step_result = compress.distill(
                model, student.keras_model, step, x_train, y_train, progress
            )
        elif step.type == "prune":
            applied.keras_model, step_result = compress.prune(model, step, index, x_train, y_train, progress)
            applied.pruned_layers = list(step_result["sparsity"]["layers"])
        elif step.type == "cluster":
            applied.keras_model, step_result = compress.cluster(
                model, step, index, x_train, y_train, bool(applied.pruned_layers), progress
            )
            applied.clustered = True
        else:
            applied.keras_model, step_result = compress.qat(
                model, step, index, x_train, y_train, applied.pruned_layers, applied.clustered, progress
            )
            applied.qat_applied = True
            applied.qat_kept_float = bool(step_result["skippedLayers"])
        applied.results.append(step_result)
        timings[phase] = time.monotonic() - phase_started
    return applied


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
