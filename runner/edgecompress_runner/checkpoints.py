"""Checkpoints of fine-tuning under ``<output>/checkpoints/``, so a restarted run resumes instead of starting over.

A fine-tuning step writes ``training-<index>.npz`` (its weights, the optimizer's variables, the best epoch's
weights so far) and then ``training-<index>.json`` (the position: finished epochs and the mini-batches of the
next epoch done, the held-out scores, the npz's sha256) at every epoch end and, within an epoch, every
``spec.checkpoints.everyMinutes``. When the step has finished it writes its final state (the weights it kept,
its metrics and validation) with ``finished: true``: a restarted run rebuilds that step (wrapping the layers
again, no training) and sets those weights, so finished steps are not trained again, and the running step goes
on from its last position with the same data order (each epoch's shuffle is seeded by the run's seed, the
step and the epoch).

Each record holds the run's fingerprint (``fingerprint``): a changed spec, input file or library version never
resumes from stale state; its records are overwritten. Writes go through ``storage`` (S3 or local), the JSON
record after its npz, so a record always names a complete npz. The records are deleted once report.json is
written (unless ``checkpoints.keep``), and when a run fails in a way a retry cannot fix.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgecompress_contract.report import Artifact, Resumption, Validation
from edgecompress_contract.spec import CompressionJobSpec

from .storage import LocalStorage, Storage, join_uri, local_path, sha256_of

logger = logging.getLogger("edgecompress")

CHECKPOINTS_FOLDER = "checkpoints"
MAX_STEPS = 16
"""The spec's limit on steps: the record names cleaned up after a run."""

# Spec fields that do not change what fine-tuning computes: changing them keeps the checkpoints usable.
_OPERATIONAL_FIELDS = frozenset(
    {"output", "promotion", "credentials", "execution", "suspend", "queue_name", "checkpoints", "gates"}
)


def fingerprint(
    spec: CompressionJobSpec, artifacts: dict[str, Artifact], versions: dict[str, str], *, replicas: int = 1
) -> str:
    """SHA-256 of what a checkpoint depends on: the spec's training fields, the inputs' bytes, the libraries and
    the replicas (they set the global batch)."""
    document = {
        "spec": spec.model_dump(mode="json", by_alias=True, exclude=set(_OPERATIONAL_FIELDS)),
        "inputs": {role: artifact.sha256 for role, artifact in sorted(artifacts.items())},
        "versions": versions,
        "replicas": replicas,
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


def epoch_order(samples: int, seed: int, epoch: int) -> np.ndarray:
    """The order of the training samples in one epoch: a permutation seeded by the step's seed and the epoch,
    so a resumed epoch sees the batches an uninterrupted one would."""
    return np.random.default_rng([seed, epoch]).permutation(samples)


@dataclass
class TrainingState:
    """Where a fine-tuning step is: what a checkpoint holds."""

    epoch: int
    """Finished epochs."""
    batches: int
    """Mini-batches of epoch ``epoch + 1`` done (0 at an epoch end)."""
    weights: list[np.ndarray]
    optimizer: list[np.ndarray] = field(default_factory=list)
    scores: list[tuple[float, float]] = field(default_factory=list)
    best_epoch: int | None = None
    best_score: tuple[float, float] | None = None
    best_weights: list[np.ndarray] | None = None
    finished: bool = False
    metrics: dict[str, float] = field(default_factory=dict)
    validation: Validation | None = None


def _packed(state: TrainingState) -> bytes:
    arrays = {f"weights/{i}": value for i, value in enumerate(state.weights)}
    arrays.update({f"optimizer/{i}": value for i, value in enumerate(state.optimizer)})
    arrays.update({f"best/{i}": value for i, value in enumerate(state.best_weights or [])})
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def _unpacked(path: Path, group: str) -> list[np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        names = sorted((name for name in archive.files if name.startswith(f"{group}/")), key=_position)
        return [archive[name] for name in names]


def _score(values: list[float] | None) -> tuple[float, float] | None:
    return (float(values[0]), float(values[1])) if values else None


def _position(name: str) -> int:
    return int(name.rsplit("/", 1)[1])


class RunCheckpoints:
    """The checkpoints of one run: where they are, which fingerprint they must carry, what was resumed."""

    def __init__(
        self, storage: Storage, output_uri: str, run_fingerprint: str, work_dir: Path, *, every_minutes: float
    ) -> None:
        self.storage = storage
        self.folder = join_uri(output_uri, CHECKPOINTS_FOLDER)
        self.fingerprint = run_fingerprint
        self.work_dir = work_dir / CHECKPOINTS_FOLDER
        self.every_seconds = every_minutes * 60
        self.reused_steps: list[int] = []
        self.resumed: tuple[int, int, int] | None = None
        self.random_layers: list[str] = []

    def step(self, index: int, seed: int) -> StepCheckpoint:
        return StepCheckpoint(self, index, seed)

    def _uri(self, name: str) -> str:
        return join_uri(self.folder, name)

    def load(self, index: int) -> TrainingState | None:
        """The step's last state, if a record of this run's fingerprint names a complete npz."""
        record_uri, arrays_uri = self._uri(f"training-{index}.json"), self._uri(f"training-{index}.npz")
        if not self.storage.exists(record_uri):
            return None
        self.work_dir.mkdir(parents=True, exist_ok=True)
        record_file, arrays_file = self.work_dir / f"training-{index}.json", self.work_dir / f"training-{index}.npz"
        self.storage.download(record_uri, record_file)
        try:
            record = json.loads(record_file.read_text())
        except json.JSONDecodeError:
            logger.warning("%s: not JSON; training starts over", record_uri)
            return None
        if record.get("fingerprint") != self.fingerprint:
            logger.info("%s: from another spec or inputs; not resumed", record_uri)
            return None
        if not self.storage.exists(arrays_uri):
            return None
        self.storage.download(arrays_uri, arrays_file)
        if sha256_of(arrays_file) != record.get("sha256"):
            logger.warning("%s does not match its record; training starts over", arrays_uri)
            return None
        best = _unpacked(arrays_file, "best")
        validation = record.get("validation")
        return TrainingState(
            epoch=int(record["epoch"]),
            batches=int(record["batches"]),
            weights=_unpacked(arrays_file, "weights"),
            optimizer=_unpacked(arrays_file, "optimizer"),
            scores=[(float(a), float(b)) for a, b in record["scores"]],
            best_epoch=record.get("bestEpoch"),
            best_score=_score(record.get("bestScore")),
            best_weights=best or None,
            finished=bool(record["finished"]),
            metrics={str(key): float(value) for key, value in record.get("metrics", {}).items()},
            validation=Validation.model_validate(validation) if validation else None,
        )

    def save(self, index: int, state: TrainingState) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        arrays_file, record_file = self.work_dir / f"training-{index}.npz", self.work_dir / f"training-{index}.json"
        arrays_file.write_bytes(_packed(state))
        record = {
            "fingerprint": self.fingerprint,
            "sha256": sha256_of(arrays_file),
            "epoch": state.epoch,
            "batches": state.batches,
            "scores": [list(score) for score in state.scores],
            "bestEpoch": state.best_epoch,
            "bestScore": list(state.best_score) if state.best_score is not None else None,
            "finished": state.finished,
            "metrics": state.metrics,
            "validation": state.validation.to_wire() if state.validation is not None else None,
            "savedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        record_file.write_text(json.dumps(record) + "\n")
        self.storage.upload(arrays_file, self._uri(f"training-{index}.npz"))
        self.storage.upload(record_file, self._uri(f"training-{index}.json"))

    def remove(self) -> None:
        """Deletes every record a run of at most MAX_STEPS steps can have written (the JSON first)."""
        for index in range(MAX_STEPS):
            for suffix in ("json", "npz"):
                self.storage.delete(self._uri(f"training-{index}.{suffix}"))
        if isinstance(self.storage, LocalStorage):
            folder = local_path(self.folder)
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()

    def resumption(self) -> Resumption | None:
        """What the report says about resuming; None when the run started from scratch."""
        if not self.reused_steps and self.resumed is None:
            return None
        step, epoch, batches = self.resumed if self.resumed is not None else (None, None, None)
        return Resumption(
            checkpoints=self.folder + "/",
            fingerprint=self.fingerprint,
            reused_steps=self.reused_steps,
            resumed_step=step,
            resumed_from_epoch=epoch,
            resumed_from_batch=batches or None,
            random_layers=self.random_layers,
        )


class StepCheckpoint:
    """One fine-tuning step's checkpoints (a no-op without ``run``: checkpoints off or a local helper call)."""

    def __init__(self, run: RunCheckpoints | None, index: int, seed: int) -> None:
        self.run = run
        self.index = index
        self.seed = seed
        self._last_save = time.monotonic()

    def load(self) -> TrainingState | None:
        return self.run.load(self.index) if self.run is not None else None

    def save(self, state: TrainingState) -> None:
        if self.run is not None:
            self.run.save(self.index, state)
        self._last_save = time.monotonic()

    def due(self) -> bool:
        """Whether everyMinutes passed since the last checkpoint (checked after each mini-batch)."""
        return self.run is not None and time.monotonic() - self._last_save >= self.run.every_seconds

    def resumed_from(self, state: TrainingState, random_layers: list[str]) -> None:
        """Records that this step went on from ``state`` (finished: reused)."""
        if self.run is None:
            return
        if state.finished:
            self.run.reused_steps.append(self.index)
            return
        self.run.resumed = (self.index, state.epoch, state.batches)
        self.run.random_layers = random_layers


def disabled(seed: int = 0) -> StepCheckpoint:
    """A step checkpoint that writes and finds nothing."""
    return StepCheckpoint(None, -1, seed)
