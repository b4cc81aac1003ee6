"""The dataset: a NumPy .npz with x_train, y_train, x_eval, y_eval (labels optional)."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError

KNOWN_ARRAYS = ("x_train", "y_train", "x_eval", "y_eval")


@dataclass(frozen=True)
class Dataset:
    x_train: np.ndarray | None
    y_train: np.ndarray | None
    x_eval: np.ndarray
    y_eval: np.ndarray | None

    @property
    def has_labels(self) -> bool:
        return self.y_eval is not None


def load_dataset(path: Path, source: str) -> Dataset:
    """Read and check a dataset file; every problem names the array and the URI."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise InputError(f"{source}: not a readable .npz dataset ({error})") from None
    unknown = sorted(set(arrays) - set(KNOWN_ARRAYS))
    if unknown:
        raise InputError(f"{source}: unexpected arrays {unknown}; expected some of {list(KNOWN_ARRAYS)}")
    if "x_eval" not in arrays:
        raise InputError(f"{source}: the dataset has no x_eval array")
    for name, array in arrays.items():
        if array.dtype.kind not in "biuf":
            raise InputError(f"{source}: {name} has dtype {array.dtype}, expected numbers")
        if name.startswith("x_") and len(array) == 0:
            raise InputError(f"{source}: {name} is empty")
    for split in ("train", "eval"):
        x, y = arrays.get(f"x_{split}"), arrays.get(f"y_{split}")
        if y is not None and x is None:
            raise InputError(f"{source}: y_{split} without x_{split}")
        if x is not None and y is not None and len(x) != len(y):
            raise InputError(f"{source}: x_{split} has {len(x)} samples but y_{split} has {len(y)}")
    if ("y_train" in arrays) != ("y_eval" in arrays) and "x_train" in arrays:
        raise InputError(f"{source}: give labels for both splits (y_train and y_eval) or for neither")
    return Dataset(
        x_train=_as_float(arrays.get("x_train")),
        y_train=arrays.get("y_train"),
        x_eval=_as_float(arrays["x_eval"]),  # type: ignore[arg-type]
        y_eval=arrays.get("y_eval"),
    )


def _as_float(array: np.ndarray | None) -> np.ndarray | None:
    return None if array is None else array.astype(np.float32, copy=False)


def check_input_shape(dataset: Dataset, expected: tuple[int | None, ...], source: str) -> None:
    """Fail early when the samples do not fit the model's input (batch dimension excluded)."""
    for name, array in (("x_train", dataset.x_train), ("x_eval", dataset.x_eval)):
        if array is None:
            continue
        sample = tuple(array.shape[1:])
        fits = len(sample) == len(expected) and all(
            want is None or want == got for want, got in zip(expected, sample, strict=True)
        )
        if not fits:
            shown = tuple("?" if dim is None else dim for dim in expected)
            raise InputError(f"{source}: {name} samples have shape {sample} but the model expects {shown}")


def training_arrays(dataset: Dataset, step: str) -> tuple[np.ndarray, np.ndarray | None]:
    if dataset.x_train is None:
        raise InputError(f"{step}: the dataset has no x_train array to fine-tune on")
    return dataset.x_train, dataset.y_train
