"""Base classes of the wire models: camelCase names on the wire, snake_case in Python."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class StrictWire(BaseModel):
    """Input users write: unknown fields are errors, so a typo is never silently ignored."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        use_enum_values=True,
        validate_default=True,
        frozen=True,
    )


class Record(BaseModel):
    """Output one component writes and another reads: unknown fields from a newer writer are ignored."""

    model_config = ConfigDict(
        extra="ignore",
        alias_generator=to_camel,
        populate_by_name=True,
        use_enum_values=True,
        frozen=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The JSON document: camelCase names, unset optional fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def json_path(model: type[BaseModel], *field_names: str, root: str = "") -> str:
    """The wire path of a nested field, e.g. ``.status.result.comparison.sizeReduction``.

    Fails when a field does not exist, so printer columns and metric paths cannot drift from the models.
    """
    import types
    import typing

    path = root
    current: Any = model
    for name in field_names:
        if not (isinstance(current, type) and issubclass(current, BaseModel)) or name not in current.model_fields:
            raise KeyError(f"{getattr(current, '__name__', current)} has no field {name!r}")
        field = current.model_fields[name]
        path += "." + (field.alias or name)
        annotation = field.annotation
        if typing.get_origin(annotation) in (typing.Union, types.UnionType):
            options = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
            annotation = options[0] if len(options) == 1 else annotation
        current = annotation
    return path
