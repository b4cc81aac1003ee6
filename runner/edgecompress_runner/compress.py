"""Training-time compression steps with tensorflow-model-optimization.

Each step is a function with explicit parameters that takes a Keras model and returns the new
model plus its step report (the contract's typed model; ``steps`` adds the wall time). Layers are
wrapped one by one (clone_model with a clone_function) so skip lists work the same way for every
step, and so a layer tfmot cannot handle is reported by name before any training starts. Whether
tfmot can handle a layer is learnt from its public API: the wrappers raise ValueError for a layer
they cannot wrap, and quantize_apply raises naming the layer it cannot quantize.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgecompress_contract.report import ClusterReport, DistillReport, PruneReport, QatReport, Sparsity
from edgecompress_contract.spec import (
    CentroidInit,
    ClusterStep,
    DistillStep,
    FineTune,
    PruneStep,
    PruningSchedule,
    QatStep,
)

from .errors import InputError, UnsupportedLayerError
from .model_io import check_tfmot_structure, weighted_layer_names
from .planning import pruning_plan, steps_per_epoch
from .progress import Progress
from .tfcompat import keras, tf, tfmot


@dataclass(frozen=True)
class TrainingTargets:
    """What fine-tuning fits: labels when the dataset has them, else the reference model's outputs."""

    x: np.ndarray
    y: np.ndarray
    loss: Any
    metrics: list[str]


def outputs_are_probabilities(predictions: np.ndarray) -> bool:
    if predictions.ndim < 2 or predictions.shape[-1] < 2:
        return False
    sums = predictions.sum(axis=-1)
    return bool(predictions.min() >= 0 and np.allclose(sums, 1.0, atol=1e-3))


def training_targets(model: Any, x: np.ndarray, y: np.ndarray | None, step: str) -> TrainingTargets:
    """Chooses the loss from the labels and the model's output."""
    sample_predictions = model.predict(x[:64], verbose=0)
    from_logits = not outputs_are_probabilities(sample_predictions)
    if y is None:
        return TrainingTargets(x, model.predict(x, verbose=0), keras.losses.MeanSquaredError(), [])
    classes = sample_predictions.shape[-1] if sample_predictions.ndim >= 2 else 1
    if y.dtype.kind in "iu" and y.ndim == 1 and classes > 1:
        if y.min() < 0 or y.max() >= classes:
            raise InputError(f"{step}: labels range {int(y.min())}..{int(y.max())} but the model has {classes} outputs")
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)
        return TrainingTargets(x, y, loss, ["accuracy"])
    if y.shape[1:] != sample_predictions.shape[1:]:
        raise InputError(
            f"{step}: labels have shape {y.shape[1:]} but the model outputs {sample_predictions.shape[1:]}"
        )
    if outputs_are_probabilities(y.astype(np.float32)):
        loss = keras.losses.CategoricalCrossentropy(from_logits=from_logits)
        return TrainingTargets(x, y, loss, ["categorical_accuracy"])
    return TrainingTargets(x, y, keras.losses.MeanSquaredError(), [])


def fine_tune(
    model: Any, targets: TrainingTargets, *, settings: FineTune, progress: Progress, callbacks: Iterable[Any] = ()
) -> dict[str, float]:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=settings.learning_rate),
        loss=targets.loss,
        metrics=targets.metrics,
    )
    history = model.fit(
        targets.x,
        targets.y,
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        verbose=0,
        callbacks=[*callbacks, progress.keras_callback()],
    )
    return {key: float(values[-1]) for key, values in history.history.items()}


def layers_to_skip(model: Any, skip_layers: list[str], skip_first_and_last: bool, step: str) -> set[str]:
    names = {layer.name for layer in model.layers}
    unknown = sorted(set(skip_layers) - names)
    if unknown:
        raise InputError(f"{step}: skipLayers names unknown layers {unknown}; the model has {sorted(names)}")
    skipped = set(skip_layers)
    if skip_first_and_last:
        weighted = weighted_layer_names(model)
        skipped.update(weighted[:1] + weighted[-1:])
    return skipped


def unsupported_layers_error(layers: Iterable[Any], step: str, action: str) -> UnsupportedLayerError:
    described = ", ".join(f"{layer.name!r} ({type(layer).__name__})" for layer in layers)
    return UnsupportedLayerError(
        f"{step}: tfmot cannot {action} layer {described}; list it in this step's skipLayers to keep it as it is"
    )


# tfmot's wrappers (PruneLowMagnitude, ClusterWeights) raise ValueError with this wording for a layer
# type they do not support; other ValueErrors are about settings, not the layer type.
_UNSUPPORTED_WRAPPER = "with a supported layer"


def wrap_layers(
    model: Any,
    *,
    wrap: Callable[[Any], Any],
    wants: Callable[[Any], bool],
    skipped: set[str],
    step: str,
    action: str,
) -> tuple[Any, list[str]]:
    """Clones ``model`` wrapping each wanted, non-skipped layer; layers tfmot cannot wrap are errors.

    Each wrapper is made before cloning, so every layer tfmot refuses is named at once.
    """
    check_tfmot_structure(model, step)
    wrappers: dict[str, Any] = {}
    unsupported = []
    for layer in model.layers:
        if layer.name in skipped or not wants(layer):
            continue
        try:
            wrappers[layer.name] = wrap(layer)
        except ValueError as error:
            if _UNSUPPORTED_WRAPPER not in str(error):
                raise InputError(f"{step}: tfmot cannot {action} layer {layer.name!r} ({_short(error)})") from None
            unsupported.append(layer)
    if unsupported:
        raise unsupported_layers_error(unsupported, step, action)

    def clone(layer: Any) -> Any:
        # Reusing the trained layer objects (as tfmot's own examples do) keeps their weights.
        return wrappers.get(layer.name, layer)

    return keras.models.clone_model(model, clone_function=clone), list(wrappers)


def _has_kernel(layer: Any) -> bool:
    return bool(layer.trainable_weights) and not isinstance(layer, keras.layers.InputLayer)


def _kernels(model: Any, layer_name: str) -> list[np.ndarray]:
    """Kernel values of a layer; QAT wraps layers as quant_<name>, so that name is tried too."""
    for candidate in (layer_name, f"quant_{layer_name}"):
        try:
            layer = model.get_layer(candidate)
        except ValueError:
            continue
        return [
            weight.numpy()
            for weight in layer.weights
            if weight.name.rsplit("/", 1)[-1].split(":")[0].endswith("kernel")
        ]
    return []


def kernel_sparsity(model: Any, layer_names: Iterable[str]) -> Sparsity:
    """Fraction of exactly-zero kernel weights per layer and overall (biases excluded)."""
    per_layer: dict[str, float] = {}
    zeros = total = 0
    for name in layer_names:
        kernels = _kernels(model, name)
        if not kernels:
            continue
        layer_zeros = sum(int((kernel == 0).sum()) for kernel in kernels)
        layer_total = sum(kernel.size for kernel in kernels)
        per_layer[name] = round(layer_zeros / layer_total, 4)
        zeros += layer_zeros
        total += layer_total
    return Sparsity(overall=round(zeros / total, 4) if total else 0.0, layers=per_layer)


def unique_weight_counts(model: Any, layer_names: Iterable[str]) -> dict[str, int]:
    return {name: int(np.unique(kernel).size) for name in layer_names for kernel in _kernels(model, name)}


def prune(
    model: Any, step: PruneStep, *, index: int, x: np.ndarray, y: np.ndarray | None, progress: Progress
) -> tuple[Any, PruneReport]:
    name = f"steps[{index}] prune"
    targets = training_targets(model, x, y, name)
    total = steps_per_epoch(len(x), step.fine_tune.batch_size) * step.fine_tune.epochs
    begin, end, frequency = pruning_plan(step, total, index)
    if step.schedule == PruningSchedule.POLYNOMIAL_DECAY:
        schedule = tfmot.sparsity.keras.PolynomialDecay(
            step.initial_sparsity, step.target_sparsity, begin, end, frequency=frequency
        )
    else:
        schedule = tfmot.sparsity.keras.ConstantSparsity(step.target_sparsity, begin, end, frequency)
    m_by_n = (2, 4) if step.pattern == "2:4" else None
    skipped = layers_to_skip(model, step.skip_layers, step.skip_first_and_last, name)
    wrapped_model, pruned = wrap_layers(
        model,
        wrap=lambda layer: tfmot.sparsity.keras.prune_low_magnitude(
            layer, pruning_schedule=schedule, sparsity_m_by_n=m_by_n
        ),
        wants=_has_kernel,
        skipped=skipped,
        step=name,
        action="prune",
    )
    if not pruned:
        raise InputError(f"{name}: no layer left to prune (all are skipped or have no weights)")
    metrics = fine_tune(
        wrapped_model,
        targets,
        settings=step.fine_tune,
        progress=progress,
        callbacks=[tfmot.sparsity.keras.UpdatePruningStep()],
    )
    stripped = tfmot.sparsity.keras.strip_pruning(wrapped_model)
    sparsity = kernel_sparsity(stripped, pruned)
    if sparsity.overall < step.target_sparsity - 0.02:
        raise InputError(
            f"{name}: reached only {sparsity.overall:.1%} sparsity of the {step.target_sparsity:.0%} "
            "target; raise fineTune.epochs or lower frequency"
        )
    return stripped, PruneReport(
        schedule=step.schedule,
        pattern=step.pattern,
        target_sparsity=step.target_sparsity,
        begin_step=begin,
        end_step=end,
        frequency=frequency,
        optimizer_steps=total,
        sparsity=sparsity,
        skipped_layers=sorted(skipped),
        epochs=step.fine_tune.epochs,
        final_metrics=metrics,
    )


_CENTROIDS = {
    CentroidInit.KMEANS_PLUS_PLUS: "KMEANS_PLUS_PLUS",
    CentroidInit.LINEAR: "LINEAR",
    CentroidInit.DENSITY_BASED: "DENSITY_BASED",
    CentroidInit.RANDOM: "RANDOM",
}


def cluster(
    model: Any,
    step: ClusterStep,
    *,
    index: int,
    x: np.ndarray,
    y: np.ndarray | None,
    preserve_sparsity: bool,
    progress: Progress,
) -> tuple[Any, ClusterReport]:
    name = f"steps[{index}] cluster"
    targets = training_targets(model, x, y, name)
    init = getattr(tfmot.clustering.keras.CentroidInitialization, _CENTROIDS[CentroidInit(step.centroid_init)])
    skipped = layers_to_skip(model, step.skip_layers, step.skip_first_and_last, name)
    wrapped_model, clustered = wrap_layers(
        model,
        wrap=lambda layer: tfmot.clustering.keras.cluster_weights(
            layer,
            number_of_clusters=step.number_of_clusters,
            cluster_centroids_init=init,
            preserve_sparsity=preserve_sparsity,
        ),
        wants=_has_kernel,
        skipped=skipped,
        step=name,
        action="cluster",
    )
    if not clustered:
        raise InputError(f"{name}: no layer left to cluster (all are skipped or have no weights)")
    metrics = fine_tune(wrapped_model, targets, settings=step.fine_tune, progress=progress)
    stripped = tfmot.clustering.keras.strip_clustering(wrapped_model)
    return stripped, ClusterReport(
        number_of_clusters=step.number_of_clusters,
        centroid_init=step.centroid_init,
        preserve_sparsity=preserve_sparsity,
        unique_weights=unique_weight_counts(stripped, clustered),
        sparsity=kernel_sparsity(stripped, clustered),
        skipped_layers=sorted(skipped),
        epochs=step.fine_tune.epochs,
        final_metrics=metrics,
    )


def qat_scheme(pruned: bool, clustered: bool) -> Any:
    """The scheme that keeps what earlier steps gained (zeros, shared weight values)."""
    combine = tfmot.experimental.combine
    if clustered:
        return combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=pruned)
    if pruned:
        return combine.Default8BitPrunePreserveQuantizeScheme()
    return tfmot.quantization.keras.default_8bit.Default8BitQuantizeScheme()


def quantize(model: Any, *, skipped: set[str], scheme: Any, step: str) -> tuple[Any, list[str]]:
    """Annotates every non-skipped layer and applies QAT; names every layer tfmot cannot quantize.

    quantize_apply stops at the first layer its scheme does not support and names it; that layer is
    set aside and the rest tried again, so the error lists all of them, as the skip lists need.
    """
    action = "quantize (QAT)"
    unsupported: list[Any] = []
    while True:
        annotated, quantized = wrap_layers(
            model,
            wrap=tfmot.quantization.keras.quantize_annotate_layer,
            wants=lambda layer: not isinstance(layer, keras.layers.InputLayer),
            skipped=skipped | {layer.name for layer in unsupported},
            step=step,
            action=action,
        )
        try:
            with tfmot.quantization.keras.quantize_scope():
                quantized_model = tfmot.quantization.keras.quantize_apply(annotated, scheme)
        except (ValueError, TypeError, RuntimeError) as error:
            named = _named_unsupported_layer(model, error)
            if named is not None and named not in unsupported:
                unsupported.append(named)
                continue
            if unsupported:
                break
            raise UnsupportedLayerError(
                f"{step}: tfmot could not apply QAT ({_short(error)}); list the layers it names, or the "
                "layers around them (e.g. a BatchNormalization not directly after a Conv2D), in skipLayers"
            ) from None
        if not unsupported:
            return quantized_model, quantized
        break
    order = [layer.name for layer in model.layers]
    raise unsupported_layers_error(sorted(unsupported, key=lambda layer: order.index(layer.name)), step, action)


def _named_unsupported_layer(model: Any, error: BaseException) -> Any:
    """The layer quantize_apply reports as unsupported ("Layer <name>:<class> is not supported"), if any."""
    text = str(error)
    if not isinstance(error, RuntimeError) or "is not supported" not in text:
        return None
    return next((layer for layer in model.layers if text.startswith(f"Layer {layer.name}:")), None)


def qat(
    model: Any,
    step: QatStep,
    *,
    index: int,
    x: np.ndarray,
    y: np.ndarray | None,
    pruned_layers: Iterable[str],
    clustered: bool,
    progress: Progress,
) -> tuple[Any, QatReport]:
    name = f"steps[{index}] qat"
    pruned_layers = list(pruned_layers)
    targets = training_targets(model, x, y, name)
    skipped = layers_to_skip(model, step.skip_layers, step.skip_first_and_last, name)
    scheme = qat_scheme(bool(pruned_layers), clustered)
    quantized_model, quantized = quantize(model, skipped=skipped, scheme=scheme, step=name)
    metrics = fine_tune(quantized_model, targets, settings=step.fine_tune, progress=progress)
    return quantized_model, QatReport(
        scheme=type(scheme).__name__,
        quantized_layers=quantized,
        skipped_layers=sorted(skipped),
        epochs=step.fine_tune.epochs,
        final_metrics=metrics,
        sparsity=kernel_sparsity(quantized_model, pruned_layers) if pruned_layers else None,
    )


def _short(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:400] if lines else type(error).__name__


def distill(
    teacher: Any, student: Any, step: DistillStep, *, x: np.ndarray, y: np.ndarray | None, progress: Progress
) -> tuple[Any, DistillReport]:
    """Hinton-style distillation: alpha * hard-label loss + (1 - alpha) * T^2 * KL(soft teacher || soft student)."""
    teacher_out = teacher.predict(x, verbose=0)
    if teacher_out.ndim != 2 or teacher_out.shape[-1] < 2:
        raise InputError("step distill: the teacher must output class scores (batch, classes)")
    student_shape = tuple(student.output_shape[1:])
    if student_shape != teacher_out.shape[1:]:
        raise InputError(f"step distill: the student outputs {student_shape} but the teacher {teacher_out.shape[1:]}")
    teacher_probs = outputs_are_probabilities(teacher_out)
    teacher_logits = np.log(np.clip(teacher_out, 1e-7, 1.0)) if teacher_probs else teacher_out
    student_probs = outputs_are_probabilities(student.predict(x[:64], verbose=0))
    alpha = step.alpha if y is not None else 0.0
    temperature = step.temperature
    optimizer = keras.optimizers.Adam(learning_rate=step.fine_tune.learning_rate)
    hard_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    kl = keras.losses.KLDivergence()

    @tf.function  # type: ignore[untyped-decorator]
    def train_batch(xb: Any, yb: Any, tb: Any) -> Any:
        with tf.GradientTape() as tape:
            out = student(xb, training=True)
            logits = tf.math.log(tf.clip_by_value(out, 1e-7, 1.0)) if student_probs else out
            soft = kl(tf.nn.softmax(tb / temperature), tf.nn.softmax(logits / temperature))
            loss = (1.0 - alpha) * soft * temperature**2
            if alpha > 0:
                loss += alpha * hard_loss(yb, logits)
        optimizer.apply_gradients(
            zip(tape.gradient(loss, student.trainable_variables), student.trainable_variables, strict=True)
        )
        return loss

    labels = y if y is not None else np.zeros(len(x), dtype=np.int32)
    batch = step.fine_tune.batch_size
    rng = np.random.default_rng(np.random.randint(2**31))  # NumPy's global generator: seeded with spec.seed
    loss_value = 0.0
    for epoch in range(1, step.fine_tune.epochs + 1):
        order = rng.permutation(len(x))
        losses = []
        for start in range(0, len(x), batch):
            chosen = order[start : start + batch]
            losses.append(float(train_batch(x[chosen], labels[chosen], teacher_logits[chosen])))
        loss_value = float(np.mean(losses))
        progress.epoch(epoch, {"loss": loss_value})
    agreement = float((student.predict(x, verbose=0).argmax(-1) == teacher_out.argmax(-1)).mean())
    return student, DistillReport(
        temperature=temperature,
        alpha=alpha,
        teacher_parameters=int(teacher.count_params()),
        student_parameters=int(student.count_params()),
        train_agreement_with_teacher=round(agreement, 4),
        epochs=step.fine_tune.epochs,
        final_metrics={"loss": loss_value},
    )
