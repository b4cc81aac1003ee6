"""Training-time compression steps with tensorflow-model-optimization.

Each step is a function with explicit parameters that takes a Keras model and returns the new
model plus its step report (the contract's typed model; ``steps`` adds the wall time). Layers are
wrapped one by one (clone_model with a clone_function) so skip lists work the same way for every
step, and so a layer tfmot cannot handle is reported by name before any training starts. Whether
tfmot can handle a layer is learnt from its public API: the wrappers raise ValueError for a layer
they cannot wrap, and quantize_apply raises naming the layer it cannot quantize.

Fine-tuning distills from the float input model: soft targets with a temperature for classifiers
(mixed with the hard labels when the dataset has them), MSE to its outputs otherwise. BatchNorm
layers stay frozen (fineTune.freezeBatchNorm), a seeded slice of x_train is held out, and the epoch
most faithful to the input model there is kept; the step report says how faithful the model was
before and after fine-tuning, and a warning is logged when fine-tuning made it worse.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from edgecompress_contract.report import (
    ClusterReport,
    DistillReport,
    PruneReport,
    QatReport,
    Sparsity,
    Validation,
)
from edgecompress_contract.spec import (
    ONE_SHOT_REFIT_SAMPLES,
    CentroidInit,
    ClusterStep,
    DistillStep,
    FineTune,
    OutputTask,
    PruneStep,
    PruningAllocation,
    PruningSchedule,
    QatStep,
)

from .checkpoints import StepCheckpoint, TrainingState, disabled, epoch_order
from .data import Arrays, samples, select, take
from .distribute import replicas
from .errors import InputError, UnsupportedLayerError
from .keras_graph import weight_short_name
from .model_io import check_tfmot_structure, weighted_layer_names
from .planning import pruning_plan, steps_per_epoch
from .progress import Progress
from .refit import refit_pruned, sensitivity_sparsities
from .tasks import decisions, snr_db
from .tfcompat import keras, tf, tfmot

if TYPE_CHECKING:
    from .streaming import Shards, ShardStream

logger = logging.getLogger("edgecompress")


# Soft targets: the reference's class scores softened by this temperature (Hinton et al.); with labels,
# the hard-label loss weighs HARD_LABEL_WEIGHT and the soft targets the rest. Temperature 2 cost the
# labelled digits example (prune 80 % + QAT) 2.5-3.9 points of accuracy, temperature 1 0.6-0.8.
SOFT_TARGET_TEMPERATURE = 1.0
HARD_LABEL_WEIGHT = 0.5
VALIDATION_SEED = 0
_MIN_VALIDATION_SAMPLES = 10
_RANDOM_LAYERS = (
    keras.layers.Dropout,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.AlphaDropout,
)


@dataclass(frozen=True)
class TrainingData:
    """What a fine-tuning step trains on: x_train and its labels by input and output name, the float input
    model's outputs on it (``reference``, by output name) and each output's task.

    For a sharded dataset, ``x`` / ``y`` are only its first samples (what QAT calibrates on), ``shards`` are
    streamed, and ``teacher`` (an untouched copy of the float input model) computes the reference outputs
    batch by batch; ``streams`` collects each stream a step made, for its report.
    """

    x: Arrays
    y: Arrays
    reference: dict[str, np.ndarray]
    tasks: dict[str, str]
    shards: Shards | None = None
    teacher: Any = None
    streams: list[ShardStream] = field(default_factory=list)


@dataclass(frozen=True)
class TrainingTargets:
    """What fine-tuning fits: the reference model's outputs (distillation), mixed with labels where there are.

    Per model output (in the Keras model's output order), ``y`` packs the reference's outputs and, for
    labelled outputs, the labels along the last axis, so one Keras loss per output (and model.fit with
    tfmot's callbacks) sees both. ``x_val`` / ``reference_val`` are the held-out slice the epochs are
    judged on (empty when validation is off); ``classifier`` says, per output, whether it is judged by
    agreement (soft-target outputs) or by its error.
    """

    x: Arrays
    y: list[np.ndarray]
    losses: list[Any]
    classifier: dict[str, bool]
    tasks: dict[str, str]
    x_val: Arrays
    reference_val: dict[str, np.ndarray]
    batches: Any = None
    """A sharded dataset's tf.data stream of (inputs, targets) batches, fitted instead of ``x`` / ``y``."""
    samples_per_epoch: int = 0

    @property
    def single_output(self) -> bool:
        return len(self.losses) == 1

    @property
    def train_samples(self) -> int:
        return self.samples_per_epoch if self.batches is not None else samples(self.x)


def outputs_are_probabilities(predictions: np.ndarray) -> bool:
    if predictions.ndim < 2 or predictions.shape[-1] < 2:
        return False
    sums = predictions.sum(axis=-1)
    return bool(predictions.min() >= 0 and np.allclose(sums, 1.0, atol=1e-3))


def _logits(outputs: Any, probabilities: bool) -> Any:
    return tf.math.log(tf.clip_by_value(outputs, 1e-7, 1.0)) if probabilities else outputs


def distillation_loss(
    classes: int,
    *,
    probabilities: bool,
    labelled: bool,
    temperature: float = SOFT_TARGET_TEMPERATURE,
    hard_weight: float = HARD_LABEL_WEIGHT,
) -> Any:
    """T^2 * KL(softened reference || softened model), plus the hard-label cross-entropy when labelled."""
    kl = keras.losses.KLDivergence(reduction="none")

    def loss(packed: Any, outputs: Any) -> Any:
        reference = packed[:, :classes]
        logits = _logits(outputs, probabilities)
        soft = kl(tf.nn.softmax(_logits(reference, probabilities) / temperature), tf.nn.softmax(logits / temperature))
        soft = soft * temperature**2
        if not labelled:
            return soft
        hard = keras.losses.categorical_crossentropy(packed[:, classes:], logits, from_logits=True)
        return hard_weight * hard + (1.0 - hard_weight) * soft

    return loss


def sigmoid_distillation_loss(
    size: int, *, labelled: bool, temperature: float = SOFT_TARGET_TEMPERATURE, hard_weight: float = HARD_LABEL_WEIGHT
) -> Any:
    """Binary and multilabel outputs (probabilities): T^2 * binary cross-entropy to the reference's probabilities
    softened by the temperature, plus the binary cross-entropy to the 0/1 labels when labelled."""

    def soften(probabilities: Any) -> Any:
        clipped = tf.clip_by_value(probabilities, 1e-7, 1.0 - 1e-7)
        return tf.sigmoid(tf.math.log(clipped / (1.0 - clipped)) / temperature)

    def loss(packed: Any, outputs: Any) -> Any:
        flat = tf.reshape(outputs, (tf.shape(outputs)[0], -1))
        soft = keras.losses.binary_crossentropy(soften(packed[:, :size]), soften(flat)) * temperature**2
        if not labelled:
            return soft
        hard = keras.losses.binary_crossentropy(packed[:, size:], flat)
        return hard_weight * hard + (1.0 - hard_weight) * soft

    return loss


def regression_loss(size: int, *, labelled: bool, hard_weight: float = HARD_LABEL_WEIGHT) -> Any:
    """MSE to the reference's outputs, averaged with the MSE to the labels when labelled."""

    def loss(packed: Any, outputs: Any) -> Any:
        flat = tf.reshape(outputs, (tf.shape(outputs)[0], -1))
        to_reference = tf.reduce_mean(tf.square(flat - packed[:, :size]), axis=-1)
        if not labelled:
            return to_reference
        to_labels = tf.reduce_mean(tf.square(flat - packed[:, size:]), axis=-1)
        return hard_weight * to_labels + (1.0 - hard_weight) * to_reference

    return loss


def validation_split(samples: int, share: float) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) indices: a seeded random slice of ``share``; none held out when too few samples."""
    held_out = int(samples * share)
    order = np.random.default_rng(VALIDATION_SEED).permutation(samples)
    if held_out < _MIN_VALIDATION_SAMPLES or samples - held_out < 1:
        return np.arange(samples), np.arange(0)
    return np.sort(order[held_out:]), np.sort(order[:held_out])


def model_inputs(model: Any, x: Arrays) -> Any:
    """``x`` as ``model`` takes it: the array of a single-input model (by position, so a renamed input such
    as a student's still fits), else a list in the model's input order."""
    if len(model.inputs) == 1 and len(x) == 1:
        return next(iter(x.values()))
    missing = [name for name in model.input_names if name not in x]
    if missing:
        raise InputError(f"the model's inputs {model.input_names} do not match the dataset's inputs {list(x)}")
    return [x[name] for name in model.input_names]


def output_names(model: Any, names: list[str], step: str) -> list[str]:
    """The dataset's (the .tflite signature's) name of each of ``model``'s outputs, in the model's order."""
    if len(model.outputs) == 1 and len(names) == 1:
        return names
    if sorted(model.output_names) != sorted(names):
        raise InputError(f"{step}: the model's outputs {model.output_names} are not the baseline's outputs {names}")
    return list(model.output_names)


def predict_named(model: Any, x: Arrays, ordered_names: list[str]) -> dict[str, np.ndarray]:
    """``model``'s outputs on ``x`` named by position: ``ordered_names`` come from ``output_names`` of the model
    before tfmot wrapped its layers (the wrappers rename the output layers, the clone keeps their order)."""
    predictions = model.predict(model_inputs(model, x), verbose=0)
    listed = predictions if isinstance(predictions, list) else [predictions]
    return {name: np.asarray(values) for name, values in zip(ordered_names, listed, strict=True)}


@dataclass(frozen=True)
class OutputTarget:
    """How one output is fitted: its loss, whether it is judged by agreement, whether it has labels and, for
    class-id labels, how many classes they are one-hot encoded into."""

    loss: Any
    classifier: bool
    labelled: bool
    one_hot_classes: int = 0


def _output_target(
    reference: np.ndarray,
    labels: np.ndarray | None,
    *,
    task: str,
    where: str,
    temperature: float,
    hard_weight: float,
    label_range: tuple[float, float] | None = None,
) -> OutputTarget:
    """How one output is fitted, judged from the reference's outputs and the labels on the same samples.

    ``label_range`` is the labels' (min, max) over all training samples when ``labels`` are only some of them.
    """
    probabilities = outputs_are_probabilities(reference)
    class_scores = reference.ndim == 2 and reference.shape[-1] >= 2
    classes = reference.shape[-1] if reference.ndim >= 2 else 1
    # A multiclass output is trained on soft targets when it outputs probabilities or is labelled with classes.
    # Unlabelled logits are matched by MSE (logit matching), like any other output.
    classifier = probabilities and task == OutputTask.MULTICLASS
    sigmoid = task in (OutputTask.BINARY, OutputTask.MULTILABEL) and bool(reference.min() >= 0 and reference.max() <= 1)
    one_hot = 0
    if labels is not None:
        if labels.dtype.kind in "iu" and labels.ndim == 1 and class_scores and not sigmoid:
            low, high = label_range or (labels.min(), labels.max())
            if low < 0 or high >= classes:
                raise InputError(f"{where}: labels range {int(low)}..{int(high)} but the model has {classes} outputs")
            one_hot, classifier = classes, True
        elif labels.size != reference.size:
            raise InputError(
                f"{where}: labels have shape {labels.shape[1:]} but the model outputs {reference.shape[1:]}"
            )
        else:
            flat_labels = labels.astype(np.float32).reshape(len(labels), -1)
            classifier = classifier or (class_scores and not sigmoid and outputs_are_probabilities(flat_labels))
    labelled = labels is not None
    size = int(np.prod(reference.shape[1:]))
    if sigmoid:
        loss = sigmoid_distillation_loss(size, labelled=labelled, temperature=temperature, hard_weight=hard_weight)
        return OutputTarget(loss=loss, classifier=True, labelled=labelled, one_hot_classes=one_hot)
    if classifier:
        loss = distillation_loss(
            classes, probabilities=probabilities, labelled=labelled, temperature=temperature, hard_weight=hard_weight
        )
        return OutputTarget(loss=loss, classifier=True, labelled=labelled, one_hot_classes=one_hot)
    loss = regression_loss(size, labelled=labelled, hard_weight=hard_weight)
    return OutputTarget(loss=loss, classifier=False, labelled=labelled, one_hot_classes=one_hot)


def packed_targets(target: OutputTarget, reference: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
    """The reference's outputs, flattened per sample, with the labels (one-hot for class ids) after them."""
    flat_reference = reference.astype(np.float32).reshape(len(reference), -1)
    if labels is None:
        return flat_reference
    if target.one_hot_classes:
        flat_labels = np.eye(target.one_hot_classes, dtype=np.float32)[labels]
    else:
        flat_labels = labels.astype(np.float32).reshape(len(labels), -1)
    return np.concatenate([flat_reference, flat_labels], axis=-1)


def packed_batch(target: OutputTarget, reference: Any, labels: Any) -> Any:
    """``packed_targets`` of one batch of tensors, inside a tf.data pipeline."""
    count = tf.shape(reference)[0]
    flat_reference = tf.reshape(tf.cast(reference, tf.float32), (count, -1))
    if labels is None:
        return flat_reference
    if target.one_hot_classes:
        flat_labels = tf.one_hot(tf.cast(labels, tf.int32), target.one_hot_classes, dtype=tf.float32)
    else:
        flat_labels = tf.reshape(tf.cast(labels, tf.float32), (count, -1))
    return tf.concat([flat_reference, flat_labels], axis=-1)


def training_targets(
    model: Any,
    data: TrainingData,
    step: str,
    settings: FineTune,
    *,
    temperature: float = SOFT_TARGET_TEMPERATURE,
    hard_weight: float = HARD_LABEL_WEIGHT,
) -> TrainingTargets:
    """Distillation targets from ``data.reference`` (the float model's outputs on ``data.x`` by output name), per
    output: soft targets with a temperature for classifier outputs, MSE for the others, mixed with the labels of
    the outputs that have them."""
    if data.shards is not None:
        return _streamed_targets(model, data, step, settings, temperature=temperature, hard_weight=hard_weight)
    x, y, reference, tasks = data.x, data.y, data.reference, data.tasks
    names = output_names(model, list(reference), step)
    packed, losses, classifier = [], [], {}
    for name in names:
        where = step if len(names) == 1 else f"{step}: output {name!r}"
        target = _output_target(
            reference[name],
            y.get(name),
            task=tasks.get(name, OutputTask.REGRESSION),
            where=where,
            temperature=temperature,
            hard_weight=hard_weight,
        )
        packed.append(packed_targets(target, reference[name], y.get(name)))
        losses.append(target.loss)
        classifier[name] = target.classifier
    train, held_out = validation_split(len(packed[0]), settings.validation_split)
    return TrainingTargets(
        x=select(x, train),
        y=[targets[train] for targets in packed],
        losses=losses,
        classifier=classifier,
        tasks={name: tasks.get(name, OutputTask.REGRESSION) for name in names},
        x_val=select(x, held_out),
        reference_val={name: values[held_out] for name, values in reference.items()},
    )


def _streamed_targets(
    model: Any, data: TrainingData, step: str, settings: FineTune, *, temperature: float, hard_weight: float
) -> TrainingTargets:
    """Targets for a sharded dataset: the teacher's outputs are computed per streamed batch; how each output is
    fitted is judged on the held-out slice (else the first samples), label ranges over every shard."""
    from .streaming import ShardStream

    shards, teacher, tasks = data.shards, data.teacher, data.tasks
    assert shards is not None and teacher is not None
    names = output_names(model, list(data.reference), step)
    teacher_names = output_names(teacher, list(data.reference), step)
    x_val, y_val = shards.held_out_arrays(settings.validation_split)
    if x_val and samples(x_val) >= _MIN_VALIDATION_SAMPLES:
        reference_val = predict_named(teacher, x_val, teacher_names)
        probe, probe_labels = reference_val, y_val
    else:
        x_val, reference_val = {}, {}
        probe, probe_labels = data.reference, data.y
    targets = {
        name: _output_target(
            probe[name],
            probe_labels.get(name),
            task=tasks.get(name, OutputTask.REGRESSION),
            where=step if len(names) == 1 else f"{step}: output {name!r}",
            temperature=temperature,
            hard_weight=hard_weight,
            label_range=shards.label_range(name),
        )
        for name in names
    }

    def fitted(x: dict[str, Any], y: dict[str, Any]) -> Any:
        outputs = teacher(model_inputs(teacher, x), training=False)
        by_name = dict(zip(teacher_names, outputs if isinstance(outputs, (list, tuple)) else [outputs], strict=True))
        packed = tuple(packed_batch(targets[name], by_name[name], y.get(name)) for name in names)
        inputs = model_inputs(model, x)
        return (inputs if not isinstance(inputs, list) else tuple(inputs)), (packed[0] if len(packed) == 1 else packed)

    stream = ShardStream(shards=shards, held_out_share=settings.validation_split, batch_size=settings.batch_size)
    data.streams.append(stream)
    return TrainingTargets(
        x=data.x,
        y=[],
        losses=[targets[name].loss for name in names],
        classifier={name: target.classifier for name, target in targets.items()},
        tasks={name: tasks.get(name, OutputTask.REGRESSION) for name in names},
        x_val=x_val,
        reference_val=reference_val,
        batches=stream.dataset(fitted),
        samples_per_epoch=stream.samples_per_epoch,
    )


def fidelity(
    outputs: dict[str, np.ndarray], reference: dict[str, np.ndarray], targets: TrainingTargets
) -> tuple[float, float]:
    """How close ``outputs`` are to the reference's, larger is closer.

    One output: (agreement, -mean absolute error) when it is judged by agreement (the error breaks ties
    between equal agreements), else (-mean absolute error, 0). Several outputs: (the worst output's
    fidelity, -the mean of their mean absolute errors), where an output's fidelity is its agreement or,
    for the others, 1 - sum of squared errors / sum of squared reference values.
    """
    errors, scores = [], []
    for name, values in outputs.items():
        expected = reference[name]
        errors.append(round(float(np.abs(values - expected).mean()), 6))
        if targets.classifier[name]:
            task = targets.tasks[name]
            scores.append(round(float((decisions(task, values) == decisions(task, expected)).mean()), 4))
        else:
            scores.append(round(1.0 - 10 ** (-snr_db(values, expected) / 10), 6))
    if targets.single_output:
        [name] = outputs
        return (scores[0], -errors[0]) if targets.classifier[name] else (-errors[0], 0.0)
    return min(scores), -round(float(np.mean(errors)), 6)


def _reported(score: tuple[float, float], targets: TrainingTargets) -> float:
    """A fidelity score as the report states it (a mean absolute error is reported positive)."""
    return abs(score[0]) if targets.single_output else score[0]


def _validation_metric(targets: TrainingTargets) -> Literal["top1Agreement", "meanAbsError", "worstOutputFidelity"]:
    if not targets.single_output:
        return "worstOutputFidelity"
    return "top1Agreement" if next(iter(targets.classifier.values())) else "meanAbsError"


def freeze_batch_norm(model: Any) -> None:
    """BatchNormalization layers (also inside tfmot wrappers) keep their statistics: tf-keras runs a
    non-trainable BatchNormalization in inference mode."""
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)
        if isinstance(inner, keras.layers.BatchNormalization):
            inner.trainable = False


def with_layer_distillation(student: Any, teacher: Any, layers: dict[str, str], *, weight: float) -> Any:
    """A model to fit in place of ``student`` (the same layers and outputs) whose loss also holds ``weight`` times
    the mean, over ``layers`` (a student layer's name -> the teacher layer it should reproduce), of the squared
    difference between the two layers' outputs on the same inputs over the teacher output's mean square.

    Intermediate-layer distillation (FitNets' hints; layer-wise distillation in pruning): a few hundred unlabelled
    samples give each only the model's few output values to match, which a student soon fits exactly without
    fitting the model; every layer's output adds thousands of values per sample. On a seed variant of the tests'
    mini-Xception cut in half (540 samples), prune + QAT + int8 agreed 0.9855 on 2000 unseen samples with the
    outputs alone and 0.9905 with each pruned layer distilled: what the outputs alone reach from 20,000 fresh
    samples.
    """
    features = keras.Model(teacher.inputs, [teacher.get_layer(name).output for name in layers.values()])
    features.trainable = False
    inputs = student.inputs if len(student.inputs) > 1 else student.inputs[0]
    expected = tf.nest.flatten(features(inputs, training=False))
    fitted = keras.Model(student.inputs, student.outputs)
    terms = [
        tf.reduce_mean(tf.square(student.get_layer(name).output - target))
        / (tf.reduce_mean(tf.square(target)) + keras.backend.epsilon())
        for name, target in zip(layers, expected, strict=True)
    ]
    fitted.add_loss(weight * tf.add_n(terms) / len(terms))
    return fitted


def fine_tune(
    model: Any,
    targets: TrainingTargets,
    *,
    settings: FineTune,
    progress: Progress,
    step: str,
    callbacks: Iterable[Any] = (),
    first_eligible_epoch: int = 0,
    start_weights: list[np.ndarray] | None = None,
    checkpoint: StepCheckpoint | None = None,
    fitted: Any = None,
) -> tuple[dict[str, float], Validation | None]:
    """Fits ``model`` to the targets; keeps the best held-out epoch from ``first_eligible_epoch`` on.

    ``fitted``, when given, is what Keras fits in its place: a model over the same layers and outputs with more
    terms in its loss (``with_layer_distillation``).

    Epoch 0 stands for the weights before fine-tuning, or ``start_weights`` when given (prune: the
    target sparsity reached at once, without training). An epoch before ``first_eligible_epoch`` is
    measured but never kept (pruning has not reached its target yet then).

    Each epoch visits the samples in an order seeded by the checkpoint's seed and the epoch, and the
    position is checkpointed at every epoch end and every ``everyMinutes``: a restarted run goes on from
    there with the same batches, and a finished step only gets its kept weights back. In a tf.distribute
    strategy's scope (several GPUs), each replica takes ``batchSize`` samples of every mini-batch.
    """
    saver = checkpoint if checkpoint is not None else disabled()
    if settings.freeze_batch_norm:
        freeze_batch_norm(model)
    names = list(targets.classifier)
    optimizer = keras.optimizers.Adam(learning_rate=settings.learning_rate)
    fitting = model if fitted is None else fitted
    fitting.compile(optimizer=optimizer, loss=targets.losses[0] if targets.single_output else targets.losses)
    saved = saver.load()
    if saved is not None:
        saver.resumed_from(saved, random_layers(model))
        if saved.finished:
            model.set_weights(saved.weights)
            return saved.metrics, saved.validation
    validating = bool(targets.x_val) and samples(targets.x_val) > 0
    state = TrainingState(epoch=0, batches=0, weights=[])
    position = {"epoch": 0, "first_batch": 0}

    def judge(epoch: int) -> None:
        score = fidelity(predict_named(model, targets.x_val, names), targets.reference_val, targets)
        state.scores.append(score)
        if epoch >= first_eligible_epoch and (state.best_score is None or score > state.best_score):
            state.best_score, state.best_epoch, state.best_weights = score, epoch, model.get_weights()

    def snapshot(epoch: int, batches: int) -> None:
        state.epoch, state.batches = epoch, batches
        state.weights = model.get_weights()
        state.optimizer = [variable.numpy() for variable in optimizer.variables]
        saver.save(state)

    class _Validation(keras.callbacks.Callback):  # type: ignore[misc]
        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            judge(epoch + 1)
            if logs is not None:
                logs["val_fidelity"] = _reported(state.scores[-1], targets)

    class _TimedCheckpoint(keras.callbacks.Callback):  # type: ignore[misc]
        def on_train_batch_end(self, batch: int, logs: dict[str, float] | None = None) -> None:
            if saver.due():
                snapshot(position["epoch"], position["first_batch"] + batch + 1)

    if saved is not None:
        model.set_weights(saved.weights)
        optimizer.build(fitting.trainable_variables)
        for variable, value in zip(optimizer.variables, saved.optimizer, strict=True):
            variable.assign(value)
        state = saved
        first_epoch, first_batch = saved.epoch, saved.batches
    else:
        first_epoch = first_batch = 0
        if validating:
            if start_weights is None:
                judge(0)
            else:
                trained = model.get_weights()
                model.set_weights(start_weights)
                judge(0)
                model.set_weights(trained)
    total, batch_size = targets.train_samples, settings.batch_size * replicas()
    metrics: dict[str, float] = dict(state.metrics)
    for epoch in range(first_epoch, settings.epochs):
        position.update(epoch=epoch, first_batch=first_batch)
        data: dict[str, Any]
        if targets.batches is not None:
            data = {"x": targets.batches.skip(first_batch)}
        else:
            order = epoch_order(total, saver.seed, epoch)[first_batch * batch_size :]
            y = [values[order] for values in targets.y]
            data = {
                "x": model_inputs(model, select(targets.x, order)),
                "y": y[0] if targets.single_output else y,
                "batch_size": batch_size,
                "shuffle": False,
            }
        history = fitting.fit(
            **data,
            initial_epoch=epoch,
            epochs=epoch + 1,
            verbose=0,
            callbacks=[
                *callbacks,
                *([_Validation()] if validating else []),
                progress.keras_callback(),
                _TimedCheckpoint(),
            ],
        )
        metrics = {key: float(values[-1]) for key, values in history.history.items()}
        first_batch = 0
        state.metrics = metrics
        snapshot(epoch + 1, 0)
    validation = _kept_weights(model, state, targets, settings=settings, step=step) if validating else None
    state.finished, state.validation, state.optimizer = True, validation, []
    state.weights, state.best_weights = model.get_weights(), None
    saver.save(state)
    return metrics, validation


def _kept_weights(
    model: Any, state: TrainingState, targets: TrainingTargets, *, settings: FineTune, step: str
) -> Validation:
    """Sets the best eligible epoch's weights (the last when none is eligible) and says how faithful they are."""
    if state.best_epoch is None or state.best_score is None:
        state.best_score, state.best_epoch = state.scores[-1], settings.epochs
    elif state.best_epoch != settings.epochs and state.best_weights is not None:
        model.set_weights(state.best_weights)
    validation = Validation(
        metric=_validation_metric(targets),
        samples=samples(targets.x_val),
        start=_reported(state.scores[0], targets),
        end=_reported(state.best_score, targets),
        best_epoch=state.best_epoch,
        ended_worse=state.best_score[0] < state.scores[0][0],
    )
    if validation.ended_worse:
        logger.warning(
            "%s: fine-tuning ended less faithful to the input model than it started (held-out %s %s -> %s)",
            step,
            validation.metric,
            validation.start,
            validation.end,
        )
    return validation


def random_layers(model: Any) -> list[str]:
    """Layers that draw random numbers while training (Dropout, noise layers): after a restart their draws differ
    from an uninterrupted run's (the random generators' state is not checkpointed)."""
    found = []
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)
        if isinstance(inner, _RANDOM_LAYERS):
            found.append(layer.name)
    return found


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


def _kernels(model: Any, layer_name: str, weight_names: tuple[str, ...] | None = None) -> list[np.ndarray]:
    """The named weights of a layer (default: every ``*kernel``); QAT wraps layers as quant_<name>, so that
    name is tried too."""
    for candidate in (layer_name, f"quant_{layer_name}"):
        try:
            layer = model.get_layer(candidate)
        except ValueError:
            continue
        return [
            weight.numpy()
            for weight in layer.weights
            if (
                weight_short_name(weight) in weight_names
                if weight_names is not None
                else weight_short_name(weight).endswith("kernel")
            )
        ]
    return []


PrunedWeights = dict[str, tuple[str, ...]]
"""Per pruned layer, the names of the weights tfmot prunes in it (e.g. only ``pointwise_kernel`` of a
SeparableConv2D)."""


def kernel_sparsity(model: Any, layers: Iterable[str] | PrunedWeights) -> Sparsity:
    """Fraction of exactly-zero weights per layer and overall: over the weights tfmot prunes when
    ``layers`` maps names to them, else over every kernel (biases excluded)."""
    chosen = layers if isinstance(layers, dict) else dict.fromkeys(layers, None)
    per_layer: dict[str, float] = {}
    zeros = total = 0
    for name, weight_names in chosen.items():
        kernels = _kernels(model, name, weight_names)
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


def one_shot_weights(model: Any, weights: Iterable[Any], sparsity: float) -> list[np.ndarray]:
    """``model``'s weights with the smallest-magnitude share ``sparsity`` of each of ``weights`` zeroed:
    the target reached at once, without fine-tuning (what the step's fine-tuning is judged against). For
    the 2:4 pattern this unstructured cut is an approximation of tfmot's."""
    chosen = {weight.ref() for weight in weights}
    values = []
    for weight, value in zip(model.weights, model.get_weights(), strict=True):
        if weight.ref() in chosen and value.size:
            cut = int(value.size * sparsity)
            if cut:
                threshold = np.partition(np.abs(value).ravel(), cut - 1)[cut - 1]
                value = np.where(np.abs(value) <= threshold, 0.0, value).astype(value.dtype)
        values.append(value)
    return values


def prune(
    model: Any,
    step: PruneStep,
    *,
    index: int,
    data: TrainingData,
    progress: Progress,
    checkpoint: StepCheckpoint | None = None,
) -> tuple[Any, PruneReport, PrunedWeights]:
    name = f"steps[{index}] prune"
    targets = training_targets(model, data, name, step.fine_tune)
    per_epoch = steps_per_epoch(targets.train_samples, step.fine_tune.batch_size * replicas())
    total = per_epoch * step.fine_tune.epochs
    one_shot = step.schedule == PruningSchedule.ONE_SHOT
    if one_shot:
        # The refit reaches the target before step 0. tfmot numbers the first optimizer step 1 and sets the
        # masks there, from the refit weights (their zeros are the smallest), and never again.
        begin, end, frequency = 0, 0, total + 1
        schedule = tfmot.sparsity.keras.ConstantSparsity(step.target_sparsity, 1, frequency=frequency)
    else:
        begin, end, frequency = pruning_plan(step, total, index)
        if step.schedule == PruningSchedule.POLYNOMIAL_DECAY:
            schedule = tfmot.sparsity.keras.PolynomialDecay(
                step.initial_sparsity, step.target_sparsity, begin, end, frequency=frequency
            )
        else:
            schedule = tfmot.sparsity.keras.ConstantSparsity(step.target_sparsity, begin, end, frequency)
    m_by_n = (2, 4) if step.pattern == "2:4" else None
    skipped = layers_to_skip(model, step.skip_layers, step.skip_first_and_last, name)
    teacher = None
    if step.layer_distillation > 0:
        teacher = keras.models.clone_model(model)
        teacher.set_weights(model.get_weights())

    def wrapped(schedules: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        wrappers: dict[str, Any] = {}

        def wrap(layer: Any) -> Any:
            wrappers[layer.name] = tfmot.sparsity.keras.prune_low_magnitude(
                layer, pruning_schedule=schedules.get(layer.name, schedule), sparsity_m_by_n=m_by_n
            )
            return wrappers[layer.name]

        wrapped_model, _ = wrap_layers(model, wrap=wrap, wants=_has_kernel, skipped=skipped, step=name, action="prune")
        return wrapped_model, wrappers

    wrapped_model, wrappers = wrapped({})
    # What tfmot prunes in each layer: the registry's choice for built-in layers (e.g. only the pointwise
    # kernel of a SeparableConv2D), the layer's own for a PrunableLayer.
    prunable = {
        layer: list(wrapper.layer.get_prunable_weights())
        for layer, wrapper in wrappers.items()
        if wrapper.layer.get_prunable_weights()
    }
    if not prunable:
        raise InputError(f"{name}: no layer left to prune (all are skipped or have no prunable weights)")
    pruned: PrunedWeights = {layer: tuple(weight_short_name(w) for w in weights) for layer, weights in prunable.items()}
    refit = None
    layer_targets: dict[str, float] = {}
    if one_shot:
        batches = _refit_batches(model, targets)
        # A clone, whose layers each have the one call a layer's input is read from: ``model``'s own layers are
        # also called inside tfmot's wrappers now. The refit weights are copied back into them.
        unwrapped = keras.models.clone_model(model)
        unwrapped.set_weights(model.get_weights())
        if step.allocation == PruningAllocation.SENSITIVITY:
            layer_targets = sensitivity_sparsities(unwrapped, batches, pruned=pruned, sparsity=step.target_sparsity)
            wrapped_model, wrappers = wrapped(
                {
                    layer: tfmot.sparsity.keras.ConstantSparsity(share, 1, frequency=frequency)
                    for layer, share in layer_targets.items()
                }
            )
        refit = refit_pruned(
            unwrapped,
            batches,
            pruned=pruned,
            sparsities=layer_targets or dict.fromkeys(pruned, step.target_sparsity),
            two_of_four=step.pattern == "2:4",
        )
        for layer in pruned:
            model.get_layer(layer).set_weights(unwrapped.get_layer(layer).get_weights())
        start = None
    else:
        start = one_shot_weights(
            wrapped_model, [w for weights in prunable.values() for w in weights], step.target_sparsity
        )
    fitted = None
    if teacher is not None:
        taught = {wrappers[layer].name: layer for layer in pruned if len(teacher.get_layer(layer).inbound_nodes) == 1}
        if taught:
            fitted = with_layer_distillation(wrapped_model, teacher, taught, weight=step.layer_distillation)
    metrics, validation = fine_tune(
        wrapped_model,
        targets,
        settings=step.fine_tune,
        progress=progress,
        step=name,
        fitted=fitted,
        callbacks=[tfmot.sparsity.keras.UpdatePruningStep()],
        # The masks reach the target at optimizer step ``end``; an earlier epoch is not sparse enough to keep.
        first_eligible_epoch=0 if one_shot else math.ceil((end + 1) / per_epoch),
        start_weights=start,
        checkpoint=checkpoint,
    )
    stripped = tfmot.sparsity.keras.strip_pruning(wrapped_model)
    sparsity = kernel_sparsity(stripped, pruned)
    if sparsity.overall < step.target_sparsity - 0.02:
        raise InputError(
            f"{name}: reached only {sparsity.overall:.1%} sparsity of the {step.target_sparsity:.0%} "
            "target in the weights tfmot prunes; raise fineTune.epochs or lower frequency"
        )
    return (
        stripped,
        PruneReport(
            schedule=step.schedule,
            pattern=step.pattern,
            target_sparsity=step.target_sparsity,
            begin_step=begin,
            end_step=end,
            frequency=frequency,
            optimizer_steps=total,
            sparsity=sparsity,
            skipped_layers=sorted(skipped),
            refit_layers=refit.refit if refit is not None else [],
            allocation=PruningAllocation(step.allocation).value,
            layer_targets={layer: round(share, 6) for layer, share in layer_targets.items()},
            epochs=step.fine_tune.epochs,
            final_metrics=metrics,
            validation=validation,
        ),
        pruned,
    )


REFIT_BATCH = 64


def _refit_batches(model: Any, targets: TrainingTargets) -> list[Any]:
    """The model-ready input batches a oneShot step refits on: the first ``ONE_SHOT_REFIT_SAMPLES`` samples."""
    batches: list[Any] = []
    if targets.batches is not None:
        count = 0
        for inputs, _ in targets.batches:
            batches.append(list(inputs) if isinstance(inputs, tuple) else inputs)
            count += len(tf.nest.flatten(inputs)[0])
            if count >= ONE_SHOT_REFIT_SAMPLES:
                break
    else:
        first = take(targets.x, ONE_SHOT_REFIT_SAMPLES)
        for start in range(0, samples(first), REFIT_BATCH):
            batches.append(
                model_inputs(model, select(first, np.arange(start, min(start + REFIT_BATCH, samples(first)))))
            )
    return batches


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
    data: TrainingData,
    preserve_sparsity: bool,
    progress: Progress,
    checkpoint: StepCheckpoint | None = None,
) -> tuple[Any, ClusterReport]:
    name = f"steps[{index}] cluster"
    targets = training_targets(model, data, name, step.fine_tune)
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
    metrics, validation = fine_tune(
        wrapped_model, targets, settings=step.fine_tune, progress=progress, step=name, checkpoint=checkpoint
    )
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
        validation=validation,
    )


def qat_scheme(pruned: bool, clustered: bool) -> Any:
    """The scheme that keeps what earlier steps gained (zeros, shared weight values)."""
    combine = tfmot.experimental.combine
    if clustered:
        return combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=pruned)
    if pruned:
        return combine.Default8BitPrunePreserveQuantizeScheme()
    return tfmot.quantization.keras.default_8bit.Default8BitQuantizeScheme()


def _split_automatic_name(name: str) -> tuple[str, int]:
    """``conv2d_3`` -> (``conv2d``, 3); ``conv2d`` -> (``conv2d``, 0), as tf-keras numbers automatic names."""
    head, _, number = name.rpartition("_")
    return (head, int(number)) if head and number.isdigit() else (name, 0)


def _reserve_transform_layer_names(model: Any) -> None:
    """Moves tf-keras's automatic names for the layers tfmot's QAT transforms add past every name in ``model``.

    A layer named explicitly (as every layer of a loaded or rebuilt model is) does not advance the counter
    tf-keras names new layers from, so in a fresh process the next automatic Conv2D is ``conv2d`` again. The
    transforms add unnamed layers (a SeparableConv2D becomes a DepthwiseConv2D and a Conv2D) and then match
    weights by layer name: beside the model's own ``conv2d``, quantize_apply assigns the wrong kernel.
    Making throwaway layers of those classes is the public way to advance the counter.
    """
    names = [_split_automatic_name(layer.name) for layer in model.layers]
    makers: tuple[Callable[[], Any], ...] = (
        lambda: keras.layers.Conv2D(1, 1),
        lambda: keras.layers.DepthwiseConv2D(1),
        lambda: keras.layers.SeparableConv2D(1, 1),
        lambda: keras.layers.Lambda(tf.identity),
    )
    for make in makers:
        prefix, number = _split_automatic_name(make().name)
        taken = [taken_number for taken_prefix, taken_number in names if taken_prefix == prefix]
        while taken and number < max(taken):
            number = _split_automatic_name(make().name)[1]


def quantize(model: Any, *, skipped: set[str], scheme: Any, step: str) -> tuple[Any, list[str]]:
    """Annotates every non-skipped layer and applies QAT; names every layer tfmot cannot quantize.

    quantize_apply stops at the first layer its scheme does not support and names it; that layer is
    set aside and the rest tried again, so the error lists all of them, as the skip lists need.
    """
    action = "quantize (QAT)"
    _reserve_transform_layer_names(model)
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


def integer_input_consumers(model: Any) -> set[str]:
    """Layers fed directly by an integer model input (an Embedding of token ids): QAT leaves them float, since
    annotating them would make tfmot fake-quantize the integer input itself."""
    integer_inputs = {tensor.name for tensor in model.inputs if tf.as_dtype(tensor.dtype).is_integer}
    consumers = set()
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        try:
            fed_by = {tensor.name for tensor in tf.nest.flatten(layer.input)}
        except AttributeError:  # a layer called more than once has no single input
            continue
        if fed_by & integer_inputs:
            consumers.add(layer.name)
    return consumers


def _named_unsupported_layer(model: Any, error: BaseException) -> Any:
    """The layer quantize_apply reports as unsupported ("Layer <name>:<class> is not supported"), if any."""
    text = str(error)
    if not isinstance(error, RuntimeError) or "is not supported" not in text:
        return None
    return next((layer for layer in model.layers if text.startswith(f"Layer {layer.name}:")), None)


@contextmanager
def _ranges_from_each_batch() -> Iterator[None]:
    """tfmot's activation quantizers move their ranges 0.1 % per training step from [-6, 6], so a short QAT
    run converts with ranges far wider than the activations. Within this context (eager calls only) a
    training-mode call sets each range from its batch instead."""
    from tensorflow_model_optimization.python.core.quantization.keras import quant_ops

    original = quant_ops.MovingAvgQuantize

    def from_batch(*args: Any, **kwargs: Any) -> Any:
        return original(*args, **{**kwargs, "ema_decay": 0.0})

    quant_ops.MovingAvgQuantize = from_batch
    try:
        yield
    finally:
        quant_ops.MovingAvgQuantize = original


CALIBRATION_SAMPLES = 256


def calibrate_activation_ranges(quantized_model: Any, x: Arrays) -> None:
    """Sets the activation quantization ranges from the min and max over some training samples, as
    post-training quantization does, so QAT starts from (and converts with) ranges that fit."""
    batch = model_inputs(quantized_model, take(x, CALIBRATION_SAMPLES))
    with _ranges_from_each_batch():
        quantized_model(tf.nest.map_structure(tf.constant, batch), training=True)


def qat(
    model: Any,
    step: QatStep,
    *,
    index: int,
    data: TrainingData,
    pruned_weights: PrunedWeights,
    clustered: bool,
    progress: Progress,
    checkpoint: StepCheckpoint | None = None,
) -> tuple[Any, QatReport]:
    name = f"steps[{index}] qat"
    targets = training_targets(model, data, name, step.fine_tune)
    skipped = layers_to_skip(model, step.skip_layers, step.skip_first_and_last, name) | integer_input_consumers(model)
    scheme = qat_scheme(bool(pruned_weights), clustered)
    quantized_model, quantized = quantize(model, skipped=skipped, scheme=scheme, step=name)
    if step.fine_tune.freeze_batch_norm:
        freeze_batch_norm(quantized_model)
    calibrate_activation_ranges(quantized_model, targets.x)
    metrics, validation = fine_tune(
        quantized_model, targets, settings=step.fine_tune, progress=progress, step=name, checkpoint=checkpoint
    )
    return quantized_model, QatReport(
        scheme=type(scheme).__name__,
        quantized_layers=quantized,
        skipped_layers=sorted(skipped),
        epochs=step.fine_tune.epochs,
        final_metrics=metrics,
        validation=validation,
        sparsity=kernel_sparsity(quantized_model, pruned_weights) if pruned_weights else None,
    )


def _short(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:400] if lines else type(error).__name__


def distill(
    teacher: Any,
    student: Any,
    step: DistillStep,
    *,
    data: TrainingData,
    progress: Progress,
    checkpoint: StepCheckpoint | None = None,
) -> tuple[Any, DistillReport]:
    """Hinton-style distillation, per output of the teacher (``data.reference``: its outputs on x_train):
    alpha * hard-label loss + (1 - alpha) * T^2 * soft-target loss for classifier outputs, MSE (mixed with the
    labels' MSE) for the others. The student trains all its layers (BatchNorm too) on all of x_train."""
    name = f"{step.type} step"
    x, reference = data.x, data.reference
    names = output_names(student, list(reference), f"{name}: the student")
    student_shapes = student.output_shape if isinstance(student.output_shape, list) else [student.output_shape]
    for output, shape in zip(names, student_shapes, strict=True):
        expected = reference[output].shape[1:]
        if len(shape[1:]) != len(expected) or any(
            dim is not None and dim != want for dim, want in zip(shape[1:], expected, strict=True)
        ):
            raise InputError(
                f"{name}: the student's output {output!r} has shape {tuple(shape[1:])} but the teacher's "
                f"{reference[output].shape[1:]}"
            )
    alpha = step.alpha if data.y else 0.0
    settings = step.fine_tune.model_copy(update={"validation_split": 0.0, "freeze_batch_norm": False})
    targets = training_targets(student, data, name, settings, temperature=step.temperature, hard_weight=alpha)
    metrics, _ = fine_tune(student, targets, settings=settings, progress=progress, step=name, checkpoint=checkpoint)
    outputs = predict_named(student, x, names)
    agreement, _ = fidelity(outputs, reference, targets)
    if targets.single_output and not targets.classifier[names[0]]:
        agreement = round(1.0 - 10 ** (-snr_db(outputs[names[0]], reference[names[0]]) / 10), 6)
    return student, DistillReport(
        temperature=step.temperature,
        alpha=alpha,
        teacher_parameters=int(teacher.count_params()),
        student_parameters=int(student.count_params()),
        train_agreement_with_teacher=round(agreement, 4),
        epochs=step.fine_tune.epochs,
        final_metrics=metrics,
    )
