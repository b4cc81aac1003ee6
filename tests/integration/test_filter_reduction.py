"""Filter reduction and model splitting on small tf-keras models built here, checked on the .tflite files.

The mini-Xception-style classifier (Conv2D + BN + ReLU stem, two residual blocks of SeparableConv2D + BN
with a strided 1x1 Conv2D shortcut, global average pooling, Dense softmax) is trained on the seeded
gratings of test_training; the runs fine-tune on unlabelled data (distillation from the float model).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgecompress_runner.errors import ExitCode
from tests.conftest import job, run_job
from tests.integration.test_training import CLASSES, gratings
from tests.integration.test_training import mini_xception as training_model
from tests.integration.tflite_inspect import op_types, weight_tensors

pytestmark = pytest.mark.tf


def mini_xception() -> Any:
    """Stem 16 (stride 2), residual blocks of 32 and 64, Dense softmax head: 13k parameters."""
    return training_model(stem=16, blocks=(32, 64), stride=2, dense_head=True)


@pytest.fixture(scope="module")
def xception_h5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgecompress_runner.tfcompat import keras

    x, y = gratings(800, seed=1)
    model = mini_xception()
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", ["accuracy"])
    model.fit(x, y, epochs=6, batch_size=32, verbose=0)
    path = tmp_path_factory.mktemp("models") / "mini_xception.h5"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def unlabelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "gratings.npz"
    np.savez(path, x_train=gratings(400, seed=3)[0], x_eval=gratings(100, seed=4)[0])
    return path


def float_tflite_bytes(model_path: Path) -> bytes:
    from edgecompress_runner.tfcompat import keras, tf

    return bytes(tf.lite.TFLiteConverter.from_keras_model(keras.models.load_model(model_path)).convert())


def output_channels(tflite: Path) -> list[int]:
    """Output channels of every conv, depthwise-conv and fully-connected op, in graph order."""
    channels = []
    for name, kernel in weight_tensors(tflite).items():
        # CONV_2D / FULLY_CONNECTED kernels are [out, ...]; DEPTHWISE_CONV_2D's are [1, h, w, channels].
        channels.append(int(kernel.shape[-1] if "depthwise" in name.lower() else kernel.shape[0]))
    return channels


REDUCE = {"type": "reduceFilters", "targetReduction": 0.5, "fineTune": {"epochs": 3, "learningRate": 0.001}}


def test_half_the_filters_halve_the_float_file_and_int8_follows(
    xception_h5: Path, unlabelled: Path, tmp_path: Path
) -> None:
    run = run_job(job(xception_h5, unlabelled, tmp_path / "float", [REDUCE]), tmp_path / "float-run")
    assert run.exit_code == ExitCode.SUCCEEDED, run.summary
    reduced_file = run.output / "model.tflite"
    assert reduced_file.stat().st_size <= 0.55 * len(float_tflite_bytes(xception_h5))
    step = run.report["steps"][0]
    assert step["type"] == "reduceFilters"
    groups = {
        tuple(sorted(group["layers"])): (group["channelsBefore"], group["channelsAfter"]) for group in step["groups"]
    }
    assert groups[("stem",)] == (16, 8)
    assert groups[("b0_sep2", "b0_short")] == (32, 16)
    assert groups[("b1_sep2", "b1_short")] == (64, 32)
    assert groups[("probs",)] == (CLASSES, CLASSES)
    assert step["macsAfter"] <= 0.4 * step["macsBefore"]
    assert step["parametersAfter"] < 0.4 * step["parametersBefore"]
    layers = {layer["name"]: layer for layer in step["layers"]}
    assert (layers["b1_sep1"]["channelsBefore"], layers["b1_sep1"]["channelsAfter"]) == (64, 32)
    # The file holds the smaller kernels; the classifier keeps its five outputs.
    assert max(output_channels(reduced_file)) == 32
    assert run.report["result"]["top1Agreement"] is not None
    # Timed interleaved with the float baseline and int8 of the unreduced model (1.8-2.0x and 2.6-3.0x here).
    speed = step["speed"]
    assert speed["speedupVsFloat"] > 1.2 and speed["speedupVsUnreducedInt8"] > 1.5
    assert speed["unreducedInt8Bytes"] > 0

    steps = [REDUCE, {"type": "ptq", "mode": "int8"}]
    int8 = run_job(job(xception_h5, unlabelled, tmp_path / "int8", steps), tmp_path / "int8-run")
    assert int8.exit_code == ExitCode.SUCCEEDED, int8.summary
    kinds = op_types(int8.output / "model.tflite")
    assert ("CONV_2D", "int8") in kinds and ("DEPTHWISE_CONV_2D", "int8") in kinds
    assert max(output_channels(int8.output / "model.tflite")) == 32


def residual_model() -> Any:
    """A residual block whose channels 4..7 are dead in both branches of the Add (zero filters, zero BN beta)."""
    from edgecompress_runner.tfcompat import keras

    keras.utils.set_random_seed(1)
    layers = keras.layers
    inputs = layers.Input((8, 8, 3), name="image")
    h = layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    branch = layers.Conv2D(8, 3, padding="same", use_bias=False, name="branch")(h)
    branch = layers.BatchNormalization(name="branch_bn")(branch)
    shortcut = layers.Conv2D(8, 1, use_bias=False, name="shortcut")(h)
    h = layers.Add(name="add")([branch, shortcut])
    h = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="depthwise")(h)
    h = layers.GlobalAveragePooling2D(name="gap")(h)
    model = keras.Model(inputs, layers.Dense(3, name="logits")(h))
    rng = np.random.default_rng(0)
    for layer in model.layers:
        layer.set_weights([rng.normal(size=weight.shape).astype(np.float32) for weight in layer.get_weights()])
    bn = model.get_layer("branch_bn")
    gamma, beta, mean, variance = bn.get_weights()
    bn.set_weights([gamma, np.where(np.arange(8) >= 4, 0.0, beta), np.zeros(8), np.abs(variance) + 0.5])
    for name in ("branch", "shortcut"):
        kernel = model.get_layer(name).get_weights()[0]
        kernel[..., 4:] = 0.0
        model.get_layer(name).set_weights([kernel])
    return model


def test_both_branches_of_an_add_lose_the_same_channels(tmp_path: Path) -> None:
    from edgecompress_contract.spec import ReduceFiltersStep
    from edgecompress_runner.filters import reduce_channels
    from edgecompress_runner.tfcompat import tf

    model = residual_model()
    step = ReduceFiltersStep(type="reduceFilters", targetReduction=0.5, minChannels=1, roundTo=1, layers=["branch"])
    reduction = reduce_channels(model, step, skipped=set(), where="spec.steps[0]")
    reduced = reduction.model
    assert [(group.layers, group.channels_after) for group in reduction.groups if group.reason is None] == [
        (["branch", "shortcut"], 4)
    ]
    for name in ("branch", "shortcut"):
        assert reduced.get_layer(name).get_weights()[0].shape[-1] == 4
    assert reduced.get_layer("depthwise").get_weights()[0].shape == (3, 3, 4, 1)
    assert reduced.get_layer("logits").get_weights()[0].shape == (4, 3)
    # Only the dead channels went, from both branches alike, so nothing the model computes changed.
    x = np.random.default_rng(2).normal(size=(16, 8, 8, 3)).astype(np.float32)
    assert np.abs(reduced.predict(x, verbose=0) - model.predict(x, verbose=0)).max() <= 1e-4
    path = tmp_path / "reduced.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(reduced).convert())
    assert sorted(output_channels(path)) == [3, 4, 4, 4, 8]


def test_a_layer_that_cannot_be_reduced_is_named(tmp_path: Path) -> None:
    from edgecompress_contract.spec import ReduceFiltersStep
    from edgecompress_runner.errors import InputError
    from edgecompress_runner.filters import reduce_channels

    step = ReduceFiltersStep(type="reduceFilters", layers=["logits"])
    with pytest.raises(InputError, match=r"spec\.steps\[0\]\.layers: the channels of layer 'logits' .*model output"):
        reduce_channels(residual_model(), step, skipped=set(), where="spec.steps[0]")


def test_sequential_models_concatenations_and_skipped_layers(tmp_path: Path) -> None:
    from edgecompress_contract.spec import ReduceFiltersStep
    from edgecompress_runner.filters import reduce_channels
    from edgecompress_runner.tfcompat import keras

    keras.utils.set_random_seed(3)
    layers = keras.layers
    sequential = keras.Sequential(
        [
            layers.Input((8, 8, 1)),
            layers.Conv2D(16, 3, name="first"),
            layers.BatchNormalization(name="first_bn"),
            layers.Conv2D(16, 3, name="second"),
            layers.Flatten(name="flatten"),
            layers.Dense(32, activation="relu", name="hidden"),
            layers.Dense(3, name="out"),
        ]
    )
    step = ReduceFiltersStep(type="reduceFilters")
    reduction = reduce_channels(sequential, step, skipped=set(), where="spec.steps[0]")
    reasons = {tuple(group.layers): (group.channels_after, group.reason) for group in reduction.groups}
    assert reasons == {
        ("first",): (8, None),
        ("second",): (16, "read by Flatten 'flatten', which filter reduction does not follow"),
        ("hidden",): (16, None),
        ("out",): (3, "model output"),
    }
    assert reduction.model.get_layer("second").get_weights()[0].shape == (3, 3, 8, 16)
    assert reduction.model.get_layer("out").get_weights()[0].shape == (16, 3)

    inputs = layers.Input((8, 8, 1))
    left = layers.Conv2D(16, 1, name="left")(inputs)
    right = layers.Conv2D(8, 1, name="right")(inputs)
    joined = layers.Concatenate(name="joined")([left, right])
    mixed = layers.Conv2D(16, 1, name="mixed")(joined)
    concat_model = keras.Model(inputs, layers.Dense(2, name="out")(layers.GlobalAveragePooling2D()(mixed)))
    reduction = reduce_channels(concat_model, step, skipped={"right"}, where="spec.steps[0]")
    reasons = {tuple(group.layers): (group.channels_after, group.reason) for group in reduction.groups}
    assert reasons[("left",)] == (8, None) and reasons[("right",)] == (8, "'right' is in skipLayers")
    assert reduction.model.get_layer("mixed").get_weights()[0].shape == (1, 1, 16, 8)
    assert reduction.skipped == ["right"]


def test_qat_and_int8_after_filter_reduction(xception_h5: Path, unlabelled: Path, tmp_path: Path) -> None:
    steps = [
        {**REDUCE, "fineTune": {"epochs": 1}},
        {"type": "qat", "fineTune": {"epochs": 1}},
        {"type": "ptq", "mode": "int8"},
    ]
    run = run_job(job(xception_h5, unlabelled, tmp_path / "out", steps), tmp_path / "run")
    assert run.exit_code == ExitCode.SUCCEEDED, run.summary
    assert "b1_sep2" in run.report["steps"][1]["quantizedLayers"]
    result = run.output / "model.tflite"
    assert ("CONV_2D", "int8") in op_types(result) and max(output_channels(result)) == 32


def two_headed_model() -> Any:
    """A classifier with an auxiliary head before the cut and a residual connection across it."""
    from edgecompress_runner.tfcompat import keras

    keras.utils.set_random_seed(2)
    layers = keras.layers
    inputs = layers.Input((16, 16, 1), name="image")
    stem = layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inputs)
    body = layers.Conv2D(8, 3, padding="same", activation="relu", name="body")(stem)
    aux = layers.Dense(2, name="aux")(layers.GlobalAveragePooling2D(name="aux_pool")(stem))
    tail = layers.Conv2D(8, 3, padding="same", name="tail")(body)
    joined = layers.Add(name="skip")([tail, stem])
    main = layers.Dense(4, activation="softmax", name="main")(layers.GlobalAveragePooling2D(name="gap")(joined))
    return keras.Model(inputs, [main, aux])


def test_a_split_two_output_model_reproduces_its_outputs(tmp_path: Path) -> None:
    from edgecompress_contract.report import SplitManifest
    from edgecompress_contract.spec import Latency, Split
    from edgecompress_runner.planning import FLOAT_PLAN
    from edgecompress_runner.split import split_model
    from edgecompress_runner.tfcompat import tf

    model = two_headed_model()
    whole = bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    x = np.random.default_rng(3).normal(size=(20, 16, 16, 1)).astype(np.float32)
    result = split_model(
        model,
        Split(after=["body"]),
        plan=FLOAT_PLAN,
        whole=whole,
        x_eval=x,
        x_calibration=None,
        latency=Latency(runs=10, warmup=1),
        work_dir=tmp_path,
    )
    assert [path.name for path in result.files] == ["model.part0.tflite", "model.part1.tflite"]
    manifest = SplitManifest.model_validate_json((tmp_path / "split.json").read_text())
    first, second = manifest.parts
    # The residual connection crosses the cut, so the second part also reads the stem's output.
    assert {tensor.name for tensor in first.outputs} == {"stem", "body", "aux"}
    assert "aux" in first.layers and "tail" in second.layers
    assert [tensor.name for tensor in second.inputs] == ["body", "stem"]
    assert [tensor.name for tensor in second.outputs] == ["main"]
    assert manifest.model_outputs == ["main", "aux"]
    assert result.report.max_abs_diff <= 1e-5
    assert [part.size_bytes for part in result.report.parts] == [path.stat().st_size for path in result.files]
    # Running the files in order by hand gives the unsplit model's outputs.
    from ai_edge_litert.interpreter import Interpreter

    def run(model_bytes: bytes, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        return dict(Interpreter(model_content=model_bytes).get_signature_runner()(**inputs))

    expected = run(whole, image=x[:1])
    boundary = run(result.files[0].read_bytes(), image=x[:1])
    final = run(result.files[1].read_bytes(), body=boundary["body"], stem=boundary["stem"])
    assert np.abs(final["main"] - expected["main"]).max() <= 1e-5
    assert np.abs(boundary["aux"] - expected["aux"]).max() <= 1e-5


def test_int8_parts_are_calibrated_on_their_own_inputs(tmp_path: Path) -> None:
    from edgecompress_contract.spec import Latency, PtqStep, Split
    from edgecompress_runner.convert import convert
    from edgecompress_runner.planning import ConversionPlan
    from edgecompress_runner.split import split_model
    from edgecompress_runner.tfcompat import tf

    model = two_headed_model()
    plan = ConversionPlan(ptq=PtqStep(type="ptq", mode="int8"))
    rng = np.random.default_rng(4)
    x_calibration = rng.normal(size=(64, 16, 16, 1)).astype(np.float32)
    whole, _ = convert(
        tf.lite.TFLiteConverter.from_keras_model(model), plan=plan, x_calibration={"image": x_calibration}
    )
    result = split_model(
        model,
        Split(after=["body"]),
        plan=plan,
        whole=whole,
        x_eval=rng.normal(size=(50, 16, 16, 1)).astype(np.float32),
        x_calibration=x_calibration,
        latency=Latency(runs=10, warmup=1),
        work_dir=tmp_path,
    )
    for path in result.files:
        assert ("CONV_2D", "int8") in op_types(path)
    # The parts requantize at the cut with scales calibrated on the same activations as the whole model's, so
    # they stay within a few quantization steps of it (0.0 on every run here: conversion and data are seeded).
    assert result.report.max_abs_diff <= 0.1
    assert result.report.top1_agreement is not None and result.report.top1_agreement >= 0.9


def test_splitting_a_reduced_model_uploads_the_parts(xception_h5: Path, unlabelled: Path, tmp_path: Path) -> None:
    steps = [{**REDUCE, "fineTune": {"epochs": 1}}]
    document = job(xception_h5, unlabelled, tmp_path / "out", steps)
    document["output"]["split"] = {"after": ["b0_add"]}
    run = run_job(document, tmp_path / "run")
    assert run.exit_code == ExitCode.SUCCEEDED, run.summary
    report = run.report
    parts = report["outputs"]["parts"]
    assert [Path(part["uri"]).name for part in parts] == ["model.part0.tflite", "model.part1.tflite"]
    assert [(run.output / Path(part["uri"]).name).stat().st_size for part in parts] == [
        part["sizeBytes"] for part in report["split"]["parts"]
    ]
    assert report["split"]["maxAbsDiff"] <= 1e-5 and report["split"]["top1Agreement"] == 1.0
    assert (run.output / "split.json").exists() and report["outputs"]["manifest"]["uri"].endswith("split.json")


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"output": {"split": {"after": ["b0_addd"]}}}, r"spec\.output\.split\.after: unknown layers \['b0_addd'\]"),
        ({"steps": [{**REDUCE, "skipLayers": ["stemm"]}]}, r"skipLayers names unknown layers \['stemm'\]"),
    ],
)
def test_unknown_layer_names_fail_with_exit_20(
    xception_h5: Path, unlabelled: Path, tmp_path: Path, change: dict[str, Any], named: str
) -> None:
    import re

    document = job(xception_h5, unlabelled, tmp_path / "out", [{**REDUCE, "fineTune": {"epochs": 1}}])
    for key, value in change.items():
        if key == "output":
            document["output"].update(value)
        else:
            document[key] = value
    run = run_job(document, tmp_path / "run")
    assert run.exit_code == ExitCode.INVALID_INPUT
    assert re.search(named, run.summary["message"]), run.summary
    assert not (tmp_path / "out").exists()


def test_an_overwrite_removes_the_parts_an_earlier_split_left(
    digits_model: Path, small_digits_npz: Path, tmp_path: Path
) -> None:
    """Three parts, then an overwrite with two, then one without a split: no stale part or manifest remains."""
    output = tmp_path / "out"
    document = job(digits_model, small_digits_npz, output, [{"type": "ptq", "mode": "float16"}])
    for index, after in enumerate((["conv1", "pool"], ["conv2"], None)):
        document["output"] = {"uri": str(output), "overwrite": True}
        if after is not None:
            document["output"]["split"] = {"after": after}
        run = run_job(document, tmp_path / f"run-{index}")
        assert run.exit_code == ExitCode.SUCCEEDED, run.summary
        written = sorted(path.name for path in output.iterdir() if path.name.startswith("model."))
        parts = [f"model.part{part}.tflite" for part in range(len(after) + 1)] if after else []
        assert written == sorted(["model.tflite", *parts]), (index, written)
        assert (output / "split.json").exists() == (after is not None)
        assert [Path(part["uri"]).name for part in run.report["outputs"]["parts"]] == parts
