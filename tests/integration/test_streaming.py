"""Sharded datasets: streamed in bounded memory, every shard trained on, bad shards refused by name."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bench.streaming import images, job, run_measured, shard_samples, write_model, write_shards

from edgecompress_runner.errors import ExitCode
from tests.conftest import MinioServer, run_job

pytestmark = pytest.mark.tf

MEMORY_BUDGET = 224 << 20
"""How much more the runner's peak RSS may grow for a dataset of 24 shards (487 MiB) than for one of 2.

Peak RSS differs between runs by itself (allocator arenas, threads): the growth measured 36, 61, 74 and
90 MiB here (20 shards) and 127 MiB on CI, while a runner holding the dataset in memory would grow by at least the
dataset's stored bytes, more than twice this budget."""
BIG_SHARDS = 24
SHARD_BYTES = 20 << 20
SIDE = 192
"""Large images: few samples per byte, so streaming 400 MiB stays quick."""
FINE_TUNE = {"epochs": 1, "batchSize": 256}
STEPS = [
    {"type": "prune", "initialSparsity": 0.3, "targetSparsity": 0.5, "fineTune": FINE_TUNE},
    {"type": "qat", "fineTune": FINE_TUNE},
    {"type": "ptq", "mode": "int8"},
]


@pytest.fixture(scope="module")
def image_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model(tmp_path_factory.mktemp("model") / "model.keras")


@pytest.fixture(scope="module")
def large_image_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model(tmp_path_factory.mktemp("model") / "model.keras", side=SIDE)


def test_peak_memory_does_not_grow_with_the_dataset(large_image_model: Path, tmp_path: Path) -> None:
    per_shard = shard_samples(SHARD_BYTES, side=SIDE)
    big = write_shards(tmp_path / "big", shards=BIG_SHARDS, samples_per_shard=per_shard, side=SIDE)
    small = write_shards(tmp_path / "small", shards=2, samples_per_shard=per_shard, side=SIDE)
    big_bytes = sum(path.stat().st_size for path in big.iterdir())
    assert big_bytes >= 2 * MEMORY_BUDGET

    runs = {
        name: run_measured(
            job(large_image_model, f"{folder}/", tmp_path / f"out-{name}", STEPS), tmp_path / f"run-{name}"
        )
        for name, folder in (("small", small), ("big", big))
    }
    for run in runs.values():
        assert run.exit_code == ExitCode.SUCCEEDED, (run.summary, run.stderr[-3000:])
    growth = runs["big"].peak_rss_bytes - runs["small"].peak_rss_bytes
    print(
        f"peak RSS: 2 shards {runs['small'].peak_rss_bytes >> 20} MiB, "
        f"{BIG_SHARDS} shards {runs['big'].peak_rss_bytes >> 20} MiB"
    )
    assert growth < MEMORY_BUDGET, (
        f"peak RSS grew by {growth / 2**20:.0f} MiB for {big_bytes / 2**20:.0f} MiB of shards"
    )

    report = runs["big"].report
    assert report is not None
    shards = report["inputs"]["datasetShards"]
    assert shards["count"] == BIG_SHARDS and shards["trainSamples"] == BIG_SHARDS * per_shard
    assert shards["bytes"] == big_bytes
    assert [file["sha256"] for file in shards["files"]] == [
        hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(big.iterdir())
    ]
    for step in report["steps"][:2]:
        streaming = step["streaming"]
        assert streaming["shardsRead"] == BIG_SHARDS * FINE_TUNE["epochs"]
        assert streaming["samplesPerEpoch"] + streaming["heldOut"] == BIG_SHARDS * per_shard
        assert streaming["samplesSeen"] == streaming["samplesPerEpoch"] * FINE_TUNE["epochs"]
        assert step["validation"]["samples"] == streaming["heldOut"] > 0
    assert report["steps"][0]["sparsity"]["overall"] == pytest.approx(0.5, abs=0.02)
    assert report["conversion"]["mode"] == "int8" and report["result"]["sizeBytes"] > 0


def _shard_folder(tmp_path: Path, broken: dict[str, Any]) -> Path:
    """Three small uint8 shards; the last one's arrays replaced by ``broken``."""
    folder = tmp_path / "shards"
    write_shards(folder, shards=3, samples_per_shard=40)
    last = folder / "part-00002.npz"
    with np.load(last) as archive:
        arrays = {name: archive[name] for name in archive.files}
    arrays |= broken
    np.savez(last, **{name: value for name, value in arrays.items() if value is not None})
    return folder


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        ({"y_train": None}, r"part-00002\.npz: shard has no array y_train \(the shard .*part-00000\.npz has it\)"),
        (
            {"x_train": np.zeros((40, 96, 96, 1), np.float32)},
            r"part-00002\.npz: array x_train has samples of shape \(96, 96, 1\) and dtype float32, but in "
            r".*part-00000\.npz of shape \(96, 96, 1\) and dtype uint8",
        ),
        (
            {"x_train": np.zeros((40, 48, 96, 1), np.uint8)},
            r"part-00002\.npz: array x_train has samples of shape \(48, 96, 1\)",
        ),
        ({"y_train": np.zeros(39, np.int32)}, r"part-00002\.npz: x_train has 40 samples but y_train has 39"),
        ({"x_extra": np.zeros(40)}, r"part-00002\.npz: unexpected arrays \['x_extra'\]"),
    ],
)
def test_a_bad_shard_is_named(image_model: Path, tmp_path: Path, broken: dict[str, Any], message: str) -> None:
    import re

    folder = _shard_folder(tmp_path, broken)
    output = tmp_path / "out"
    run = run_job(job(image_model, f"{folder}/", output, STEPS), tmp_path)
    assert run.exit_code == ExitCode.INVALID_INPUT, run.summary
    assert re.search(message, run.summary["message"]), run.summary["message"]
    assert not output.exists() or not any(output.iterdir())


def test_an_empty_prefix_is_refused(image_model: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    run = run_job(job(image_model, f"{tmp_path / 'empty'}/", tmp_path / "out", STEPS), tmp_path)
    assert run.exit_code == ExitCode.INVALID_INPUT
    assert "no .npz shards under this prefix" in run.summary["message"]


def test_the_stream_yields_every_training_sample_once_per_epoch_shuffled_across_shards(tmp_path: Path) -> None:
    from edgecompress_runner.data import ModelTensor
    from edgecompress_runner.storage import LocalStorage
    from edgecompress_runner.streaming import ShardStream, scan
    from edgecompress_runner.tfcompat import seed_run

    seed_run(0)
    folder = write_shards(tmp_path / "shards", shards=4, samples_per_shard=50)
    dataset, _ = scan(
        f"{folder}/", LocalStorage(), tmp_path, eval_samples=10, calibration_samples=8, held_out_shares=[0.1]
    )
    tensor = ModelTensor(name="image", shape=(96, 96, 1), dtype=np.dtype(np.float32))
    bound = dataset.bind([tensor], ["dense"])
    assert bound.shards is not None
    stream = ShardStream(shards=bound.shards, held_out_share=0.1, batch_size=16)
    seen_dtypes = []

    def keep(x: dict[str, Any], y: dict[str, Any]) -> Any:
        seen_dtypes.append(x["image"].dtype)
        return x["image"], y["dense"]

    batches = stream.dataset(keep)
    epochs = [list(batches.as_numpy_iterator()) for _ in range(2)]
    assert seen_dtypes and all(dtype.name == "float32" for dtype in seen_dtypes)
    expected = []
    for index in range(4):
        x, _ = images(50, seed=index)
        held = bound.shards.held_out_positions(0.1)[index]
        assert len(held) == 5
        expected.append(np.delete(x, held, axis=0))
    fingerprint = sorted(sample.tobytes() for sample in np.concatenate(expected).astype(np.float32))
    orders = []
    for batches_of_epoch in epochs:
        x = np.concatenate([batch[0] for batch in batches_of_epoch])
        assert len(batches_of_epoch) == stream.steps_per_epoch == 12
        assert sorted(sample.tobytes() for sample in x) == fingerprint
        orders.append(x)
        first_batch_shards = {
            index
            for sample in batches_of_epoch[0][0]
            for index, part in enumerate(expected)
            if any(np.array_equal(sample, other) for other in part.astype(np.float32))
        }
        assert len(first_batch_shards) > 1
    assert not np.array_equal(orders[0], orders[1])
    assert stream.counter.shards_read == 8 and stream.counter.samples_seen == 2 * 180


@pytest.mark.s3
def test_shards_stream_from_an_s3_prefix(image_model: Path, s3_env: MinioServer, tmp_path: Path) -> None:
    client = s3_env.client()
    client.create_bucket(Bucket="ec-shards")
    folder = write_shards(tmp_path / "shards", shards=3, samples_per_shard=60)
    for path in sorted(folder.iterdir()):
        client.upload_file(str(path), "ec-shards", f"set/{path.name}")
    client.put_object(Bucket="ec-shards", Key="set/README.txt", Body=b"not a shard")
    client.put_object(Bucket="ec-shards", Key="set/nested/part-99999.npz", Body=b"not under the prefix itself")
    output = tmp_path / "out"
    steps = [{"type": "qat", "fineTune": {"epochs": 2, "batchSize": 32}}, {"type": "ptq", "mode": "int8"}]
    run = run_job(job(image_model, "s3://ec-shards/set/", output, steps), tmp_path)
    assert run.exit_code == ExitCode.SUCCEEDED, run.summary
    report = run.report
    assert [file["uri"] for file in report["inputs"]["datasetShards"]["files"]] == [
        f"s3://ec-shards/set/part-0000{index}.npz" for index in range(3)
    ]
    assert report["steps"][0]["streaming"]["shardsRead"] == 6
    assert (tmp_path / "work" / "shards").is_dir() and not list((tmp_path / "work").glob("**/part-*.npz"))


def test_distillation_streams_the_shards(image_model: Path, tmp_path: Path) -> None:
    from edgecompress_runner.tfcompat import keras, seed_run

    seed_run(0)
    inputs = keras.Input((96, 96, 1), name="image")
    hidden = keras.layers.AveragePooling2D(8)(inputs)
    hidden = keras.layers.Conv2D(4, 3, activation="relu")(hidden)
    hidden = keras.layers.GlobalAveragePooling2D()(hidden)
    student = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(hidden))
    student.save(tmp_path / "student.keras")
    folder = write_shards(tmp_path / "shards", shards=3, samples_per_shard=80)
    steps = [
        {
            "type": "distill",
            "student": {"uri": str(tmp_path / "student.keras"), "format": "keras"},
            "fineTune": {"epochs": 2},
        },
        {"type": "ptq", "mode": "int8"},
    ]
    run = run_job(job(image_model, f"{folder}/", tmp_path / "out", steps), tmp_path)
    assert run.exit_code == ExitCode.SUCCEEDED, run.summary
    distill = run.report["steps"][0]
    assert distill["studentParameters"] < distill["teacherParameters"]
    assert distill["streaming"] == {
        "shards": 3,
        "shardsRead": 6,
        "samplesPerEpoch": 240,
        "samplesSeen": 480,
        "heldOut": 0,
        "epochs": 2,
    }


def test_a_one_shot_prune_refits_on_streamed_batches(image_model: Path, tmp_path: Path) -> None:
    """oneShot reads its refit samples from the stream (the first batches), then fine-tunes on every shard."""
    folder = write_shards(tmp_path / "shards", shards=3, samples_per_shard=80)
    steps = [{"type": "prune", "schedule": "oneShot", "targetSparsity": 0.5, "fineTune": {"epochs": 1}}]
    run = run_job(job(image_model, f"{folder}/", tmp_path / "out", steps), tmp_path)
    assert run.exit_code == ExitCode.SUCCEEDED, run.summary
    pruned = run.report["steps"][0]
    assert pruned["schedule"] == "oneShot" and pruned["refitLayers"]
    assert set(pruned["refitLayers"]) <= set(pruned["sparsity"]["layers"])
    assert pruned["sparsity"]["overall"] >= 0.49 and pruned["validation"]["samples"] > 0
    assert pruned["streaming"]["samplesPerEpoch"] == 216 and pruned["streaming"]["shardsRead"] >= 3
