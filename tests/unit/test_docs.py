"""The README's reference tables are generated from the contract's models; this keeps them equal."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from edgecompress_contract.docs import reference_markdown
from edgecompress_contract.report import Report
from edgecompress_contract.spec import CompressionJobSpec
from edgecompress_contract.status import CompressionJobStatus

README = Path(__file__).resolve().parents[2] / "README.md"

REFERENCES = [
    ("spec", CompressionJobSpec, "spec."),
    ("report", Report, ""),
    ("status", CompressionJobStatus, "status."),
]


def readme_section(marker: str) -> str:
    found = re.search(
        rf"<!-- {marker}-reference:begin -->\n(.*)<!-- {marker}-reference:end -->", README.read_text(), re.S
    )
    assert found, f"README.md lost its {marker}-reference markers"
    return found.group(1)


def write_references() -> None:
    """Regenerates the tables: python -c 'from tests.unit.test_docs import write_references as w; w()'."""
    text = README.read_text()
    for marker, model, prefix in REFERENCES:
        begin, end = f"<!-- {marker}-reference:begin -->\n", f"<!-- {marker}-reference:end -->"
        head, rest = text.split(begin, 1)
        text = head + begin + reference_markdown(model, prefix) + end + rest.split(end, 1)[1]
    README.write_text(text)


@pytest.mark.parametrize(("marker", "model", "prefix"), REFERENCES, ids=[row[0] for row in REFERENCES])
def test_readme_reference_matches_the_contract(marker: str, model: type[BaseModel], prefix: str) -> None:
    assert readme_section(marker) == reference_markdown(model, prefix), (
        f"README {marker} reference is stale: python -c 'from tests.unit.test_docs import write_references as w; w()'"
    )


def test_quick_start_has_exactly_two_commands_and_ci_runs_the_second() -> None:
    text = README.read_text()
    block = re.search(r"## Quick start\n\n```sh\n(.*?)```", text, re.S)
    assert block
    commands = [line for line in block.group(1).splitlines() if line.strip()]
    assert len(commands) == 2
    ci = (README.parent / ".ci" / "run").read_text()
    assert commands[1] in ci
