"""One-shot pruning whose kept weights are refit by least squares to the float layer's outputs.

Gradual magnitude pruning fine-tunes its way back from each cut, and with a few hundred unlabelled samples
the student learns those samples rather than the model (a 50 % cut of a small CNN agreed 1.0 with it on its
training samples, 0.97 on others). Refitting asks much more of the same samples: every pruned layer must
reproduce the float layer's output at every position of every sample (tens of thousands of equations per
weight), as in layer-wise reconstruction (Optimal Brain Compression, SparseGPT).

For each pruned layer, in the model's order: the layer's inputs are read from the model being pruned (so
each layer also corrects what the earlier cuts changed), the target is the float layer's linear output on
the float model's inputs, the mask keeps the share tfmot keeps, cutting the weights whose loss the refit
makes up best (``cut_order``; 2:4 blocks keep their two largest weights, as tfmot lays them out), and each
output channel's kept weights solve the damped normal equations. A linear layer read only by a global average
pooling (a Conv2D → GlobalAveragePooling2D → Softmax head) is fit to its mean over positions, the only part of
its output that reaches the model's: fitting every position spends the kept weights on detail the pooling
discards (on three seed variants of the tests' mini-Xception cut in half, the head to 3/4, agreement on 2000
unseen samples before fine-tuning went from 0.9935 to 0.997, 0.9935 to 0.9975 and 0.9975 to 0.9965, with the
largest weights kept). Layers whose linear map is not one of these (Embedding, recurrent cells, grouped or
transposed convolutions, shared layers) or whose normal equations would be too large are cut by magnitude
alone, as tfmot would.

With ``allocation: sensitivity`` the share each layer is cut to comes from the same normal equations: a
layer whose outputs the refit reproduces with fewer weights gives up more of them (``sensitivity_sparsities``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .keras_graph import weight_short_name
from .tfcompat import keras, tf

DAMPING = 0.01
"""How strongly the kept weights are pulled toward their float values, as a share of the normal equations' mean
diagonal: a ridge toward the float kernel rather than toward zero, so that a layer the samples say little
about (a Dense head with more inputs than samples, a channel that never fires) stays near the magnitude cut
instead of fitting the samples' noise."""

MAX_FAN_IN = 4096
"""Largest fan-in refit (its normal equations take fan-in² float64)."""

SENSITIVITY_LEVELS = tuple(eighth / 8 for eighth in range(8))
"""The shares of a layer's weights whose refit error ``sensitivity_sparsities`` measures (0 to 7/8)."""

SENSITIVITY_CHANNELS = 64
"""Output channels per layer (evenly spaced) whose refit error stands for the layer's."""

MAX_ROWS = 65536
"""Positions per layer the normal equations are summed over, sampled evenly from every batch."""

GREEDY_CUT_BUDGET = 1e9
"""Largest ``output channels × fan-in³`` whose cut order ``cut_order`` finds by exact greedy Optimal Brain
Surgeon steps (about 3 s per 1e9 on two cores); above it, each weight's one-shot OBS cost orders the cuts."""

CUT_ORDER_CHUNK_BYTES = 2**27
"""Memory for the per-channel inverse matrices the greedy cut order updates at once."""


@dataclass(frozen=True)
class RefitResult:
    """Which layers were refit by least squares and which were only cut by magnitude."""

    refit: list[str]
    magnitude_only: list[str]


def _kernel(layer: Any, weight_names: tuple[str, ...]) -> Any | None:
    """The kernel tfmot prunes in ``layer`` when this module can refit it, else None."""
    if isinstance(layer, keras.layers.SeparableConv2D):
        wanted = "pointwise_kernel"
    elif isinstance(layer, (keras.layers.Conv2DTranspose, keras.layers.DepthwiseConv2D, keras.layers.Conv3D)):
        return None
    elif isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D)):
        if getattr(layer, "groups", 1) != 1 or layer.data_format != "channels_last":
            return None
        wanted = "kernel"
    elif isinstance(layer, keras.layers.Dense):
        wanted = "kernel"
    else:
        return None
    if weight_names != (wanted,) or len(layer.inbound_nodes) != 1:
        return None
    kernel = getattr(layer, wanted)
    fan_in = int(np.prod(kernel.shape[:-1]))
    return kernel if fan_in <= MAX_FAN_IN else None


def linear_inputs(layer: Any, inputs: Any) -> Any:
    """The rows the pruned kernel multiplies: ``inputs`` of ``layer`` as (positions, fan-in), in the kernel's
    row order (``kernel.reshape(-1, out)``), so that ``rows @ kernel`` is the layer's output before its bias
    and activation."""
    x = tf.convert_to_tensor(inputs)
    if isinstance(layer, keras.layers.Dense):
        return tf.reshape(x, (-1, x.shape[-1]))
    if isinstance(layer, keras.layers.SeparableConv2D):
        depthwise = tf.nn.depthwise_conv2d(
            x,
            layer.depthwise_kernel,
            strides=(1, *layer.strides, 1),
            padding=layer.padding.upper(),
            dilations=layer.dilation_rate,
        )
        return tf.reshape(depthwise, (-1, depthwise.shape[-1]))
    if isinstance(layer, keras.layers.Conv1D):
        (size,), (stride,), (rate,) = layer.kernel_size, layer.strides, layer.dilation_rate
        if layer.padding == "causal":
            x = tf.pad(x, [[0, 0], [(size - 1) * rate, 0], [0, 0]])
        padding = "SAME" if layer.padding == "same" else "VALID"
        patches = tf.image.extract_patches(
            x[:, None], sizes=[1, 1, size, 1], strides=[1, 1, stride, 1], rates=[1, 1, rate, 1], padding=padding
        )
    else:
        height, width = layer.kernel_size
        patches = tf.image.extract_patches(
            x,
            sizes=[1, height, width, 1],
            strides=[1, *layer.strides, 1],
            rates=[1, *layer.dilation_rate, 1],
            padding=layer.padding.upper(),
        )
    return tf.reshape(patches, (-1, patches.shape[-1]))


def _only_averaged(model: Any, layer: Any) -> bool:
    """Whether all that reaches the model of ``layer``'s output is its average over positions: ``layer`` is
    linear, not a model output, unmasked, and read only by a channels-last global average pooling (the
    Conv2D → GlobalAveragePooling2D → Softmax head of mini-Xception-style classifiers)."""
    consumers = [node.outbound_layer for node in layer.outbound_nodes]
    return (
        getattr(layer.activation, "__name__", None) == "linear"
        and layer.name not in model.output_names
        and getattr(layer.output, "_keras_mask", None) is None
        and len(consumers) == 1
        and isinstance(consumers[0], (keras.layers.GlobalAveragePooling1D, keras.layers.GlobalAveragePooling2D))
        and consumers[0].data_format == "channels_last"
    )


def _position_means(rows: Any, samples: int) -> Any:
    """Each sample's mean of ``rows`` (``linear_inputs`` of a batch of ``samples``) over its positions."""
    return tf.reduce_mean(tf.reshape(rows, (samples, -1, rows.shape[-1])), axis=1)


@dataclass(frozen=True)
class CutOrder:
    """Per output channel of a kernel (as fan-in × channels columns): the order its weights are cut in, and the
    refit error ``(w - w*)ᵀ H (w - w*)`` after each cut (the kept weights refit, ``w*`` the uncut optimum)."""

    order: np.ndarray
    """(channels, fan-in) input indices, first cut first."""
    errors: np.ndarray
    """(channels, fan-in) the error after each cut, cumulative."""

    def keep_mask(self, kept: int) -> np.ndarray:
        """(fan-in, channels) which weights stay when ``kept`` stay in all: the cuts that add the least error,
        each channel cut in its own order (a channel's added errors made non-decreasing first, so that the
        cheapest cuts overall are a first part of every channel's order)."""
        channels, fan_in = self.order.shape
        added = np.diff(self.errors, axis=1, prepend=0.0)
        rising = np.maximum.accumulate(added, axis=1)
        position = np.broadcast_to(np.arange(fan_in), rising.shape)
        cheapest = np.lexsort((position.ravel(), rising.ravel()))[: max(0, self.order.size - kept)]
        counts = np.bincount(cheapest // fan_in, minlength=channels)
        mask = np.ones((fan_in, channels), dtype=bool)
        for channel, count in enumerate(counts):
            mask[self.order[channel, :count], channel] = False
        return mask


def cut_order(inverse: np.ndarray, optimum: np.ndarray) -> CutOrder:
    """In which order to cut each output channel's weights so that the refit loses least (the masks that
    ``refit_pruned`` and ``sensitivity_sparsities`` keep).

    A weight's size says little of what cutting it costs once the others are refit: that cost is
    ``w_p² / (H⁻¹)_pp`` (Optimal Brain Surgeon), which counts how strongly its input varies and how well the
    other inputs stand in for it. Cutting by it greedily, one weight at a time with the others and ``H⁻¹``
    updated after each (Optimal Brain Compression), is exact for each cut given the earlier ones. On the tests'
    mini-Xception cut in half, the refit model's output had an SNR of 40.4 / 39.9 / 37.2 dB against the float
    model's on 2000 unseen samples (three seed variants), against 36.1 / 34.3 / 35.3 dB with the largest weights
    kept and 38.0 / 35.6 / 35.9 dB with the one-shot OBS costs. Layers over ``GREEDY_CUT_BUDGET`` are ordered by
    the one-shot costs.

    Args:
        inverse: ``H⁻¹``, the inverse of the damped normal equations' matrix (fan-in × fan-in).
        optimum: The uncut refit weights ``w*``, fan-in × channels.

    Returns:
        Each channel's cut order and the error after each cut.
    """
    fan_in, channels = optimum.shape
    if channels * fan_in**3 > GREEDY_CUT_BUDGET:
        costs = optimum.T**2 / np.diag(inverse)
        order = np.argsort(costs, axis=1, kind="stable")
        return CutOrder(order=order, errors=np.cumsum(np.take_along_axis(costs, order, axis=1), axis=1))
    order = np.empty((channels, fan_in), dtype=np.int64)
    errors = np.empty((channels, fan_in))
    chunk = max(1, CUT_ORDER_CHUNK_BYTES // (8 * fan_in * fan_in))
    for first in range(0, channels, chunk):
        weights = optimum[:, first : first + chunk].T.copy()
        rows = np.arange(len(weights))
        inverses = np.repeat(inverse[None], len(weights), axis=0)
        alive = np.ones(weights.shape, dtype=bool)
        total = np.zeros(len(weights))
        for step in range(fan_in):
            diagonal = np.einsum("cii->ci", inverses)
            costs = np.where(alive, weights**2 / np.maximum(diagonal, np.finfo(float).tiny), np.inf)
            cut = np.argmin(costs, axis=1)
            total += costs[rows, cut]
            order[first : first + len(weights), step] = cut
            errors[first : first + len(weights), step] = total
            column = inverses[rows, :, cut]
            pivot = column[rows, cut]
            weights -= (weights[rows, cut] / pivot)[:, None] * column
            inverses -= column[:, :, None] * (column / pivot[:, None])[:, None, :]
            weights[rows, cut] = 0.0
            alive[rows, cut] = False
    return CutOrder(order=order, errors=errors)


def kept_count(size: int, sparsity: float) -> int:
    """How many of ``size`` weights tfmot keeps at ``sparsity``."""
    return max(1, int(round(size * (1 - sparsity))))


def keep_mask(kernel: np.ndarray, sparsity: float, *, two_of_four: bool) -> np.ndarray:
    """Which weights stay: the largest ``round(size * (1 - sparsity))`` of the kernel, or the two largest of
    every four consecutive input channels (tfmot's 2:4 blocks, per output channel and kernel position)."""
    magnitude = np.abs(kernel)
    if not two_of_four:
        kept = kept_count(kernel.size, sparsity)
        order = np.argsort(-magnitude, axis=None, kind="stable")
        mask = np.zeros(kernel.size, dtype=bool)
        mask[order[:kept]] = True
        return mask.reshape(kernel.shape)
    channels = kernel.shape[-2] if kernel.ndim > 1 else kernel.shape[0]
    rows = np.moveaxis(magnitude, -1, 0).reshape(-1, channels)  # (out x positions, in), tfmot's layout
    padded = np.pad(rows, [(0, 0), (0, -channels % 4)])
    blocks = padded.reshape(len(padded), -1, 4)
    ranks = np.argsort(np.argsort(-blocks, axis=-1, kind="stable"), axis=-1, kind="stable")
    mask = (ranks < 2).reshape(len(padded), -1)[:, :channels]
    out_channels = kernel.shape[-1]
    return np.moveaxis(mask.reshape(out_channels, *kernel.shape[:-1]), 0, -1)


def _sampled_rows(rows: Any, limit: int) -> np.ndarray:
    values = np.asarray(rows, dtype=np.float64)
    if len(values) <= limit:
        return values
    return values[np.linspace(0, len(values) - 1, limit).astype(np.int64)]


def _layer_input(model: Any, layer: Any) -> Any:
    return keras.Model(model.inputs, layer.input)


def _layer_gram(layer: Any, layer_input: Any, batches: list[Any]) -> np.ndarray:
    """The normal equations' matrix of ``layer``'s kernel: its linear inputs' Gram matrix over ``batches``."""
    per_batch = max(1, MAX_ROWS // max(1, len(batches)))
    gram: np.ndarray | None = None
    for batch in batches:
        rows = _sampled_rows(linear_inputs(layer, layer_input(batch, training=False)), per_batch)
        gram = rows.T @ rows if gram is None else gram + rows.T @ rows
    assert gram is not None
    return gram


def _damped(gram: np.ndarray) -> tuple[np.ndarray, float]:
    damping = DAMPING * max(float(np.mean(np.diag(gram))), 1e-12)
    return gram + damping * np.eye(len(gram)), damping


def _solve_kept(damped: np.ndarray, targets: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Each output channel's kept weights solving the damped normal equations ``H_KK w_K = targets_K`` (the
    others zero); ``targets`` holds one right-hand side per channel."""
    fitted = np.zeros_like(targets)
    for out in range(targets.shape[1]):
        kept = mask[:, out]
        if kept.any():
            fitted[kept, out] = np.linalg.solve(damped[np.ix_(kept, kept)], targets[kept, out])
    return fitted


def _cut_costs(damped: np.ndarray, columns: np.ndarray) -> list[float]:
    """The refit's relative error at each of ``SENSITIVITY_LEVELS``: its damped objective at the optimum,
    ``(w - W)ᵀ H (w - W)`` with the cut weights zero, over ``Wᵀ H W``, over at most ``SENSITIVITY_CHANNELS``
    output channels cut as ``cut_order`` orders them.

    Per channel the optimum is read from the smaller side: with few weights cut, from the cut ones and H⁻¹
    (Optimal Brain Surgeon's ``W_Pᵀ ((H⁻¹)_PP)⁻¹ W_P``); with few kept, from the kept ones' solve.
    """
    channels = np.unique(np.linspace(0, columns.shape[1] - 1, SENSITIVITY_CHANNELS).astype(np.int64))
    weights = columns[:, channels]
    inverse = np.linalg.inv(damped)
    targets = damped @ weights
    energy = max(float(np.sum(weights * targets)), 1e-30)
    order = cut_order(inverse, weights)
    costs = [0.0]
    for level in SENSITIVITY_LEVELS[1:]:
        mask = order.keep_mask(kept_count(weights.size, level))
        cut_counts, kept_counts = (~mask).sum(axis=0), mask.sum(axis=0)
        few_cut = (cut_counts > 0) & (cut_counts <= kept_counts)
        total = sum(
            float(weights[~kept, out] @ np.linalg.solve(inverse[np.ix_(~kept, ~kept)], weights[~kept, out]))
            for out, kept in zip(np.flatnonzero(few_cut), mask.T[few_cut], strict=True)
        )
        few_kept = cut_counts > kept_counts
        error = _solve_kept(damped, targets[:, few_kept], mask[:, few_kept]) - weights[:, few_kept]
        total += float(np.sum(error * (damped @ error)))
        costs.append(total / energy)
    return costs


def sensitivity_sparsities(
    model: Any, batches: Iterable[Any], *, pruned: dict[str, tuple[str, ...]], sparsity: float
) -> dict[str, float]:
    """Per pruned layer, the share of its weights to cut so that ``sparsity`` of all pruned weights are cut
    where they cost least.

    A layer's cost at a share is its refit's relative error on the float model (see ``_cut_costs``; each
    layer's error counted alike, as layer-wise allocation such as OBC's and SPDY's does before a global
    search). Layers are cut further, in steps of an eighth, wherever that adds the least error per weight
    cut, until the budget is met (the last step only partly). Layers that cannot be refit (see
    ``refit_pruned``) keep ``sparsity``.

    Args:
        model: The float tf-keras model, before any cut.
        batches: Model-ready input batches, as ``refit_pruned`` takes them.
        pruned: Per layer, the names of the weights tfmot prunes in it.
        sparsity: The share of all pruned weights to cut.

    Returns:
        Each pruned layer's share, such that tfmot keeping ``round(size * (1 - share))`` weights of each
        layer cuts ``sparsity`` of them all (to within one weight per layer); ``sparsity`` for every layer
        when the refit layers cannot reach it by 7/8 each.
    """
    batches = list(batches)
    shares: dict[str, float] = {}
    costs: dict[str, list[float]] = {}
    sizes: dict[str, int] = {}
    for layer in model.layers:
        if layer.name not in pruned:
            continue
        kernel = _kernel(layer, pruned[layer.name])
        if kernel is None:
            shares[layer.name] = sparsity
            continue
        float_kernel = kernel.numpy()
        columns = float_kernel.reshape(-1, float_kernel.shape[-1]).astype(np.float64)
        damped, _ = _damped(_layer_gram(layer, _layer_input(model, layer), batches))
        costs[layer.name] = _cut_costs(damped, columns)
        sizes[layer.name] = float_kernel.size
    cut_shares = _cheapest_shares(costs, sizes, to_cut=sparsity * sum(sizes.values()))
    if cut_shares is None:
        return dict.fromkeys(pruned, sparsity)
    return shares | cut_shares


def _cheapest_shares(costs: dict[str, list[float]], sizes: dict[str, int], *, to_cut: float) -> dict[str, float] | None:
    """Greedy: the next eighth of whichever layer adds the least cost per weight, until ``to_cut`` weights are
    cut (the last step partly, to a whole number of kept weights); None when every layer is at 7/8 before."""
    steps = dict.fromkeys(costs, 0)
    shares: dict[str, float] = {}
    cut = 0.0

    def slope(name: str) -> float:
        step = steps[name]
        added = SENSITIVITY_LEVELS[step + 1] - SENSITIVITY_LEVELS[step]
        return (costs[name][step + 1] - costs[name][step]) / (sizes[name] * added)

    while cut < to_cut - 0.5:
        open_layers = [name for name in costs if name not in shares and steps[name] + 1 < len(SENSITIVITY_LEVELS)]
        if not open_layers:
            return None
        name = min(open_layers, key=slope)
        current = SENSITIVITY_LEVELS[steps[name]]
        more = sizes[name] * (SENSITIVITY_LEVELS[steps[name] + 1] - current)
        if cut + more > to_cut:
            kept = round(sizes[name] * (1 - current) - (to_cut - cut))
            shares[name] = 1 - kept / sizes[name]
            break
        steps[name] += 1
        cut += more
    return {name: shares.get(name, SENSITIVITY_LEVELS[step]) for name, step in steps.items()}


def refit_pruned(
    model: Any,
    batches: Iterable[Any],
    *,
    pruned: dict[str, tuple[str, ...]],
    sparsities: dict[str, float],
    two_of_four: bool = False,
) -> RefitResult:
    """Cuts every pruned weight of ``model`` to its layer's share at once, refitting what stays (in place).

    Args:
        model: A tf-keras functional or sequential model; its layers' kernels are changed in place.
        batches: Model-ready input batches (what ``model.predict`` takes) to fit on; read once per layer.
        pruned: Per layer, the names of the weights tfmot prunes in it.
        sparsities: Per pruned layer, the share of its pruned weights set to zero.
        two_of_four: Keep the two largest of every four input channels instead of the cheapest cut overall.

    Returns:
        The layers refit by least squares and those cut by magnitude alone.
    """
    batches = list(batches)
    reference = keras.models.clone_model(model)
    reference.set_weights(model.get_weights())
    refit: list[str] = []
    magnitude_only: list[str] = []
    for layer in model.layers:
        if layer.name not in pruned:
            continue
        sparsity = sparsities[layer.name]
        kernel = _kernel(layer, pruned[layer.name])
        if kernel is None:
            for weight in layer.weights:
                if weight_short_name(weight) in pruned[layer.name]:
                    value = weight.numpy()
                    weight.assign(value * keep_mask(value, sparsity, two_of_four=two_of_four))
            magnitude_only.append(layer.name)
            continue
        float_kernel = kernel.numpy()
        columns = float_kernel.reshape(-1, float_kernel.shape[-1]).astype(np.float64)
        float_layer = reference.get_layer(layer.name)
        pruned_input, float_input = _layer_input(model, layer), _layer_input(reference, float_layer)
        averaged = _only_averaged(model, layer)
        per_batch = max(1, MAX_ROWS // max(1, len(batches)))
        gram = np.zeros((len(columns), len(columns)))
        cross = np.zeros_like(columns)
        for batch in batches:
            layer_input, float_layer_input = pruned_input(batch, training=False), float_input(batch, training=False)
            rows, float_rows = linear_inputs(layer, layer_input), linear_inputs(float_layer, float_layer_input)
            if averaged:
                samples = int(layer_input.shape[0])
                rows, float_rows = _position_means(rows, samples), _position_means(float_rows, samples)
            rows, float_rows = _sampled_rows(rows, per_batch), _sampled_rows(float_rows, per_batch)
            gram += rows.T @ rows
            cross += rows.T @ (float_rows @ columns)
        damped, damping = _damped(gram)
        targets = cross + damping * columns
        if two_of_four:
            mask = keep_mask(float_kernel, sparsity, two_of_four=True).reshape(columns.shape)
        else:
            inverse = np.linalg.inv(damped)
            mask = cut_order(inverse, inverse @ targets).keep_mask(kept_count(columns.size, sparsity))
        fitted = _solve_kept(damped, targets, mask)
        kernel.assign(fitted.reshape(float_kernel.shape).astype(float_kernel.dtype))
        refit.append(layer.name)
    return RefitResult(refit=refit, magnitude_only=magnitude_only)
