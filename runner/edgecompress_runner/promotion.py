"""Promotion: publish a model that passed every gate to a stable location, never silently replacing one.

The stable folder receives ``model.tflite`` (on S3 with user metadata naming its sha256 and source)
and then ``promotion.json`` (written last, so its presence means the promotion is complete). A
stable model with the same sha256 is left as it is; a different one is only replaced when
``promotion.overwrite`` is set, otherwise the run fails with PromotionConflict.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from edgecompress_contract.report import Artifact, PromotionOutcome, PromotionRecord, PromotionSource
from edgecompress_contract.spec import Promotion

from .errors import InfrastructureError, PromotionConflict
from .storage import Storage, join_uri, sha256_of

PROMOTED_MODEL = "model.tflite"
PROMOTION_RECORD = "promotion.json"


def object_metadata(sha256: str, source: PromotionSource) -> dict[str, str]:
    """S3 user metadata of the promoted model: ASCII strings only."""
    metadata = {"edgecompress-sha256": sha256, "edgecompress-source-output": source.output}
    if source.job is not None:
        metadata["edgecompress-source-job"] = f"{source.job.namespace or ''}/{source.job.name or ''}"
        metadata["edgecompress-source-uid"] = source.job.uid or ""
    return metadata


def promote(
    promotion: Promotion, tflite_file: Path, *, source: PromotionSource, storage: Storage, work_dir: Path
) -> PromotionOutcome:
    """Publishes ``tflite_file``; returns what happened. Raises PromotionConflict instead of replacing."""
    model_uri = join_uri(promotion.uri, PROMOTED_MODEL)
    record_uri = join_uri(promotion.uri, PROMOTION_RECORD)
    sha256 = sha256_of(tflite_file)
    replaced = None
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    metadata = object_metadata(sha256, source)
    # A run that finds no promoted model creates it with a conditional write, so two runs promoting
    # at once can never both succeed with different bytes: the one that loses compares like a run
    # that found the model already there.
    for _ in range(2):
        if not storage.exists(model_uri):
            if storage.create(tflite_file, model_uri, metadata=metadata):
                break
            continue
        existing = work_dir / "promoted-before.tflite"
        storage.download(model_uri, existing)
        existing_sha256 = sha256_of(existing)
        if existing_sha256 == sha256:
            return PromotionOutcome(uri=model_uri, record=record_uri, sha256=sha256, promoted=True, unchanged=True)
        if not promotion.overwrite:
            raise PromotionConflict(
                f"spec.promotion.uri: {model_uri} already holds a different promoted model (sha256 "
                f"{existing_sha256[:12]}…, this run's is {sha256[:12]}…); set promotion.overwrite: true to "
                "replace it, or promote to a new (versioned) folder"
            )
        replaced = existing_sha256
        storage.delete(record_uri)
        storage.upload(tflite_file, model_uri, metadata=metadata)
        break
    else:
        raise InfrastructureError(f"{model_uri}: the store refused a conditional write but holds no object")
    record_file = work_dir / PROMOTION_RECORD
    record = PromotionRecord(
        model=Artifact(uri=model_uri, sha256=sha256, bytes=tflite_file.stat().st_size), source=source, promoted_at=now
    )
    record_file.write_text(json.dumps(record.to_wire(), indent=2) + "\n")
    storage.upload(record_file, record_uri)
    return PromotionOutcome(
        uri=model_uri,
        record=record_uri,
        sha256=sha256,
        replaced=replaced,
        promoted=True,
        unchanged=False,
        promoted_at=now,
    )
