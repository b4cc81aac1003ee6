"""The auto step's training trials: trial ``i`` run (or read back from its record) and recorded.

A trial runs ``trial_spec(spec, i)``, the job with the auto step replaced by the preset's steps, as a run of
its own in a child process (``supervise``), so a native crash in training fails that trial, not the process
that started it. Its outcome is recorded in ``trials/<i>/trial.json`` (a ``TrialRecord``), written after the
trial's model.tflite and report.json, so the record's presence means the trial finished:

- exit 0: the record holds the model's SHA-256 and size;
- exit 1, 20, 21 or 23 (the same inputs fail the same way again): the record holds the exit code, reason and
  message, and the search lists the trial as unavailable;
- exit 22 or a stop by a signal (storage trouble, the out-of-memory killer, a terminated pod): no record;
  ``InfrastructureError`` is raised, so the pod exits 22 and Kubernetes runs it again.

A record is keyed by ``trial_key``: the trial's job without its URIs, the input model's and the dataset's
SHA-256 and the tool versions. A trial whose record has the run's key (and, for a success, whose model.tflite
still has the recorded SHA-256) is not run again: the operator runs the trials as an Indexed Job before the
runner Job, whose search then reads every result from its record.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from edgecompress_contract.exit_codes import NOT_RETRIED
from edgecompress_contract.report import Report, TrialRecord
from edgecompress_contract.spec import TRIAL_INDEX_ENV, CompressionJobSpec, load_spec_text
from edgecompress_contract.summary import RunSummary
from edgecompress_contract.trials import (
    TRIAL_RECORD_NAME,
    auto_step,
    trial_folder,
    trial_name,
    trial_spec,
    trials_of,
)

from .errors import ExitCode, InfrastructureError, InputError, UnsupportedLayerError
from .pipeline import REPORT_NAME, TFLITE_NAME
from .progress import logger
from .storage import Storage, join_uri, sha256_of, storage_for
from .trial_cache import content_key

__all__ = ["InputDigests", "TrialOutcome", "input_digests", "run_trial", "trial_index", "trial_key", "trial_main"]

RECORDED_FAILURES = frozenset(int(code) for code in NOT_RETRIED)
"""Exit codes of a trial that count as its outcome: the same inputs fail the same way again."""


@dataclass(frozen=True)
class InputDigests:
    """SHA-256 of the input model's bytes and of the dataset's (``scan``'s checksum for shards)."""

    model: str
    dataset: str | None


@dataclass(frozen=True)
class TrialOutcome:
    """How trial ``record.index`` ended, its trained .tflite on a success, and whether it was read back."""

    record: TrialRecord
    model: bytes | None
    served: bool
    """Read from an earlier record instead of trained."""

    @property
    def name(self) -> str:
        return trial_name(self.record.index, self.record.preset)

    @property
    def failure(self) -> str | None:
        """Why the trial gave no model, as the search lists it (None on a success)."""
        if self.record.succeeded:
            return None
        failure = f"the trial failed (exit {self.record.exit_code}, {self.record.reason}): {self.record.message}"
        if self.record.reason == UnsupportedLayerError.reason:
            failure += f" (the trial's steps take them from {_where(self.record.index)}.skipLayers)"
        return failure


def _sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def _where(index: int) -> str:
    return f"spec.steps[0].trials[{index}]"


def trial_key(spec: CompressionJobSpec, index: int, digests: InputDigests) -> str:
    """The content key of trial ``index``: its job without what does not change its result, and the inputs' bytes.

    Left out: the model's and dataset's URIs (their SHA-256 stand for them), the output (the record sits in
    the trial's folder), and the credentials, suspension and queue of the runner Job.
    """
    job = trial_spec(spec, index).model_dump(mode="json", by_alias=True, exclude_none=True)
    job["model"].pop("uri")
    if "dataset" in job:
        job["dataset"].pop("uri")
    for name in ("output", "credentials", "suspend", "queueName"):
        job.pop(name, None)
    return content_key("trainingTrial", job, digests.model, digests.dataset)


def input_digests(spec: CompressionJobSpec, work_dir: Path) -> InputDigests:
    """Downloads the input model and the dataset into ``work_dir`` and hashes them as a run's download phase does."""
    from .streaming import is_sharded, sharded_dataset_sha256

    work_dir.mkdir(parents=True, exist_ok=True)
    model_file = work_dir / "input-model"
    storage_for(spec.model.uri).download(spec.model.uri, model_file)
    model = sha256_of(model_file)
    model_file.unlink()
    if spec.dataset is None:
        return InputDigests(model=model, dataset=None)
    uri = spec.dataset.uri
    storage = storage_for(uri)
    if is_sharded(uri):
        return InputDigests(model=model, dataset=sharded_dataset_sha256(uri, storage, work_dir))
    dataset_file = work_dir / "dataset.npz"
    storage.download(uri, dataset_file)
    dataset = sha256_of(dataset_file)
    dataset_file.unlink()
    return InputDigests(model=model, dataset=dataset)


def run_trial(
    spec: CompressionJobSpec,
    index: int,
    *,
    work_dir: Path,
    digests: InputDigests | None = None,
    storage: Storage | None = None,
) -> TrialOutcome:
    """Trial ``index``'s outcome: read from its record when that matches, else run and recorded.

    Args:
        spec: The job whose auto step has the trial.
        index: The trial's index in ``spec.steps[0].trials``.
        work_dir: A folder of this trial's own: the record and model read back, and the trial run's files.
        digests: The inputs' SHA-256 when the caller already has them (a run's download phase); else the
            inputs are downloaded and hashed when a key is needed before the trial's own run has them.
        storage: The storage of ``spec.output.uri`` (default: made for it).

    Returns:
        The trial's record, its model's bytes on a success, and whether it was read back rather than run.

    Raises:
        IndexError: The auto step has no trial ``index``.
        InfrastructureError: The trial stopped for a reason a retry may not meet again (exit 22, killed, stopped
            by a signal), its files are missing or changed after it wrote them, or the inputs changed while it
            ran; no record is written.
    """
    started = time.monotonic()
    job = trial_spec(spec, index)
    folder = job.output.uri
    storage = storage if storage is not None else storage_for(folder)
    record_uri = join_uri(folder, TRIAL_RECORD_NAME)
    work_dir.mkdir(parents=True, exist_ok=True)
    known: list[InputDigests] = [digests] if digests is not None else []

    def digests_now() -> InputDigests:
        if not known:
            known.append(input_digests(spec, work_dir / "inputs"))
        return known[0]

    if storage.exists(record_uri):
        served = _served(spec, index, storage, record_uri, work_dir, digests_now)
        if served is not None:
            return served
        storage.delete(record_uri)  # another key, or its model is gone: this trial.json no longer holds
    summary = _run(job, work_dir / "run")
    seconds = round(time.monotonic() - started, 2)
    preset = trials_of(spec)[index].preset
    where = f"{_where(index)} ({trial_name(index, preset)})"
    if summary.exit_code == ExitCode.SUCCEEDED:
        model, ran_on = _trained_model(folder, storage, work_dir, where)
        if known and known[0] != ran_on:
            raise InfrastructureError(f"{where}: the input model or dataset changed while the trial ran; run it again")
        record = TrialRecord(
            index=index,
            preset=preset,
            key=trial_key(spec, index, ran_on),
            exit_code=0,
            message=summary.message,
            model_sha256=_sha256(model),
            size_bytes=len(model),
            seconds=seconds,
        )
    elif summary.exit_code in RECORDED_FAILURES:
        model = None
        record = TrialRecord(
            index=index,
            preset=preset,
            key=trial_key(spec, index, digests_now()),
            exit_code=summary.exit_code,
            reason=summary.reason,
            message=summary.message,
            seconds=seconds,
        )
    else:
        raise InfrastructureError(
            f"{where} stopped (exit {summary.exit_code}, {summary.reason}): {summary.message}; it runs again on a retry"
        )
    record_file = work_dir / TRIAL_RECORD_NAME
    record_file.write_text(json.dumps(record.to_wire(), indent=1) + "\n")
    storage.upload(record_file, record_uri)
    return TrialOutcome(record=record, model=model, served=False)


def _served(
    spec: CompressionJobSpec,
    index: int,
    storage: Storage,
    record_uri: str,
    work_dir: Path,
    digests: Callable[[], InputDigests],
) -> TrialOutcome | None:
    """The outcome in the trial's record, when the record is this trial's on these inputs and its model is intact."""
    record_file = work_dir / f"recorded-{TRIAL_RECORD_NAME}"
    storage.download(record_uri, record_file)
    try:
        record = TrialRecord.model_validate_json(record_file.read_text())
    except (ValidationError, ValueError):
        return None
    if record.index != index or record.key != trial_key(spec, index, digests()):
        return None
    if not record.succeeded:
        return TrialOutcome(record=record, model=None, served=True)
    model_uri = join_uri(trial_folder(spec.output.uri, index), TFLITE_NAME)
    if not storage.exists(model_uri):
        return None
    model_file = work_dir / f"recorded-{TFLITE_NAME}"
    storage.download(model_uri, model_file)
    model = model_file.read_bytes()
    if _sha256(model) != record.model_sha256:
        return None
    return TrialOutcome(record=record, model=model, served=True)


def _run(job: CompressionJobSpec, work_dir: Path) -> RunSummary:
    """Runs the trial's job in a child process; its summary (the child's, or the supervisor's after a crash)."""
    from .supervise import supervised_run

    summary_file = work_dir / "summary.json"
    summary_file.unlink(missing_ok=True)
    text = json.dumps(job.model_dump(mode="json", by_alias=True, exclude_none=True))
    code = supervised_run(text, work_dir, summary_file, "log")
    try:
        summary = RunSummary.model_validate_json(summary_file.read_text())
    except (OSError, ValidationError, ValueError):
        raise InfrastructureError(f"the trial run into {job.output.uri} exited {code} without a summary") from None
    return summary.model_copy(update={"exit_code": code})


def _trained_model(folder: str, storage: Storage, work_dir: Path, where: str) -> tuple[bytes, InputDigests]:
    """The trial's model.tflite, checked against its report.json, and the inputs' SHA-256 the report records."""
    report_file, model_file = work_dir / REPORT_NAME, work_dir / TFLITE_NAME
    try:
        storage.download(join_uri(folder, REPORT_NAME), report_file)
        storage.download(join_uri(folder, TFLITE_NAME), model_file)
    except InputError as error:
        raise InfrastructureError(f"{where}: the trial succeeded but its files cannot be read: {error}") from None
    report = Report.model_validate_json(report_file.read_text())
    model = model_file.read_bytes()
    if _sha256(model) != report.outputs.tflite.sha256:
        raise InfrastructureError(f"{where}: {TFLITE_NAME} in {folder} is not the file its report.json describes")
    dataset = report.inputs.dataset.sha256 if report.inputs.dataset is not None else None
    return model, InputDigests(model=report.inputs.model.sha256, dataset=dataset)


def trial_index(spec: CompressionJobSpec, index: int | None) -> int:
    """The trial a ``trial`` command runs: ``index``, else the Indexed Job's completion index; checked.

    Raises:
        InputError: No index was given, it is not a number, the spec has no trials, or it has no such trial.
    """
    step = auto_step(spec)
    if step is None or not step.trials:
        asked = "" if index is None else f" {index}"
        raise InputError(f"spec.steps[0].trials: the job has no training trials, so there is no trial{asked} to run")
    if index is None:
        raw = os.environ.get(TRIAL_INDEX_ENV)
        if raw is None:
            raise InputError(f"give --index or set {TRIAL_INDEX_ENV} (the trial of spec.steps[0].trials to run)")
        try:
            index = int(raw)
        except ValueError:
            raise InputError(f"{TRIAL_INDEX_ENV}: not a trial index: {raw[:50]!r}") from None
    if not 0 <= index < len(step.trials):
        raise InputError(
            f"spec.steps[0].trials: there is no trial {index}; the auto step has {len(step.trials)} "
            f"(indices 0 to {len(step.trials) - 1})"
        )
    return index


def trial_main(job_text: str, index: int | None, work_dir: Path | None, summary_file: Path | None) -> int:
    """``edgecompress-runner trial``: runs one trial (or finds its record) and writes a summary.

    Returns:
        0 once the trial's record exists (it succeeded or failed for good), 20 for a bad spec or index, 22 when
        the trial must run again (infrastructure), 1 for an unexpected error.
    """
    from .cli import _write_summary, failed, work_folder

    with work_folder(work_dir, prefix="edgecompress-trial-") as work:
        try:
            spec = load_spec_text(job_text)
            index = trial_index(spec, index)
            outcome = run_trial(spec, index, work_dir=work / f"trial-{index}")
        except Exception as error:
            return failed(error, summary_file)
    record = outcome.record
    how = "read from its record" if outcome.served else f"ran in {record.seconds:.1f} s"
    result = (
        f"{record.size_bytes} bytes, sha256 {record.model_sha256}"
        if record.succeeded
        else f"failed for good (exit {record.exit_code}, {record.reason}): {record.message}"
    )
    message = f"{_where(index)} ({outcome.name}) {how}: {result}; recorded in {TRIAL_RECORD_NAME}"
    logger.info(message, extra={"fields": {"event": "result", "result": "Succeeded"}})
    _write_summary(summary_file, RunSummary(result="Succeeded", exit_code=0, message=message).fitted())
    return 0
