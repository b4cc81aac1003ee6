"""What the operator refuses to run whatever the spec says: pure decisions, unit-tested without a cluster.

Whoever may create a CompressionJob in a namespace must not gain more than that through its spec:
- A model file can carry Python code (tf-keras Lambda layers); the runner refuses it unless the model
  source sets ``trustCode: true``, which the operator honours only when its own setting
  ``allow_trusted_code`` (Helm value ``operator.config.allowTrustedCode``, default false) allows it.
- ``spec.execution.image`` and ``spec.execution.serviceAccountName`` would otherwise mean "run any
  image as any ServiceAccount" with the job's credentials; only the operator's defaults and the
  entries of ``allowed_runner_images`` / ``allowed_service_accounts`` may be chosen.
- A runner pod reaches models, data and outputs only through S3: local paths are refused up front
  instead of failing inside the pod.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgecompress_contract.spec import CompressionJobSpec, DistillStep

from .config import Config

TRUSTED_CODE_NOT_ALLOWED = "TrustedCodeNotAllowed"
NOT_ALLOWED = "NotAllowed"
LOCAL_URI = "LocalURI"


@dataclass(frozen=True)
class Refusal:
    """Why the operator will not run a CompressionJob: the reason and message of its Failed status."""

    reason: str
    message: str


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


def allowed(value: str, entries: list[str]) -> bool:
    """An entry allows its exact value; an entry ending in ``*`` allows every value that starts with the rest."""
    return any(value == entry or (entry.endswith("*") and value.startswith(entry[:-1])) for entry in entries)


def execution_problems(spec: CompressionJobSpec, config: Config) -> list[str]:
    """The image and ServiceAccount the spec chooses that the operator's lists do not allow."""
    execution = spec.execution
    if execution is None:
        return []
    problems = []
    if execution.image and execution.image != config.runner_image:
        if not allowed(execution.image, config.allowed_runner_images):
            problems.append(
                f"spec.execution.image: {execution.image!r} is not an allowed runner image (the operator's "
                "setting EDGECOMPRESS_ALLOWED_RUNNER_IMAGES, Helm value operator.config.allowedRunnerImages); "
                "leave it unset to use the operator's runner image"
            )
    account = execution.service_account_name
    if account and account != config.default_service_account_name:
        if not allowed(account, config.allowed_service_accounts):
            problems.append(
                f"spec.execution.serviceAccountName: {account!r} is not an allowed ServiceAccount (the operator's "
                "setting EDGECOMPRESS_ALLOWED_SERVICE_ACCOUNTS, Helm value operator.config.allowedServiceAccounts); "
                "leave it unset to use the operator's default"
            )
    return problems


def local_uris(spec: CompressionJobSpec) -> list[str]:
    """Every URI of the spec that is not s3://, named by its field."""
    named = [("spec.model.uri", spec.model.uri), ("spec.output.uri", spec.output.uri)]
    if spec.dataset is not None:
        named.append(("spec.dataset.uri", spec.dataset.uri))
    if spec.promotion is not None:
        named.append(("spec.promotion.uri", spec.promotion.uri))
    for index, step in enumerate(spec.steps):
        if isinstance(step, DistillStep):
            named.append((f"spec.steps[{index}].student.uri", step.student.uri))
    return [
        f"{field}: {uri!r} is not an s3:// URI; a runner pod reaches models, data and outputs only through S3 "
        "(local paths and file:// work with a local edgecompress-runner run)"
        for field, uri in named
        if not uri.startswith("s3://")
    ]


def spec_refusal(spec: CompressionJobSpec, config: Config) -> Refusal | None:
    """The first reason the operator refuses this spec, or None."""
    trusted = spec_policy_problem(spec, config)
    if trusted is not None:
        return Refusal(TRUSTED_CODE_NOT_ALLOWED, trusted)
    chosen = execution_problems(spec, config)
    if chosen:
        return Refusal(NOT_ALLOWED, "; ".join(chosen))
    local = local_uris(spec)
    if local:
        return Refusal(LOCAL_URI, "; ".join(local))
    return None
