"""litert-quantizer on a float .tflite versus the LiteRT converter's own PTQ, on the same tf-keras models.

Both start from the same trained model: the converter quantizes the Keras model (what a keras/h5 job
does), litert-quantizer quantizes the float .tflite the converter made of it (what a tflite job
does). Each result is compared with the float .tflite on the 360 evaluation digits.

    python bench/litert_quantizer_vs_converter.py [--calibration-samples 200]
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from edgecompress_runner import evaluate
from edgecompress_runner.convert import representative_dataset
from edgecompress_runner.example import digits_arrays, digits_cnn, train_classifier
from edgecompress_runner.tfcompat import keras, seed_run, tf
from edgecompress_runner.tflite_quantize import calibration_samples, only_signature, ptq_recipe, quantize

MODES = ("dynamic", "float16", "int8")


def conv_bn_softmax() -> Any:
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(16, 3, padding="same", use_bias=False, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(64, activation="relu", name="hidden")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x))


def converter_ptq(model: Any, mode: str, x_train: dict[str, np.ndarray], samples: int) -> bytes:
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if mode == "int8":
        converter.representative_dataset = representative_dataset(x_train, samples)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return bytes(converter.convert())


def outputs(model: bytes, x: np.ndarray) -> np.ndarray:
    """The model's only output on ``x`` fed to its only input."""
    runner = evaluate.ModelRunner(model, threads=1)
    [image], [scores] = (tensor.name for tensor in runner.signature.inputs), (t.name for t in runner.signature.outputs)
    return runner.predict({image: x})[scores]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calibration-samples", type=int, default=200)
    args = parser.parse_args()
    seed_run(0)
    data = digits_arrays()
    x_eval, y_eval = data["x_eval"], data["y_eval"]
    print("| model | mode | float bytes | converter bytes | litert-quantizer bytes | converter agreement | "
          "litert-quantizer agreement | converter / litert-quantizer mean abs error | "
          "float / converter / litert-quantizer accuracy |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, build in (("digits_cnn", digits_cnn), ("conv_bn", conv_bn_softmax)):
        model = train_classifier(build, data, epochs=6)
        float_model = bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
        float_outputs = outputs(float_model, x_eval)
        reference = float_outputs.argmax(-1)
        for mode in MODES:
            _, (input_name,) = only_signature(float_model)
            x_train = {input_name: data["x_train"]}
            by_converter = converter_ptq(model, mode, x_train, args.calibration_samples)
            calibration = calibration_samples(x_train, args.calibration_samples)
            by_quantizer = quantize(float_model, ptq_recipe(mode), calibration=calibration)
            converter_outputs, quantizer_outputs = outputs(by_converter, x_eval), outputs(by_quantizer, x_eval)
            converter_top1, quantizer_top1 = converter_outputs.argmax(-1), quantizer_outputs.argmax(-1)
            converter_error = np.abs(converter_outputs - float_outputs).mean()
            quantizer_error = np.abs(quantizer_outputs - float_outputs).mean()
            print(
                f"| {name} | {mode} | {len(float_model):,} | {len(by_converter):,} | {len(by_quantizer):,} | "
                f"{np.mean(converter_top1 == reference):.4f} | {np.mean(quantizer_top1 == reference):.4f} | "
                f"{converter_error:.5f} / {quantizer_error:.5f} | "
                f"{np.mean(reference == y_eval):.4f} / {np.mean(converter_top1 == y_eval):.4f} / "
                f"{np.mean(quantizer_top1 == y_eval):.4f} |"
            )


if __name__ == "__main__":
    main()
