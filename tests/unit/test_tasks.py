"""Each output's task, judged against labels and against the baseline; datasets named per input and output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgecompress_runner.data import ModelTensor, load_dataset
from edgecompress_runner.errors import InputError
from edgecompress_runner.tasks import SNR_CAP_DB, cosine_similarity, fidelity, infer_task, label_targets, snr_db

RNG = np.random.default_rng(0)
SOFTMAX = np.exp(RNG.normal(size=(20, 4)))
SOFTMAX /= SOFTMAX.sum(axis=1, keepdims=True)


@pytest.mark.parametrize(
    ("outputs", "labels", "task"),
    [
        (SOFTMAX, None, "multiclass"),
        (RNG.normal(size=(20, 4)), None, "multiclass"),  # logits
        (RNG.normal(size=(20, 4)), RNG.normal(size=(20, 4)), "regression"),  # float labels, not class scores
        (RNG.normal(size=(20, 4)), np.eye(4)[RNG.integers(0, 4, 20)], "multiclass"),  # one-hot labels
        (RNG.random((20, 1)), None, "binary"),
        (RNG.random(20), None, "binary"),
        (RNG.random((20, 5)), None, "multilabel"),
        (RNG.normal(size=(20, 1)), None, "regression"),
        (RNG.random((20, 16, 1)), None, "regression"),  # a framewise map
    ],
)
def test_task_inference(outputs: np.ndarray, labels: np.ndarray | None, task: str) -> None:
    assert infer_task(outputs, labels) == task


def test_snr_is_capped_and_handles_silence() -> None:
    reference = RNG.normal(size=(10, 3))
    assert snr_db(reference, reference) == SNR_CAP_DB
    assert snr_db(np.ones((2, 2)), np.zeros((2, 2))) == -SNR_CAP_DB
    noisy = reference + 0.1 * np.abs(reference).mean()
    assert snr_db(reference * 1.1, reference) == pytest.approx(20.0)
    assert 0 < snr_db(noisy, reference) < SNR_CAP_DB


def test_cosine_similarity_per_sample() -> None:
    a = np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    b = np.array([[0.0, 1.0], [0.0, 0.0], [2.0, 2.0]])
    assert cosine_similarity(a, b) == pytest.approx((0.0 + 1.0 + 1.0) / 3)


def test_fidelity_of_a_binary_output_counts_decisions() -> None:
    reference = np.array([[0.1], [0.6], [0.9], [0.4]])
    outputs = np.array([[0.2], [0.4], [0.8], [0.45]])
    found = fidelity("binary", outputs, reference)
    assert found["agreement"] == 0.75 and found["mean_abs_error"] == pytest.approx(0.1125)
    assert "agreement" not in fidelity("regression", outputs, reference)


def test_labels_that_do_not_fit_are_named() -> None:
    with pytest.raises(InputError, match=r"y_eval/pitch: class labels range 0\.\.7 but the output has 4 classes"):
        label_targets("multiclass", np.array([0, 7]), SOFTMAX[:2], "y_eval/pitch")
    with pytest.raises(InputError, match=r"y_eval/frames: labels of shape \(3,\) do not fit"):
        label_targets("regression", np.zeros((2, 3)), np.zeros((2, 16, 1)), "y_eval/frames")
    assert label_targets("binary", np.array([0, 1]), np.zeros((2, 1)), "y").tolist() == [[False], [True]]


def save(tmp_path: Path, **arrays: np.ndarray) -> Path:
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


AUDIO = ModelTensor(name="audio", shape=(None, 1), dtype=np.dtype(np.float32))
TOKENS = ModelTensor(name="tokens", shape=(16,), dtype=np.dtype(np.int32))


def test_named_arrays_are_bound_and_typed(tmp_path: Path) -> None:
    path = save(
        tmp_path,
        **{
            "x_train/audio": np.zeros((4, 64, 1)),
            "x_train/tokens": np.ones((4, 16), np.int64),
            "x_eval/audio": np.zeros((2, 48, 1)),
            "x_eval/tokens": np.ones((2, 16), np.int64),
            "y_train/pitch": np.zeros(4, np.int64),
            "y_eval/pitch": np.zeros(2, np.int64),
        },
    )
    dataset = load_dataset(path, "data.npz").bind([AUDIO, TOKENS], ["frames", "pitch"])
    assert dataset.x_eval["audio"].dtype == np.float32 and dataset.x_eval["audio"].shape == (2, 48, 1)
    assert dataset.x_train is not None and dataset.x_train["tokens"].dtype == np.int32
    assert set(dataset.y_eval) == {"pitch"}


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        (
            {"x_eval/audio": np.zeros((2, 8, 1)), "x_eval/tokenz": np.zeros((2, 16), np.int32)},
            r"array x_eval/tokenz names no model input; the model's inputs are \['audio', 'tokens'\]",
        ),
        ({"x_eval/audio": np.zeros((2, 8, 1))}, r"no array x_eval/tokens for the model input 'tokens'"),
        (
            {"x_eval/audio": np.zeros((2, 8, 1)), "x_eval/tokens": np.zeros((2, 16))},
            r"x_eval/tokens has dtype float32 but the model input 'tokens' takes int32",
        ),
        (
            {"x_eval/audio": np.zeros((2, 8, 1)), "x_eval/tokens": np.zeros((3, 16), np.int32)},
            r"x_eval/audio has 2 samples but x_eval/tokens has 3",
        ),
        (
            {"x_eval": np.zeros((2, 8, 1)), "x_eval/tokens": np.zeros((2, 16), np.int32)},
            r"give either x_eval or arrays named x_eval/<name>",
        ),
        (
            {"x_eval/audio": np.zeros((2, 8, 2)), "x_eval/tokens": np.zeros((2, 16), np.int32)},
            r"x_eval/audio samples have shape \(8, 2\) but the model expects \('\?', 1\)",
        ),
    ],
)
def test_bad_named_arrays_are_named(arrays: dict[str, np.ndarray], message: str, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=message):
        load_dataset(save(tmp_path, **arrays), "data.npz").bind([AUDIO, TOKENS], ["pitch"])


def test_a_task_in_the_spec_overrides_the_inferred_one() -> None:
    from edgecompress_contract.spec import OutputSetting
    from edgecompress_runner.tasks import output_tasks

    outputs = {"box": RNG.normal(size=(20, 4)), "pitch": SOFTMAX}
    assert output_tasks([], outputs, {}) == {"box": "multiclass", "pitch": "multiclass"}
    chosen = output_tasks([OutputSetting(name="box", task="regression")], outputs, {})
    assert chosen == {"box": "regression", "pitch": "multiclass"}
    with pytest.raises(InputError, match=r"outputs\[0\]\.name: the model has no output 'boxes'; its outputs are"):
        output_tasks([OutputSetting(name="boxes", task="regression")], outputs, {})
