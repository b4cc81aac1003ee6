"""The runner Job and the operator Config, built and checked without a cluster."""

from __future__ import annotations

import json
from typing import Any

import pytest

from edgecompress_contract.spec import SCRATCH_LIMIT_ENV, SpecError, parse_spec
from edgecompress_operator.config import Config, ConfigError, load_config
from edgecompress_operator.manifests import JOB_ENV, build_job, build_trials_job, job_name, trials_job_name
from edgecompress_operator.status import KUEUE_QUEUE_LABEL
from edgecompress_runner.errors import ExitCode

UID = "5f1c2a9e-0c1d-4a53-9a6e-1d2b3c4d5e6f"
SPEC: dict[str, Any] = {
    "model": {"uri": "s3://models/digits.keras", "format": "keras"},
    "dataset": {"uri": "s3://data/digits.npz"},
    "steps": [{"type": "prune"}, {"type": "ptq", "mode": "int8"}],
    "output": {"uri": "s3://models/out/"},
}


def config(**overrides: Any) -> Config:
    return Config(runner_image="registry.example/edgecompress-runner:0.1.0", **overrides)


def job(**spec_changes: Any) -> dict[str, Any]:
    return build_job("digits", "ml", UID, parse_spec({**SPEC, **spec_changes}), config=config())


def container(manifest: dict[str, Any]) -> dict[str, Any]:
    [runner] = manifest["spec"]["template"]["spec"]["containers"]
    return runner  # type: ignore[no-any-return]


def test_job_name_is_deterministic_and_short() -> None:
    assert job_name("digits", UID) == job_name("digits", UID)
    assert job_name("digits", UID) != job_name("digits", UID.replace("5", "6"))
    long_name = job_name("a" * 253, UID)
    assert len(long_name) <= 63 and long_name.startswith("aaaa")
    assert job(**{})["metadata"]["name"] == job_name("digits", UID)


def test_owner_reference_makes_the_job_go_with_the_custom_resource() -> None:
    [owner] = job()["metadata"]["ownerReferences"]
    assert owner == {
        "apiVersion": "edgecompress.io/v1alpha1",
        "kind": "CompressionJob",
        "name": "digits",
        "uid": UID,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def test_pod_failure_policy_fails_fast_on_runner_verdicts_and_ignores_disruptions() -> None:
    rules = job()["spec"]["podFailurePolicy"]["rules"]
    assert rules[0]["action"] == "FailJob"
    # Deterministic failures are not retried on a GPU: unexpected errors, bad input, failed gates, native crashes.
    assert rules[0]["onExitCodes"]["values"] == [1, 20, 21, 23]
    assert rules[0]["onExitCodes"]["values"] == sorted(
        [ExitCode.UNEXPECTED, ExitCode.INVALID_INPUT, ExitCode.GATES_FAILED, ExitCode.NATIVE_CRASH]
    )
    assert ExitCode.INFRASTRUCTURE not in rules[0]["onExitCodes"]["values"], "storage and memory trouble is retried"
    assert rules[1] == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    assert job()["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_spec_reaches_the_runner_unchanged() -> None:
    env = {item["name"]: item.get("value") for item in container(job())["env"]}
    assert parse_spec(json.loads(env[JOB_ENV])) == parse_spec(SPEC)
    assert container(job())["args"] == ["run", "--summary-file", "/dev/termination-log", "--progress", "log"]


PTQ_ONLY = [{"type": "ptq", "mode": "int8"}]
AUTO_ONLY = [{"type": "auto"}]


@pytest.mark.parametrize(
    ("steps", "execution", "gpu"),
    [
        (None, None, "1"),
        (None, {"gpus": 0}, None),
        (None, {"gpus": 2}, "2"),
        (PTQ_ONLY, None, None),
        (AUTO_ONLY, None, None),
        (PTQ_ONLY, {"gpus": 1}, "1"),
    ],
    ids=["trains-default", "trains-cpu", "trains-2", "ptq-cpu", "auto-cpu", "ptq-asks-a-gpu"],
)
def test_gpus_default_to_one_for_training_and_none_after_training(
    steps: list[dict[str, Any]] | None, execution: dict[str, Any] | None, gpu: str | None
) -> None:
    """Only jobs that train get the default GPU: post-training steps never hold one unless the spec asks."""
    changes: dict[str, Any] = {"steps": steps} if steps else {}
    if steps == AUTO_ONLY:
        changes["gates"] = {"minFidelity": 0.99}
    manifest = job(**changes, execution=execution) if execution else job(**changes)
    resources = container(manifest)["resources"]
    assert resources["limits"].get("nvidia.com/gpu") == gpu
    assert resources["requests"].get("nvidia.com/gpu") == gpu
    assert resources["requests"]["memory"] == "4Gi"


def test_execution_settings_override_operator_defaults() -> None:
    manifest = job(
        execution={
            "image": "mirror/runner:1",
            "nodeSelector": {"gpu": "a100"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "priorityClassName": "batch-low",
            "serviceAccountName": "compress",
            "backoffLimit": 0,
            "activeDeadlineSeconds": 600,
            "ttlSecondsAfterFinished": 60,
            "resources": {"requests": {"cpu": "8"}, "limits": {"memory": "32Gi"}},
        },
        credentials={"secretName": "s3"},
        queueName="gpu-queue",
    )
    pod = manifest["spec"]["template"]["spec"]
    assert container(manifest)["image"] == "mirror/runner:1"
    assert pod["nodeSelector"] == {"gpu": "a100"} and pod["priorityClassName"] == "batch-low"
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["serviceAccountName"] == "compress"
    assert manifest["spec"]["backoffLimit"] == 0 and manifest["spec"]["activeDeadlineSeconds"] == 600
    assert "ttlSecondsAfterFinished" not in manifest["spec"], "the operator deletes it once the outcome is recorded"
    assert container(manifest)["resources"]["requests"]["cpu"] == "8"
    assert container(manifest)["resources"]["limits"]["memory"] == "32Gi"
    assert container(manifest)["envFrom"] == [{"secretRef": {"name": "s3"}}]
    assert manifest["metadata"]["labels"][KUEUE_QUEUE_LABEL] == "gpu-queue"
    assert manifest["spec"]["suspend"] is True, "Kueue admits a queued Job by unsuspending it"


def test_a_job_without_a_queue_starts_unsuspended() -> None:
    assert job()["spec"]["suspend"] is False


def test_pod_meets_the_restricted_pod_security_standard() -> None:
    pod = job()["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False, "the runner needs no Kubernetes API access"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container(job())["securityContext"]
    assert security["allowPrivilegeEscalation"] is False and security["capabilities"] == {"drop": ["ALL"]}
    assert "serviceAccountName" not in pod and "envFrom" not in container(job())


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, r"EDGECOMPRESS_RUNNER_IMAGE: Field required"),
        (
            {"EDGECOMPRESS_RUNNER_IMAGE": "x", "EDGECOMPRESS_MAX_CONCURRENT_JOBS": "0"},
            r"EDGECOMPRESS_MAX_CONCURRENT_JOBS: Input should be greater than or equal to 1",
        ),
        ({"EDGECOMPRESS_RUNNER_IMAGE": "x", "EDGECOMPRESS_DEFAULT_GPUS": "many"}, r"EDGECOMPRESS_DEFAULT_GPUS"),
    ],
)
def test_config_fails_fast_naming_the_variable(
    env: dict[str, str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("EDGECOMPRESS_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=message):
        load_config()


def test_config_reads_prefixed_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGECOMPRESS_RUNNER_IMAGE", "runner:1")
    monkeypatch.setenv("EDGECOMPRESS_MAX_CONCURRENT_JOBS", "2")
    monkeypatch.setenv("EDGECOMPRESS_RUNNER_COMMAND", '["python", "-m", "edgecompress_runner.cli"]')
    loaded = load_config()
    assert loaded.max_concurrent_jobs == 2 and loaded.default_gpus == 1
    assert loaded.runner_command == ["python", "-m", "edgecompress_runner.cli"]


def test_the_scratch_volume_has_a_size_limit_the_runner_is_told() -> None:
    [default] = job()["spec"]["template"]["spec"]["volumes"]
    assert default == {"name": "scratch", "emptyDir": {"sizeLimit": "100Gi"}}
    assert {"name": SCRATCH_LIMIT_ENV, "value": str(100 << 30)} in container(job())["env"]
    chosen = job(execution={"scratchSizeLimit": "250G"})
    assert chosen["spec"]["template"]["spec"]["volumes"][0]["emptyDir"] == {"sizeLimit": "250G"}
    assert {"name": SCRATCH_LIMIT_ENV, "value": str(250 * 10**9)} in container(chosen)["env"]
    operator_default = build_job(
        "digits", "ml", UID, parse_spec(SPEC), config=config(default_scratch_size_limit="20Gi")
    )
    assert operator_default["spec"]["template"]["spec"]["volumes"][0]["emptyDir"] == {"sizeLimit": "20Gi"}


@pytest.mark.parametrize("size", ["lots", "10 Gi", "-5Gi", "1.5.0Gi"])
def test_a_scratch_size_that_is_no_quantity_is_refused(size: str) -> None:
    with pytest.raises(SpecError, match=r"spec.execution.scratchSizeLimit: String should match pattern"):
        parse_spec({**SPEC, "execution": {"scratchSizeLimit": size}})
    with pytest.raises(ValueError, match=r"default_scratch_size_limit"):
        config(default_scratch_size_limit=size)


AUTO_WITH_TRIALS: dict[str, Any] = {
    "steps": [{"type": "auto", "trials": [{"preset": "qat"}, {"preset": "prune50Qat"}, {"preset": "cluster16Qat"}]}],
    "gates": {"minFidelity": 0.99},
}


@pytest.mark.parametrize(("parallelism", "limit", "expected"), [(2, 4, 2), (8, 4, 3), (3, 2, 2), (1, 4, 1)])
def test_the_trials_job_is_indexed_one_pod_per_trial_with_capped_parallelism(
    parallelism: int, limit: int, expected: int
) -> None:
    steps = [{**AUTO_WITH_TRIALS["steps"][0], "parallelism": parallelism}]
    spec = parse_spec({**SPEC, **AUTO_WITH_TRIALS, "steps": steps})
    manifest = build_trials_job("a" * 63, "ml", UID, spec, config=config(max_concurrent_jobs=limit))
    assert manifest["spec"]["completionMode"] == "Indexed"
    assert manifest["spec"]["completions"] == 3 and manifest["spec"]["parallelism"] == expected
    assert len(manifest["metadata"]["name"]) + len("-31") <= 63, "the pods' <job>-<index> hostnames fit"
    assert manifest["metadata"]["name"] == trials_job_name("a" * 63, UID) != job_name("a" * 63, UID)
    runner = container(manifest)
    assert runner["args"][0] == "trial"
    assert runner["resources"]["limits"]["nvidia.com/gpu"] == "1", "a trial trains: the default GPU"
    assert json.loads(next(e["value"] for e in runner["env"] if e["name"] == JOB_ENV))["steps"][0]["trials"]
    assert manifest["metadata"]["ownerReferences"][0]["uid"] == UID
    search = build_job("a" * 63, "ml", UID, spec, config=config())
    assert "nvidia.com/gpu" not in container(search)["resources"]["limits"], "the search after the trials needs none"
    assert "completionMode" not in search["spec"]
