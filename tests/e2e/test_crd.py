"""The CRD on a real kube-apiserver: invalid CompressionJobs are refused by the apiserver itself."""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import pytest
import yaml

from edgecompress_contract.spec import parse_spec
from edgecompress_runner.errors import SpecError
from tests.k8s.controlplane import ControlPlane

pytestmark = pytest.mark.k8s

VALID: dict[str, Any] = {
    "apiVersion": "edgecompress.io/v1alpha1",
    "kind": "CompressionJob",
    "metadata": {"name": "digits", "namespace": "default"},
    "spec": {
        "model": {"uri": "s3://models/digits/model.keras", "format": "keras"},
        "dataset": {"uri": "s3://datasets/digits.npz"},
        "steps": [
            {"type": "prune", "initialSparsity": 0.5, "targetSparsity": 0.8, "fineTune": {"epochs": 2}},
            {"type": "qat"},
            {"type": "ptq", "mode": "int8"},
        ],
        "gates": {"maxAccuracyDrop": 0.02, "minSizeReduction": 0.7},
        "output": {"uri": "s3://models/digits/compressed/"},
        "credentials": {"secretName": "s3-credentials"},
        "execution": {"gpus": 0, "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]},
    },
}


def changed(name: str, **spec_changes: Any) -> dict[str, Any]:
    document = copy.deepcopy(VALID)
    document["metadata"]["name"] = name
    for key, value in spec_changes.items():
        if value is None:
            document["spec"].pop(key)
        else:
            document["spec"][key] = value
    return document


def ptq(mode: str, **extra: Any) -> dict[str, Any]:
    return {"type": "ptq", "mode": mode, **extra}


# (name, document, text the apiserver's message must contain)
MISTAKES = [
    ("unknown-field", changed("unknown-field", colour="blue"), 'unknown field "spec.colour"'),
    (
        "unknown-step-field",
        changed("unknown-step-field", steps=[{"type": "prune", "sparsity": 0.5}]),
        'unknown field "spec.steps[0].sparsity"',
    ),
    (
        "wrong-type",
        changed("wrong-type", steps=[{"type": "prune", "targetSparsity": "lots"}]),
        "spec.steps[0].targetSparsity: Invalid value",
    ),
    (
        "sparsity-range",
        changed("sparsity-range", steps=[{"type": "prune", "targetSparsity": 1.5}]),
        "spec.steps[0].targetSparsity: Invalid value: 1.5",
    ),
    (
        "unknown-step-type",
        changed("unknown-step-type", steps=[{"type": "shrink"}]),
        'spec.steps[0].type: Unsupported value: "shrink"',
    ),
    ("missing-model", changed("missing-model", model=None), "spec.model: Required value"),
    (
        "bad-format",
        changed("bad-format", model={"uri": "/m.onnx", "format": "onnx"}),
        'spec.model.format: Unsupported value: "onnx"',
    ),
    (
        "int8-no-dataset",
        changed("int8-no-dataset", dataset=None, steps=[ptq("int8")]),
        "ptq int8 and int16x8 need spec.dataset",
    ),
    ("train-no-dataset", changed("train-no-dataset", dataset=None, steps=[{"type": "cluster"}]), "need spec.dataset"),
    (
        "prune-savedmodel",
        changed("prune-savedmodel", model={"uri": "/m.tar.gz", "format": "savedmodel"}),
        "a SavedModel can only be converted with ptq",
    ),
    (
        "prune-tflite",
        changed("prune-tflite", model={"uri": "/m.tflite", "format": "tflite"}),
        "a tflite model (spec.model.format) can only be quantized by a ptq step",
    ),
    (
        "integer-io-tflite",
        changed(
            "integer-io-tflite", model={"uri": "/m.tflite", "format": "tflite"}, steps=[ptq("int8", integerIO=True)]
        ),
        "integerIO is not available for a tflite model",
    ),
    ("two-ptq", changed("two-ptq", steps=[ptq("dynamic"), ptq("int8")]), "at most one ptq step"),
    ("step-after-ptq", changed("step-after-ptq", steps=[ptq("int8"), {"type": "prune"}]), "ptq must be the last step"),
    (
        "prune-after-qat",
        changed("prune-after-qat", steps=[{"type": "qat"}, {"type": "prune"}]),
        "only ptq may follow qat",
    ),
    (
        "ptq-skip-after-qat",
        changed("ptq-skip-after-qat", steps=[{"type": "qat"}, ptq("int8", skipLayers=["fc1"])]),
        "after qat, list the layers to keep float on the qat step",
    ),
    (
        "distill-not-first",
        changed(
            "distill-not-first",
            steps=[{"type": "prune"}, {"type": "distill", "student": {"uri": "/s.keras", "format": "keras"}}],
        ),
        "distill must be the first step",
    ),
    (
        "reduce-filters-not-first",
        changed("reduce-filters-not-first", steps=[{"type": "prune"}, {"type": "reduceFilters"}]),
        "reduceFilters must be the first step",
    ),
    (
        "split-after-qat",
        changed("split-after-qat", output={"uri": "s3://models/out/", "split": {"after": ["block1"]}}),
        "splitting converts each part with post-training quantization at most",
    ),
    ("ptq-without-mode", changed("ptq-without-mode", steps=[{"type": "ptq"}]), "a ptq step needs mode"),
    (
        "field-of-other-type",
        changed("field-of-other-type", steps=[{"type": "qat", "numberOfClusters": 8}]),
        "numberOfClusters is only valid for steps of type cluster",
    ),
    (
        "integer-io-dynamic",
        changed("integer-io-dynamic", steps=[ptq("dynamic", integerIO=True)]),
        "only valid with mode int8",
    ),
    (
        "2-4-target",
        changed("2-4-target", steps=[{"type": "prune", "pattern": "2:4", "targetSparsity": 0.7}]),
        "pattern 2:4 means exactly 0.5",
    ),
    (
        "initial-above-target",
        changed("initial-above-target", steps=[{"type": "prune", "initialSparsity": 0.9, "targetSparsity": 0.5}]),
        "must be below targetSparsity",
    ),
    (
        "end-before-begin",
        changed("end-before-begin", steps=[{"type": "prune", "beginStep": 10, "endStep": 5}]),
        "must be greater than beginStep",
    ),
    ("gate-range", changed("gate-range", gates={"maxAccuracyDrop": 2}), "spec.gates.maxAccuracyDrop: Invalid value"),
    (
        "size-gate-range",
        changed("size-gate-range", gates={"minSizeReduction": 1.0}),
        "spec.gates.minSizeReduction: Invalid value",
    ),
    (
        "promote-onto-output",
        changed("promote-onto-output", promotion={"uri": "s3://models/digits/compressed"}),
        "must differ from spec.output.uri",
    ),
    (
        "bad-secret-name",
        changed("bad-secret-name", credentials={"secretName": "S3_Creds"}),
        "spec.credentials.secretName: Invalid value",
    ),
    ("no-steps", changed("no-steps", steps=[]), "spec.steps: Invalid value"),
    (
        "auto-with-ptq",
        changed("auto-with-ptq", steps=[{"type": "auto"}, ptq("dynamic")], gates={"maxAccuracyDrop": 0.01}),
        "an auto step must be the only step",
    ),
    (
        "auto-without-quality-gate",
        changed("auto-without-quality-gate", steps=[{"type": "auto"}], gates={"minSizeReduction": 0.5}),
        "an auto step needs a quality gate (maxAccuracyDrop, minFidelity, minSnrDb)",
    ),
    (
        "split-after-auto",
        changed(
            "split-after-auto",
            steps=[{"type": "auto"}],
            gates={"minFidelity": 0.99},
            output={"uri": "s3://models/out/", "split": {"after": ["block1"]}},
        ),
        "an auto step's pick is a per-layer litert-quantizer recipe the parts would not carry",
    ),
    (
        "auto-unknown-precision",
        changed("auto-unknown-precision", steps=[{"type": "auto", "precisions": ["int2"]}]),
        "spec.steps[0].precisions[0]: Unsupported value",
    ),
]


@pytest.mark.parametrize(("name", "document", "message"), MISTAKES, ids=[row[0] for row in MISTAKES])
def test_apiserver_rejects_invalid_jobs(
    name: str, document: dict[str, Any], message: str, control_plane: ControlPlane
) -> None:
    applied = control_plane.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(document), check=False)
    assert applied.returncode != 0, f"{name} was accepted"
    assert message in applied.stderr, applied.stderr
    assert control_plane.kubectl("get", "compressionjob", name, check=False).returncode != 0
    # The runner refuses the same spec (the schema is one source of truth).
    with pytest.raises(SpecError):
        parse_spec(document["spec"])


def test_valid_job_is_stored_and_its_spec_is_immutable_except_suspend(control_plane: ControlPlane) -> None:
    document = changed("immutable")
    control_plane.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(document))
    stored = json.loads(control_plane.kubectl("get", "cpj", "immutable", "-o", "json").stdout)
    assert stored["spec"]["steps"] == document["spec"]["steps"]
    parse_spec(stored["spec"])
    edited = control_plane.kubectl(
        "patch",
        "compressionjob",
        "immutable",
        "--type=merge",
        "-p",
        '{"spec": {"gates": {"maxAccuracyDrop": 0.5}}}',
        check=False,
    )
    assert edited.returncode != 0 and "spec is immutable except suspend" in edited.stderr
    assert "spec.gates: Invalid value" in edited.stderr, "the error names the field that changed"
    control_plane.kubectl("patch", "compressionjob", "immutable", "--type=merge", "-p", '{"spec": {"suspend": true}}')
    suspended = json.loads(control_plane.kubectl("get", "cpj", "immutable", "-o", "json").stdout)
    assert suspended["spec"]["suspend"] is True
    control_plane.kubectl("delete", "compressionjob", "immutable")


def test_kubectl_explain_uses_the_schema_descriptions(control_plane: ControlPlane) -> None:
    deadline = time.monotonic() + 60
    while True:
        explained = control_plane.kubectl("explain", "compressionjob.spec.steps", check=False)
        if explained.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert explained.returncode == 0, explained.stderr
    from edgecompress_contract.spec import CompressionJobSpec

    description = CompressionJobSpec.model_fields["steps"].description
    assert description and " ".join(description.split()) in " ".join(explained.stdout.split())
    assert "targetSparsity" in explained.stdout


def test_kubectl_explain_documents_the_status_from_the_contract(control_plane: ControlPlane) -> None:
    """The status schema is generated from CompressionJobStatus, so its field descriptions reach kubectl explain."""
    from edgecompress_contract.report import Comparison

    deadline = time.monotonic() + 60
    while True:
        explained = control_plane.kubectl("explain", "compressionjob.status.result.comparison", check=False)
        if explained.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert explained.returncode == 0, explained.stderr
    text = " ".join(explained.stdout.split())
    assert "sizeReduction" in text and "compressionRatio" in text and "accuracyDrop" in text
    for name in ("size_reduction", "compression_ratio", "accuracy_drop"):
        description = Comparison.model_fields[name].description
        assert description and " ".join(description.split()) in text, (name, explained.stdout)


def test_runner_job_is_valid_and_restricted(control_plane: ControlPlane) -> None:
    """The Job the operator builds passes the real apiserver's validation and the restricted PSS."""
    from edgecompress_operator.config import Config
    from edgecompress_operator.manifests import build_job

    control_plane.kubectl("create", "namespace", "restricted-ns")
    control_plane.kubectl(
        "label",
        "namespace",
        "restricted-ns",
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/warn=restricted",
    )
    document = changed("pss")
    document["metadata"]["namespace"] = "restricted-ns"
    document["spec"]["queueName"] = "gpu-queue"
    control_plane.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(document))
    uid = control_plane.kubectl("get", "cpj", "pss", "-n", "restricted-ns", "-o", "jsonpath={.metadata.uid}").stdout
    manifest = build_job(
        "pss", "restricted-ns", uid, parse_spec(document["spec"]), config=Config(runner_image="runner:1")
    )
    created = control_plane.kubectl(
        "create", "--dry-run=server", "-o", "json", "-f", "-", stdin=json.dumps(manifest), check=False
    )
    assert created.returncode == 0, created.stderr
    assert "would violate PodSecurity" not in created.stderr, created.stderr
    accepted = json.loads(created.stdout)
    assert accepted["spec"]["podFailurePolicy"] == manifest["spec"]["podFailurePolicy"]
    assert accepted["metadata"]["ownerReferences"][0]["uid"] == uid
