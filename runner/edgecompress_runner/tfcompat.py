"""Imports TensorFlow with tf-keras (Keras 2), the only Keras that tensorflow-model-optimization supports.

Import TensorFlow, tf-keras and tfmot through this module only, so the legacy-Keras switch is
always set before TensorFlow reads it.

oneDNN's custom CPU kernels are off (``TF_ENABLE_ONEDNN_OPTS=0``) unless the environment sets the
variable: with them, fine-tuning some real models (SeparableConv2D + BatchNormalization + residual
adds) dies in native code (SIGSEGV, ``free(): invalid next size``), and results differ from run to run.

``seed_run`` seeds every random source and makes TensorFlow's ops deterministic, so two runs of one
spec give the same bytes.
"""

from __future__ import annotations

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import tensorflow as tf  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
import tf_keras as keras  # noqa: E402

if not tf.keras.__name__.startswith("tf_keras"):
    raise ImportError(
        "TensorFlow was imported before edgecompress_runner with Keras 3; "
        "set TF_USE_LEGACY_KERAS=1 before importing TensorFlow"
    )


def seed_run(seed: int) -> None:
    """Seeds Python's ``random``, NumPy's global generator and TensorFlow (keras.utils.set_random_seed) and
    turns on op determinism; idempotent, so a process may run several jobs (each starts from the same state)."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


__all__ = ["keras", "seed_run", "tf", "tfmot"]
