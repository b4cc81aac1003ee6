"""Failure classes of a run, each with the process exit code the operator keys on.

The codes are part of the contract with the operator's Job podFailurePolicy: bad spec/input,
failed gates and unexpected errors end the Job at once, infrastructure errors are retried. A
native crash (exit 23) is reported by the supervising parent process (supervise.py).
"""

from __future__ import annotations

from edgecompress_contract.exit_codes import ExitCode
from edgecompress_contract.spec import SpecError

__all__ = [
    "ExitCode",
    "InfrastructureError",
    "InputError",
    "PromotionConflict",
    "RunnerError",
    "SpecError",
    "UnsupportedLayerError",
    "UntrustedCodeError",
]


class RunnerError(Exception):
    """Base class: a failure with a message meant for the user."""

    exit_code = ExitCode.UNEXPECTED
    reason = "Error"


class InputError(RunnerError, ValueError):
    """The model or dataset cannot be used as given."""

    exit_code = ExitCode.INVALID_INPUT
    reason = "InvalidInput"


class PromotionConflict(InputError):
    """The stable location already holds a different promoted model and the spec does not allow replacing it."""

    reason = "PromotionConflict"


class UnsupportedLayerError(InputError):
    """A layer cannot be handled by a tfmot step; the message says what to do instead."""

    reason = "UnsupportedLayer"


class UntrustedCodeError(UnsupportedLayerError):
    """The model file carries Python code (e.g. a Lambda layer) and the run does not trust its author."""

    reason = "UntrustedCode"


class InfrastructureError(RunnerError):
    """Storage, network or resource trouble; retrying may help."""

    exit_code = ExitCode.INFRASTRUCTURE
    reason = "InfrastructureError"
