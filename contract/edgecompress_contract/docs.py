"""Reference tables for the README, generated from the contract's models (a test keeps them equal)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


def _type_of(body: dict[str, Any]) -> str:
    if "$ref" in body:
        return str(body["$ref"]).rsplit("/", 1)[-1]
    if "enum" in body:
        return " \\| ".join(str(value) for value in body["enum"])
    if "const" in body:
        return str(body["const"])
    if "anyOf" in body:
        return " \\| ".join(_type_of(option) for option in body["anyOf"] if option.get("type") != "null")
    if body.get("type") == "array":
        items = body.get("items", {})
        return f"list of {_type_of(items) if 'oneOf' not in items else 'step'}"
    return str(body.get("type", "object"))


def _shown_default(default: Any) -> str:
    return "" if default is None or isinstance(default, dict | list) else str(default)


def reference_markdown(model: type[BaseModel], prefix: str) -> str:
    """One row per field of ``model`` (named with ``prefix``), then one block per nested model."""
    schema = model.model_json_schema(by_alias=True)
    definitions = schema.get("$defs", {})
    rows: list[str] = ["| field | type | default | description |", "| --- | --- | --- | --- |"]

    def walk(properties: dict[str, Any], name_prefix: str, required: list[str]) -> None:
        for name, body in properties.items():
            default = body.get("default", "required" if name in required else "")
            text = body.get("description", "").replace("\n", " ")
            rows.append(f"| `{name_prefix}{name}` | {_type_of(body)} | {_shown_default(default)} | {text} |")

    walk(schema["properties"], prefix, schema.get("required", []))
    for name in sorted(definitions):
        definition = definitions[name]
        if "properties" in definition:
            summary = (definition.get("description") or "").strip().splitlines()
            rows.append(f"| **{name}** | | | {summary[0] if summary else ''} |")
            walk(definition["properties"], "  ", definition.get("required", []))
    return "\n".join(rows) + "\n"
