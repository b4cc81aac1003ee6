"""Content-addressed records of the auto step's measurements, so a re-run skips what it measured before.

A candidate's record is keyed by the sha256 of everything its numbers depend on: the baseline model's bytes,
the evaluation inputs by input name (with the labels and each output's task), the calibration samples, the
litert-quantizer recipe (its JSON), the latency settings, the tool versions and the machine. It holds the
candidate's metrics and its comparison with the baseline, not gate verdicts, so a run with other gates
judges the same numbers anew; the quantized ``.tflite`` sits beside it (``<key>.tflite``) and is checked
against the record's sha256 when read. The sensitivity table has its own record, keyed the same way by the
layers and precisions analysed.

Records are read during the search but written only in the upload phase (``publish``), before the
model, so a run that stops early leaves nothing behind and the output folder is never half-written.
"""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from edgecompress_contract.report import Comparison, LayerSensitivity, Metrics
from edgecompress_contract.wire import Record

from .errors import InputError
from .report import versions
from .storage import Storage, join_uri, sha256_of

__all__ = ["CachedTrial", "TrialCache", "content_key"]

RECORD_VERSION = 2
"""Bumped when what a record holds or how its key is made changes."""


def content_key(*parts: Any) -> str:
    """The sha256 of ``parts`` (bytes as they are, anything else as canonical JSON), with the tool versions."""
    digest = hashlib.sha256()
    environment = {"record": RECORD_VERSION, "versions": versions(), "machine": platform.machine()}
    for part in (environment, *parts):
        data = part if isinstance(part, bytes) else json.dumps(part, sort_keys=True, default=str).encode()
        digest.update(hashlib.sha256(data).digest())
    return digest.hexdigest()


class CachedTrial(Record):
    """What one candidate measured: enough to judge it with any gates and to publish it."""

    key: str = Field(description="The record's content key.")
    model_sha256: str = Field(description="SHA-256 of the quantized .tflite stored beside the record.")
    baseline: Metrics = Field(description="The baseline, timed interleaved with the candidate.")
    result: Metrics = Field(description="The candidate.")
    comparison: Comparison = Field(description="The candidate against the baseline.")
    seconds: float = Field(description="Wall time it took to quantize and measure.")


class CachedSensitivity(Record):
    key: str
    rows: list[LayerSensitivity]


@dataclass
class TrialCache:
    """Records under ``folder`` (a URI): read when asked, new ones kept until ``publish`` uploads them."""

    folder: str
    storage: Storage
    work_dir: Path
    pending: dict[str, Path] = field(default_factory=dict)
    hits: int = 0

    def _read(self, name: str) -> Path | None:
        uri = join_uri(self.folder, name)
        if not self.storage.exists(uri):
            return None
        self.work_dir.mkdir(parents=True, exist_ok=True)
        local = self.work_dir / name
        self.storage.download(uri, local)
        return local

    def trial(self, key: str) -> tuple[CachedTrial, bytes] | None:
        """The record and model of ``key``, or None when absent or unreadable (then it is measured again)."""
        record_file, model_file = self._read(f"{key}.json"), self._read(f"{key}.tflite")
        if record_file is None or model_file is None:
            return None
        try:
            record = CachedTrial.model_validate_json(record_file.read_text())
        except (ValidationError, ValueError):
            return None
        if record.key != key or sha256_of(model_file) != record.model_sha256:
            return None
        self.hits += 1
        return record, model_file.read_bytes()

    def keep_trial(self, record: CachedTrial, model: bytes) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        model_file = self.work_dir / f"{record.key}.tflite"
        model_file.write_bytes(model)
        record_file = self.work_dir / f"{record.key}.json"
        record_file.write_text(json.dumps(record.to_wire(), indent=1) + "\n")
        self.pending[model_file.name] = model_file
        self.pending[record_file.name] = record_file

    def sensitivity(self, key: str) -> list[LayerSensitivity] | None:
        record_file = self._read(f"sensitivity-{key}.json")
        if record_file is None:
            return None
        try:
            record = CachedSensitivity.model_validate_json(record_file.read_text())
        except (ValidationError, ValueError):
            return None
        if record.key != key:
            return None
        self.hits += 1
        return record.rows

    def keep_sensitivity(self, key: str, rows: Sequence[LayerSensitivity]) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        record_file = self.work_dir / f"sensitivity-{key}.json"
        record_file.write_text(json.dumps(CachedSensitivity(key=key, rows=list(rows)).to_wire(), indent=1) + "\n")
        self.pending[record_file.name] = record_file

    def publish(self) -> None:
        """Uploads the new records, each model before its record (a record's presence means both are there)."""
        ordered = sorted(self.pending.items(), key=lambda item: (item[0].endswith(".json"), item[0]))
        for name, local in ordered:
            try:
                self.storage.upload(local, join_uri(self.folder, name))
            except InputError as error:
                raise InputError(f"the trial cache {self.folder}: {error}") from None
        self.pending.clear()
