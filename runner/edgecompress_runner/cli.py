"""Command line: ``edgecompress-runner run|trial|example|validate|schema``.

Exit codes (see errors.ExitCode): 0 succeeded, 20 bad spec or input, 21 gates failed,
22 infrastructure (storage, memory), 23 native crash, 1 unexpected. ``run`` runs the job in a
child process (supervise.py), so a crash in native code still ends with a summary. ``trial`` runs one
training trial of the auto step (trials.py): 0 once its record exists, whatever the trial's outcome.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from edgecompress_contract.report import Source
from edgecompress_contract.spec import JOB_ENV, SOURCE_ENV, TRIAL_INDEX_ENV
from edgecompress_contract.summary import RunSummary

from .errors import ExitCode, InfrastructureError, RunnerError, SpecError
from .progress import JsonLineFormatter, Sink

log = logging.getLogger("edgecompress")


def _configure_logging(progress: str) -> bool:
    """JSON log lines on stderr; returns whether to draw a progress bar."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLineFormatter())
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
    bar = progress == "bar" or (progress == "auto" and sys.stderr.isatty())
    if bar:
        handler.setLevel(logging.WARNING)
    return bar


def _write_summary(path: Path | None, summary: RunSummary) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(summary.encoded())


def execute(
    build_spec: Callable[[], Any],
    work_dir: Path | None,
    summary_file: Path | None,
    progress: str,
    sinks: list[Sink] | None = None,
) -> int:
    """Runs a job in this process and maps every outcome to an exit code and a summary."""
    bar = _configure_logging(progress)
    with work_folder(work_dir) as work:
        try:
            spec = build_spec()
            from .pipeline import run
            from .report import summary_table

            outcome = run(spec, work, progress_bar=bar, sinks=sinks, source=_source())
        except Exception as error:
            return failed(error, summary_file)
    _write_summary(summary_file, outcome.summary)
    click.echo(summary_table(outcome.report))
    code = outcome.exit_code
    log.info("run finished", extra={"fields": {"event": "result", "result": outcome.summary.result}})
    return int(code)


@contextmanager
def work_folder(work_dir: Path | None, prefix: str = "edgecompress-") -> Iterator[Path]:
    """``work_dir``, else a temporary folder removed afterwards."""
    temporary = work_dir is None
    work = Path(tempfile.mkdtemp(prefix=prefix)) if work_dir is None else work_dir
    try:
        yield work
    finally:
        if temporary:
            shutil.rmtree(work, ignore_errors=True)


def failed(error: Exception, summary_file: Path | None) -> int:
    """The exit code of a command an exception stopped, after logging it and writing its summary."""
    if isinstance(error, RunnerError | SpecError):
        return _fail(error.exit_code, error.reason, str(error), summary_file)
    if isinstance(error, MemoryError):
        message = "out of memory; give the runner more memory or use fewer samples"
        return _fail(InfrastructureError.exit_code, "OutOfMemory", message, summary_file)
    log.error("unexpected failure", exc_info=error)
    return _fail(ExitCode.UNEXPECTED, "InternalError", f"{type(error).__name__}: {error}", summary_file)


def _source() -> Source | None:
    """The CompressionJob this run belongs to, as the operator passes it (namespace, name, uid)."""
    raw = os.environ.get(SOURCE_ENV)
    if not raw:
        return None
    try:
        job = json.loads(raw)
    except json.JSONDecodeError:
        raise SpecError(f"{SOURCE_ENV}: not JSON: {raw[:100]}") from None
    if not isinstance(job, dict):
        return None
    try:
        return Source.model_validate({"job": job})
    except ValidationError:
        raise SpecError(f"{SOURCE_ENV}: not a job reference (namespace, name, uid): {raw[:100]}") from None


def _fail(code: int, reason: str, message: str, summary_file: Path | None) -> int:
    log.error("%s: %s", reason, message, extra={"fields": {"event": "result", "reason": reason}})
    click.echo(f"error ({reason}): {message}", err=True)
    _write_summary(summary_file, RunSummary.failure(code, reason, message))
    return int(code)


_progress_option = click.option(
    "--progress",
    type=click.Choice(["auto", "bar", "log"]),
    default="auto",
    show_default=True,
    help="bar: a progress bar; log: JSON log lines only; auto: bar on a terminal.",
)
_summary_option = click.option(
    "--summary-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the compact result JSON (< 4 KiB) here, e.g. /dev/termination-log.",
)
_work_dir_option = click.option(
    "--work-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep downloads and intermediate files here (default: a temporary folder, removed).",
)


@click.group()
def main() -> None:
    """Compress a Keras/TensorFlow model into a verified .tflite."""


@main.command("run")
@click.argument("job_file", type=click.File("r"), required=False)
@_summary_option
@_work_dir_option
@_progress_option
def run_command(job_file: Any, summary_file: Path | None, work_dir: Path | None, progress: str) -> None:
    """Run the CompressionJob in JOB_FILE (a whole CompressionJob YAML or just its spec; - for stdin).

    Without JOB_FILE the job is read from the EDGECOMPRESS_JOB environment variable (how the
    operator passes it to the runner pod). The job runs in a child process: if native code crashes
    it, the summary says so (reason NativeCrash, exit 23).
    """
    from .supervise import supervise

    sys.exit(supervise(_job_text(job_file), work_dir, summary_file, progress))


def _job_text(job_file: Any) -> str:
    if job_file is not None:
        return str(job_file.read())
    if os.environ.get(JOB_ENV):
        return os.environ[JOB_ENV]
    raise click.UsageError(f"give JOB_FILE or set {JOB_ENV}")


@main.command("trial")
@click.argument("job_file", type=click.File("r"), required=False)
@click.option(
    "--index",
    type=click.IntRange(min=0),
    help=f"The trial of spec.steps[0].trials to run (default: the {TRIAL_INDEX_ENV} environment variable).",
)
@_summary_option
@_work_dir_option
@_progress_option
def trial_command(
    job_file: Any, index: int | None, summary_file: Path | None, work_dir: Path | None, progress: str
) -> None:
    """Run one training trial of the auto step in JOB_FILE (or EDGECOMPRESS_JOB) into trials/<index>/.

    The trial runs in a child process, writes model.tflite and report.json to trials/<index>/ under
    spec.output.uri, then trial.json (its outcome). A trial whose trial.json matches the inputs is not run
    again. Exits 0 once trial.json exists, also when the trial failed for good (its reason is in trial.json);
    20 for a bad spec or index; 22 when the trial must be run again (storage trouble, killed).
    """
    from .trials import trial_main

    _configure_logging(progress)
    sys.exit(trial_main(_job_text(job_file), index, work_dir, summary_file))


@main.command("example")
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("edgecompress-example"),
    show_default=True,
    help="Folder for the example's inputs/ and result/.",
)
@_summary_option
@_progress_option
def example_command(output: Path, summary_file: Path | None, progress: str) -> None:
    """Train a small digits CNN and run prune -> QAT -> int8 PTQ on it, all locally."""
    from .example import example_spec

    sys.exit(execute(lambda: example_spec(output), output / "work", summary_file, progress))


@main.command("validate")
@click.argument("job_file", type=click.File("r"))
def validate_command(job_file: Any) -> None:
    """Check a job spec without running it."""
    from edgecompress_contract.spec import load_spec_text

    try:
        spec = load_spec_text(job_file.read())
    except (RunnerError, SpecError) as error:
        click.echo(f"invalid: {error}", err=True)
        sys.exit(int(error.exit_code))
    click.echo(f"valid: {len(spec.steps)} steps -> {spec.output.uri}")


@main.command("schema")
def schema_command() -> None:
    """Print the JSON Schema of the job spec."""
    from edgecompress_contract.spec import spec_json_schema

    click.echo(json.dumps(spec_json_schema(), indent=2))


if __name__ == "__main__":
    main()
