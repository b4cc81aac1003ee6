"""The committed CRD is generated from the runner's spec schema and says the same thing."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from edgecompress_contract.spec import spec_json_schema
from edgecompress_operator.crd import SHORT_NAMES, build_crd, render_crd

CRD_FILE = Path(__file__).resolve().parents[2] / "crds" / "compressionjobs.edgecompress.io.yaml"


def test_committed_crd_is_up_to_date() -> None:
    assert CRD_FILE.read_text() == render_crd(), (
        "crds/ is stale: python -m edgecompress_operator.crd > crds/compressionjobs.edgecompress.io.yaml"
    )


def _json_schema_fields(node: dict[str, Any], definitions: dict[str, Any], prefix: str = "") -> set[str]:
    if "$ref" in node:
        node = definitions[node["$ref"].rsplit("/", 1)[-1]]
    for union in ("anyOf", "oneOf"):
        if union in node:
            return set().union(*(_json_schema_fields(option, definitions, prefix) for option in node[union]))
    fields: set[str] = set()
    for name, body in node.get("properties", {}).items():
        fields.add(prefix + name)
        fields |= _json_schema_fields(body, definitions, prefix + name + ".")
    if "items" in node:
        fields |= _json_schema_fields(node["items"], definitions, prefix)
    return fields


def _openapi_fields(node: dict[str, Any], prefix: str = "") -> set[str]:
    fields: set[str] = set()
    for name, body in node.get("properties", {}).items():
        fields.add(prefix + name)
        fields |= _openapi_fields(body, prefix + name + ".")
    if "items" in node:
        fields |= _openapi_fields(node["items"], prefix)
    return fields


def crd_spec_schema() -> dict[str, Any]:
    version = build_crd()["spec"]["versions"][0]
    return version["schema"]["openAPIV3Schema"]["properties"]["spec"]  # type: ignore[no-any-return]


def test_crd_and_runner_schema_have_the_same_fields() -> None:
    schema = spec_json_schema()
    assert _openapi_fields(crd_spec_schema()) == _json_schema_fields(schema, schema["$defs"])


def test_crd_schema_is_structural_and_documented() -> None:
    text = yaml.safe_dump(crd_spec_schema())
    for forbidden in ("$ref", "anyOf", "oneOf", "nullable", "additionalProperties: false"):
        assert forbidden not in text
    assert not re.search(r"^\s*default:", text, re.M), "defaults belong to the runner, not the CRD"

    def undocumented(node: dict[str, Any], path: str) -> list[str]:
        missing = [] if node.get("description") else [path]
        for name, body in node.get("properties", {}).items():
            missing += undocumented(body, f"{path}.{name}")
        if "items" in node and node["items"].get("properties"):
            missing += undocumented(node["items"], path + "[]")
        return missing

    assert undocumented(crd_spec_schema(), "spec") == []


def test_crd_names_and_columns() -> None:
    crd = build_crd()
    assert crd["metadata"]["name"] == "compressionjobs.edgecompress.io"
    assert "cj" not in SHORT_NAMES and crd["spec"]["names"]["shortNames"] == SHORT_NAMES
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert [column["name"] for column in version["additionalPrinterColumns"]] == [
        "Phase",
        "Size-Reduction",
        "Accuracy-Drop",
        "Gates",
        "Age",
    ]
