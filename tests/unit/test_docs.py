"""The README's spec reference is generated from the schema; this keeps the two equal."""

from __future__ import annotations

import re
from pathlib import Path

from edgecompress_contract.spec import spec_reference_markdown

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_spec_reference_matches_schema() -> None:
    text = README.read_text()
    found = re.search(r"<!-- spec-reference:begin -->\n(.*)<!-- spec-reference:end -->", text, re.S)
    assert found, "README.md lost its spec-reference markers"
    assert found.group(1) == spec_reference_markdown(), (
        "README spec reference is stale: regenerate it with "
        "python -c 'from edgecompress_contract.spec import spec_reference_markdown as f; print(f())'"
    )


def test_quick_start_has_exactly_two_commands_and_ci_runs_the_second() -> None:
    text = README.read_text()
    block = re.search(r"## Quick start\n\n```sh\n(.*?)```", text, re.S)
    assert block
    commands = [line for line in block.group(1).splitlines() if line.strip()]
    assert len(commands) == 2
    ci = (README.parent / ".ci" / "run").read_text()
    assert commands[1] in ci
