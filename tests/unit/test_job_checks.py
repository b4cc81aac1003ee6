"""What the apiserver would refuse in a runner Job is found before the Job is created, naming the spec field."""

from __future__ import annotations

from typing import Any

import pytest

from edgecompress_contract.spec import parse_spec
from edgecompress_operator.config import Config
from edgecompress_operator.manifests import JOB_LABEL, build_job, job_problems, label_value

SPEC: dict[str, Any] = {
    "model": {"uri": "s3://models/digits.keras", "format": "keras"},
    "steps": [{"type": "ptq", "mode": "dynamic"}],
    "output": {"uri": "s3://models/out/"},
}
CONFIG = Config(runner_image="runner:1")

# The seven specs the CRD accepts but whose Job the apiserver refused (the long name is now hashed instead).
INVALID = [
    ("exists-with-value", {"tolerations": [{"key": "gpu", "operator": "Exists", "value": "yes"}]},
     "spec.execution.tolerations[0].value: must be empty when operator is Exists"),
    ("seconds-with-noschedule", {"tolerations": [{"key": "gpu", "effect": "NoSchedule", "tolerationSeconds": 5}]},
     "spec.execution.tolerations[0].tolerationSeconds: only valid with effect NoExecute"),
    ("banana-cpu", {"resources": {"requests": {"cpu": "banana"}}},
     "spec.execution.resources.requests['cpu']: 'banana' is not a Kubernetes quantity"),
    ("request-over-limit", {"resources": {"requests": {"memory": "8Gi"}, "limits": {"memory": "4Gi"}}},
     "spec.execution.resources.requests['memory']: 8Gi is more than the limit 4Gi"),
    ("request-over-default-limit", {"resources": {"requests": {"memory": "32Gi"}}},
     "spec.execution.resources.requests['memory']: 32Gi is more than the limit 16Gi (the operator's default limit)"),
    ("bad-selector-key", {"nodeSelector": {"bad key!": "x"}}, "spec.execution.nodeSelector['bad key!']: a label key"),
    ("gpu-in-requests", {"gpus": 0, "resources": {"requests": {"nvidia.com/gpu": "1"}}},
     "spec.execution.resources.requests['nvidia.com/gpu']: set the number of GPUs with spec.execution.gpus"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "execution", "message"), INVALID, ids=[row[0] for row in INVALID])
def test_invalid_job_settings_are_named(case: str, execution: dict[str, Any], message: str) -> None:
    problems = job_problems(parse_spec({**SPEC, "execution": execution}), CONFIG)
    assert any(problem.startswith(message) for problem in problems), problems


@pytest.mark.parametrize(
    "execution",
    [
        {},
        {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]},
        {"tolerations": [{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute", "tolerationSeconds": 60}]},
        {"resources": {"requests": {"cpu": "500m", "memory": "2Gi"}, "limits": {"memory": "2Gi"}}},
        {"nodeSelector": {"cloud.example.com/gpu-type": "a100"}, "gpus": 2},
    ],
    ids=["none", "exists", "no-execute-seconds", "quantities", "selector"],
)
def test_valid_settings_pass(execution: dict[str, Any]) -> None:
    assert job_problems(parse_spec({**SPEC, "execution": execution}), CONFIG) == []


def test_a_long_name_gets_a_hashed_label_value() -> None:
    long_name = "a" * 64
    value = label_value(long_name)
    assert len(value) <= 63 and value != label_value("a" * 65)
    assert label_value("digits") == "digits"
    manifest = build_job(long_name, "ml", "uid-1", parse_spec(SPEC), config=CONFIG)
    assert manifest["metadata"]["labels"][JOB_LABEL] == value
    assert len(manifest["metadata"]["name"]) <= 63
