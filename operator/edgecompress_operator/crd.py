"""The CompressionJob CRD, generated from the runner's spec schema (the single source of truth).

Kubernetes needs a *structural* OpenAPI v3 schema: no $ref, no oneOf of object shapes, no
nullable unions. So references are inlined, optional fields become plain optional properties,
the discriminated union of steps becomes one object whose ``type`` picks the valid fields, and
every cross-field rule of ``plan_problems`` is restated as a CEL rule (``x-kubernetes-validations``)
so the apiserver rejects what the runner would. Defaults are left to the runner (a default on the
merged step object would apply to every step type) and shown in the descriptions instead.

Run ``python -m edgecompress_operator.crd > crds/compressionjobs.edgecompress.io.yaml``.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

import yaml

from edgecompress_runner.spec import (
    API_GROUP,
    API_VERSION,
    KERAS_ONLY_STEP_TYPES,
    KIND,
    TRAINING_STEP_TYPES,
    spec_json_schema,
)

PLURAL = "compressionjobs"
SINGULAR = "compressionjob"
SHORT_NAMES = ["cpj"]
MUTABLE_FIELDS = frozenset({"suspend"})

_DROPPED_KEYS = {"title", "discriminator", "$defs"}


def _resolve(node: Any, definitions: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_resolve(item, definitions) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = copy.deepcopy(definitions[node["$ref"].rsplit("/", 1)[-1]])
        merged = {**target, **{key: value for key, value in node.items() if key != "$ref"}}
        if "description" in node:
            merged["description"] = node["description"]
        return _resolve(merged, definitions)
    return {key: _resolve(value, definitions) for key, value in node.items() if key not in _DROPPED_KEYS}


def _describe_default(description: str, default: Any) -> str:
    if default is None or default == {} or default == [] or isinstance(default, dict):
        return description
    shown = str(default).lower() if isinstance(default, bool) else default
    return f"{description} Default: {shown}."


def _structural(node: Any) -> Any:
    """JSON Schema (2020-12, pydantic) -> OpenAPI v3 structural schema."""
    if isinstance(node, list):
        return [_structural(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "anyOf" in node:
        options = [option for option in node.pop("anyOf") if option.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot make a structural schema of anyOf {options}")
        node = {**options[0], **node}
    if "oneOf" in node:
        node = _merge_variants(node)
    if "const" in node:
        node["enum"] = [node.pop("const")]
        node.setdefault("type", "string")
    if "enum" in node and "type" not in node:
        node["type"] = "string"
    for bound in ("Minimum", "Maximum"):
        exclusive = f"exclusive{bound}"
        if exclusive in node and not isinstance(node[exclusive], bool):
            node[bound.lower()] = node.pop(exclusive)
            node[exclusive] = True
    if "default" in node:
        node["description"] = _describe_default(node.get("description", ""), node.pop("default"))
    if "properties" in node:
        node.pop("additionalProperties", None)
        node["type"] = "object"
        node["properties"] = {name: _structural(body) for name, body in node["properties"].items()}
    if "items" in node:
        node["items"] = _structural(node["items"])
    if isinstance(node.get("additionalProperties"), dict):
        node["additionalProperties"] = _structural(node["additionalProperties"])
    return node


def _merge_variants(node: dict[str, Any]) -> dict[str, Any]:
    """A discriminated union (on ``type``) as one object plus CEL rules tying fields to types."""
    variants = node.pop("oneOf")
    properties: dict[str, Any] = {}
    owners: dict[str, list[str]] = {}
    required: dict[str, list[str]] = {}
    for variant in variants:
        tag = variant["properties"]["type"]["const"]
        for name, body in variant["properties"].items():
            properties.setdefault(name, body)
            owners.setdefault(name, []).append(tag)
        required[tag] = [name for name in variant.get("required", []) if name != "type"]
    tags = [variant["properties"]["type"]["const"] for variant in variants]
    properties["type"] = {"type": "string", "enum": tags, "description": "Step type: " + ", ".join(tags) + "."}
    rules = []
    for name, types in owners.items():
        if name != "type" and len(types) < len(tags):
            allowed = ", ".join(f"'{tag}'" for tag in types)
            rules.append({
                "rule": f"!has(self.{name}) || self.type in [{allowed}]",
                "message": f"{name} is only valid for steps of type {', '.join(types)}",
                "fieldPath": f".{name}",
            })
    for tag, names in required.items():
        for name in names:
            rules.append({
                "rule": f"self.type != '{tag}' || has(self.{name})",
                "message": f"a {tag} step needs {name}",
            })
    return {
        "type": "object",
        "description": node.get("description", "One compression step; its type decides the valid fields."),
        "required": ["type"],
        "properties": properties,
        "x-kubernetes-validations": rules,
    }


def _step_rules() -> list[dict[str, str]]:
    """Per-step rules of plan_problems that concern one step."""
    return [
        {"rule": "!has(self.integerIO) || !self.integerIO || self.mode == 'int8'",
         "message": "integerIO is only valid with mode int8", "fieldPath": ".integerIO"},
        {"rule": "!has(self.pattern) || self.pattern != '2:4' || !has(self.targetSparsity) || self.targetSparsity == 0.5",
         "message": "pattern 2:4 means a targetSparsity of exactly 0.5", "fieldPath": ".targetSparsity"},
        {"rule": "self.type != 'prune' || (has(self.schedule) && self.schedule == 'constantSparsity') || "
                 "(has(self.initialSparsity) ? self.initialSparsity : 0.0) < "
                 "(has(self.targetSparsity) ? self.targetSparsity : 0.5)",
         "message": "initialSparsity must be below targetSparsity", "fieldPath": ".initialSparsity"},
        {"rule": "!has(self.endStep) || self.endStep > (has(self.beginStep) ? self.beginStep : 0)",
         "message": "endStep must be greater than beginStep", "fieldPath": ".endStep"},
        {"rule": "!has(self.student) || self.student.format != 'savedmodel'",
         "message": "the distill student must be trainable (keras or h5)", "fieldPath": ".student.format"},
    ]


def _spec_rules(fields: list[str]) -> list[dict[str, str]]:
    training = ", ".join(f"'{kind}'" for kind in sorted(TRAINING_STEP_TYPES))
    keras_only = ", ".join(f"'{kind}'" for kind in sorted(KERAS_ONLY_STEP_TYPES))
    last = "self.steps[size(self.steps) - 1]"
    rules = [
        {"rule": "self.steps.filter(s, s.type == 'ptq').size() <= 1", "message": "at most one ptq step",
         "fieldPath": ".steps"},
        {"rule": f"!self.steps.exists(s, s.type == 'ptq') || {last}.type == 'ptq'",
         "message": "ptq must be the last step", "fieldPath": ".steps"},
        {"rule": "self.steps.filter(s, s.type == 'distill').size() <= 1", "message": "at most one distill step",
         "fieldPath": ".steps"},
        {"rule": "!self.steps.exists(s, s.type == 'distill') || self.steps[0].type == 'distill'",
         "message": "distill must be the first step, it replaces the model", "fieldPath": ".steps"},
        {"rule": "self.steps.filter(s, s.type == 'qat').size() <= 1", "message": "at most one qat step",
         "fieldPath": ".steps"},
        {"rule": f"!self.steps.exists(s, s.type == 'qat') || {last}.type == 'qat' || "
                 f"(size(self.steps) >= 2 && self.steps[size(self.steps) - 2].type == 'qat' && {last}.type == 'ptq')",
         "message": "only ptq may follow qat (the model is already quantized)", "fieldPath": ".steps"},
        {"rule": "!self.steps.exists(s, s.type == 'qat') || !self.steps.exists(s, s.type == 'ptq' && "
                 "((has(s.skipLayers) && size(s.skipLayers) > 0) || (has(s.skipFirstAndLast) && s.skipFirstAndLast)))",
         "message": "after qat, list the layers to keep float on the qat step, not on ptq", "fieldPath": ".steps"},
        {"rule": f"has(self.dataset) || !self.steps.exists(s, s.type in [{training}])",
         "message": "prune, cluster, qat and distill fine-tune the model and need spec.dataset",
         "fieldPath": ".dataset"},
        {"rule": "has(self.dataset) || !self.steps.exists(s, s.type == 'ptq' && has(s.mode) && s.mode in ['int8', 'int16x8'])",
         "message": "ptq int8 and int16x8 need spec.dataset for representative samples", "fieldPath": ".dataset"},
        {"rule": f"self.model.format != 'savedmodel' || !self.steps.exists(s, s.type in [{keras_only}])",
         "message": "prune, cluster and qat need a Keras model (format keras or h5); a SavedModel can only be converted with ptq",
         "fieldPath": ".model.format"},
        {"rule": "!has(self.promotion) || !(self.promotion.uri in [self.output.uri, self.output.uri.endsWith('/') ? "
                 "self.output.uri.substring(0, self.output.uri.size() - 1) : self.output.uri + '/'])",
         "message": "promotion.uri must differ from output.uri (the stable copy needs its own folder)",
         "fieldPath": ".promotion.uri"},
    ]
    unchanged = " && ".join(
        f"has(self.{name}) == has(oldSelf.{name}) && (!has(self.{name}) || self.{name} == oldSelf.{name})"
        for name in fields
        if name not in MUTABLE_FIELDS
    )
    rules.append({
        "rule": unchanged,
        "message": "spec is immutable except suspend: create a new CompressionJob to run again",
    })
    return rules


def _status_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "Observed state, written by the operator.",
        "x-kubernetes-preserve-unknown-fields": True,
    }


def spec_openapi_schema() -> dict[str, Any]:
    raw = spec_json_schema()
    resolved = _resolve({key: value for key, value in raw.items() if key != "$defs"}, raw.get("$defs", {}))
    spec: dict[str, Any] = _structural(resolved)
    step = spec["properties"]["steps"]["items"]
    step["x-kubernetes-validations"] = step.get("x-kubernetes-validations", []) + _step_rules()
    spec["x-kubernetes-validations"] = _spec_rules(list(spec["properties"]))
    return spec


def build_crd() -> dict[str, Any]:
    """The CustomResourceDefinition manifest (pure: no cluster needed)."""
    spec = spec_openapi_schema()
    columns = [
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Size-Reduction", "type": "string", "jsonPath": ".status.result.comparison.sizeReduction"},
        {"name": "Accuracy-Drop", "type": "string", "jsonPath": ".status.result.comparison.accuracyDrop"},
        {"name": "Gates", "type": "string", "jsonPath": ".status.result.gatesPassed"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{API_GROUP}"},
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": SHORT_NAMES,
                "categories": ["all"],
            },
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A request to compress a trained model into a verified .tflite.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": _status_schema(),
                            },
                        }
                    },
                }
            ],
        },
    }


def render_crd() -> str:
    header = "# Generated by `python -m edgecompress_operator.crd` from the runner's spec schema. Do not edit.\n"
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=120)


if __name__ == "__main__":
    sys.stdout.write(render_crd())
