"""The spec's ptq modes and skip lists as litert-quantizer recipes; the spec rules for a tflite input."""

from __future__ import annotations

import re
from typing import Any

import pytest

from edgecompress_contract.spec import SpecError, parse_spec
from edgecompress_runner.tflite_quantize import Precision, RecipeEntry, ptq_recipe, quantizer_recipe

SCOPE = "model/hidden/MatMul;model/hidden/Relu;"


def entries(recipe: list[RecipeEntry], *, float_io: bool = True) -> list[dict[str, Any]]:
    """The quantizer's recipe with enum values as plain strings."""
    import json

    return json.loads(json.dumps(quantizer_recipe(recipe, float_io=float_io)))


@pytest.mark.parametrize(
    ("mode", "precision"),
    [("dynamic", Precision.DYNAMIC_INT8), ("float16", Precision.FLOAT16), ("int8", Precision.STATIC_INT8),
     ("int16x8", Precision.INT16X8)],
)  # fmt: skip
def test_each_mode_quantizes_every_op_and_keeps_the_listed_scopes_float(mode: str, precision: Precision) -> None:
    recipe = ptq_recipe(mode, [SCOPE])
    assert recipe == [RecipeEntry(".*", precision), RecipeEntry("^" + re.escape(SCOPE) + "$", Precision.FLOAT)]
    kept = recipe[1].scope
    assert re.search(kept, SCOPE) and not re.search(kept, "model/hidden2/MatMul;") and not re.search(kept, "x" + SCOPE)


def test_dynamic_is_int8_weights_with_integer_compute() -> None:
    (entry,) = entries([RecipeEntry(".*", Precision.DYNAMIC_INT8)])
    config = entry["op_config"]
    assert entry["algorithm_key"] == "min_max_uniform_quantize" and "activation_tensor_config" not in config
    assert (
        config["weight_tensor_config"]["num_bits"] == 8
        and config["weight_tensor_config"]["granularity"] == "CHANNELWISE"
    )
    assert config["compute_precision"] == "INTEGER" and not config["explicit_dequantize"]


def test_float16_casts_weights_and_dequantizes_them() -> None:
    (entry,) = entries([RecipeEntry(".*", Precision.FLOAT16)])
    weights = entry["op_config"]["weight_tensor_config"]
    assert entry["algorithm_key"] == "float_casting" and weights["num_bits"] == 16 and weights["dtype"] == "FLOAT"
    assert entry["op_config"]["explicit_dequantize"] and entry["op_config"]["compute_precision"] == "FLOAT"


@pytest.mark.parametrize(("precision", "activation_bits"), [(Precision.STATIC_INT8, 8), (Precision.INT16X8, 16)])
def test_static_precisions_quantize_activations_and_keep_float_io(precision: Precision, activation_bits: int) -> None:
    static, model_input, model_output = entries([RecipeEntry(".*", precision)])
    assert static["op_config"]["activation_tensor_config"]["num_bits"] == activation_bits
    assert static["op_config"]["weight_tensor_config"]["num_bits"] == 8
    assert [
        (model_input["operation"], model_input["algorithm_key"]),
        (model_output["operation"], model_output["algorithm_key"]),
    ] == [
        ("INPUT", "no_quantize"),
        ("OUTPUT", "no_quantize"),
    ]
    assert len(entries([RecipeEntry(".*", precision)], float_io=False)) == 1


def test_weight_only_and_blockwise_int4() -> None:
    weight_only, blockwise = entries(
        [RecipeEntry(".*", Precision.WEIGHT_ONLY_INT4), RecipeEntry("conv", Precision.INT4_BLOCKWISE, block_size=64)]
    )
    assert weight_only["op_config"]["weight_tensor_config"]["num_bits"] == 4
    assert weight_only["op_config"]["explicit_dequantize"] and weight_only["op_config"]["compute_precision"] == "FLOAT"
    assert (
        blockwise["regex"] == "conv" and blockwise["op_config"]["weight_tensor_config"]["granularity"] == "BLOCKWISE_64"
    )
    assert blockwise["op_config"]["compute_precision"] == "INTEGER"


def test_later_entries_come_later_and_float_means_no_quantize() -> None:
    recipe = entries([RecipeEntry(".*", Precision.WEIGHT_ONLY_INT8), RecipeEntry("hidden", Precision.FLOAT)])
    assert [(entry["regex"], entry["algorithm_key"]) for entry in recipe] == [
        (".*", "min_max_uniform_quantize"),
        ("hidden", "no_quantize"),
    ]


def test_bad_recipes_are_refused() -> None:
    with pytest.raises(ValueError, match="block_size 48"):
        RecipeEntry(".*", Precision.INT4_BLOCKWISE, block_size=48)
    with pytest.raises(re.error):
        RecipeEntry("(unclosed", Precision.FLOAT16)
    with pytest.raises(ValueError, match="repeated: \\['.\\*'\\]"):
        quantizer_recipe([RecipeEntry(".*", Precision.FLOAT16), RecipeEntry(".*", Precision.DYNAMIC_INT8)])


def tflite_spec(steps: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "model": {"uri": "s3://bucket/model.tflite", "format": "tflite"},
        "dataset": {"uri": "s3://bucket/data.npz"},
        "steps": steps,
        "output": {"uri": "s3://bucket/out/"},
    }


@pytest.mark.parametrize(
    "step", [{"type": "prune"}, {"type": "cluster"}, {"type": "qat"},
             {"type": "distill", "student": {"uri": "s3://bucket/student.keras", "format": "keras"}}],
)  # fmt: skip
def test_training_steps_are_refused_for_a_tflite_model(step: dict[str, Any]) -> None:
    with pytest.raises(SpecError, match=r"spec\.steps\[0\]: a tflite model \(spec\.model\.format\) can only be"):
        parse_spec(tflite_spec([step, {"type": "ptq", "mode": "dynamic"}]))


def test_integer_io_is_refused_for_a_tflite_model() -> None:
    with pytest.raises(SpecError, match=r"spec\.steps\[0\]\.integerIO: integerIO is not available for a tflite"):
        parse_spec(tflite_spec([{"type": "ptq", "mode": "int8", "integerIO": True}]))


def test_every_ptq_mode_and_skip_list_is_accepted_for_a_tflite_model() -> None:
    for mode in ("dynamic", "float16", "int8", "int16x8"):
        parse_spec(tflite_spec([{"type": "ptq", "mode": mode, "skipLayers": ["hidden"], "skipFirstAndLast": True}]))


def test_a_tflite_student_is_refused() -> None:
    spec = tflite_spec([{"type": "distill", "student": {"uri": "s3://bucket/s.tflite", "format": "tflite"}}])
    spec["model"]["format"] = "keras"
    with pytest.raises(SpecError, match=r"spec\.steps\[0\]\.student\.format: the student must be trainable"):
        parse_spec(spec)
