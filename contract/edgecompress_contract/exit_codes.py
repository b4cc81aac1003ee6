"""The runner's exit codes: part of the contract with the operator's Job podFailurePolicy.

Bad spec/input, failed gates, native crashes and unexpected errors end the Job at once (the same
input fails the same way again); infrastructure errors are retried.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    SUCCEEDED = 0
    UNEXPECTED = 1
    INVALID_INPUT = 20
    GATES_FAILED = 21
    INFRASTRUCTURE = 22
    NATIVE_CRASH = 23
    """The run process died of a signal from native code (SIGSEGV, SIGABRT...): reason NativeCrash."""


# Exit codes after which a retry fails the same way: the Job's podFailurePolicy fails the Job at once.
NOT_RETRIED = (ExitCode.UNEXPECTED, ExitCode.INVALID_INPUT, ExitCode.GATES_FAILED, ExitCode.NATIVE_CRASH)
