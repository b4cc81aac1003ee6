"""Sharded datasets: a folder or S3 prefix of ``.npz`` shards, trained on through ``tf.data`` in bounded memory.

``dataset.uri`` ending in ``/`` (or naming a local folder) is a prefix of shards: every ``*.npz`` directly
under it, in name order. Each shard holds the arrays of a single-file dataset: ``x_train`` (and optionally
``y_train``), or ``x_train/<input>`` and ``y_train/<output>`` for several inputs and outputs, with the same
names, per-sample shapes and dtypes in every shard (sample counts may differ). ``x_eval`` / ``y_eval`` may be
in any shards (the ones that have them agree likewise); the evaluation slice is taken from them in shard order.

The run reads the shards once up front (``scan``), one at a time, to check them, count their samples and keep
only the small slices the run needs in memory: the evaluation slice, the first training samples (calibration),
and a seeded held-out slice per fine-tuning ``validationSplit`` (at most ``MAX_HELD_OUT`` samples in all,
spread over the shards). Fine-tuning then streams the rest every epoch (``ShardStream``): shards in a seeded
order that changes every epoch, ``INTERLEAVED_SHARDS`` open at a time (an S3 shard is downloaded to the work
folder and deleted when read), samples shuffled across them in a buffer of ``SHUFFLE_BUFFER_BYTES``, stored
dtypes kept until a batch is formed.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgecompress_contract.report import DatasetShards, ShardFile, Streaming

from .data import SINGLE, Arrays, Dataset, ModelTensor, read_splits
from .errors import InputError
from .storage import Storage, local_path, sha256_of

SHARD_SUFFIX = ".npz"
MAX_HELD_OUT = 4096
MAX_HELD_OUT_BYTES = 32 << 20
"""Held-out samples kept in memory per validation share, over all shards: at most this many, and at most this
many bytes as stored (the held-out slice keeps its stored dtype; predictions cast it batch by batch)."""
INTERLEAVED_SHARDS = 2
SHUFFLE_BUFFER_BYTES = 16 << 20
CHUNK_SAMPLES = 256
"""Samples handed to tf.data at a time from an open shard."""
HELD_OUT_SEED = 0


def is_sharded(uri: str) -> bool:
    """A prefix (``.../``) or a local folder: a dataset of shards rather than one ``.npz``."""
    if uri.endswith("/"):
        return True
    return ("://" not in uri or uri.startswith("file://")) and local_path(uri).is_dir()


def _is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


@dataclass(frozen=True)
class ArraySpec:
    """One array of every shard: its per-sample shape and stored dtype."""

    shape: tuple[int, ...]
    dtype: np.dtype


@dataclass
class ShardCounter:
    """What streaming read so far (updated by the tf.data reader)."""

    shards_read: int = 0
    samples_seen: int = 0


@dataclass(frozen=True)
class Shards:
    """The training part of a sharded dataset: where the shards are and what each holds.

    ``x`` / ``y`` map the dataset's array names (``SINGLE`` or the input and output names once bound) to the
    name stored in the shards and the array's spec. ``held_out`` gives, per validation share, each shard's
    held-out positions and the held-out samples themselves (x, y).
    """

    uris: tuple[str, ...]
    samples: tuple[int, ...]
    x: dict[str, tuple[str, ArraySpec]]
    y: dict[str, tuple[str, ArraySpec]]
    held_out: dict[float, tuple[tuple[np.ndarray, ...], Arrays, Arrays]]
    value_ranges: dict[str, tuple[float, float]]
    storage: Storage
    work_dir: Path
    source: str
    input_types: dict[str, np.dtype] = field(default_factory=dict)

    def held_out_positions(self, share: float) -> tuple[np.ndarray, ...]:
        return self.held_out[share][0] if share in self.held_out else tuple(np.arange(0) for _ in self.uris)

    def held_out_arrays(self, share: float) -> tuple[Arrays, Arrays]:
        if share not in self.held_out:
            return {}, {}
        _, x, y = self.held_out[share]
        return x, y

    def label_range(self, output: str) -> tuple[float, float] | None:
        stored = self.y.get(output)
        return None if stored is None else self.value_ranges.get(stored[0])

    def bind(self, inputs: Sequence[ModelTensor], outputs: Sequence[str]) -> Shards:
        """Keys the arrays by the model's input and output names and checks each input's shape and values."""
        from .data import check_inputs, rename

        x = rename(self.x, "x_train", [tensor.name for tensor in inputs], self.source)
        y = rename(self.y, "y_train", list(outputs), self.source)
        empty = {name: np.zeros((0, *spec.shape), spec.dtype) for name, (_, spec) in x.items()}
        check_inputs(empty, inputs, "x_train", self.source)
        for tensor in inputs:
            stored, _ = x[tensor.name]
            low, high = self.value_ranges.get(stored, (0, 0))
            if tensor.dtype.kind in "iu":
                limits = np.iinfo(tensor.dtype)
                if low < limits.min or high > limits.max:
                    raise InputError(
                        f"{self.source}: {stored} has values outside the {tensor.dtype} range of the model input"
                    )
        held_out = {
            share: (positions, rename(hx, "x_train", list(x), self.source), rename(hy, "y_train", list(y), self.source))
            for share, (positions, hx, hy) in self.held_out.items()
        }
        return replace(self, x=x, y=y, held_out=held_out, input_types={tensor.name: tensor.dtype for tensor in inputs})

    @property
    def train_samples(self) -> int:
        return sum(self.samples)

    def load(self, index: int) -> dict[str, np.ndarray]:
        """The shard's training arrays by stored name (a downloaded shard is deleted once read)."""
        splits, _, _ = _read_shard(self.uris[index], self.storage, self.work_dir / "shards" / f"{index:06d}.npz")
        return {
            _stored(split, name): array for split in ("x_train", "y_train") for name, array in splits[split].items()
        }


def _stored(split: str, name: str) -> str:
    return split if name == SINGLE else f"{split}/{name}"


def list_shards(uri: str, storage: Storage) -> list[str]:
    shards = [name for name in storage.list(uri) if name.endswith(SHARD_SUFFIX)]
    if not shards:
        raise InputError(f"{uri}: no {SHARD_SUFFIX} shards under this prefix")
    return shards


def _held_out_positions(samples: int, share: float, per_shard_cap: int, shard_index: int) -> np.ndarray:
    """A seeded random share of a shard's positions (at most ``per_shard_cap``), sorted."""
    count = min(int(samples * share), per_shard_cap)
    if count == 0 or samples - count < 1:
        return np.arange(0)
    order = np.random.default_rng([HELD_OUT_SEED, shard_index]).permutation(samples)
    return np.sort(order[:count])


def _name(stored: str) -> str:
    """The array name in a stored key (``SINGLE`` for ``x_train``)."""
    return stored.partition("/")[2] or SINGLE


def _specs(splits: dict[str, Arrays], split: str) -> dict[str, tuple[str, ArraySpec]]:
    return {
        name: (_stored(split, name), ArraySpec(shape=tuple(array.shape[1:]), dtype=array.dtype))
        for name, array in splits[split].items()
    }


def _check_same(
    expected: dict[str, tuple[str, ArraySpec]], found: dict[str, tuple[str, ArraySpec]], uri: str, first: str
) -> None:
    """Every shard's arrays of a split agree with the first shard's: the same names, shapes and dtypes."""
    for name, (stored, spec) in expected.items():
        if name not in found:
            raise InputError(f"{uri}: shard has no array {stored} (the shard {first} has it)")
        other = found[name][1]
        if other.shape != spec.shape or other.dtype != spec.dtype:
            raise InputError(
                f"{uri}: array {stored} has samples of shape {other.shape} and dtype {other.dtype}, but in "
                f"{first} of shape {spec.shape} and dtype {spec.dtype}; every shard must agree"
            )
    extra = sorted(set(found) - set(expected))
    if extra:
        raise InputError(f"{uri}: shard has array {found[extra[0]][0]}, which the shard {first} does not have")


class _Filling:
    """Arrays of a known most samples filled shard by shard without copies: the buffer is allocated up front and
    its pages become resident only as they are written."""

    def __init__(self, specs: dict[str, tuple[str, ArraySpec]], most: int) -> None:
        self.arrays = {name: np.empty((most, *spec.shape), spec.dtype) for name, (_, spec) in specs.items()}
        self.count = 0

    def add(self, arrays: Arrays, positions: np.ndarray) -> None:
        for name, array in arrays.items():
            self.arrays[name][self.count : self.count + len(positions)] = array[positions]
        self.count += len(positions)

    def filled(self) -> Arrays:
        return {name: array[: self.count] for name, array in self.arrays.items()}


def _grow(kept: Arrays, arrays: Arrays, room: int) -> None:
    for name, array in arrays.items():
        part = array[:room]
        kept[name] = part.copy() if name not in kept else np.concatenate([kept[name], part])


def scan(
    uri: str,
    storage: Storage,
    work_dir: Path,
    *,
    eval_samples: int,
    calibration_samples: int,
    held_out_shares: Sequence[float],
) -> tuple[Dataset, DatasetShards]:
    """Reads every shard once, one at a time: checks them and keeps the slices the run materializes."""
    uris = list_shards(uri, storage)
    per_shard_cap = 0
    shares = sorted({share for share in held_out_shares if share > 0})
    x_specs: dict[str, tuple[str, ArraySpec]] = {}
    y_specs: dict[str, tuple[str, ArraySpec]] = {}
    eval_specs: dict[str, tuple[str, ArraySpec]] = {}
    eval_first = ""
    x_eval: Arrays = {}
    y_eval: Arrays = {}
    x_first: Arrays = {}
    y_first: Arrays = {}
    held_positions: dict[float, list[np.ndarray]] = {share: [] for share in shares}
    held_x: dict[float, _Filling] = {}
    held_y: dict[float, _Filling] = {}
    ranges: dict[str, tuple[float, float]] = {}
    counts: list[int] = []
    files: list[ShardFile] = []
    for index, shard_uri in enumerate(uris):
        splits, sha256, size = _read_shard(shard_uri, storage, work_dir / "shards" / f"scan-{index:06d}.npz")
        if not splits["x_train"]:
            raise InputError(f"{shard_uri}: shard has no x_train array")
        found_x, found_y = _specs(splits, "x_train"), _specs(splits, "y_train")
        if index == 0:
            x_specs, y_specs = found_x, found_y
            sample_bytes = sum(int(np.prod(spec.shape)) * spec.dtype.itemsize for _, spec in found_x.values())
            most = min(MAX_HELD_OUT, MAX_HELD_OUT_BYTES // max(1, sample_bytes))
            per_shard_cap = max(1, most // len(uris))
            for share in shares:
                held_x[share] = _Filling(found_x, per_shard_cap * len(uris))
                held_y[share] = _Filling(found_y, per_shard_cap * len(uris))
        else:
            _check_same(x_specs, found_x, shard_uri, uris[0])
            _check_same(y_specs, found_y, shard_uri, uris[0])
        if splits["x_eval"]:
            found_eval = {
                stored: (stored, spec)
                for split in ("x_eval", "y_eval")
                for stored, spec in _specs(splits, split).values()
            }
            if not eval_specs:
                eval_specs, eval_first = found_eval, shard_uri
            else:
                _check_same(eval_specs, found_eval, shard_uri, eval_first)
            room = eval_samples - (len(next(iter(x_eval.values()))) if x_eval else 0)
            if room > 0:
                _grow(x_eval, splits["x_eval"], room)
                _grow(y_eval, splits["y_eval"], room)
        train_count = len(next(iter(splits["x_train"].values())))
        for name, array in [*splits["x_train"].items(), *splits["y_train"].items()]:
            if array.dtype.kind in "biu" and array.size:
                stored = _stored("x_train" if name in splits["x_train"] else "y_train", name)
                low, high = ranges.get(stored, (math.inf, -math.inf))
                ranges[stored] = (min(low, float(array.min())), max(high, float(array.max())))
        room = calibration_samples - (len(next(iter(x_first.values()))) if x_first else 0)
        if room > 0:
            _grow(x_first, splits["x_train"], room)
            _grow(y_first, splits["y_train"], room)
        for share in shares:
            positions = _held_out_positions(train_count, share, per_shard_cap, index)
            held_positions[share].append(positions)
            held_x[share].add(splits["x_train"], positions)
            held_y[share].add(splits["y_train"], positions)
        counts.append(train_count)
        files.append(ShardFile(uri=shard_uri, sha256=sha256, bytes=size, train_samples=train_count))
    if not x_eval:
        raise InputError(f"{uri}: no shard has an x_eval array")
    if {stored for stored, _ in y_specs.values()} != {
        _stored("y_train", _name(key)) for key in eval_specs if key.startswith("y_eval")
    }:
        raise InputError(
            f"{uri}: give labels for both splits (y_train and y_eval) or for neither, in every shard that has the split"
        )
    held_out = {
        share: (
            tuple(held_positions[share]),
            held_x[share].filled(),
            held_y[share].filled(),
        )
        for share in shares
    }
    shards = Shards(
        uris=tuple(uris),
        samples=tuple(counts),
        x=x_specs,
        y=y_specs,
        held_out=held_out,
        value_ranges=ranges,
        storage=storage,
        work_dir=work_dir,
        source=uri,
    )
    dataset = Dataset(x_train=x_first, y_train=y_first, x_eval=x_eval, y_eval=y_eval, source=uri, shards=shards)
    digest = shards_sha256([(file.uri, file.sha256) for file in files])
    record = DatasetShards(
        count=len(uris), train_samples=sum(counts), bytes=sum(file.bytes for file in files), sha256=digest, files=files
    )
    return dataset, record


def shards_sha256(files: Sequence[tuple[str, str]]) -> str:
    """A sharded dataset's checksum: the SHA-256 of each shard's URI and SHA-256, in name order."""
    return hashlib.sha256("".join(f"{uri} {sha256}\n" for uri, sha256 in files).encode()).hexdigest()


def sharded_dataset_sha256(uri: str, storage: Storage, work_dir: Path) -> str:
    """The checksum ``scan`` records for the shards under ``uri``, reading only their bytes (one at a time)."""
    files = []
    for index, shard_uri in enumerate(list_shards(uri, storage)):
        if _is_local(shard_uri):
            files.append((shard_uri, sha256_of(local_path(shard_uri))))
            continue
        download_to = work_dir / "shards" / f"digest-{index:06d}.npz"
        download_to.parent.mkdir(parents=True, exist_ok=True)
        storage.download(shard_uri, download_to)
        try:
            files.append((shard_uri, sha256_of(download_to)))
        finally:
            download_to.unlink(missing_ok=True)
    return shards_sha256(files)


def _read_shard(uri: str, storage: Storage, download_to: Path) -> tuple[dict[str, Arrays], str, int]:
    """One shard's arrays by split, its checksum and size; an S3 shard is downloaded, read and deleted."""
    if _is_local(uri):
        path = local_path(uri)
        return read_splits(path, uri), sha256_of(path), path.stat().st_size
    download_to.parent.mkdir(parents=True, exist_ok=True)
    storage.download(uri, download_to)
    try:
        return read_splits(download_to, uri), sha256_of(download_to), download_to.stat().st_size
    finally:
        download_to.unlink(missing_ok=True)


@dataclass
class ShardStream:
    """The training stream of one fine-tuning step: (inputs, targets) batches through tf.data.

    ``targets`` turns a batch of inputs (cast to the model's types) and stored labels into what the model is
    fitted to (the teacher's outputs packed with the labels); it runs inside the pipeline, per batch.
    """

    shards: Shards
    held_out_share: float
    batch_size: int
    counter: ShardCounter = field(default_factory=ShardCounter)

    @property
    def samples_per_epoch(self) -> int:
        positions = self.shards.held_out_positions(self.held_out_share)
        return self.shards.train_samples - sum(len(held) for held in positions)

    @property
    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(self.samples_per_epoch / self.batch_size))

    def _chunks(self, index: int) -> Iterator[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
        held = self.shards.held_out_positions(self.held_out_share)[int(index)]
        stored = self.shards.load(int(index))
        x = {name: np.delete(stored.pop(key), held, axis=0) for name, (key, _) in self.shards.x.items()}
        y = {name: np.delete(stored.pop(key), held, axis=0) for name, (key, _) in self.shards.y.items()}
        count = len(next(iter(x.values())))
        for start in range(0, count, CHUNK_SAMPLES):
            yield (
                {name: array[start : start + CHUNK_SAMPLES] for name, array in x.items()},
                {name: array[start : start + CHUNK_SAMPLES] for name, array in y.items()},
            )
        self.counter.shards_read += 1
        self.counter.samples_seen += count

    def dataset(self, targets: Any) -> Any:
        """Batches for model.fit; ``targets(x, y)`` maps a batch to (model inputs, fitted targets)."""
        from .tfcompat import tf

        def signature(specs: dict[str, tuple[str, ArraySpec]]) -> dict[str, Any]:
            return {
                name: tf.TensorSpec((None, *spec.shape), tf.as_dtype(spec.dtype)) for name, (_, spec) in specs.items()
            }

        output_signature = (signature(self.shards.x), signature(self.shards.y))
        sample_bytes = sum(int(np.prod(spec.shape)) * spec.dtype.itemsize for _, spec in self.shards.x.values())
        buffer = max(self.batch_size, SHUFFLE_BUFFER_BYTES // max(1, sample_bytes))
        count = len(self.shards.uris)

        def read(index: Any) -> Any:
            return tf.data.Dataset.from_generator(
                self._chunks, args=(index,), output_signature=output_signature
            ).unbatch()

        def to_model(x: dict[str, Any], y: dict[str, Any]) -> Any:
            cast = {name: tf.cast(value, self.shards.input_types[name]) for name, value in x.items()}
            return targets(cast, y)

        stream = (
            tf.data.Dataset.range(count)
            .shuffle(count, reshuffle_each_iteration=True)
            .interleave(read, cycle_length=min(INTERLEAVED_SHARDS, count), block_length=1)
            .shuffle(buffer, reshuffle_each_iteration=True)
            .batch(self.batch_size)
            .map(to_model)
            .prefetch(1)
        )
        return stream.apply(tf.data.experimental.assert_cardinality(self.steps_per_epoch))

    def report(self, epochs: int) -> Streaming:
        return Streaming(
            shards=len(self.shards.uris),
            shards_read=self.counter.shards_read,
            samples_per_epoch=self.samples_per_epoch,
            samples_seen=self.counter.samples_seen,
            held_out=sum(len(held) for held in self.shards.held_out_positions(self.held_out_share)),
            epochs=epochs,
        )
