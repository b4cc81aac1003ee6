"""Two runs promoting at once: the one whose write comes second never replaces the other's model."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgecompress_contract.report import Comparison, PromotionSource
from edgecompress_contract.spec import Promotion
from edgecompress_runner.errors import PromotionConflict
from edgecompress_runner.promotion import promote
from edgecompress_runner.storage import LocalStorage, local_path

SOURCE = PromotionSource(
    output="/runs/2/model.tflite",
    report="/runs/2/report.json",
    comparison=Comparison(size_reduction=0.7, compression_ratio=3.3, gzip_size_reduction=0.7, latency_speedup=1.2),
)


class RacingStorage(LocalStorage):
    """Its first ``exists`` answers before the other run's model lands; then that model is there."""

    def __init__(self, other_model: Path) -> None:
        self.other_model, self.raced = other_model, False

    def exists(self, uri: str) -> bool:
        if not self.raced and uri.endswith("model.tflite"):
            self.raced = True
            local_path(uri).parent.mkdir(parents=True, exist_ok=True)
            local_path(uri).write_bytes(self.other_model.read_bytes())
            return False
        return super().exists(uri)


@pytest.fixture
def models(tmp_path: Path) -> tuple[Path, Path]:
    ours, theirs = tmp_path / "ours.tflite", tmp_path / "theirs.tflite"
    ours.write_bytes(b"our model")
    theirs.write_bytes(b"their model")
    return ours, theirs


def test_the_second_writer_gets_a_conflict_not_a_silent_replace(tmp_path: Path, models: tuple[Path, Path]) -> None:
    ours, theirs = models
    stable = tmp_path / "stable"
    with pytest.raises(PromotionConflict, match="already holds a different promoted model"):
        promote(Promotion(uri=str(stable)), ours, source=SOURCE, storage=RacingStorage(theirs), work_dir=tmp_path)
    assert (stable / "model.tflite").read_bytes() == b"their model"
    assert not (stable / "promotion.json").exists()


def test_the_same_bytes_promoted_at_once_is_no_conflict(tmp_path: Path, models: tuple[Path, Path]) -> None:
    ours, _ = models
    outcome = promote(
        Promotion(uri=str(tmp_path / "stable")), ours, source=SOURCE, storage=RacingStorage(ours), work_dir=tmp_path
    )
    assert outcome.promoted and outcome.unchanged


def test_local_create_is_refused_when_the_file_exists(tmp_path: Path, models: tuple[Path, Path]) -> None:
    ours, theirs = models
    target = str(tmp_path / "out" / "model.tflite")
    assert LocalStorage().create(theirs, target) is True
    assert LocalStorage().create(ours, target) is False
    assert Path(target).read_bytes() == b"their model"
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["model.tflite"], "no temporary file left"
