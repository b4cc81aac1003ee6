"""The CompressionJob status, written by the operator alone (the CRD's status schema is generated
from these models, so ``kubectl explain compressionjob.status`` documents every field)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .progress import ProgressEvent
from .summary import RunSummary
from .wire import Record

Phase = Literal["Pending", "Running", "Succeeded", "Failed"]
TERMINAL_PHASES: tuple[Phase, ...] = ("Succeeded", "Failed")
CONDITION_TYPES = ("Ready", "Reconciling", "Stalled")


class Condition(Record):
    """A kstatus condition: Ready (succeeded), Reconciling (pending or running) or Stalled (failed)."""

    type: str = Field(description="Ready, Reconciling or Stalled.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="Why, as a CamelCase word.")
    message: str = Field(default="", description="Why, in words.")
    observed_generation: int = Field(description="The metadata.generation this condition describes.")
    last_transition_time: str = Field(description="When status last changed (RFC 3339).")


class StatusProgress(Record):
    """The runner's newest progress event."""

    phase: str = Field(description="download, baseline, steps[i] <type>, convert, evaluate, upload or finished.")
    epoch: int | None = Field(default=None, description="The last finished fine-tuning epoch of this phase.")
    epochs: int | None = Field(default=None, description="Fine-tuning epochs of this phase.")
    percent: float = Field(description="Share of the run done, 0-100.")
    trial: int | None = Field(default=None, description="Candidates the auto step has measured so far.")
    trials: int | None = Field(default=None, description="At most this many (the step's maxTrials).")
    best: str | None = Field(
        default=None, description="The auto step's best candidate so far, e.g. 'mixed-2: 0.312x size, passed'."
    )
    update_time: str | None = Field(default=None, description="When the operator read it (RFC 3339).")

    @classmethod
    def of(cls, event: ProgressEvent, now: str) -> StatusProgress:
        return cls(
            phase=event.phase,
            epoch=event.epoch,
            epochs=event.epochs or None,
            percent=event.percent,
            trial=event.trial,
            trials=event.trials,
            best=event.best,
            update_time=now,
        )

    def same_as(self, other: StatusProgress | None) -> bool:
        """Equal apart from when it was read."""
        return other is not None and self.model_copy(update={"update_time": None}) == other.model_copy(
            update={"update_time": None}
        )


class CompressionJobStatus(Record):
    """Observed state of a CompressionJob."""

    observed_generation: int | None = Field(default=None, description="The metadata.generation this status describes.")
    phase: Phase | None = Field(default=None, description="Pending, Running, Succeeded or Failed.")
    reason: str | None = Field(default=None, description="Why it is in this phase, as a CamelCase word.")
    message: str | None = Field(default=None, description="Why it is in this phase, in words.")
    job: str | None = Field(default=None, description="Name of the runner Job.")
    trials_job: str | None = Field(
        default=None,
        description="Name of the Indexed Job that runs the auto step's training trials (before the runner Job).",
    )
    start_time: str | None = Field(default=None, description="When the runner Job started (RFC 3339).")
    completion_time: str | None = Field(default=None, description="When it finished (RFC 3339).")
    progress: StatusProgress | None = Field(default=None, description="Live progress of the runner.")
    result: RunSummary | None = Field(default=None, description="The runner's result, once it has one.")
    promoted_uri: str | None = Field(
        default=None, alias="promotedURI", description="Where the model was promoted, when it was."
    )
    conditions: list[Condition] = Field(default_factory=list, description="kstatus conditions.")

    @property
    def finished(self) -> bool:
        return self.phase in TERMINAL_PHASES

    def condition(self, kind: str) -> Condition | None:
        return next((condition for condition in self.conditions if condition.type == kind), None)
