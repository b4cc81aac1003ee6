"""Artifact storage picked by URI scheme: s3:// through boto3, file:// and plain paths locally.

S3 credentials come from boto3's standard chain (env, shared config, web identity, instance
role); an S3-compatible endpoint (MinIO...) is set with the standard ``AWS_ENDPOINT_URL`` or
``AWS_ENDPOINT_URL_S3`` variables. Retries are botocore's own ("standard" mode).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import unquote, urlparse

from .errors import InfrastructureError, InputError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".png": "image/png", ".json": "application/json"}
"""Content types of the files a run writes that a browser shows (the rest are stored without one)."""
_MISSING_CODES = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}
_EXISTS_CODES = {"412", "PreconditionFailed", "409", "ConditionalRequestConflict"}
"""A conditional write refused because the key exists (or another such write is under way)."""
_ACCESS_CODES = {
    "403",
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def join_uri(folder: str, name: str) -> str:
    return folder.rstrip("/") + "/" + name


class Storage(Protocol):
    def download(self, uri: str, destination: Path) -> None: ...

    def upload(self, source: Path, uri: str, metadata: Mapping[str, str] | None = None) -> None: ...

    def create(self, source: Path, uri: str, metadata: Mapping[str, str] | None = None) -> bool:
        """Writes ``uri`` only if nothing is there, atomically; False when something already was."""
        ...

    def exists(self, uri: str) -> bool: ...

    def size(self, uri: str) -> int:
        """Bytes of the file at ``uri``; InputError naming it when there is none."""
        ...

    def delete(self, uri: str) -> None: ...

    def list(self, prefix: str) -> list[str]:
        """The URIs of the files directly under a folder or prefix, in name order."""
        ...


def local_path(uri: str) -> Path:
    if uri.startswith("file://"):
        return Path(unquote(urlparse(uri).path))
    return Path(uri)


def _finished_copy(source: Path, target: Path) -> str:
    """A complete copy of ``source`` next to ``target``, with the usual permissions, to be renamed or linked."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    os.close(handle)
    shutil.copyfile(source, temporary)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)
    return temporary


class LocalStorage:
    """Local files; uploads are atomic (temporary file, then rename)."""

    def download(self, uri: str, destination: Path) -> None:
        source = local_path(uri)
        if not source.is_file():
            raise InputError(f"{uri}: no such file")
        shutil.copyfile(source, destination)

    def upload(self, source: Path, uri: str, metadata: Mapping[str, str] | None = None) -> None:
        """``metadata`` has no place in a local file and is dropped (promotion.json carries the same)."""
        target = local_path(uri)
        try:
            os.replace(_finished_copy(source, target), target)
        except OSError as error:
            raise InfrastructureError(f"cannot write {uri}: {error}") from error

    def create(self, source: Path, uri: str, metadata: Mapping[str, str] | None = None) -> bool:
        """A hard link of a finished temporary file: it fails, atomically, when the target exists."""
        target = local_path(uri)
        try:
            temporary = _finished_copy(source, target)
            try:
                os.link(temporary, target)
            except FileExistsError:
                return False
            finally:
                os.unlink(temporary)
        except OSError as error:
            raise InfrastructureError(f"cannot write {uri}: {error}") from error
        return True

    def exists(self, uri: str) -> bool:
        return local_path(uri).exists()

    def size(self, uri: str) -> int:
        source = local_path(uri)
        if not source.is_file():
            raise InputError(f"{uri}: no such file")
        return source.stat().st_size

    def delete(self, uri: str) -> None:
        local_path(uri).unlink(missing_ok=True)

    def list(self, prefix: str) -> list[str]:
        folder = local_path(prefix)
        if not folder.is_dir():
            raise InputError(f"{prefix}: no such folder")
        return [join_uri(prefix, entry.name) for entry in sorted(folder.iterdir()) if entry.is_file()]


def split_s3_uri(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise InputError(f"{uri}: not an s3://bucket/key URI")
    return parsed.netloc, parsed.path.lstrip("/")


def s3_client(max_attempts: int = 5) -> S3Client:
    import boto3
    from botocore.config import Config

    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    config = Config(
        retries={"mode": "standard", "max_attempts": max_attempts},
        connect_timeout=10,
        read_timeout=120,
        s3={"addressing_style": "path" if endpoint else "auto"},
    )
    # A new session per client: the default session caches credentials for the process.
    return boto3.session.Session().client("s3", config=config)


class S3Storage:
    """Objects in S3 or an S3-compatible store."""

    def __init__(self, client: S3Client | None = None) -> None:
        self._client = client or s3_client()

    def download(self, uri: str, destination: Path) -> None:
        bucket, key = split_s3_uri(uri)
        try:
            with _s3_errors(uri):
                self._client.download_file(bucket, key, str(destination))
        except InputError as error:
            if _is_missing(error):
                self._require_bucket(bucket, uri)
            raise

    def _require_bucket(self, bucket: str, uri: str) -> None:
        """S3 answers a HEAD of a missing bucket's key with a bare 404; tell the two apart."""
        try:
            with _s3_errors(uri):
                self._client.head_bucket(Bucket=bucket)
        except InputError as error:
            if _is_missing(error):
                raise InputError(f"{uri}: bucket {bucket!r} does not exist") from None
            raise

    def upload(self, source: Path, uri: str, metadata: Mapping[str, str] | None = None) -> None:
        """``metadata`` becomes the object's user metadata (x-amz-meta-*). The content type follows the name
        (report.html is served as a page, its plots as images), when the name has a known one."""
        bucket, key = split_s3_uri(uri)
        extra: dict[str, object] = {"Metadata": dict(metadata)} if metadata else {}
        content_type = CONTENT_TYPES.get(Path(key).suffix)
        if content_type is not None:
            extra["ContentType"] = content_type
        with _s3_errors(uri):
            self._client.upload_file(str(source), bucket, key, ExtraArgs=extra or None)

    def create(self, source: Path, uri: str, metadata: Mapping[str, str] | None = None) -> bool:
        """A conditional PUT (If-None-Match: *): the store refuses it when the key exists."""
        bucket, key = split_s3_uri(uri)
        try:
            with _s3_errors(uri), source.open("rb") as body:
                self._client.put_object(
                    Bucket=bucket, Key=key, Body=body, Metadata=dict(metadata or {}), IfNoneMatch="*"
                )
        except (InputError, InfrastructureError) as error:
            if error.__cause__ is not None and _error_code(error.__cause__) in _EXISTS_CODES:
                return False
            raise
        return True

    def exists(self, uri: str) -> bool:
        bucket, key = split_s3_uri(uri)
        try:
            with _s3_errors(uri):
                self._client.head_object(Bucket=bucket, Key=key)
        except InputError as error:
            if _is_missing(error):
                self._require_bucket(bucket, uri)
                return False
            raise
        return True

    def size(self, uri: str) -> int:
        bucket, key = split_s3_uri(uri)
        try:
            with _s3_errors(uri):
                return int(self._client.head_object(Bucket=bucket, Key=key)["ContentLength"])
        except InputError as error:
            if _is_missing(error):
                self._require_bucket(bucket, uri)
            raise

    def delete(self, uri: str) -> None:
        bucket, key = split_s3_uri(uri)
        with _s3_errors(uri):
            self._client.delete_object(Bucket=bucket, Key=key)

    def list(self, prefix: str) -> list[str]:
        bucket, key = split_s3_uri(prefix)
        folder = key if not key or key.endswith("/") else key + "/"
        keys: list[str] = []
        with _s3_errors(prefix):
            pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=folder, Delimiter="/")
            for page in pages:
                keys.extend(item["Key"] for item in page.get("Contents", []))
        return [f"s3://{bucket}/{name}" for name in sorted(keys)]


def _is_missing(error: InputError) -> bool:
    cause = error.__cause__
    return cause is not None and _error_code(cause) in _MISSING_CODES


def _error_code(error: BaseException) -> str:
    response = getattr(error, "response", {}) or {}
    return str(response.get("Error", {}).get("Code", ""))


class _s3_errors:
    """Turns botocore failures into runner errors that name the URI."""

    def __init__(self, uri: str) -> None:
        self.uri = uri

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, error: BaseException | None, traceback: object) -> None:
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        if error is None or not isinstance(error, (BotoCoreError, ClientError, S3UploadFailedError)):
            return
        if isinstance(error, NoCredentialsError):
            raise InputError(
                f"{self.uri}: no S3 credentials found (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                "a profile, or the pod's workload identity)"
            ) from error
        code = _error_code(error)
        if isinstance(error, S3UploadFailedError):
            text = str(error)
            code = next((c for c in _ACCESS_CODES | _MISSING_CODES if c in text), code)
        if code in _MISSING_CODES:
            what = "bucket does not exist" if code == "NoSuchBucket" else "object not found"
            raise InputError(f"{self.uri}: {what}") from error
        if code in _ACCESS_CODES:
            raise InputError(
                f"{self.uri}: access denied ({code}): check the S3 credentials and their permissions"
            ) from error
        raise InfrastructureError(f"{self.uri}: S3 request failed: {error}") from error


def storage_for(uri: str) -> Storage:
    """The storage for a URI's scheme; anything but s3://, file:// or a plain path is an error."""
    scheme = urlparse(uri).scheme
    if scheme == "s3":
        return S3Storage()
    if scheme in ("file", ""):
        return LocalStorage()
    raise InputError(f"{uri}: unsupported URI scheme {scheme!r} (use s3://, file:// or a local path)")
