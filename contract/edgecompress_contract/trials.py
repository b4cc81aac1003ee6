"""The auto step's training trials: what each one runs, as a job of its own, and where its result goes.

A trial is the job's spec with the auto step replaced by the steps of a training preset, its output in
``trials/<index>/`` under the job's output, and no gates or promotion: the search judges the trial's
``.tflite`` against the gates itself, beside its post-training candidates. The operator runs trial ``i``
as index ``i`` of an Indexed Job; a local run runs the trials one after another.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .spec import (
    AutoStep,
    ClusterStep,
    CompressionJobSpec,
    FineTune,
    Gates,
    Output,
    PruneStep,
    PtqMode,
    PtqStep,
    QatStep,
    Step,
    TrainingPreset,
    TrainingTrial,
)

__all__ = [
    "TRIAL_RECORD_NAME",
    "TRIALS_FOLDER",
    "auto_step",
    "preset_steps",
    "trial_folder",
    "trial_name",
    "trial_spec",
    "trials_of",
]

TRIALS_FOLDER = "trials"
"""Under the job's output: each trial's folder (``<index>/``) and the search's content-addressed records."""
TRIAL_RECORD_NAME = "trial.json"
"""In a trial's folder: its ``TrialRecord``, written after its model.tflite and report.json."""


def preset_steps(preset: TrainingPreset, fine_tune: FineTune, skip_layers: Sequence[str] = ()) -> list[Step]:
    """The steps a training preset runs, each fine-tuned with ``fine_tune`` and leaving ``skip_layers`` as they are."""
    common: dict[str, Any] = {"fine_tune": fine_tune, "skip_layers": list(skip_layers)}
    qat = QatStep(type="qat", **common)
    if preset == TrainingPreset.QAT:
        return [qat]
    if preset == TrainingPreset.PRUNE30_QAT:
        return [PruneStep(type="prune", target_sparsity=0.3, **common), qat]
    if preset == TrainingPreset.PRUNE50_QAT:
        return [PruneStep(type="prune", target_sparsity=0.5, **common), qat]
    if preset == TrainingPreset.CLUSTER16_QAT:
        return [ClusterStep(type="cluster", number_of_clusters=16, **common), qat]
    if preset == TrainingPreset.PRUNE50_INT8:
        return [
            PruneStep(type="prune", target_sparsity=0.5, **common),
            PtqStep(type="ptq", mode=PtqMode.INT8, skip_layers=list(skip_layers)),
        ]
    raise ValueError(f"unknown training preset {preset!r}")


def auto_step(spec: CompressionJobSpec) -> AutoStep | None:
    """The spec's auto step (always its only step), or None."""
    step = spec.steps[0]
    return step if isinstance(step, AutoStep) else None


def trials_of(spec: CompressionJobSpec) -> list[TrainingTrial]:
    """The training trials of the spec's auto step (none without one)."""
    step = auto_step(spec)
    return list(step.trials) if step is not None else []


def trial_folder(output_uri: str, index: int) -> str:
    """Where trial ``index`` writes its artifacts: ``trials/<index>/`` under the job's output."""
    return f"{output_uri.rstrip('/')}/{TRIALS_FOLDER}/{index}/"


def trial_name(index: int, preset: str) -> str:
    """The trial's name among the search's candidates, e.g. ``trial0-prune50Qat``."""
    return f"trial{index}-{TrainingPreset(preset).value}"


def trial_spec(spec: CompressionJobSpec, index: int) -> CompressionJobSpec:
    """The job trial ``index`` of the spec's auto step runs: its preset's steps, into its own folder, ungated.

    Raises:
        IndexError: The auto step has no trial ``index`` (or the spec no auto step).
    """
    trials = trials_of(spec)
    if not 0 <= index < len(trials):
        raise IndexError(f"trial {index}: the auto step has {len(trials)} trials")
    trial = trials[index]
    return spec.model_copy(
        update={
            "steps": preset_steps(trial.preset, trial.fine_tune, trial.skip_layers),
            "gates": Gates(),
            "output": Output(uri=trial_folder(spec.output.uri, index), overwrite=True),
            "promotion": None,
        }
    )
