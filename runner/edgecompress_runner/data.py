"""The dataset: a NumPy .npz with x_train, y_train, x_eval, y_eval (labels optional).

A model with one input and one output takes single arrays (``x_train``, ``y_eval``, ...). With several
inputs or outputs, the arrays are named per input and output, ``x_train/<input>``, ``x_eval/<input>``,
``y_train/<output>``, ``y_eval/<output>``, by the names of the .tflite signature (for tf-keras models
the Input layers' and the output layers' names); labels are optional per output. Named arrays work for
a single-input model too.

Dtypes are kept (float64 becomes float32): token ids stay integers. Once the model's signature is known,
``bind`` keys every array by its input or output name and casts inputs to the model's input types.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from .errors import InputError

if TYPE_CHECKING:
    from .streaming import Shards

KNOWN_ARRAYS = ("x_train", "y_train", "x_eval", "y_eval")
SINGLE = ""
"""The key of a split's array before binding when the dataset gives one unnamed array."""

Arrays = dict[str, np.ndarray]
"""Arrays of one split by input (x) or output (y) name."""


@dataclass(frozen=True)
class ModelTensor:
    """An input or output of the model as the dataset needs it: name, per-sample shape (None: any), dtype."""

    name: str
    shape: tuple[int | None, ...]
    dtype: np.dtype


@dataclass(frozen=True)
class Dataset:
    x_train: Arrays | None
    y_train: Arrays
    x_eval: Arrays
    y_eval: Arrays
    source: str = ""
    shards: Shards | None = None
    """A sharded dataset's training shards, streamed when fine-tuning; ``x_train`` / ``y_train`` then hold only
    its first samples (calibration)."""

    @property
    def has_labels(self) -> bool:
        return bool(self.y_eval)

    def bind(self, inputs: Sequence[ModelTensor], outputs: Sequence[str]) -> Dataset:
        """The arrays keyed by the model's input and output names, inputs cast to the model's types.

        Fails naming the array when one names no input or output, when an input has no array, when the
        samples do not fit the input's shape, or when the values cannot be the input's type.
        """
        input_names = [tensor.name for tensor in inputs]
        x_train = None if self.x_train is None else rename(self.x_train, "x_train", input_names, self.source)
        x_eval = rename(self.x_eval, "x_eval", input_names, self.source)
        return replace(
            self,
            x_train=None if x_train is None else check_inputs(x_train, inputs, "x_train", self.source),
            x_eval=check_inputs(x_eval, inputs, "x_eval", self.source),
            y_train=rename(self.y_train, "y_train", list(outputs), self.source),
            y_eval=rename(self.y_eval, "y_eval", list(outputs), self.source),
            shards=None if self.shards is None else self.shards.bind(inputs, outputs),
        )


def check_inputs(arrays: Arrays, inputs: Sequence[ModelTensor], split: str, source: str) -> Arrays:
    """Every input's array of one split, checked against the input and cast to its type."""
    names = [tensor.name for tensor in inputs]
    fitted = {}
    for tensor in inputs:
        if tensor.name not in arrays:
            raise InputError(
                f"{source}: no array {split}/{tensor.name} for the model input {tensor.name!r} "
                f"(the model's inputs are {names})"
            )
        fitted[tensor.name] = _fitted(arrays[tensor.name], tensor, _shown(split, tensor.name, inputs), source)
    return fitted


def _shown(split: str, name: str, tensors: Sequence[object]) -> str:
    """How the user wrote the array: x_train for a single-input model, else x_train/<name>."""
    return split if len(tensors) == 1 else f"{split}/{name}"


_V = TypeVar("_V")


def rename(arrays: dict[str, _V], split: str, names: list[str], source: str) -> dict[str, _V]:
    """A split's entries keyed by the model's input or output names (an unnamed single array: the only one)."""
    if SINGLE in arrays:
        if len(names) != 1:
            role = "inputs" if split.startswith("x") else "outputs"
            wanted = ", ".join(f"{split}/{name}" for name in names)
            raise InputError(f"{source}: {split} is one array but the model has {role} {names}; give {wanted}")
        return {names[0]: arrays[SINGLE]}
    unknown = sorted(set(arrays) - set(names))
    if unknown:
        role = "input" if split.startswith("x") else "output"
        raise InputError(f"{source}: array {split}/{unknown[0]} names no model {role}; the model's {role}s are {names}")
    return dict(arrays)


def _fitted(array: np.ndarray, tensor: ModelTensor, shown: str, source: str) -> np.ndarray:
    sample = tuple(array.shape[1:])
    expected = tensor.shape
    fits = len(sample) == len(expected) and all(
        want is None or want == got for want, got in zip(expected, sample, strict=True)
    )
    if not fits:
        described = tuple("?" if dim is None else dim for dim in expected)
        raise InputError(f"{source}: {shown} samples have shape {sample} but the model expects {described}")
    if tensor.dtype.kind in "iu":
        if array.dtype.kind not in "biu":
            raise InputError(
                f"{source}: {shown} has dtype {array.dtype} but the model input {tensor.name!r} takes "
                f"{tensor.dtype} (e.g. token ids): give integers"
            )
        limits = np.iinfo(tensor.dtype)
        if array.size and (array.min() < limits.min or array.max() > limits.max):
            raise InputError(f"{source}: {shown} has values outside the {tensor.dtype} range of the model input")
    return array.astype(tensor.dtype, copy=False)


def read_splits(path: Path, source: str) -> dict[str, Arrays]:
    """The arrays of one .npz by split (``x_train``...) and name (``SINGLE`` for an unnamed array), checked:
    known names, numbers, non-empty inputs, one form per split, as many samples in a split's arrays."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise InputError(f"{source}: not a readable .npz dataset ({error})") from None
    splits: dict[str, Arrays] = {split: {} for split in KNOWN_ARRAYS}
    for key, array in arrays.items():
        split, _, name = key.partition("/")
        if split not in splits or (key.endswith("/") and not name):
            raise InputError(
                f"{source}: unexpected arrays {[key]}; expected some of {list(KNOWN_ARRAYS)}, "
                "or x_train/<input>, y_train/<output>, ... per input and output"
            )
        if array.dtype.kind not in "biuf":
            raise InputError(f"{source}: {key} has dtype {array.dtype}, expected numbers")
        if split.startswith("x_") and len(array) == 0:
            raise InputError(f"{source}: {key} is empty")
        splits[split][name or SINGLE] = array.astype(np.float32) if array.dtype == np.float64 else array
    for split, named in splits.items():
        if SINGLE in named and len(named) > 1:
            others = sorted(f"{split}/{name}" for name in named if name)
            raise InputError(f"{source}: give either {split} or arrays named {split}/<name>, not both ({others})")
    for split in ("train", "eval"):
        x, y = splits[f"x_{split}"], splits[f"y_{split}"]
        if y and not x:
            raise InputError(f"{source}: y_{split} without x_{split}")
        counts = {_key(f"x_{split}", name): len(array) for name, array in x.items()}
        counts.update({_key(f"y_{split}", name): len(array) for name, array in y.items()})
        if len(set(counts.values())) > 1:
            (first, first_count), *rest = counts.items()
            other, other_count = next((key, count) for key, count in rest if count != first_count)
            raise InputError(f"{source}: {first} has {first_count} samples but {other} has {other_count}")
    return splits


def load_dataset(path: Path, source: str) -> Dataset:
    """Read and check a dataset file; every problem names the array and the URI."""
    splits = read_splits(path, source)
    if not splits["x_eval"]:
        raise InputError(f"{source}: the dataset has no x_eval array")
    if splits["x_train"] and set(splits["y_train"]) != set(splits["y_eval"]):
        train_only = sorted(set(splits["y_train"]) ^ set(splits["y_eval"]))
        shown = [name or "(the single array)" for name in train_only]
        raise InputError(
            f"{source}: give labels for both splits (y_train and y_eval) or for neither; only one has {shown}"
        )
    return Dataset(
        x_train=splits["x_train"] or None,
        y_train=splits["y_train"],
        x_eval=splits["x_eval"],
        y_eval=splits["y_eval"],
        source=source,
    )


def _key(split: str, name: str) -> str:
    return split if name == SINGLE else f"{split}/{name}"


def samples(arrays: Arrays) -> int:
    """Samples per array (every array of a split has as many)."""
    return len(next(iter(arrays.values())))


def take(arrays: Arrays, count: int) -> Arrays:
    """The first ``count`` samples of every array."""
    return {name: array[:count] for name, array in arrays.items()}


def select(arrays: Arrays, indices: np.ndarray) -> Arrays:
    return {name: array[indices] for name, array in arrays.items()}


def training_arrays(dataset: Dataset, step: str) -> tuple[Arrays, Arrays]:
    if dataset.x_train is None:
        raise InputError(f"{step}: the dataset has no x_train array to fine-tune on")
    return dataset.x_train, dataset.y_train
