"""Several devices: fine-tuning runs under tf.distribute.MirroredStrategy with the global batch scaled.

A machine without GPUs stands in with two logical CPU devices, which TensorFlow allows only before it
initialises its devices, so the job runs in a fresh interpreter that configures them first; it records, for
each fine-tuning call, the strategy in scope and the kind of the model's variables.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edgecompress_runner.errors import ExitCode
from tests.conftest import job

pytestmark = pytest.mark.tf

TWO_DEVICES_RUN = """
import json
import sys
from pathlib import Path

from edgecompress_runner.tfcompat import tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from edgecompress_contract.spec import load_spec_text
from edgecompress_runner import compress
from edgecompress_runner.cli import execute

seen = []
fine_tune = compress.fine_tune


def recording(model, targets, **settings):
    strategy = tf.distribute.get_strategy()
    seen.append(
        {
            "step": settings["step"],
            "strategy": type(strategy).__name__,
            "replicas": strategy.num_replicas_in_sync,
            "variables": sorted({type(variable).__name__ for variable in model.trainable_variables}),
        }
    )
    return fine_tune(model, targets, **settings)


compress.fine_tune = recording
job_file, work, summary = (Path(argument) for argument in sys.argv[1:4])
code = execute(lambda: load_spec_text(job_file.read_text()), work, summary, "log")
Path(sys.argv[4]).write_text(json.dumps({"code": code, "seen": seen}))
"""

BATCH_PER_REPLICA = 32
PRUNE_EPOCHS = 2


def test_two_devices_fine_tune_under_a_mirrored_strategy_with_the_global_batch_scaled(
    blobs_model: tuple[Path, Path], tmp_path: Path
) -> None:
    steps = [
        {"type": "prune", "targetSparsity": 0.5, "fineTune": {"epochs": PRUNE_EPOCHS, "batchSize": BATCH_PER_REPLICA}},
        {"type": "qat", "fineTune": {"epochs": 1, "batchSize": BATCH_PER_REPLICA}},
        {"type": "ptq", "mode": "int8", "representativeSamples": 64},
    ]
    document = job(blobs_model[0], blobs_model[1], tmp_path / "out", steps)
    document["evaluation"] = {"samples": 128, "latency": {"runs": 3, "warmup": 0}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(document))
    (tmp_path / "run.py").write_text(TWO_DEVICES_RUN)
    finished = subprocess.run(
        [sys.executable, "run.py", "job.yaml", "work", "summary.json", "seen.json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert (tmp_path / "seen.json").exists(), finished.stderr[-3000:]
    outcome = json.loads((tmp_path / "seen.json").read_text())
    assert outcome["code"] == ExitCode.SUCCEEDED, (tmp_path / "summary.json").read_text()
    assert outcome["seen"] == [
        {"step": step, "strategy": "MirroredStrategy", "replicas": 2, "variables": ["MirroredVariable"]}
        for step in ("steps[0] prune", "steps[1] qat")
    ]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["replicas"] == 2
    assert [device.rsplit("/", 1)[-1] for device in report["replicaDevices"]] == ["device:CPU:0", "device:CPU:1"]
    trained_on = 512 - int(512 * 0.1)  # the held-out tenth is not trained on
    prune = report["steps"][0]
    assert prune["optimizerSteps"] == math.ceil(trained_on / (2 * BATCH_PER_REPLICA)) * PRUNE_EPOCHS
    assert prune["sparsity"]["overall"] == pytest.approx(0.5, abs=0.02)
    assert report["steps"][1]["type"] == "qat" and report["conversion"]["mode"] == "int8"
    assert report["result"]["outputs"][0]["agreement"] >= 0.9
    assert (tmp_path / "out" / "model.tflite").stat().st_size == report["outputs"]["tflite"]["bytes"]
