"""Pure builders of the objects the operator creates; no API calls, unit-tested without a cluster."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from kubernetes.utils.quantity import parse_quantity

from edgecompress_contract.exit_codes import NOT_RETRIED
from edgecompress_contract.spec import (
    ALLOW_TRUSTED_CODE_ENV,
    API_GROUP,
    API_VERSION,
    JOB_ENV,
    KIND,
    SCRATCH_LIMIT_ENV,
    SOURCE_ENV,
    TRAINING_STEP_TYPES,
    CompressionJobSpec,
)
from edgecompress_contract.trials import auto_step, trials_of

from .config import Config
from .policy import trusted_code_fields
from .status import KUEUE_QUEUE_LABEL

RUNNER_CONTAINER = "runner"
TERMINATION_LOG = "/dev/termination-log"
JOB_LABEL = f"{API_GROUP}/compressionjob"
RUNNER_UID = 10001


def job_name(name: str, uid: str) -> str:
    """Deterministic per CompressionJob object (name + uid), at most 63 characters."""
    suffix = hashlib.sha256(uid.encode()).hexdigest()[:8]
    return f"{name[: 63 - len(suffix) - 1].rstrip('-.')}-{suffix}"


def owner_reference(name: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def default_gpus(spec: CompressionJobSpec, config: Config) -> int:
    """GPUs for a spec that sets none: the operator's default when a step trains, else none.

    Post-training quantization and the auto search run on the CPU (the result is timed on it, too), so
    such a job never holds a scarce GPU.
    """
    trains = any(step.type in TRAINING_STEP_TYPES for step in spec.steps)
    return config.default_gpus if trains else 0


def _resources(spec: CompressionJobSpec, config: Config, *, trains: bool | None = None) -> dict[str, Any]:
    """The runner container's resources; ``trains`` overrides whether the spec's steps train (a trial pod does)."""
    execution = spec.execution
    requests = {"cpu": config.default_cpu_request, "memory": config.default_memory_request}
    limits = {"memory": config.default_memory_limit}
    if execution is not None and execution.resources is not None:
        requests.update(execution.resources.requests)
        limits.update(execution.resources.limits)
    if execution is not None and execution.gpus is not None:
        gpus = execution.gpus
    elif trains is None:
        gpus = default_gpus(spec, config)
    else:
        gpus = config.default_gpus if trains else 0
    if gpus:
        requests[config.gpu_resource_name] = str(gpus)
        limits[config.gpu_resource_name] = str(gpus)
    return {"requests": requests, "limits": limits}


def ttl_seconds_after_finished(spec: CompressionJobSpec, config: Config) -> int:
    """How long the operator keeps a finished runner Job after recording its outcome: the spec's, else its default."""
    execution = spec.execution
    if execution is not None and execution.ttl_seconds_after_finished is not None:
        return execution.ttl_seconds_after_finished
    return config.default_ttl_seconds_after_finished


def scratch_size_limit(spec: CompressionJobSpec, config: Config) -> str:
    """The size limit of the runner's scratch emptyDir: the spec's, else the operator's default."""
    execution = spec.execution
    if execution is not None and execution.scratch_size_limit is not None:
        return execution.scratch_size_limit
    return config.default_scratch_size_limit


def build_job(name: str, namespace: str, uid: str, spec: CompressionJobSpec, *, config: Config) -> dict[str, Any]:
    """The batch/v1 Job that runs the runner for one CompressionJob.

    Exit codes 1 (unexpected), 20 (bad spec/input), 21 (gates failed) and 23 (native crash) fail the Job at
    once: the same input fails the same way again, so a retry would only hold a GPU. Pod disruptions
    (preemption, drain) do not count against backoffLimit; infrastructure failures (22, the container
    killed, e.g. OOMKilled) are retried.
    """
    execution = spec.execution
    labels = {
        "app.kubernetes.io/name": "edgecompress",
        "app.kubernetes.io/component": "runner",
        "app.kubernetes.io/managed-by": "edgecompress-operator",
        JOB_LABEL: label_value(name),
    }
    if spec.queue_name:
        labels[KUEUE_QUEUE_LABEL] = spec.queue_name
    env = [
        {"name": JOB_ENV, "value": json.dumps(spec.model_dump(mode="json", by_alias=True, exclude_none=True))},
        {"name": SOURCE_ENV, "value": json.dumps({"namespace": namespace, "name": name, "uid": uid})},
        {"name": "HOME", "value": "/tmp"},
        {"name": "TMPDIR", "value": "/tmp"},
        # The runner cannot see an emptyDir's sizeLimit (statvfs shows the node's disk): it is told in bytes.
        {"name": SCRATCH_LIMIT_ENV, "value": str(int(parse_quantity(scratch_size_limit(spec, config))))},
    ]
    if config.allow_trusted_code and trusted_code_fields(spec):
        # The runner trusts code in a model file only with this (see policy.py and model_io.py).
        env.append({"name": ALLOW_TRUSTED_CODE_ENV, "value": "true"})
    container: dict[str, Any] = {
        "name": RUNNER_CONTAINER,
        "image": (execution.image if execution and execution.image else config.runner_image),
        "command": list(config.runner_command),
        "args": ["run", "--summary-file", TERMINATION_LOG, "--progress", "log"],
        "env": env,
        "resources": _resources(spec, config),
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "File",
        "volumeMounts": [{"name": "scratch", "mountPath": "/tmp"}],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
        },
    }
    if spec.credentials is not None:
        container["envFrom"] = [{"secretRef": {"name": spec.credentials.secret_name}}]
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "containers": [container],
        "volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": scratch_size_limit(spec, config)}}],
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUNNER_UID,
            "runAsGroup": RUNNER_UID,
            "fsGroup": RUNNER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    service_account = (execution.service_account_name if execution else None) or config.default_service_account_name
    if service_account:
        pod_spec["serviceAccountName"] = service_account
    if execution is not None:
        if execution.node_selector:
            pod_spec["nodeSelector"] = dict(execution.node_selector)
        if execution.tolerations:
            pod_spec["tolerations"] = [
                toleration.model_dump(mode="json", by_alias=True, exclude_none=True)
                for toleration in execution.tolerations
            ]
        if execution.priority_class_name:
            pod_spec["priorityClassName"] = execution.priority_class_name

    def pick(value: int | None, default: int) -> int:
        return default if value is None else value

    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(name, uid),
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": [owner_reference(name, uid)],
        },
        "spec": {
            "suspend": bool(spec.queue_name),
            "backoffLimit": pick(execution.backoff_limit if execution else None, config.default_backoff_limit),
            "activeDeadlineSeconds": pick(
                execution.active_deadline_seconds if execution else None, config.default_active_deadline_seconds
            ),
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": RUNNER_CONTAINER,
                            "operator": "In",
                            "values": sorted(int(code) for code in NOT_RETRIED),
                        },
                    },
                    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
                ]
            },
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


TRIALS_COMPONENT = "trials"


def trials_job_name(name: str, uid: str) -> str:
    """The Indexed Job of a CompressionJob's trials: deterministic, short enough for its pods' ``<job>-<index>``
    hostnames (at most 63 characters)."""
    suffix = hashlib.sha256(f"{uid}/trials".encode()).hexdigest()[:8]
    return f"{name[:40].rstrip('-.')}-trials-{suffix}"


def trial_slots(spec: CompressionJobSpec, config: Config) -> int:
    """Trial pods the spec's trials Job runs at once: the auto step's parallelism, at most one per trial and at
    most the operator's concurrency limit (0 without trials)."""
    step = auto_step(spec)
    if step is None or not step.trials:
        return 0
    return max(min(step.parallelism, len(step.trials), config.max_concurrent_jobs), 1)


def build_trials_job(
    name: str, namespace: str, uid: str, spec: CompressionJobSpec, *, config: Config
) -> dict[str, Any]:
    """The Indexed Job whose pod ``i`` runs training trial ``i`` of the spec's auto step (``runner trial``).

    ``parallelism`` pods run at once; each trains, so each gets the runner's GPUs (the spec's, else the
    operator's default). Kubernetes gives each pod its index (``JOB_COMPLETION_INDEX``); a trial that fails
    deterministically still completes its index (the failure is its result, recorded in ``trials/<i>/``),
    so a failed index means the runner itself could not run and fails the Job like a runner Job's failure.
    The runner Job, which searches and picks, is created when every index has completed.
    """
    job = build_job(name, namespace, uid, spec, config=config)
    job["metadata"]["name"] = trials_job_name(name, uid)
    for labels in (job["metadata"]["labels"], job["spec"]["template"]["metadata"]["labels"]):
        labels["app.kubernetes.io/component"] = TRIALS_COMPONENT
    container = job["spec"]["template"]["spec"]["containers"][0]
    container["args"] = ["trial", "--summary-file", TERMINATION_LOG, "--progress", "log"]
    container["resources"] = _resources(spec, config, trains=True)
    job["spec"].update(
        {"completionMode": "Indexed", "completions": len(trials_of(spec)), "parallelism": trial_slots(spec, config)}
    )
    return job


_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_STANDARD_RESOURCES = ("cpu", "memory", "ephemeral-storage")


def label_value(name: str) -> str:
    """The CompressionJob's name as a label value (at most 63 characters: a longer name is cut and hashed)."""
    if len(name) <= 63:
        return name
    return f"{name[:54].rstrip('-._')}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def _label_key_problem(key: str) -> str | None:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return f"the prefix {prefix!r} is not a DNS subdomain"
    if not name or len(name) > 63 or not _LABEL_NAME.match(name):
        return "a label key is at most 63 letters, digits, '-', '_' or '.' (after an optional 'prefix/')"
    return None


def job_problems(spec: CompressionJobSpec, config: Config) -> list[str]:
    """What the apiserver would refuse in this spec's runner Job, named by the spec field at fault.

    Checked before the Job is created, so such a CompressionJob fails with a clear message instead
    of being retried (or blocking the others) on every pass.
    """
    execution = spec.execution
    if execution is None:
        return []
    problems: list[str] = []
    for index, toleration in enumerate(execution.tolerations):
        where = f"spec.execution.tolerations[{index}]"
        if toleration.operator == "Exists" and toleration.value:
            problems.append(f"{where}.value: must be empty when operator is Exists")
        if toleration.toleration_seconds is not None and toleration.effect != "NoExecute":
            problems.append(f"{where}.tolerationSeconds: only valid with effect NoExecute")
        key_problem = _label_key_problem(toleration.key) if toleration.key else None
        if key_problem:
            problems.append(f"{where}.key: {key_problem}")
    for key, value in execution.node_selector.items():
        key_problem = _label_key_problem(key)
        if key_problem:
            problems.append(f"spec.execution.nodeSelector[{key!r}]: {key_problem}")
        if value and (len(value) > 63 or not _LABEL_NAME.match(value)):
            problems.append(f"spec.execution.nodeSelector[{key!r}]: {value!r} is not a valid label value")
    resources = execution.resources
    for kind in ("requests", "limits"):
        for name, quantity in (getattr(resources, kind) if resources else {}).items():
            try:
                parse_quantity(quantity)
            except ValueError:
                problems.append(f"spec.execution.resources.{kind}[{name!r}]: {quantity!r} is not a Kubernetes quantity")
            if name == config.gpu_resource_name:
                problems.append(
                    f"spec.execution.resources.{kind}[{name!r}]: set the number of GPUs with spec.execution.gpus"
                )
    if problems:
        return problems
    merged = _resources(spec, config)
    for name, request in merged["requests"].items():
        limit = merged["limits"].get(name)
        if limit is not None and parse_quantity(request) > parse_quantity(limit):
            problems.append(
                f"spec.execution.resources.requests[{name!r}]: {request} is more than the limit {limit}"
                + ("" if resources and name in resources.limits else " (the operator's default limit)")
            )
        if name not in _STANDARD_RESOURCES and name != config.gpu_resource_name and limit != request:
            problems.append(
                f"spec.execution.resources.limits[{name!r}]: an extended resource needs a limit equal to its request"
            )
    return problems
