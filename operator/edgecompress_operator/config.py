"""Operator configuration: one typed object read from EDGECOMPRESS_* environment variables.

Each field maps 1:1 to a Helm value (``operator.config.<fieldName>``). ``load_config()`` runs at
start-up and fails fast with the offending variable named.
"""

from __future__ import annotations

import json

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from edgecompress_contract.spec import SCRATCH_SIZE_PATTERN


class ConfigError(ValueError):
    """The operator's environment is invalid; it refuses to start."""


class Config(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EDGECOMPRESS_", frozen=True, extra="ignore")

    runner_image: str = Field(min_length=1, description="Image of the runner Jobs.")
    runner_command: list[str] = Field(
        default_factory=lambda: ["edgecompress-runner"],
        description="Command of the runner container, as a JSON list.",
    )
    gpu_resource_name: str = Field(default="nvidia.com/gpu", description="Extended resource name of a GPU.")
    default_gpus: int = Field(
        default=1,
        ge=0,
        le=16,
        description="GPUs per runner whose job trains when the spec sets none (others request 0).",
    )
    default_cpu_request: str = Field(default="1", description="CPU request of a runner.")
    default_memory_request: str = Field(default="4Gi", description="Memory request of a runner.")
    default_memory_limit: str = Field(default="16Gi", description="Memory limit of a runner.")
    default_scratch_size_limit: str = Field(
        default="100Gi",
        pattern=SCRATCH_SIZE_PATTERN,
        description=(
            "Size limit of a runner's scratch volume (the emptyDir at /tmp that receives the model and the "
            "dataset) when the spec sets no execution.scratchSizeLimit."
        ),
    )
    default_backoff_limit: int = Field(default=2, ge=0, le=20, description="Job backoffLimit default.")
    default_active_deadline_seconds: int = Field(default=86400, ge=60, description="Job activeDeadlineSeconds default.")
    default_ttl_seconds_after_finished: int = Field(
        default=7 * 86400, ge=0, description="Default spec.execution.ttlSecondsAfterFinished."
    )
    default_service_account_name: str | None = Field(default=None, description="Runner ServiceAccount default.")
    allowed_runner_images: list[str] = Field(
        default_factory=list,
        description=(
            "Images a CompressionJob may choose in spec.execution.image, as a JSON list; an entry ending in * "
            "allows every image starting with the rest. Empty: only runnerImage."
        ),
    )
    allowed_service_accounts: list[str] = Field(
        default_factory=list,
        description=(
            "ServiceAccounts a CompressionJob may choose in spec.execution.serviceAccountName, as a JSON list "
            "(* as above). Empty: only defaultServiceAccountName."
        ),
    )
    max_concurrent_jobs: int = Field(
        default=4,
        ge=1,
        le=10000,
        description="Runner Jobs running at once across the watched namespaces; the rest wait as Queued.",
    )
    max_parallel_writes: int = Field(
        default=16,
        ge=1,
        le=256,
        description=(
            "Kubernetes API writes a reconcile pass makes at once (Job creates with their status, status updates), "
            "so many new CompressionJobs are admitted at the apiserver's pace."
        ),
    )
    admission_interval_seconds: float = Field(
        default=30,
        gt=0,
        le=3600,
        description="Seconds between reconcile passes (admission and status) when no event wakes one.",
    )
    progress_interval_seconds: float = Field(
        default=15,
        gt=0,
        le=3600,
        description="Seconds between reads of a running runner's progress; a pass runs at the smaller interval.",
    )
    watch_namespace: str | None = Field(
        default=None, description="Watch only this namespace (default: all namespaces)."
    )
    allow_trusted_code: bool = Field(
        default=False,
        description=(
            "Honour spec trustCode: let Python code stored in model files (e.g. Lambda layers) run in the "
            "runner. When false, a CompressionJob that sets it fails with TrustedCodeNotAllowed."
        ),
    )
    start_timeout_seconds: float = Field(
        default=600,
        gt=0,
        le=86400,
        description=(
            "A runner pod that cannot be created or started (FailedCreate, image pull, missing Secret) for this "
            "long fails its CompressionJob, and the Job is suspended so it holds no slot."
        ),
    )
    api_timeout_seconds: float = Field(
        default=30,
        gt=0,
        le=600,
        description="Time limit of every Kubernetes API call (connect and read); a call past it fails and is retried.",
    )
    liveness_stall_seconds: float = Field(
        default=300,
        gt=0,
        le=86400,
        description="/healthz fails when no reconcile pass has ended for this long (the kubelet restarts it).",
    )
    metrics_port: int = Field(default=8080, ge=1, le=65535, description="Port of /metrics.")
    health_port: int = Field(
        default=8081, ge=1, le=65535, description="Port of /healthz (liveness) and /readyz (readiness)."
    )

    @property
    def pass_interval_seconds(self) -> float:
        """One loop admits, writes status and reads progress, so it runs at the smaller of the two intervals."""
        return min(self.admission_interval_seconds, self.progress_interval_seconds)

    @property
    def readiness_bound_seconds(self) -> float:
        """/readyz fails when no pass has completed for this long: two intervals plus two calls timing out."""
        return 2 * self.pass_interval_seconds + 2 * self.api_timeout_seconds


def load_config() -> Config:
    try:
        return Config()  # type: ignore[call-arg]
    except ValidationError as error:
        problems = "; ".join(f"EDGECOMPRESS_{str(item['loc'][0]).upper()}: {item['msg']}" for item in error.errors())
        raise ConfigError(f"invalid operator configuration: {problems}") from None
    except SettingsError as error:
        field = str(error).split('"')[1] if str(error).count('"') >= 2 else ""
        raise ConfigError(f"invalid operator configuration: EDGECOMPRESS_{field.upper()}: {error}") from None


def config_reference_markdown() -> str:
    """The operator settings table in the README, generated from Config (a test keeps them equal)."""
    rows = ["| environment variable | default | description |", "| --- | --- | --- |"]
    for name, field in Config.model_fields.items():
        if field.is_required():
            default = "required"
        else:
            value = field.get_default(call_default_factory=True)
            default = "" if value is None else f"`{value if not isinstance(value, list) else json.dumps(value)}`"
        rows.append(f"| `EDGECOMPRESS_{name.upper()}` | {default} | {field.description} |")
    return "\n".join(rows) + "\n"
