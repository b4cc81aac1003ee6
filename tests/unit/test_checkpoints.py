"""Checkpoint records: written through storage, found again only with the run's fingerprint and a matching npz."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgecompress_contract.report import Artifact, Validation
from edgecompress_contract.spec import parse_spec
from edgecompress_runner.checkpoints import RunCheckpoints, TrainingState, epoch_order, fingerprint
from edgecompress_runner.storage import LocalStorage

SPEC = {
    "model": {"uri": "model.keras", "format": "keras"},
    "dataset": {"uri": "data.npz"},
    "steps": [{"type": "prune", "fineTune": {"epochs": 3}}, {"type": "qat"}],
    "output": {"uri": "out/"},
}
INPUTS = {"model": Artifact(uri="model.keras", sha256="a" * 64), "dataset": Artifact(uri="data.npz", sha256="b" * 64)}
VERSIONS = {"tensorflow": "2.21.0"}


def checkpoints(output: Path, tmp_path: Path, run_fingerprint: str = "f" * 64) -> RunCheckpoints:
    return RunCheckpoints(LocalStorage(), str(output), run_fingerprint, tmp_path / "work", every_minutes=10)


def state() -> TrainingState:
    rng = np.random.default_rng(0)
    return TrainingState(
        epoch=2,
        batches=5,
        weights=[rng.normal(size=(4, 3)).astype(np.float32), np.zeros(3, np.float32)],
        optimizer=[np.array(37, np.int64), rng.normal(size=(4, 3)).astype(np.float32)],
        scores=[(0.5, -0.1), (0.75, -0.05)],
        best_epoch=1,
        best_score=(0.75, -0.05),
        best_weights=[np.ones((4, 3), np.float32), np.ones(3, np.float32)],
        metrics={"loss": 0.25},
        validation=Validation(metric="top1Agreement", samples=10, start=0.5, end=0.75, best_epoch=1, ended_worse=False),
    )


def test_a_saved_state_comes_back_bit_for_bit(tmp_path: Path) -> None:
    saved = state()
    checkpoints(tmp_path / "out", tmp_path).save(1, saved)
    assert sorted(path.name for path in (tmp_path / "out" / "checkpoints").iterdir()) == [
        "training-1.json",
        "training-1.npz",
    ]
    loaded = checkpoints(tmp_path / "out", tmp_path / "again").load(1)
    assert loaded is not None
    for got, want in zip(
        loaded.weights + loaded.optimizer + (loaded.best_weights or []),
        saved.weights + saved.optimizer + (saved.best_weights or []),
        strict=True,
    ):
        assert got.dtype == want.dtype and np.array_equal(got, want)
    assert (loaded.epoch, loaded.batches, loaded.scores, loaded.best_epoch, loaded.best_score) == (
        2,
        5,
        saved.scores,
        1,
        (0.75, -0.05),
    )
    assert loaded.metrics == saved.metrics and loaded.validation == saved.validation and not loaded.finished


def test_another_fingerprint_or_a_changed_npz_is_not_resumed(tmp_path: Path) -> None:
    output = tmp_path / "out"
    checkpoints(output, tmp_path).save(0, state())
    assert checkpoints(output, tmp_path, run_fingerprint="e" * 64).load(0) is None
    assert checkpoints(output, tmp_path).load(1) is None
    arrays = output / "checkpoints" / "training-0.npz"
    arrays.write_bytes(arrays.read_bytes()[:-10])
    assert checkpoints(output, tmp_path).load(0) is None


def test_remove_deletes_the_records_and_the_emptied_folder(tmp_path: Path) -> None:
    output = tmp_path / "out"
    output.mkdir()
    (output / "model.tflite").write_bytes(b"model")
    run = checkpoints(output, tmp_path)
    run.save(0, state())
    run.save(3, state())
    run.remove()
    assert [path.name for path in output.iterdir()] == ["model.tflite"]


def test_the_fingerprint_follows_training_fields_and_inputs_only() -> None:
    base = fingerprint(parse_spec(SPEC), INPUTS, VERSIONS)
    operational = {
        **SPEC,
        "output": {"uri": "elsewhere/", "overwrite": True},
        "gates": {"minSizeReduction": 0.5},
        "checkpoints": {"everyMinutes": 1},
        "execution": {"gpus": 2},
    }
    assert fingerprint(parse_spec(operational), INPUTS, VERSIONS) == base
    assert fingerprint(parse_spec({**SPEC, "seed": 1}), INPUTS, VERSIONS) != base
    changed_step = {**SPEC, "steps": [{"type": "prune", "fineTune": {"epochs": 4}}, {"type": "qat"}]}
    assert fingerprint(parse_spec(changed_step), INPUTS, VERSIONS) != base
    other_model = {**INPUTS, "model": Artifact(uri="model.keras", sha256="c" * 64)}
    assert fingerprint(parse_spec(SPEC), other_model, VERSIONS) != base
    assert fingerprint(parse_spec(SPEC), INPUTS, {"tensorflow": "2.22.0"}) != base


@pytest.mark.parametrize("epoch", [0, 1, 5])
def test_each_epoch_order_is_a_seeded_permutation(epoch: int) -> None:
    order = epoch_order(100, seed=7, epoch=epoch)
    assert sorted(order.tolist()) == list(range(100))
    assert np.array_equal(order, epoch_order(100, seed=7, epoch=epoch))
    assert not np.array_equal(order, epoch_order(100, seed=7, epoch=epoch + 1))
    assert not np.array_equal(order, epoch_order(100, seed=8, epoch=epoch))
