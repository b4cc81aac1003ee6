from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest

from edgecompress_runner.errors import InputError
from edgecompress_runner.storage import LocalStorage, S3Storage, join_uri, sha256_of, split_s3_uri, storage_for


@pytest.mark.parametrize(
    ("uri", "kind"),
    [
        ("s3://bucket/key", S3Storage),
        ("file:///tmp/x", LocalStorage),
        ("/tmp/x", LocalStorage),
        ("rel/x", LocalStorage),
    ],
)
def test_storage_is_picked_by_scheme(uri: str, kind: type, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    assert isinstance(storage_for(uri), kind)


@pytest.mark.parametrize("uri", ["gs://bucket/key", "http://host/x", "hdfs://nn/x"])
def test_unknown_schemes_are_rejected(uri: str) -> None:
    with pytest.raises(ValueError, match=r"unsupported URI scheme"):
        storage_for(uri)


@pytest.mark.parametrize(("uri", "expected"), [("s3://b/k/x.npz", ("b", "k/x.npz")), ("s3://b/", ("b", ""))])
def test_split_s3_uri(uri: str, expected: tuple[str, str]) -> None:
    assert split_s3_uri(uri) == expected


def test_join_uri() -> None:
    assert join_uri("s3://b/out/", "report.json") == "s3://b/out/report.json"
    assert join_uri("/tmp/out", "model.tflite") == "/tmp/out/model.tflite"


def test_local_round_trip_is_atomic_and_readable(tmp_path: Path) -> None:
    source = tmp_path / "a.bin"
    source.write_bytes(b"tflite" * 1000)
    storage = LocalStorage()
    target = (tmp_path / "out" / "model.tflite").as_uri()
    storage.upload(source, target)
    written = tmp_path / "out" / "model.tflite"
    assert written.read_bytes() == source.read_bytes()
    assert stat.S_IMODE(written.stat().st_mode) & 0o044
    assert [p.name for p in written.parent.iterdir()] == ["model.tflite"]
    assert storage.exists(target)
    copy = tmp_path / "copy.bin"
    storage.download(target, copy)
    assert sha256_of(copy) == hashlib.sha256(source.read_bytes()).hexdigest()
    storage.delete(target)
    assert not storage.exists(target)


def test_missing_local_file_names_the_uri(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"missing\.keras: no such file"):
        LocalStorage().download(str(tmp_path / "missing.keras"), tmp_path / "x")


def test_local_size_is_the_file_size_and_a_missing_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "data.npz").write_bytes(b"x" * 1234)
    assert LocalStorage().size(str(tmp_path / "data.npz")) == 1234
    with pytest.raises(InputError, match=r"absent.npz: no such file"):
        LocalStorage().size(str(tmp_path / "absent.npz"))
