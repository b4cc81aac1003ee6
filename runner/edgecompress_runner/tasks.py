"""What each model output is (its task) and how one output is judged: against labels and against the baseline.

The task of an output is inferred from the baseline's outputs on the evaluation samples (and its labels),
unless ``spec.evaluation.outputs`` names it:

- one value per sample (shape ``(N,)`` or ``(N, 1)``) in [0, 1]: **binary**;
- a vector per sample (``(N, K)``, K >= 2) whose rows are probability distributions: **multiclass**;
- a vector per sample in [0, 1] whose rows are not distributions: **multilabel**;
- any other vector per sample (``(N, K)``, K >= 2, e.g. logits): **multiclass**, unless its labels are
  floats that are not class scores (then **regression**);
- anything else (one unbounded value, or several axes per sample such as a framewise or dense map):
  **regression**.

Pure NumPy, no TensorFlow: the runner's evaluation and its fine-tuning both use it.
"""

from __future__ import annotations

import numpy as np

from edgecompress_contract.spec import CLASSIFIER_TASKS, OutputSetting, OutputTask

from .errors import InputError

SNR_CAP_DB = 200.0
"""The SNR reported for outputs identical to the baseline's (no error at all)."""

THRESHOLD = 0.5


def is_classifier(task: str) -> bool:
    return task in CLASSIFIER_TASKS


def _are_distributions(values: np.ndarray) -> bool:
    return bool(values.min() >= 0 and np.allclose(values.sum(axis=-1), 1.0, atol=1e-3))


def _in_unit_range(values: np.ndarray) -> bool:
    return bool(values.min() >= 0 and values.max() <= 1)


def infer_task(outputs: np.ndarray, labels: np.ndarray | None = None) -> OutputTask:
    """The task of one output, from the baseline's values on the evaluation samples (see the module doc)."""
    per_sample = outputs.shape[1:]
    if len(per_sample) == 0 or per_sample == (1,):
        return OutputTask.BINARY if _in_unit_range(outputs) else OutputTask.REGRESSION
    if len(per_sample) != 1:
        return OutputTask.REGRESSION
    if _are_distributions(outputs):
        return OutputTask.MULTICLASS
    if _in_unit_range(outputs):
        return OutputTask.MULTILABEL
    if labels is not None and labels.dtype.kind == "f" and labels.shape == outputs.shape:
        return OutputTask.MULTICLASS if _are_distributions(labels) else OutputTask.REGRESSION
    return OutputTask.MULTICLASS


def output_tasks(
    settings: list[OutputSetting], outputs: dict[str, np.ndarray], labels: dict[str, np.ndarray]
) -> dict[str, str]:
    """Each output's task: as spec.evaluation.outputs sets it, else inferred from the baseline's outputs."""
    chosen = {}
    for index, setting in enumerate(settings):
        if setting.name not in outputs:
            raise InputError(
                f"spec.evaluation.outputs[{index}].name: the model has no output {setting.name!r}; "
                f"its outputs are {list(outputs)}"
            )
        chosen[setting.name] = str(setting.task)
    return {
        name: chosen.get(name) or str(infer_task(values, labels.get(name)).value) for name, values in outputs.items()
    }


def label_targets(task: str, labels: np.ndarray, outputs: np.ndarray, where: str) -> np.ndarray:
    """The labels in the outputs' form: class indices (multiclass), 0/1 decisions (binary, multilabel) or values
    (regression); a label array that does not fit the output is an error naming it."""
    per_sample = outputs.shape[1:]
    if task == OutputTask.MULTICLASS:
        if labels.shape == outputs.shape:
            return np.asarray(labels.argmax(-1))
        if labels.shape == outputs.shape[:-1] and labels.dtype.kind in "iub":
            classes = outputs.shape[-1]
            if labels.size and (labels.min() < 0 or labels.max() >= classes):
                raise InputError(
                    f"{where}: class labels range {int(labels.min())}..{int(labels.max())} but the output has "
                    f"{classes} classes"
                )
            return labels
        raise InputError(
            f"{where}: labels of shape {labels.shape[1:]} do not fit a multiclass output of shape {per_sample}: "
            f"give class indices of shape {per_sample[:-1]} or one-hot rows of shape {per_sample}"
        )
    if labels.size != outputs.size:
        raise InputError(f"{where}: labels of shape {labels.shape[1:]} do not fit the output's shape {per_sample}")
    reshaped = labels.reshape(outputs.shape)
    if task == OutputTask.REGRESSION:
        return reshaped.astype(np.float64)
    return reshaped >= THRESHOLD


def decisions(task: str, outputs: np.ndarray) -> np.ndarray:
    """Top-1 classes (multiclass) or decisions at 0.5 (binary, multilabel)."""
    return np.asarray(outputs.argmax(-1) if task == OutputTask.MULTICLASS else outputs >= THRESHOLD)


def label_quality(task: str, outputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Accuracy (classifiers) or mean absolute error to the labels (regression), from ``label_targets``."""
    if task == OutputTask.REGRESSION:
        return {"label_mean_abs_error": round(float(np.abs(outputs - targets).mean()), 6)}
    return {"accuracy": round(float((decisions(task, outputs) == targets).mean()), 4)}


def snr_db(outputs: np.ndarray, reference: np.ndarray) -> float:
    """10 log10(sum reference^2 / sum error^2), capped at +-SNR_CAP_DB (identical outputs: the cap)."""
    signal = float(np.square(reference.astype(np.float64)).sum())
    noise = float(np.square(outputs.astype(np.float64) - reference).sum())
    if noise == 0:
        return SNR_CAP_DB
    if signal == 0:
        return -SNR_CAP_DB
    return float(np.clip(10 * np.log10(signal / noise), -SNR_CAP_DB, SNR_CAP_DB))


def cosine_similarity(outputs: np.ndarray, reference: np.ndarray) -> float:
    """Mean over samples of the cosine of the angle between the flattened outputs (1 where both are zero)."""
    a = outputs.reshape(len(outputs), -1).astype(np.float64)
    b = reference.reshape(len(reference), -1).astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    both_zero = (np.linalg.norm(a, axis=1) == 0) & (np.linalg.norm(b, axis=1) == 0)
    cosines = np.where(both_zero, 1.0, (a * b).sum(axis=1) / np.where(norms == 0, 1.0, norms))
    return float(cosines.mean())


def fidelity(task: str, outputs: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """How close one output is to the baseline's: agreement (classifiers), SNR, cosine similarity, MAE."""
    found = {
        "snr_db": round(snr_db(outputs, reference), 4),
        "cosine_similarity": round(cosine_similarity(outputs, reference), 6),
        "mean_abs_error": round(float(np.abs(outputs.astype(np.float64) - reference).mean()), 6),
    }
    if is_classifier(task):
        found["agreement"] = round(float((decisions(task, outputs) == decisions(task, reference)).mean()), 4)
    return found
