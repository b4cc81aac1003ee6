"""The CompressionJob CRD, generated from the contract's models (the single source of truth).

Kubernetes needs a *structural* OpenAPI v3 schema: no $ref, no oneOf of object shapes, no
nullable unions. So references are inlined, optional fields become plain optional properties,
the discriminated union of steps becomes one object whose ``type`` picks the valid fields, and
every cross-field rule carries its CEL twin from ``edgecompress_contract.rules``
(``x-kubernetes-validations``) so the apiserver rejects what the runner would. The status schema
is generated from ``CompressionJobStatus`` the same way, and the printer columns name its fields.
Defaults are left to the runner (a default on the merged step object would apply to every step
type) and shown in the descriptions instead.

Run ``python -m edgecompress_operator.crd > crds/compressionjobs.edgecompress.io.yaml``.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

import yaml

from edgecompress_contract.rules import SPEC_RULES, STEP_RULES
from edgecompress_contract.spec import API_GROUP, API_VERSION, KIND, spec_json_schema
from edgecompress_contract.status import CompressionJobStatus
from edgecompress_contract.wire import json_path

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
            rules.append(
                {
                    "rule": f"!has(self.{name}) || self.type in [{allowed}]",
                    "message": f"{name} is only valid for steps of type {', '.join(types)}",
                    "fieldPath": f".{name}",
                }
            )
    for tag, names in required.items():
        for name in names:
            rules.append(
                {
                    "rule": f"self.type != '{tag}' || has(self.{name})",
                    "message": f"a {tag} step needs {name}",
                }
            )
    return {
        "type": "object",
        "description": node.get("description", "One compression step; its type decides the valid fields."),
        "required": ["type"],
        "properties": properties,
        "x-kubernetes-validations": rules,
    }


def _immutability_rules(fields: list[str]) -> list[dict[str, str]]:
    """One transition rule per field, so the apiserver's error names the field that changed."""
    return [
        {
            "rule": f"has(self.{name}) == has(oldSelf.{name}) && (!has(self.{name}) || self.{name} == oldSelf.{name})",
            "message": "cannot change: spec is immutable except suspend; create a new CompressionJob to run again",
            "fieldPath": f".{name}",
        }
        for name in fields
        if name not in MUTABLE_FIELDS
    ]


def _openapi(schema: dict[str, Any]) -> dict[str, Any]:
    resolved = _resolve({key: value for key, value in schema.items() if key != "$defs"}, schema.get("$defs", {}))
    structural: dict[str, Any] = _structural(resolved)
    return structural


def status_openapi_schema() -> dict[str, Any]:
    schema = _openapi(CompressionJobStatus.model_json_schema(by_alias=True))
    schema["description"] = "Observed state, written by the operator."
    return schema


def spec_openapi_schema() -> dict[str, Any]:
    spec = _openapi(spec_json_schema())
    step = spec["properties"]["steps"]["items"]
    step["x-kubernetes-validations"] = step.get("x-kubernetes-validations", []) + [
        rule.cel_rule() for rule in STEP_RULES
    ]
    spec["x-kubernetes-validations"] = [rule.cel_rule() for rule in SPEC_RULES] + _immutability_rules(
        list(spec["properties"])
    )
    return spec


def _status_column(name: str, *field_names: str) -> dict[str, str]:
    return {"name": name, "type": "string", "jsonPath": json_path(CompressionJobStatus, *field_names, root=".status")}


PRINTER_COLUMNS = [
    _status_column("Phase", "phase"),
    _status_column("Size-Reduction", "result", "comparison", "size_reduction"),
    _status_column("Accuracy-Drop", "result", "comparison", "accuracy_drop"),
    _status_column("Gates", "result", "gates_passed"),
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def build_crd() -> dict[str, Any]:
    """The CustomResourceDefinition manifest (pure: no cluster needed)."""
    spec = spec_openapi_schema()
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
                    "additionalPrinterColumns": PRINTER_COLUMNS,
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
                                "status": status_openapi_schema(),
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
