"""The operator's refusals that the spec cannot override: trustCode needs the operator's allowTrustedCode."""

from __future__ import annotations

from typing import Any

import pytest

from edgecompress_contract.spec import ALLOW_TRUSTED_CODE_ENV, parse_spec
from edgecompress_operator.config import Config, load_config
from edgecompress_operator.manifests import build_job
from edgecompress_operator.policy import spec_policy_problem, spec_refusal, trusted_code_fields

UID = "5f1c2a9e-0c1d-4a53-9a6e-1d2b3c4d5e6f"


def spec(trust_model: bool = False, trust_student: bool | None = None) -> Any:
    document: dict[str, Any] = {
        "model": {"uri": "s3://models/teacher.h5", "format": "h5", "trustCode": trust_model},
        "dataset": {"uri": "s3://data/digits.npz"},
        "steps": [{"type": "ptq", "mode": "dynamic"}],
        "output": {"uri": "s3://models/out/"},
    }
    if trust_student is not None:
        student = {"uri": "s3://models/student.keras", "format": "keras", "trustCode": trust_student}
        document["steps"].insert(0, {"type": "distill", "student": student})
    return parse_spec(document)


def config(allow: bool = False) -> Config:
    return Config(runner_image="registry.example/edgecompress-runner:0.1.0", allow_trusted_code=allow)


def runner_env(manifest: dict[str, Any]) -> dict[str, str]:
    [container] = manifest["spec"]["template"]["spec"]["containers"]
    return {item["name"]: item["value"] for item in container["env"]}


def test_trust_is_off_by_default() -> None:
    parsed = parse_spec(
        {
            "model": {"uri": "s3://models/m.h5", "format": "h5"},
            "steps": [{"type": "ptq", "mode": "dynamic"}],
            "output": {"uri": "s3://models/out/"},
        }
    )
    assert parsed.model.trust_code is False
    assert Config(runner_image="runner").allow_trusted_code is False
    assert spec_policy_problem(parsed, Config(runner_image="runner")) is None


def test_trust_code_is_refused_unless_the_operator_allows_it() -> None:
    problem = spec_policy_problem(spec(trust_model=True), config())
    assert problem is not None
    assert problem.startswith("spec.model.trustCode: true asks to run Python code stored in the model file")
    assert "EDGECOMPRESS_ALLOW_TRUSTED_CODE" in problem and "operator.config.allowTrustedCode" in problem
    assert spec_policy_problem(spec(trust_model=True), config(allow=True)) is None


def test_a_distill_students_trust_code_counts_too() -> None:
    assert trusted_code_fields(spec(trust_student=True)) == ["spec.steps[0].student.trustCode"]
    assert trusted_code_fields(spec(True, True)) == ["spec.model.trustCode", "spec.steps[0].student.trustCode"]
    assert trusted_code_fields(spec(trust_student=False)) == []
    problem = spec_policy_problem(spec(trust_student=True), config())
    assert problem is not None and problem.startswith("spec.steps[0].student.trustCode: true")


@pytest.mark.parametrize(
    ("allow", "trust", "passed"),
    [(False, False, False), (True, False, False), (True, True, True)],
    ids=["not-allowed", "allowed-not-asked", "allowed-and-asked"],
)
def test_the_runner_pod_gets_the_permission_only_when_allowed_and_asked(allow: bool, trust: bool, passed: bool) -> None:
    env = runner_env(build_job("evil", "team", UID, spec(trust_model=trust), config=config(allow)))
    assert (env.get(ALLOW_TRUSTED_CODE_ENV) == "true") is passed
    assert passed or ALLOW_TRUSTED_CODE_ENV not in env


def test_the_operator_setting_comes_from_its_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGECOMPRESS_RUNNER_IMAGE", "runner")
    assert load_config().allow_trusted_code is False
    monkeypatch.setenv("EDGECOMPRESS_ALLOW_TRUSTED_CODE", "true")
    assert load_config().allow_trusted_code is True


def execution_spec(**execution: Any) -> Any:
    return parse_spec(
        {
            "model": {"uri": "s3://models/m.h5", "format": "h5"},
            "steps": [{"type": "ptq", "mode": "dynamic"}],
            "output": {"uri": "s3://models/out/"},
            "execution": execution,
        }
    )


OPERATOR = Config(
    runner_image="registry.example/edgecompress-runner:0.1.0",
    default_service_account_name="runner",
    allowed_runner_images=["registry.example/edgecompress-runner:*", "registry.example/gpu-runner:2.0"],
    allowed_service_accounts=["s3-reader"],
)


@pytest.mark.parametrize(
    ("execution", "config", "field"),
    [
        ({"image": "attacker.example/miner:latest"}, Config(runner_image="runner:1"), "spec.execution.image"),
        (
            {"image": "registry.example/edgecompress-runner:0.2.0"},
            Config(runner_image="runner:1"),
            "spec.execution.image",
        ),
        ({"serviceAccountName": "cluster-admin"}, Config(runner_image="runner:1"), "spec.execution.serviceAccountName"),
        ({"image": "registry.example/gpu-runner:2.1"}, OPERATOR, "spec.execution.image"),
        ({"serviceAccountName": "s3-writer"}, OPERATOR, "spec.execution.serviceAccountName"),
    ],
    ids=["other-image", "no-list", "service-account", "not-in-list", "account-not-in-list"],
)
def test_a_spec_cannot_choose_images_or_accounts_outside_the_lists(
    execution: dict[str, Any], config: Config, field: str
) -> None:
    refusal = spec_refusal(execution_spec(**execution), config)
    assert refusal is not None and refusal.reason == "NotAllowed"
    assert refusal.message.startswith(f"{field}: ")


@pytest.mark.parametrize(
    "execution",
    [
        {},
        {"image": "registry.example/edgecompress-runner:0.1.0"},
        {"image": "registry.example/edgecompress-runner:0.2.0-rc1"},
        {"image": "registry.example/gpu-runner:2.0"},
        {"serviceAccountName": "runner"},
        {"serviceAccountName": "s3-reader"},
    ],
    ids=["defaults", "operator-image", "prefix", "exact", "default-account", "listed-account"],
)
def test_the_operators_defaults_and_listed_entries_are_allowed(execution: dict[str, Any]) -> None:
    assert spec_refusal(execution_spec(**execution), OPERATOR) is None


def test_cluster_runs_refuse_local_paths_naming_each_field() -> None:
    parsed = parse_spec(
        {
            "model": {"uri": "file:///models/m.h5", "format": "h5"},
            "dataset": {"uri": "s3://data/d.npz"},
            "steps": [{"type": "ptq", "mode": "int8"}],
            "output": {"uri": "/tmp/out"},
        }
    )
    refusal = spec_refusal(parsed, Config(runner_image="runner:1"))
    assert refusal is not None and refusal.reason == "LocalURI"
    assert refusal.message.startswith("spec.model.uri: 'file:///models/m.h5' is not an s3:// URI")
    assert "spec.output.uri: '/tmp/out' is not an s3:// URI" in refusal.message
    assert "spec.dataset.uri" not in refusal.message
