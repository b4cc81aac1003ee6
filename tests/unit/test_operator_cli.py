"""The operator refuses to start on a bad configuration, naming the variable; the README's table is Config's."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgecompress_operator.cli import main
from edgecompress_operator.config import config_reference_markdown

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        ({}, "EDGECOMPRESS_RUNNER_IMAGE: Field required"),
        (
            {"EDGECOMPRESS_RUNNER_IMAGE": "r:1", "EDGECOMPRESS_MAX_CONCURRENT_JOBS": "0"},
            "EDGECOMPRESS_MAX_CONCURRENT_JOBS: Input should be greater than or equal to 1",
        ),
        (
            {"EDGECOMPRESS_RUNNER_IMAGE": "r:1", "EDGECOMPRESS_RUNNER_COMMAND": "edgecompress-runner"},
            "EDGECOMPRESS_RUNNER_COMMAND",
        ),
        ({"EDGECOMPRESS_RUNNER_IMAGE": "r:1", "EDGECOMPRESS_METRICS_PORT": "http"}, "EDGECOMPRESS_METRICS_PORT"),
    ],
    ids=["no-image", "zero-limit", "command-not-json", "port-not-a-number"],
)
def test_bad_configuration_exits_2_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], message: str
) -> None:
    for name in [name for name in os.environ if name.startswith("EDGECOMPRESS_")]:
        monkeypatch.delenv(name)
    result = CliRunner().invoke(main, [], env=environment)
    assert result.exit_code == 2
    assert message in result.output


def test_readme_configuration_table_matches_config() -> None:
    found = re.search(r"<!-- operator-config:begin -->\n(.*)<!-- operator-config:end -->", README.read_text(), re.S)
    assert found, "README.md lost its operator-config markers"
    assert found.group(1) == config_reference_markdown(), (
        "README operator configuration is stale: regenerate it with "
        "python -c 'from edgecompress_operator.config import config_reference_markdown as f; print(f())'"
    )
