"""Honest measurement on real models: memory that never reads 0, latency timed interleaved, and a speed path
read from the .tflite itself and the measured ratio. No timed assertions (speed targets belong in bench/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgecompress_runner.errors import ExitCode
from tests.conftest import job, run_job

pytestmark = pytest.mark.tf


@pytest.mark.parametrize("mode", ["int8", "float16"])
def test_report_measures_memory_latency_and_kernels_honestly(
    mode: str, digits_model: Path, small_digits_npz: Path, tmp_path: Path
) -> None:
    run = run_job(job(digits_model, small_digits_npz, tmp_path / "out", [{"type": "ptq", "mode": mode}]), tmp_path)
    assert run.exit_code == ExitCode.SUCCEEDED, run.summary
    report = run.report
    baseline, result, comparison, conversion = (
        report["baseline"],
        report["result"],
        report["comparison"],
        report["conversion"],
    )
    for metrics in (baseline, result):
        assert metrics["peakMemoryBytes"] > 0
        # runs: 20 per model, spread over 5 interleaved rounds.
        assert len(metrics["latencyRoundsMs"]) == 5
        assert metrics["latencyP50Ms"] > 0 and metrics["latencyIqrMs"] >= 0
    assert comparison["latencyRounds"] == 5
    assert comparison["latencySpeedupMin"] <= comparison["latencySpeedup"] <= comparison["latencySpeedupMax"]
    assert conversion["macs"] > 0 and sum(conversion["macShare"].values()) == pytest.approx(1.0, abs=1e-3)
    speed_path = conversion["speedPath"]
    if mode == "int8":
        assert conversion["macShare"]["int8"] >= 0.9
        assert speed_path.startswith("MACs: 100% in int8 kernels")
    else:
        assert conversion["macShare"]["int8"] == 0 and conversion["macShare"]["float16"] >= 0.9
    assert "5 interleaved rounds" in speed_path
    if "faster" in speed_path:
        assert comparison["latencySpeedup"] > 1
    if comparison["latencySpeedup"] < 1:
        assert "faster" not in speed_path
    assert run.summary["comparison"]["latencyRounds"] == 5


def test_peak_memory_is_positive_and_stable_across_runs(digits_model: Path) -> None:
    from edgecompress_runner.evaluate import peak_memory
    from edgecompress_runner.tfcompat import tf

    model = tf.keras.models.load_model(digits_model)
    float_model = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    peaks = [peak for _ in range(2) for peak in peak_memory([float_model] * 3, threads=1)]
    assert all(peak is not None and peak > len(float_model) for peak in peaks), peaks
    values = [peak for peak in peaks if peak is not None]
    assert max(values) <= min(values) * 1.1, values


def test_mac_shares_are_read_from_the_file(tmp_path: Path) -> None:
    import numpy as np

    from edgecompress_runner.kernels import kernel_profile
    from edgecompress_runner.tfcompat import tf

    inputs = tf.keras.Input((8, 8, 1))
    hidden = tf.keras.layers.Conv2D(8, 3)(inputs)  # 6x6x8 outputs x 3x3x1 = 2,592 MACs (72 weights)
    outputs = tf.keras.layers.Dense(10)(tf.keras.layers.Flatten()(hidden))  # 288 x 10 = 2,880 MACs
    model = tf.keras.Model(inputs, outputs)
    samples = np.random.default_rng(0).random((20, 8, 8, 1), dtype=np.float32)

    def converted(mode: str) -> bytes:
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        if mode != "float":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if mode == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if mode == "int8":
            converter.representative_dataset = lambda: ([samples[i : i + 1]] for i in range(len(samples)))
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        return bytes(converter.convert())

    shares = {}
    for mode in ("float", "float16", "dynamic", "int8"):
        profile = kernel_profile(converted(mode))
        assert profile.total == 2592 + 2880 and not profile.sparse
        share = profile.share()
        assert share is not None
        shares[mode] = {kind: value for kind, value in share.model_dump().items() if value}
    assert shares["float"] == {"float32": 1.0}
    assert shares["float16"] == {"float16": 1.0}
    # Dynamic range leaves kernels under 1,024 weights float: the conv stays float32, the dense is hybrid.
    assert shares["dynamic"] == {
        "hybrid": pytest.approx(2880 / 5472, abs=1e-4),
        "float32": pytest.approx(2592 / 5472, abs=1e-4),
    }
    assert shares["int8"] == {"int8": 1.0}
