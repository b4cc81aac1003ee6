"""Every spec rejection, as a table: the message must name the field at fault."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from edgecompress_contract.spec import (
    CompressionJobSpec,
    PtqStep,
    load_spec_text,
    parse_spec,
    spec_json_schema,
)
from edgecompress_runner.errors import ExitCode, SpecError

VALID: dict[str, Any] = {
    "model": {"uri": "s3://models/digits/model.keras", "format": "keras"},
    "dataset": {"uri": "s3://data/digits.npz"},
    "steps": [
        {"type": "prune", "targetSparsity": 0.8, "initialSparsity": 0.5},
        {"type": "qat"},
        {"type": "ptq", "mode": "int8", "integerIO": True},
    ],
    "gates": {"maxAccuracyDrop": 0.02, "minSizeReduction": 0.7},
    "output": {"uri": "s3://models/digits/compressed/"},
}


def with_changes(**changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(VALID)
    for key, value in changes.items():
        if value is None:
            spec.pop(key)
        else:
            spec[key] = value
    return spec


def test_valid_spec_parses_with_defaults() -> None:
    spec = parse_spec(copy.deepcopy(VALID))
    assert isinstance(spec, CompressionJobSpec)
    assert [step.type for step in spec.steps] == ["prune", "qat", "ptq"]
    ptq = spec.steps[2]
    assert isinstance(ptq, PtqStep) and ptq.integer_io and ptq.representative_samples == 200
    assert spec.evaluation.latency.threads == 1
    assert spec.gates.max_latency_ms is None
    # Defaults are validated too, so enum fields always hold their plain wire values.
    assert type(spec.evaluation.metric) is str and spec.evaluation.metric == "auto"
    assert type(spec.steps[0].schedule) is str


def test_whole_custom_resource_is_accepted() -> None:
    text = """
apiVersion: edgecompress.io/v1alpha1
kind: CompressionJob
metadata: {name: digits}
spec:
  model: {uri: file:///tmp/m.h5, format: h5}
  steps: [{type: ptq, mode: dynamic}]
  output: {uri: /tmp/out}
"""
    spec = load_spec_text(text)
    assert spec.model.format == "h5" and spec.dataset is None


REJECTIONS = [
    ("unknown top-level field", with_changes(colour="blue"), r"spec\.colour: Extra inputs"),
    ("negative seed", with_changes(seed=-1), r"spec\.seed: Input should be greater than or equal to 0"),
    (
        "unknown step field",
        with_changes(steps=[{"type": "prune", "sparsity": 0.5}, {"type": "ptq", "mode": "int8"}]),
        r"spec\.steps\[0\]\.sparsity: Extra inputs",
    ),
    (
        "wrong type",
        with_changes(steps=[{"type": "prune", "targetSparsity": "lots"}]),
        r"spec\.steps\[0\]\.targetSparsity",
    ),
    (
        "sparsity out of range",
        with_changes(steps=[{"type": "prune", "targetSparsity": 1.5}]),
        r"spec\.steps\[0\]\.targetSparsity: Input should be less than 1",
    ),
    ("unknown step type", with_changes(steps=[{"type": "shrink"}]), r"spec\.steps\[0\].*'shrink'"),
    ("unknown ptq mode", with_changes(steps=[{"type": "ptq", "mode": "int4"}]), r"spec\.steps\[0\]\.mode"),
    ("missing model", with_changes(model=None), r"spec\.model: Field required"),
    ("missing output", with_changes(output=None), r"spec\.output: Field required"),
    ("no steps", with_changes(steps=[]), r"spec\.steps: List should have at least 1 item"),
    ("bad uri scheme", with_changes(model={"uri": "s3://", "format": "keras"}), r"spec\.model\.uri"),
    ("bad model format", with_changes(model={"uri": "/m.onnx", "format": "onnx"}), r"spec\.model\.format"),
    (
        "int8 without dataset",
        with_changes(dataset=None, steps=[{"type": "ptq", "mode": "int8"}]),
        r"steps\[0\]\.mode: ptq int8 and int16x8 need spec\.dataset .*\(found int8\)",
    ),
    (
        "int16x8 without dataset",
        with_changes(dataset=None, steps=[{"type": "ptq", "mode": "int16x8"}]),
        r"steps\[0\]\.mode: ptq int8 and int16x8 need spec\.dataset .*\(found int16x8\)",
    ),
    (
        "training without dataset",
        with_changes(dataset=None, steps=[{"type": "cluster"}]),
        r"steps\[0\]: prune, cluster, qat, distill and reduceFilters fine-tune the model and need spec\.dataset "
        r"\(found cluster\)",
    ),
    (
        "prune on a SavedModel",
        with_changes(model={"uri": "/m.tar.gz", "format": "savedmodel"}),
        r"steps\[0\]: prune, cluster, qat and reduceFilters need a Keras model .*\(found prune\)",
    ),
    (
        "two ptq steps",
        with_changes(steps=[{"type": "ptq", "mode": "dynamic"}, {"type": "ptq", "mode": "int8"}]),
        r"ptq must be the last step",
    ),
    (
        "reduceFilters after prune",
        with_changes(steps=[{"type": "prune"}, {"type": "reduceFilters"}]),
        r"steps\[1\]: reduceFilters must be the first step.*\(found 'prune' before it\)",
    ),
    (
        "split after qat",
        with_changes(output={"uri": "s3://out/", "split": {"after": ["block1"]}}),
        r"spec\.output\.split: splitting converts each part .*\(found a qat step\)",
    ),
    (
        "split of a SavedModel",
        with_changes(
            model={"uri": "/m.tar.gz", "format": "savedmodel"},
            steps=[{"type": "ptq", "mode": "dynamic"}],
            output={"uri": "s3://out/", "split": {"after": ["block1"]}},
        ),
        r"spec\.output\.split: splitting needs the model's Keras layers",
    ),
    (
        "split nowhere",
        with_changes(output={"uri": "s3://out/", "split": {"after": []}}),
        r"spec\.output\.split\.after: List should have at least 1 item",
    ),
    (
        "step after ptq",
        with_changes(steps=[{"type": "ptq", "mode": "int8"}, {"type": "prune"}]),
        r"steps\[0\]: ptq must be the last step \(found 'prune' after it\)",
    ),
    (
        "two ptq at the end",
        with_changes(steps=[{"type": "prune"}, {"type": "ptq", "mode": "int8"}, {"type": "ptq", "mode": "int8"}]),
        r"at most one ptq step",
    ),
    ("prune after qat", with_changes(steps=[{"type": "qat"}, {"type": "prune"}]), r"only ptq may follow qat"),
    ("two qat", with_changes(steps=[{"type": "qat"}, {"type": "qat"}]), r"at most one qat step"),
    (
        "ptq skip after qat",
        with_changes(steps=[{"type": "qat"}, {"type": "ptq", "mode": "int8", "skipLayers": ["x"]}]),
        r"spec\.steps\[1\]\.skipLayers: after qat, list the layers to keep float on the qat step",
    ),
    (
        "distill not first",
        with_changes(steps=[{"type": "prune"}, {"type": "distill", "student": {"uri": "/s.keras", "format": "keras"}}]),
        r"steps\[1\]: distill must be the first step",
    ),
    (
        "savedmodel student",
        with_changes(steps=[{"type": "distill", "student": {"uri": "/s.tgz", "format": "savedmodel"}}]),
        r"steps\[0\]\.student\.format: the student must be trainable",
    ),
    (
        "promote onto the output",
        with_changes(promotion={"uri": "s3://models/digits/compressed"}),
        r"spec\.promotion\.uri: must differ from spec\.output\.uri",
    ),
    (
        "integer io with dynamic",
        with_changes(steps=[{"type": "ptq", "mode": "dynamic", "integerIO": True}]),
        r"steps\[0\]\.integerIO: only valid with mode int8",
    ),
    (
        "2:4 with other target",
        with_changes(steps=[{"type": "prune", "pattern": "2:4", "targetSparsity": 0.7}]),
        r"steps\[0\]\.targetSparsity: pattern 2:4 means exactly 0\.5",
    ),
    (
        "initial above target",
        with_changes(steps=[{"type": "prune", "initialSparsity": 0.9, "targetSparsity": 0.5}]),
        r"steps\[0\]\.initialSparsity: must be below targetSparsity",
    ),
    (
        "sensitivity without oneShot",
        with_changes(steps=[{"type": "prune", "allocation": "sensitivity"}]),
        r"steps\[0\]\.allocation: sensitivity needs schedule oneShot.*"
        r"\(schedule polynomialDecay, pattern unstructured\)",
    ),
    (
        "sensitivity with 2:4",
        with_changes(steps=[{"type": "prune", "schedule": "oneShot", "allocation": "sensitivity", "pattern": "2:4"}]),
        r"steps\[0\]\.allocation: sensitivity needs schedule oneShot and pattern unstructured",
    ),
    (
        "end before begin",
        with_changes(steps=[{"type": "prune", "beginStep": 10, "endStep": 5}]),
        r"steps\[0\]\.endStep: must be greater than beginStep",
    ),
    (
        "too many clusters",
        with_changes(steps=[{"type": "cluster", "numberOfClusters": 1000}]),
        r"spec\.steps\[0\]\.numberOfClusters",
    ),
    ("accuracy drop out of range", with_changes(gates={"maxAccuracyDrop": 2}), r"spec\.gates\.maxAccuracyDrop"),
    ("size reduction of 1", with_changes(gates={"minSizeReduction": 1.0}), r"spec\.gates\.minSizeReduction"),
    ("negative latency", with_changes(gates={"maxLatencyMs": -1}), r"spec\.gates\.maxLatencyMs"),
    (
        "zero epochs",
        with_changes(steps=[{"type": "qat", "fineTune": {"epochs": 0}}]),
        r"spec\.steps\[0\]\.fineTune\.epochs",
    ),
    ("unknown metric", with_changes(evaluation={"metric": "f1"}), r"spec\.evaluation\.metric"),
    (
        "output named twice",
        with_changes(
            evaluation={"outputs": [{"name": "pitch", "task": "binary"}, {"name": "pitch", "task": "regression"}]}
        ),
        r"spec\.evaluation\.outputs\[1\]\.name: each output may be named once.*found 'pitch' again",
    ),
    (
        "unknown task",
        with_changes(evaluation={"outputs": [{"name": "pitch", "task": "ranking"}]}),
        r"spec\.evaluation\.outputs\[0\]\.task",
    ),
    ("fidelity above 1", with_changes(gates={"minFidelity": 1.5}), r"spec\.gates\.minFidelity"),
    ("bad secret name", with_changes(credentials={"secretName": "S3_Creds"}), r"spec\.credentials\.secretName"),
    ("negative gpus", with_changes(execution={"gpus": -1}), r"spec\.execution\.gpus"),
    (
        "bad toleration",
        with_changes(execution={"tolerations": [{"operator": "Maybe"}]}),
        r"spec\.execution\.tolerations\[0\]\.operator",
    ),
    ("bad queue name", with_changes(queueName="GPU queue"), r"spec\.queueName"),
]


@pytest.mark.parametrize(("case", "document", "message"), REJECTIONS, ids=[row[0] for row in REJECTIONS])
def test_rejections_name_the_field(case: str, document: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message) as caught:
        parse_spec(document)
    assert caught.value.exit_code == ExitCode.INVALID_INPUT


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("apiVersion: edgecompress.io/v1alpha1\nkind: Job\nspec: {}", r"kind: expected 'CompressionJob'"),
        ("apiVersion: other/v1\nkind: CompressionJob\nspec: {}", r"apiVersion: expected"),
        ("apiVersion: edgecompress.io/v1alpha1\nkind: CompressionJob\n", r"spec: a CompressionJob needs a spec"),
        ("[1, 2]", r"the job must be a mapping"),
        ("model: [unclosed", r"not valid YAML"),
    ],
)
def test_document_level_rejections(text: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        load_spec_text(text)


def test_schema_uses_camel_case_and_describes_fields() -> None:
    schema = spec_json_schema()
    assert set(schema["properties"]) == {
        "model",
        "dataset",
        "steps",
        "evaluation",
        "seed",
        "gates",
        "output",
        "checkpoints",
        "promotion",
        "credentials",
        "execution",
        "suspend",
        "queueName",
    }
    prune = schema["$defs"]["PruneStep"]["properties"]
    assert "targetSparsity" in prune and "target_sparsity" not in prune
    undocumented = [
        f"{name}.{field}"
        for name, definition in schema["$defs"].items()
        for field, body in definition.get("properties", {}).items()
        if not body.get("description")
    ]
    assert undocumented == []
