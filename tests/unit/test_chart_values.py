"""The chart's operator settings are the operator's Config, one for one; values.yaml passes values.schema.json."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from edgecompress_operator.config import Config

CHART = Path(__file__).resolve().parents[2] / "charts" / "edgecompress"


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def values() -> dict[str, object]:
    return yaml.safe_load((CHART / "values.yaml").read_text())  # type: ignore[no-any-return]


def schema() -> dict[str, object]:
    return json.loads((CHART / "values.schema.json").read_text())  # type: ignore[no-any-return]


def test_values_config_keys_are_config_fields() -> None:
    fields = {camel(name) for name in Config.model_fields}
    assert set(values()["operator"]["config"]) == fields  # type: ignore[index]
    assert set(schema()["properties"]["operator"]["properties"]["config"]["properties"]) == fields  # type: ignore[index]


def test_config_defaults_match_the_operator() -> None:
    chart = values()["operator"]["config"]  # type: ignore[index]
    for name, field in Config.model_fields.items():
        if not field.is_required():
            assert chart[camel(name)] == field.get_default(call_default_factory=True), name


def test_values_yaml_is_valid_against_its_schema() -> None:
    jsonschema.validate(values(), schema())


@pytest.mark.parametrize(
    ("path", "bad", "message"),
    [
        (("operator", "config", "maxConcurrentJobs"), 0, "0 is less than the minimum of 1"),
        (("operator", "config", "runnerCommand"), "edgecompress-runner", "is not of type 'array'"),
        (("operator", "logFormat"), "xml", "'xml' is not one of"),
        (("metrics", "serviceMonitor", "interval"), "soon", "does not match"),
        (("operator", "replicas"), 2, "Additional properties are not allowed"),
    ],
    ids=["zero-limit", "command-not-list", "log-format", "interval", "no-replicas-value"],
)
def test_schema_rejects(path: tuple[str, ...], bad: object, message: str) -> None:
    document = values()
    target = document
    for key in path[:-1]:
        target = target[key]  # type: ignore[assignment,index]
    target[path[-1]] = bad  # type: ignore[index]
    with pytest.raises(jsonschema.ValidationError, match=message):
        jsonschema.validate(document, schema())
