"""The Dockerfile, parsed with the official BuildKit parser (there is no Docker engine here to build it)."""

from __future__ import annotations

import re
from pathlib import Path

import dockerfile
import pytest

ROOT = Path(__file__).resolve().parents[2]
TARGETS = {"operator": "operator", "runner": "runner"}
BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|make|build-essential|cmake|clang|apt-get|apk)\b")


def stages() -> dict[str, list[dockerfile.Command]]:
    commands = dockerfile.parse_file(str(ROOT / "Dockerfile"))
    found: dict[str, list[dockerfile.Command]] = {}
    current = ""
    for command in commands:
        if command.cmd == "FROM":
            assert len(command.value) == 3 and command.value[1].upper() == "AS", command.original
            current = command.value[2]
            found[current] = [command]
        elif current:
            found[current].append(command)
    return found


def arguments() -> dict[str, str]:
    commands = dockerfile.parse_file(str(ROOT / "Dockerfile"))
    return dict(item.split("=", 1) for command in commands if command.cmd == "ARG" for item in command.value)


def test_two_targets_and_a_build_stage() -> None:
    assert set(stages()) == {"build", "operator", "runner"}


def test_base_images_are_pinned() -> None:
    images = arguments()
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", images["PYTHON_IMAGE"])
    assert images["TENSORFLOW_GPU_IMAGE"] == "tensorflow/tensorflow:2.21.0-gpu"
    pinned = {
        line.split("==")[0]: line.split("==")[1]
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line
    }
    assert images["TENSORFLOW_GPU_IMAGE"].split(":")[1].removesuffix("-gpu") == pinned["tensorflow"]


@pytest.mark.parametrize("target", TARGETS)
def test_final_stage_is_non_root_and_has_no_build_tools(target: str) -> None:
    commands = stages()[target]
    users = [command.value[0] for command in commands if command.cmd == "USER"]
    assert users and users[-1].split(":")[0] == "10001"
    for command in commands:
        if command.cmd == "RUN":
            assert not BUILD_TOOLS.search(command.value[0]), command.original
    copies = [command for command in commands if command.cmd == "COPY"]
    assert all("--from=build" in command.flags or command.value[0] == "constraints.txt" for command in copies)


@pytest.mark.parametrize(("target", "extra"), TARGETS.items())
def test_installs_with_the_same_command_as_ci(target: str, extra: str) -> None:
    runs = " ".join(command.value[0] for command in stages()[target] if command.cmd == "RUN")
    assert re.search(
        rf"python -m pip install -c /tmp/constraints\.txt \"\$\(ls /wheels/edgecompress-\*\.whl\)\[{extra}\]\"", runs
    )
    other = ({"operator", "runner"} - {extra}).pop()
    assert f"[{other}]" not in runs and "[dev]" not in runs
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python3 -m pip install -c constraints.txt -e '.[runner,dev]'" in ci


def test_the_runner_stage_keeps_tensorflow_on_legacy_keras() -> None:
    env = " ".join(" ".join(command.value) for command in stages()["runner"] if command.cmd == "ENV")
    assert "TF_USE_LEGACY_KERAS 1" in env or "TF_USE_LEGACY_KERAS=1" in env


def test_entrypoints_are_the_console_scripts() -> None:
    entrypoints = {
        name: [c for c in commands if c.cmd == "ENTRYPOINT"][-1].value
        for name, commands in stages().items()
        if name in TARGETS
    }
    assert entrypoints == {"operator": ("edgecompress-operator",), "runner": ("edgecompress-runner",)}
