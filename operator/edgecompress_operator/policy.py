"""What the operator refuses to run whatever the spec says: pure decisions, unit-tested without a cluster.

A model file can carry Python code (tf-keras Lambda layers); the runner refuses it unless the model
source sets ``trustCode: true``. A namespace user must not be able to switch that on alone, so the
operator honours it only when its own setting ``allow_trusted_code`` (Helm value
``operator.config.allowTrustedCode``, default false) allows it.
"""

from __future__ import annotations

from edgecompress_contract.spec import CompressionJobSpec, DistillStep

from .config import Config

TRUSTED_CODE_NOT_ALLOWED = "TrustedCodeNotAllowed"


def trusted_code_fields(spec: CompressionJobSpec) -> list[str]:
    """The spec fields that ask to trust code from a model file."""
    fields = ["spec.model.trustCode"] if spec.model.trust_code else []
    for index, step in enumerate(spec.steps):
        if isinstance(step, DistillStep) and step.student.trust_code:
            fields.append(f"spec.steps[{index}].student.trustCode")
    return fields


def spec_policy_problem(spec: CompressionJobSpec, config: Config) -> str | None:
    """Why the operator will not run this spec (the message of a Failed status), or None."""
    fields = trusted_code_fields(spec)
    if fields and not config.allow_trusted_code:
        return (
            f"{', '.join(fields)}: true asks to run Python code stored in the model file, which this operator "
            "does not allow (its setting EDGECOMPRESS_ALLOW_TRUSTED_CODE, Helm value "
            "operator.config.allowTrustedCode, is false). Remove trustCode and replace Lambda layers with "
            "built-in layers, or ask the cluster admin to allow trusted code"
        )
    return None
