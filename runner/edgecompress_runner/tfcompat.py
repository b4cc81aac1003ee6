"""Imports TensorFlow with tf-keras (Keras 2), the only Keras that tensorflow-model-optimization supports.

Import TensorFlow, tf-keras and tfmot through this module only, so the legacy-Keras switch is
always set before TensorFlow reads it.
"""

from __future__ import annotations

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
import tf_keras as keras  # noqa: E402

if not tf.keras.__name__.startswith("tf_keras"):
    raise ImportError(
        "TensorFlow was imported before edgecompress_runner with Keras 3; "
        "set TF_USE_LEGACY_KERAS=1 before importing TensorFlow"
    )

__all__ = ["tf", "tfmot", "keras"]
