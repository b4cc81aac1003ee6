"""The runner's exit codes: part of the contract with the operator's Job podFailurePolicy.

Bad spec/input and failed gates end the Job at once; infrastructure errors are retried.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    SUCCEEDED = 0
    UNEXPECTED = 1
    INVALID_INPUT = 20
    GATES_FAILED = 21
    INFRASTRUCTURE = 22
