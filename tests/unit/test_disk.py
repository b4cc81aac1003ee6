"""The runner refuses downloads that would not fit its work folder or the pod's scratch limit."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edgecompress_contract.spec import SCRATCH_LIMIT_ENV
from edgecompress_runner.disk import available_bytes, check_downloads_fit
from edgecompress_runner.errors import InputError


def test_the_scratch_limit_minus_what_the_folder_holds_is_what_is_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "held").write_bytes(b"x" * 1000)
    monkeypatch.setenv(SCRATCH_LIMIT_ENV, "5000")
    assert available_bytes(tmp_path) == (4000, 5000)
    monkeypatch.delenv(SCRATCH_LIMIT_ENV)
    free, limit = available_bytes(tmp_path)
    assert limit is None and abs(free - shutil.disk_usage(tmp_path).free) < 1 << 20


def test_downloads_within_the_limit_pass_and_beyond_it_name_the_spec_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SCRATCH_LIMIT_ENV, str(3 << 20))
    check_downloads_fit({"spec.model.uri": 1 << 20, "spec.dataset.uri": 2 << 20}, tmp_path)
    with pytest.raises(InputError) as refused:
        check_downloads_fit({"spec.model.uri": 1 << 20, "spec.dataset.uri": (2 << 20) + 1}, tmp_path)
    assert str(refused.value).startswith(
        "spec.execution.scratchSizeLimit: the downloads (spec.model.uri 1.0 MiB, spec.dataset.uri 2.0 MiB) need "
        "3.0 MiB but the scratch volume (3.0 MiB) has 3.0 MiB left"
    )


def test_without_a_limit_the_disk_free_space_decides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SCRATCH_LIMIT_ENV, raising=False)
    too_big = shutil.disk_usage(tmp_path).free + (1 << 30)
    with pytest.raises(InputError, match=r"^spec.model.uri: the downloads .* give --work-dir on a larger disk"):
        check_downloads_fit({"spec.model.uri": too_big}, tmp_path)
