"""Pure planning helpers: no TensorFlow, unit-tested without a model."""

from __future__ import annotations

import math
from dataclasses import dataclass

from edgecompress_contract.report import Quantizer
from edgecompress_contract.spec import PruneStep, PtqMode, PtqStep

from .errors import InputError


def steps_per_epoch(samples: int, batch_size: int) -> int:
    return max(1, math.ceil(samples / batch_size))


def pruning_plan(step: PruneStep, total_steps: int, index: int) -> tuple[int, int, int]:
    """(begin, end, frequency) checked against the optimizer steps fine-tuning will run.

    tfmot prunes at steps begin + k * frequency up to end; a frequency wider than that window
    never prunes and silently leaves the model dense, so it is rejected here. The default
    frequency prunes about ten times, the last time within 2 % of the window before ``end``.
    """
    last_step = total_steps - 1
    where = f"steps[{index}]"
    end = step.end_step if step.end_step is not None else last_step
    if step.begin_step >= last_step:
        raise InputError(
            f"{where}.beginStep: {step.begin_step} is not before the last fine-tuning step {last_step}; "
            "pruning would never run"
        )
    if end > last_step:
        raise InputError(
            f"{where}.endStep: {end} is after the last fine-tuning step {last_step} "
            f"({step.fine_tune.epochs} epochs); the target sparsity would not be reached"
        )
    window = end - step.begin_step
    if step.frequency is not None:
        if step.frequency > window:
            raise InputError(
                f"{where}.frequency: {step.frequency} exceeds the pruning window of {window} steps; "
                "pruning would never happen (0 % sparsity)"
            )
        return step.begin_step, end, step.frequency
    most = max(1, window // 10)
    slack = max(1, window // 50)
    frequency = max(candidate for candidate in range(1, most + 1) if window % candidate <= slack)
    return step.begin_step, end, frequency


@dataclass(frozen=True)
class ConversionPlan:
    """What the steps tell the conversion; each step type returns an updated copy (see ``steps``)."""

    pruned_layers: tuple[str, ...] = ()
    # Per pruned layer, the weights tfmot pruned in it (what later steps report the sparsity of).
    pruned_weights: tuple[tuple[str, tuple[str, ...]], ...] = ()
    clustered: bool = False
    qat_applied: bool = False
    # QAT left some layers float, so float kernels must stay allowed next to the int8 ones.
    qat_kept_float: bool = False
    ptq: PtqStep | None = None
    # The model an auto step picked: the result as it is, no conversion.
    searched_model: bytes | None = None
    # What made it: litert-quantizer's recipes, or the LiteRT converter (its own PTQ, or a trial's QAT model).
    searched_quantizer: Quantizer = "litertQuantizer"

    @property
    def mode(self) -> str:
        """The final mode: auto after a search, the ptq step's, else qat after QAT, else float."""
        if self.searched_model is not None:
            return "auto"
        if self.ptq is not None:
            return PtqMode(self.ptq.mode).value
        return "qat" if self.qat_applied else "float"

    @property
    def sparse(self) -> bool:
        """Pruned weights are encoded sparse only in float subgraphs (XNNPACK sparse inference)."""
        return bool(self.pruned_layers) and self.mode in ("float", "float16")


FLOAT_PLAN = ConversionPlan()
"""The baseline: a plain float conversion."""
