"""``edgecompress-runner run`` runs the job in a child process, so that a crash in native code still ends
with a summary and a documented exit code instead of a bare signal.

TensorFlow, oneDNN and LiteRT are C++: a bug there kills the process with SIGSEGV or SIGABRT (``free():
invalid next size``) and no Python ``except`` runs. The parent imports no TensorFlow; it starts the run in
a fresh interpreter (multiprocessing *spawn*), reads the child's progress events and result from a pipe,
forwards SIGTERM and SIGINT to it, and waits. When the child dies without a result, the parent writes the
summary itself:

- by SIGSEGV, SIGABRT, SIGBUS, SIGILL, SIGFPE...: exit 23 (``ExitCode.NATIVE_CRASH``), reason
  ``NativeCrash``, naming the signal and the phase (and epoch) it died in. The same input crashes the same
  way again, so the operator's podFailurePolicy fails the Job at once instead of retrying it on a GPU.
- by SIGKILL (what the kernel's out-of-memory killer sends): exit 22 (infrastructure, retried), reason
  ``Killed``.
- after the parent was asked to stop (SIGTERM from the kubelet, Ctrl-C): exit 128 + the signal, reason
  ``Terminated`` or ``Interrupted``.
- with an exit code but no result (a native library calling ``exit``): exit 1, reason ``InternalError``.

The child enables ``faulthandler``, so the log shows the Python stack of a native crash, and kills itself
when the parent is gone (killed with SIGKILL), so no run goes on without anyone to report it.
"""

from __future__ import annotations

import faulthandler
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from edgecompress_contract.progress import ProgressEvent

from .errors import ExitCode

# Signals the parent passes on to the child (and then reports as the reason the run stopped).
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_STOPPED_REASONS = {signal.SIGTERM: "Terminated", signal.SIGINT: "Interrupted"}


def supervise(job_text: str, work_dir: Path | None, summary_file: Path | None, progress: str) -> int:
    """Runs the job in ``job_text`` in a child process; returns the exit code (the child's, or the crash's)."""
    from .cli import _configure_logging

    _configure_logging(progress)
    return supervised_run(job_text, work_dir, summary_file, progress)


def supervised_run(job_text: str, work_dir: Path | None, summary_file: Path | None, progress: str) -> int:
    """``supervise`` without configuring this process's logging: a run that starts runs of its own (the auto
    step's training trials) keeps its own log settings."""
    from .cli import _fail

    temporary = work_dir is None
    work = Path(tempfile.mkdtemp(prefix="edgecompress-")) if work_dir is None else work_dir
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(
        target=_child_main, args=(job_text, work, summary_file, progress, sender), name="edgecompress-run"
    )
    stopped_by: list[signal.Signals] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        stopped_by.append(signal.Signals(signum))
        if child.pid is not None:
            _kill(child.pid, signum)

    previous = {number: signal.signal(number, forward) for number in FORWARDED_SIGNALS}
    last: ProgressEvent | None = None
    result: int | None = None
    try:
        child.start()
        sender.close()
        if stopped_by:
            _kill(child.pid, stopped_by[0])
        while True:
            try:
                kind, value = receiver.recv()
            except EOFError:
                break
            if kind == "progress":
                last = ProgressEvent.model_validate(value)
            elif kind == "result":
                result = int(value)
        child.join()
    finally:
        receiver.close()
        for number, handler in previous.items():
            signal.signal(number, handler)
        if temporary:
            shutil.rmtree(work, ignore_errors=True)
    exit_code = child.exitcode if child.exitcode is not None else 1
    if result is not None:
        # The child wrote its summary; a crash while the interpreter shuts down changes nothing.
        return result
    if stopped_by:
        stop = stopped_by[0]
        message = f"stopped by {stop.name} {_during(last)}{_uploads(last)}"
        return _fail(128 + int(stop), _STOPPED_REASONS.get(stop, "Terminated"), message, summary_file)
    if exit_code < 0:
        return _fail(*_signal_verdict(signal.Signals(-exit_code), last), summary_file)
    message = f"the run process exited with code {exit_code} {_during(last)} without a result; see its log"
    return _fail(ExitCode.UNEXPECTED, "InternalError", message, summary_file)


def _signal_verdict(died_of: signal.Signals, last: ProgressEvent | None) -> tuple[ExitCode, str, str]:
    description = signal.strsignal(died_of) or died_of.name
    if died_of == signal.SIGKILL:
        message = (
            f"the run process was killed (SIGKILL) {_during(last)}, most likely by the out-of-memory killer; "
            f"give the runner more memory or use fewer samples{_uploads(last)}"
        )
        return ExitCode.INFRASTRUCTURE, "Killed", message
    message = (
        f"the run process crashed in native code with {died_of.name} ({description}) {_during(last)}; "
        "this is a bug in TensorFlow, LiteRT or another native library, not in the spec, and the same input "
        f"crashes again (the log shows the Python stack of the crash){_uploads(last)}"
    )
    return ExitCode.NATIVE_CRASH, "NativeCrash", message


def _during(event: ProgressEvent | None) -> str:
    if event is None:
        return "before the first phase"
    if event.event == "epoch" and event.epoch is not None:
        return f"in phase {event.phase} after epoch {event.epoch} of {event.epochs}"
    return f"in phase {event.phase}"


def _uploads(event: ProgressEvent | None) -> str:
    if event is not None and event.phase in ("upload", "finished"):
        return "; the upload may be incomplete (without report.json the run did not finish)"
    return "; model.tflite and report.json were not uploaded (fine-tuning checkpoints, if any, stay for a retry)"


def _kill(pid: int | None, signum: int) -> None:
    if pid is None:
        return
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _child_main(job_text: str, work: Path, summary_file: Path | None, progress: str, sender: Any) -> None:
    """The child: runs the job in-process (cli.execute), sending progress events and the result to the parent."""
    faulthandler.enable()
    _die_with_parent()
    from edgecompress_contract.spec import load_spec_text

    from .cli import execute

    def send(kind: str, value: Any) -> None:
        try:
            sender.send((kind, value))
        except OSError:  # the parent is gone; the run goes on and writes its summary
            pass

    code = execute(
        lambda: load_spec_text(job_text),
        work,
        summary_file,
        progress,
        sinks=[lambda event: send("progress", event.to_wire())],
    )
    send("result", code)
    sender.close()
    sys.exit(code)


def _die_with_parent() -> None:
    """Kills this process as soon as the parent is gone (its sentinel pipe closes)."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        parent.join()
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="edgecompress-parent-watch", daemon=True).start()
