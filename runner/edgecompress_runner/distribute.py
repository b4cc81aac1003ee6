"""Fine-tuning on several devices: tf.distribute.MirroredStrategy when TensorFlow sees more than one GPU.

Each replica holds a copy of the model and takes ``fineTune.batchSize`` samples of every mini-batch, so the
global batch is batchSize x replicas (and an epoch has that many fewer optimizer steps); the gradients are
summed across replicas. With one GPU, or none, training runs as before on TensorFlow's default device.
More than one *logical* CPU device (``tf.config.set_logical_device_configuration``, set before TensorFlow
starts) is mirrored the same way, which is how the code path is tested on a machine without GPUs.

What is parallel: the fine-tuning epochs of prune, cluster, qat and distill (forward, backward, optimizer
updates) and the held-out predictions between epochs. What is not: loading and wrapping the model, the
input model's reference outputs, conversion (the LiteRT converter), and the evaluation with the LiteRT
interpreter, which run on the CPU.
"""

from __future__ import annotations

from typing import Any

from .tfcompat import keras, tf


def training_strategy() -> Any:
    """A MirroredStrategy over the visible GPUs (or logical CPUs) when there are several, else None."""
    for kind in ("GPU", "CPU"):
        devices = [device.name for device in tf.config.list_logical_devices(kind)]
        if len(devices) > 1:
            return tf.distribute.MirroredStrategy(devices=devices)
        if devices and kind == "GPU":
            return None
    return None


def replicas() -> int:
    """Replicas of the strategy in scope (1 outside any)."""
    return int(tf.distribute.get_strategy().num_replicas_in_sync)


def copy_into_scope(model: Any) -> Any:
    """A copy of ``model`` whose variables belong to the strategy in scope (mirrored on every replica).

    tfmot's wrappers reuse the layers they wrap, and a strategy trains only variables created in its scope,
    so a model built or loaded before the strategy is copied once, with its weights, before a step wraps it.
    """
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy
