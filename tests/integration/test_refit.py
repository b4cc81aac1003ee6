"""One-shot pruning with refit weights (``refit``), on the layers real models prune, checked against Keras and tfmot."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.tf


def layers_model() -> Any:
    """Every layer kind the refit handles, with strides, dilation, causal and valid padding, a Dense on a sequence."""
    from edgecompress_runner.tfcompat import keras

    keras.utils.set_random_seed(7)
    layers = keras.layers
    image = layers.Input((12, 12, 3), name="image")
    h = layers.Conv2D(8, 3, strides=2, padding="same", use_bias=True, activation="relu", name="conv")(image)
    h = layers.SeparableConv2D(16, 3, padding="same", dilation_rate=2, use_bias=False, name="sep")(h)
    h = layers.Conv2D(12, 2, padding="valid", name="valid")(h)
    sequence = layers.Reshape((-1, 12), name="rows")(h)
    s = layers.Conv1D(10, 3, padding="causal", dilation_rate=2, name="causal")(sequence)
    s = layers.Conv1D(9, 2, strides=2, padding="same", name="strided")(s)
    s = layers.Dense(6, activation="tanh", name="per_step")(s)
    out = layers.Dense(4, name="out")(layers.Flatten(name="flat")(s))
    return keras.Model(image, out)


def test_the_rows_times_the_kernel_are_each_layers_output_before_bias_and_activation() -> None:
    from edgecompress_runner.refit import linear_inputs
    from edgecompress_runner.tfcompat import keras

    model = layers_model()
    x = np.random.default_rng(0).normal(size=(5, 12, 12, 3)).astype(np.float32)
    for name in ("conv", "sep", "valid", "causal", "strided", "per_step", "out"):
        layer = model.get_layer(name)
        inputs = keras.Model(model.inputs, layer.input)(x)
        kernel = (layer.pointwise_kernel if name == "sep" else layer.kernel).numpy()
        linear = np.asarray(linear_inputs(layer, inputs)) @ kernel.reshape(-1, kernel.shape[-1])
        bias = layer.bias.numpy() if layer.use_bias else 0.0
        activation = keras.activations.get(layer.activation)
        found = np.asarray(activation(linear + bias))
        expected = np.asarray(layer(inputs)).reshape(-1, kernel.shape[-1])
        np.testing.assert_allclose(found, expected, atol=2e-5, err_msg=name)


@pytest.mark.parametrize("shape", [(3, 3, 6, 5), (1, 1, 16, 8), (10, 7)])
def test_two_of_four_blocks_are_the_ones_tfmot_keeps(shape: tuple[int, ...]) -> None:
    """A kernel masked by ``keep_mask`` comes out of tfmot's own 2:4 pruning unchanged."""
    from edgecompress_runner.refit import keep_mask
    from edgecompress_runner.tfcompat import keras, tfmot

    kernel = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    masked = kernel * keep_mask(kernel, 0.5, two_of_four=True)
    inputs = keras.layers.Input(shape[:3] if len(shape) == 4 else (shape[0],))
    if len(shape) == 4:
        layer = keras.layers.Conv2D(shape[3], shape[:2], use_bias=False, padding="same")
    else:
        layer = keras.layers.Dense(shape[1], use_bias=False)
    schedule = tfmot.sparsity.keras.ConstantSparsity(0.5, 1, frequency=1000)  # masks set at the first step
    wrapped = tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule, sparsity_m_by_n=(2, 4))
    model = keras.Model(inputs, wrapped(inputs))
    layer.kernel.assign(masked)
    model.compile(keras.optimizers.SGD(0.1), "mse")
    rng = np.random.default_rng(2)
    x = rng.normal(size=(32, *model.input_shape[1:])).astype(np.float32)
    y = rng.normal(size=(32, *model.output_shape[1:])).astype(np.float32)
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    stripped = tfmot.sparsity.keras.strip_pruning(model).layers[-1].kernel.numpy()
    assert not np.allclose(stripped, masked)  # it trained, under tfmot's own 2:4 mask: the same zeros
    np.testing.assert_array_equal(stripped == 0, masked == 0)
    channels = shape[-2]
    blocks = np.moveaxis(masked, -1, 0).reshape(-1, channels)
    full = blocks[:, : channels - channels % 4].reshape(len(blocks), -1, 4)
    assert ((full != 0).sum(-1) == 2).all()


def test_the_refit_layers_follow_the_float_model_far_closer_than_magnitude_alone() -> None:
    from edgecompress_runner.refit import keep_mask, refit_pruned
    from edgecompress_runner.tfcompat import keras

    model = layers_model()
    x = np.random.default_rng(2).normal(size=(96, 12, 12, 3)).astype(np.float32)
    reference = model.predict(x, verbose=0)
    float_model = keras.models.clone_model(model)
    float_model.set_weights(model.get_weights())
    pruned = {
        name: ("pointwise_kernel",) if name == "sep" else ("kernel",)
        for name in ("conv", "sep", "valid", "causal", "strided", "per_step", "out")
    }

    magnitude = keras.models.clone_model(model)
    magnitude.set_weights(model.get_weights())
    for name, (weight,) in pruned.items():
        kernel = getattr(magnitude.get_layer(name), weight)
        kernel.assign(kernel.numpy() * keep_mask(kernel.numpy(), 0.5, two_of_four=False))

    result = refit_pruned(model, [x[:48], x[48:]], pruned=pruned, sparsities=dict.fromkeys(pruned, 0.5))
    assert result.refit == list(pruned) and result.magnitude_only == []
    for name, (weight,) in pruned.items():
        # Half of each kernel is cut (a kept weight may be zero too: one that reads a channel whose every weight
        # was cut before it).
        kernel = getattr(model.get_layer(name), weight).numpy()
        assert (kernel == 0).sum() >= kernel.size // 2, name

    def error(candidate: Any, inputs: np.ndarray, expected: np.ndarray) -> float:
        return float(np.mean((candidate.predict(inputs, verbose=0) - expected) ** 2))

    # Mean squared error against the float model, refit against magnitude alone: 0.0021 against 0.0318 on
    # the fitted samples, 0.0165 against 0.0271 on others (random weights and inputs; trained models gain more).
    assert error(model, x, reference) < 0.5 * error(magnitude, x, reference)
    unseen = np.random.default_rng(3).normal(size=(96, 12, 12, 3)).astype(np.float32)
    expected = float_model.predict(unseen, verbose=0)
    assert error(model, unseen, expected) < 0.75 * error(magnitude, unseen, expected)


def test_the_cut_order_loses_less_than_cutting_the_smallest_weights_and_reports_its_exact_error() -> None:
    """Inputs of very different scales (as BatchNorm leaves them) that partly stand in for each other: a small
    weight on a strong input costs more than a large one on a weak or redundant input. The error ``cut_order``
    gives for each mask is the refit's own: the kept weights solving the normal equations."""
    from edgecompress_runner.refit import cut_order, keep_mask

    rng = np.random.default_rng(8)
    fan_in, channels = 24, 6
    mixing = np.eye(fan_in) + 0.3 * rng.normal(size=(fan_in, fan_in))
    rows = rng.normal(size=(500, fan_in)) @ mixing * np.exp(rng.normal(size=fan_in))
    gram = rows.T @ rows
    weights = rng.normal(size=(fan_in, channels))
    order = cut_order(np.linalg.inv(gram), weights)

    def refit_error(mask: np.ndarray) -> float:
        total = 0.0
        for out, kept in enumerate(mask.T):
            fitted = np.zeros(fan_in)
            fitted[kept] = np.linalg.solve(gram[np.ix_(kept, kept)], gram[kept] @ weights[:, out])
            total += float((fitted - weights[:, out]) @ gram @ (fitted - weights[:, out]))
        return total

    ratios = []
    for kept in (108, 72, 36):
        mask = order.keep_mask(kept)
        assert mask.sum() == kept
        found = refit_error(mask)
        cuts = (~mask).sum(axis=0)
        np.testing.assert_allclose(sum(order.errors[out, n - 1] for out, n in enumerate(cuts) if n), found, rtol=1e-6)
        ratios.append(found / refit_error(keep_mask(weights, 1 - kept / weights.size, two_of_four=False)))
    assert max(ratios) < 0.5, ratios  # 0.067, 0.12, 0.22 (seeded)


def two_paths_model() -> Any:
    """``after`` reads 16 channels that are 4 signals repeated (its refit can move any cut weight onto a copy);
    ``side`` reads 20 independent ones."""
    from edgecompress_runner.tfcompat import keras

    keras.utils.set_random_seed(11)
    layers = keras.layers
    x = layers.Input((20,), name="x")
    signals = layers.Dense(4, use_bias=False, name="signals")(x)
    copies = layers.Concatenate(name="copies")([signals, signals, signals, signals])
    after = layers.Dense(8, use_bias=False, name="after")(copies)
    side = layers.Dense(8, use_bias=False, name="side")(x)
    return keras.Model(x, layers.Concatenate(name="both")([after, side]))


def test_sensitivity_cuts_where_the_refit_loses_least_and_follows_the_float_model_closer() -> None:
    from edgecompress_runner.refit import kept_count, refit_pruned, sensitivity_sparsities
    from edgecompress_runner.tfcompat import keras

    model = two_paths_model()
    x = np.random.default_rng(4).normal(size=(256, 20)).astype(np.float32)
    pruned = {"signals": ("kernel",), "after": ("kernel",), "side": ("kernel",)}
    shares = sensitivity_sparsities(model, [x[:128], x[128:]], pruned=pruned, sparsity=0.5)
    sizes = {name: model.get_layer(name).kernel.numpy().size for name in pruned}
    assert shares["after"] > 0.5 > shares["side"], shares
    kept = sum(kept_count(sizes[name], shares[name]) for name in pruned)
    assert kept == sum(sizes.values()) // 2, (kept, sizes, shares)

    unseen = np.random.default_rng(5).normal(size=(256, 20)).astype(np.float32)
    expected = model.predict(unseen, verbose=0)
    errors = {}
    for allocation, sparsities in {"sensitivity": shares, "uniform": dict.fromkeys(pruned, 0.5)}.items():
        candidate = keras.models.clone_model(model)
        candidate.set_weights(model.get_weights())
        refit_pruned(candidate, [x[:128], x[128:]], pruned=pruned, sparsities=sparsities)
        zeros = sum(int((candidate.get_layer(name).kernel.numpy() == 0).sum()) for name in pruned)
        assert zeros >= sum(sizes.values()) // 2, allocation
        errors[allocation] = float(np.mean((candidate.predict(unseen, verbose=0) - expected) ** 2))
    # 0.068 against 0.187 (seeded): "after" is cut to 3/4, "side" to 3/8, "signals" to 0.35.
    assert errors["sensitivity"] < 0.8 * errors["uniform"], errors


def pooled_head_model(*, between: bool) -> Any:
    """A 3x3 Conv2D head read only by global average pooling, as mini-Xception ends; with ``between``, a linear
    Activation layer sits between them (the same function, but the head's output is no longer only averaged)."""
    from edgecompress_runner.tfcompat import keras

    keras.utils.set_random_seed(13)
    layers = keras.layers
    image = layers.Input((10, 10, 2), name="image")
    h = layers.Conv2D(12, 3, padding="same", activation="relu", name="features")(image)
    head = layers.Conv2D(5, 3, padding="same", name="head")(h)
    if between:
        head = layers.Activation("linear", name="same_values")(head)
    return keras.Model(image, layers.GlobalAveragePooling2D(name="gap")(head))


def test_a_head_read_only_by_global_average_pooling_is_refit_to_the_average() -> None:
    """Only the spatial mean of such a head reaches the model's output, so its kept weights are fit to that
    mean, not to every position (which spends them on detail the pooling throws away)."""
    from edgecompress_runner.refit import refit_pruned

    x = np.random.default_rng(6).normal(size=(256, 10, 10, 2)).astype(np.float32)
    unseen = np.random.default_rng(7).normal(size=(256, 10, 10, 2)).astype(np.float32)
    errors = {}
    for between in (False, True):
        model = pooled_head_model(between=between)
        expected = model.predict(unseen, verbose=0)
        refit_pruned(model, [x[:128], x[128:]], pruned={"head": ("kernel",)}, sparsities={"head": 0.875})
        kernel = model.get_layer("head").kernel.numpy()
        assert (kernel == 0).sum() == round(kernel.size * 0.875)
        errors[between] = float(np.mean((model.predict(unseen, verbose=0) - expected) ** 2))
    # Unseen-input MSE 0.000057 fit to the mean against 0.00025 fit at every position (seeded).
    assert errors[False] < 0.5 * errors[True], errors
