"""Command line: ``edgecompress-runner run|example|validate|schema``.

Exit codes (see errors.ExitCode): 0 succeeded, 20 bad spec or input, 21 gates failed,
22 infrastructure (storage, memory), 23 native crash, 1 unexpected. ``run`` runs the job in a
child process (supervise.py), so a crash in native code still ends with a summary.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from edgecompress_contract.report import Source
from edgecompress_contract.spec import JOB_ENV, SOURCE_ENV
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
    temporary = work_dir is None
    work = Path(tempfile.mkdtemp(prefix="edgecompress-")) if work_dir is None else work_dir
    try:
        spec = build_spec()
        from .pipeline import run
        from .report import summary_table

        outcome = run(spec, work, progress_bar=bar, sinks=sinks, source=_source())
    except (RunnerError, SpecError) as error:
        return _fail(error.exit_code, error.reason, str(error), summary_file)
    except MemoryError:
        message = "out of memory; give the runner more memory or use fewer samples"
        return _fail(InfrastructureError.exit_code, "OutOfMemory", message, summary_file)
    except Exception as error:
        log.exception("unexpected failure")
        return _fail(ExitCode.UNEXPECTED, "InternalError", f"{type(error).__name__}: {error}", summary_file)
    finally:
        if temporary:
            shutil.rmtree(work, ignore_errors=True)
    _write_summary(summary_file, outcome.summary)
    click.echo(summary_table(outcome.report))
    code = outcome.exit_code
    log.info("run finished", extra={"fields": {"event": "result", "result": outcome.summary.result}})
    return int(code)


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

    if job_file is not None:
        text = job_file.read()
    elif os.environ.get(JOB_ENV):
        text = os.environ[JOB_ENV]
    else:
        raise click.UsageError(f"give JOB_FILE or set {JOB_ENV}")
    sys.exit(supervise(text, work_dir, summary_file, progress))


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
