"""The runner's phase machinery without TensorFlow: step registry, conversion plan, phase clock, progress lines."""

from __future__ import annotations

import json
import logging
import typing

import pytest

from edgecompress_contract.progress import ProgressEvent
from edgecompress_contract.report import PruneReport, QatReport, Sparsity
from edgecompress_contract.spec import PtqStep, Step, parse_spec
from edgecompress_runner.pipeline import PhaseClock
from edgecompress_runner.planning import ConversionPlan
from edgecompress_runner.progress import JsonLineFormatter, Progress
from edgecompress_runner.steps import build_steps


def spec_with(steps: list[dict[str, object]]):  # type: ignore[no-untyped-def]
    return parse_spec(
        {
            "model": {"uri": "/m.keras", "format": "keras"},
            "dataset": {"uri": "/d.npz"},
            "steps": steps,
            "output": {"uri": "/out"},
        }
    )


def test_every_spec_step_type_has_a_step_class() -> None:
    union = typing.get_args(typing.get_args(Step)[0])
    documents = {
        "prune": {"type": "prune"},
        "cluster": {"type": "cluster"},
        "qat": {"type": "qat"},
        "ptq": {"type": "ptq", "mode": "int8"},
        "distill": {"type": "distill", "student": {"uri": "/s.keras", "format": "keras"}},
        "reduceFilters": {"type": "reduceFilters"},
        "auto": {"type": "auto"},
    }
    for spec_class in union:
        step_type = typing.get_args(spec_class.model_fields["type"].annotation)[0]
        [step] = build_steps([spec_class.model_validate(documents[step_type])])
        assert step.spec_class is spec_class and step.phase == f"steps[0] {step_type}"


def test_steps_contribute_to_the_conversion_plan() -> None:
    spec = spec_with([{"type": "prune"}, {"type": "qat", "skipLayers": ["logits"]}, {"type": "ptq", "mode": "int8"}])
    prune, qat, ptq = build_steps(spec.steps)
    assert [step.epochs for step in (prune, qat, ptq)] == [2, 2, 0]
    pruned = PruneReport(
        schedule="polynomialDecay",
        pattern="unstructured",
        target_sparsity=0.5,
        begin_step=0,
        end_step=10,
        frequency=1,
        optimizer_steps=11,
        sparsity=Sparsity(overall=0.5, layers={"conv": 0.5, "fc": 0.5}),
        epochs=2,
    )
    plan = prune.contribute(ConversionPlan(), pruned)
    assert plan.pruned_layers == ("conv", "fc") and plan.mode == "float" and plan.sparse
    quantized = QatReport(scheme="s", quantized_layers=["conv"], skipped_layers=["logits"], epochs=2)
    plan = qat.contribute(plan, quantized)
    assert plan.mode == "qat" and plan.qat_kept_float and not plan.sparse
    plan = ptq.contribute(plan, None)
    assert isinstance(plan.ptq, PtqStep) and plan.mode == "int8"


@pytest.mark.parametrize(("mode", "sparse"), [("float16", True), ("dynamic", False), ("int8", False)])
def test_pruned_weights_are_sparse_encoded_only_in_float_results(mode: str, sparse: bool) -> None:
    plan = ConversionPlan(pruned_layers=("fc",), ptq=PtqStep(type="ptq", mode=mode))  # type: ignore[arg-type]
    assert plan.mode == mode and plan.sparse is sparse


def test_progress_lines_carry_the_event_wire_fields(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[ProgressEvent] = []
    progress = Progress(["download", "steps[0] prune", "upload"], sinks=[seen.append])
    clock = PhaseClock(progress)
    with caplog.at_level(logging.INFO, logger="edgecompress"):
        with clock.phase("download"):
            pass
        with clock.phase("steps[0] prune", epochs=2):
            progress.epoch(1, {"loss": 0.123456789})
            assert set(clock.seconds()) == {"download", "steps[0] prune", "total"}
        progress.finish()
    lines = [JsonLineFormatter().format(record) for record in caplog.records]
    events = [ProgressEvent.from_log_line(line) for line in lines]
    assert events == seen
    assert [(event.event, event.phase, event.percent) for event in seen] == [
        ("phase", "download", 0.0),
        ("phase", "steps[0] prune", 33.3),
        ("epoch", "steps[0] prune", 50.0),
        ("phase", "finished", 100.0),
    ]
    epoch_line = json.loads(lines[2])
    assert epoch_line["metrics"] == {"loss": 0.12346} and epoch_line["epoch"] == 1 and epoch_line["epochs"] == 2
    assert set(clock.timings) == {"download", "steps[0] prune"}
