"""Loading input models (.keras, .h5, SavedModel archives) and telling the user why one cannot be used.

A model file is untrusted input: by default loading never runs Python code stored in it. Before
tf-keras builds a .keras or .h5 model, its config (config.json in the .keras zip, the HDF5
``model_config`` attribute) is scanned for Lambda layers, serialized Python bytecode and classes or
functions from non-Keras modules, and such a model is refused (exit 20) with the layers named.
.keras files are also loaded with Keras ``safe_mode``. SavedModels are never loaded as Keras models:
the TFLite converter reads their TensorFlow graph, and no Python from the archive runs; loading it
runs some graph functions (resource initializers), so a graph with ops that call Python or touch
files (UNSAFE_SAVEDMODEL_OPS) is refused. Only
``trust_code=True`` (spec ``trustCode``; in a cluster only when the operator allows it) skips the
scan and turns ``safe_mode`` off.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecompress_contract.report import Keras3Load
from edgecompress_contract.spec import ALLOW_TRUSTED_CODE_ENV, JOB_ENV, SOURCE_ENV, ModelFormat

from .errors import InputError, UnsupportedLayerError, UntrustedCodeError
from .tfcompat import keras, tf


@dataclass
class LoadedModel:
    """A Keras model (trainable) or a SavedModel directory (convertible only).

    A Keras 3 model is rebuilt as a tf-keras model when a step trains it, and otherwise exported by
    Keras 3 to a SavedModel; ``keras3`` says which (for the report).
    """

    source: str
    keras_model: Any = None
    saved_model_dir: Path | None = None
    keras3: Keras3Load | None = None
    tflite: bytes | None = None
    """A float .tflite input (format tflite): the baseline itself, quantized by litert-quantizer."""

    def converter(self) -> Any:
        if self.tflite is not None:
            raise InputError(f"{self.source}: a .tflite model is not converted again")
        if self.keras_model is not None:
            return tf.lite.TFLiteConverter.from_keras_model(self.keras_model)
        return tf.lite.TFLiteConverter.from_saved_model(str(self.saved_model_dir))

    def require_keras(self, step: str) -> Any:
        if self.keras_model is None and self.keras3 is not None:
            raise InputError(
                f"{step}: {self.source} (Keras {self.keras3.keras_version}) was loaded for conversion only; "
                "load it with keras_needed_by to rebuild it in tf-keras"
            )
        if self.keras_model is None:
            kind = "a .tflite model" if self.tflite is not None else "a SavedModel"
            raise InputError(f"{step}: {self.source} is {kind}, which cannot be fine-tuned")
        return self.keras_model


def _saved_keras_version(path: Path, model_format: str) -> str | None:
    if model_format == ModelFormat.KERAS and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if "metadata.json" in archive.namelist():
                return str(json.loads(archive.read("metadata.json")).get("keras_version", "")) or None
    if model_format == ModelFormat.H5:
        import h5py

        try:
            with h5py.File(path, "r") as handle:
                version = handle.attrs.get("keras_version")
        except OSError:
            return None
        return version.decode() if isinstance(version, bytes) else (str(version) if version else None)
    return None


def load_model(
    path: Path,
    model_format: str,
    source: str,
    work_dir: Path,
    *,
    trust_code: bool = False,
    keras_needed_by: str | None = None,
) -> LoadedModel:
    """Loads a model; without ``trust_code`` one whose file carries Python code is refused before it is built.

    ``keras_needed_by`` names the step that will train the model (e.g. ``steps[0] prune``): a Keras 3
    model is then rebuilt as a tf-keras model, or refused naming what blocks that; without it a Keras 3
    model is only exported for conversion.
    """
    if trust_code:
        check_trust_permitted(source)
    if model_format == ModelFormat.TFLITE:
        from .tflite_quantize import read_float_tflite

        return LoadedModel(source=source, tflite=read_float_tflite(path, source))
    if model_format == ModelFormat.SAVEDMODEL:
        # Only the converter reads it (tf.saved_model graph functions); never keras load_model, which
        # could revive Lambda layers from keras_metadata.pb.
        saved_model_dir = _unpack_saved_model(path, source, work_dir)
        unsafe = [] if trust_code else find_unsafe_ops(saved_model_dir, source)
        if unsafe:
            raise UntrustedCodeError(
                f"{source}: the SavedModel's graph has ops that run Python or touch files when TensorFlow loads "
                f"or runs it: {', '.join(unsafe)}. The runner does not run them: export the model without them, "
                "or, if you trust the model's author, set trustCode: true on this model source (in a cluster the "
                "operator must also allow it: Helm value operator.config.allowTrustedCode)"
            )
        return LoadedModel(source=source, saved_model_dir=saved_model_dir)
    config = _saved_config(path, model_format, source)
    version = _saved_keras_version(path, model_format)
    keras3 = bool(version and version.startswith("3."))
    if keras3 and model_format != ModelFormat.KERAS:
        raise UnsupportedLayerError(
            f"{source}: saved with Keras {version} as {model_format}, which the runner reads only from tf-keras "
            "(Keras 2). Save it with Keras 3 as .keras (model.save('model.keras')): the runner converts a Keras 3 "
            ".keras model as it is, and rebuilds it in tf-keras for prune, cluster, qat and distill"
        )
    unknown = _unknown_classes(config) if model_format == ModelFormat.KERAS and not keras3 else []
    if unknown:
        raise InputError(
            f"{source}: the model uses classes the runner cannot import: {', '.join(unknown)}. "
            "The runner loads only built-in tf-keras classes (custom or subclassed classes need your "
            "code): rebuild the model from built-in layers, or export a SavedModel and use only a ptq step"
        )
    if not trust_code:
        findings = find_code(config)
        if findings:
            raise UntrustedCodeError(
                f"{source}: the model carries Python code that loading it would run: {'; '.join(findings)}. "
                "The runner does not run code from model files: replace these with built-in layers, or "
                "export a SavedModel and use only a ptq step. If you trust the model's author, set "
                "trustCode: true on this model source (in a cluster the operator must also allow it: "
                "Helm value operator.config.allowTrustedCode)"
            )
    suffix = ".keras" if model_format == ModelFormat.KERAS else ".h5"
    named = path.with_suffix(suffix)
    if named != path:
        shutil.copyfile(path, named)
    if keras3:
        return _load_keras3(
            named,
            source,
            work_dir,
            version=str(version),
            trust_code=trust_code,
            config=config,
            keras_needed_by=keras_needed_by,
        )
    try:
        if model_format == ModelFormat.KERAS:
            model = keras.models.load_model(str(named), compile=False, safe_mode=not trust_code)
        else:
            model = keras.models.load_model(str(named), compile=False)
    except Exception as error:  # tf-keras raises many types for unreadable files
        raise InputError(
            f"{source}: cannot load as a {model_format} model ({type(error).__name__}: {_first_line(error)})"
        ) from None
    if not (isinstance(model, keras.Sequential) or getattr(model, "_is_graph_network", False)):
        raise UnsupportedLayerError(
            f"{source}: {type(model).__name__} is a subclassed model; tfmot and the converter need a "
            "Sequential or functional model. Rebuild it with the functional API, or export a "
            "SavedModel and use only a ptq step"
        )
    return LoadedModel(source=source, keras_model=model)


def _load_keras3(
    path: Path,
    source: str,
    work_dir: Path,
    *,
    version: str,
    trust_code: bool,
    config: Any,
    keras_needed_by: str | None,
) -> LoadedModel:
    """Loads a Keras 3 .keras with Keras 3 itself (safe_mode unless trusted), then rebuilds it in tf-keras
    when a step trains it (keras3_rebuild), or else exports a SavedModel for the converter."""
    import keras as keras3  # Keras 3, installed beside tf-keras; tf.keras stays tf-keras

    def unloadable(error: Exception) -> InputError:
        return InputError(
            f"{source}: cannot load as a Keras {version} model ({type(error).__name__}: {_first_line(error)})"
        )

    try:
        model = keras3.saving.load_model(str(path), compile=False, safe_mode=not trust_code)
    except Exception as error:  # Keras raises many types for unreadable or unsupported files
        raise unloadable(error) from None
    if keras_needed_by is not None:
        from .keras3_rebuild import RebuildRefused, rebuild_in_tf_keras

        try:
            rebuilt = rebuild_in_tf_keras(model, config)
        except RebuildRefused as why:
            raise UnsupportedLayerError(
                f"{keras_needed_by}: {source} was saved with Keras {version}; training it needs a tf-keras "
                f"rebuild of the model, and {why}. A job with only a ptq step works on this model (Keras 3 "
                "exports it for conversion); to train it, replace what is named with built-in layers both "
                "Keras versions have"
            ) from None
        return LoadedModel(
            source=source,
            keras_model=rebuilt.model,
            keras3=Keras3Load(
                keras_version=version,
                rebuilt_in_tf_keras=True,
                max_abs_difference=rebuilt.max_abs_difference,
                tolerance=rebuilt.tolerance,
                verification_samples=rebuilt.samples,
            ),
        )
    exported = work_dir / "keras3-savedmodel"
    shutil.rmtree(exported, ignore_errors=True)
    try:
        model.export(str(exported), format="tf_saved_model", verbose=False)
    except Exception as error:  # Keras raises many types for models it cannot export
        raise unloadable(error) from None
    return LoadedModel(
        source=source,
        saved_model_dir=exported,
        keras3=Keras3Load(keras_version=version, rebuilt_in_tf_keras=False),
    )


def check_trust_permitted(source: str) -> None:
    """A run started by the operator (job in EDGECOMPRESS_JOB) trusts code only when the operator allowed it.

    A local run (``edgecompress-runner run job.yaml``) honours trustCode on its own: the user runs
    their own models with their own rights.
    """
    from_operator = bool(os.environ.get(JOB_ENV) or os.environ.get(SOURCE_ENV))
    if from_operator and os.environ.get(ALLOW_TRUSTED_CODE_ENV, "").strip().lower() != "true":
        raise UntrustedCodeError(
            f"{source}: trustCode is true, but the operator that started this run does not allow trusted "
            f"code ({ALLOW_TRUSTED_CODE_ENV} is not true on the runner pod; Helm value "
            "operator.config.allowTrustedCode)"
        )


def _saved_config(path: Path, model_format: str, source: str) -> Any:
    """The model config tf-keras would build from: config.json of a .keras zip, model_config of an HDF5 file.

    The file must really be what the format says: tf-keras picks its loader from the content (an
    HDF5 file named .keras is loaded without safe_mode), so a mismatch is refused here. A config that
    cannot be read is refused too: what cannot be scanned is not loaded.
    """

    def unreadable(why: str) -> InputError:
        return InputError(f"{source}: cannot load as a {model_format} model ({why})")

    if model_format == ModelFormat.KERAS:
        if not zipfile.is_zipfile(path):
            raise unreadable("not a .keras zip archive")
        try:
            with zipfile.ZipFile(path) as archive:
                raw: Any = archive.read("config.json")
        except (KeyError, zipfile.BadZipFile, OSError) as error:
            raise unreadable(f"no readable config.json: {_first_line(error)}") from None
    else:
        import h5py

        try:
            with h5py.File(path, "r") as handle:
                raw = handle.attrs.get("model_config")
        except OSError as error:
            raise unreadable(f"{type(error).__name__}: {_first_line(error)}") from None
        if raw is None:
            raise unreadable("the HDF5 file has no model_config: it holds weights only")
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="replace")
    if not isinstance(raw, str):
        raise unreadable("its model config is not text")
    try:
        return json.loads(raw)
    except json.JSONDecodeError as error:
        raise unreadable(f"its model config is not JSON: {error}") from None


# tf-keras looks builtins-module functions up in these Keras modules first (serialization_lib.BUILTIN_MODULES).
_KERAS_FUNCTION_MODULES = (
    "activations",
    "constraints",
    "initializers",
    "losses",
    "metrics",
    "optimizers",
    "regularizers",
)


def find_code(config: Any) -> list[str]:
    """What in a saved model config would run Python from the file (or from an arbitrary module) when built.

    Finds, naming the layer (nested layers as outer/inner): Lambda layers (in any wrapper or nested
    model), serialized Python bytecode (``{"class_name": "__lambda__"}`` and ``*_type: "lambda"``
    function configs, e.g. in RNN cell wrappers), and classes or functions from modules other than
    Keras (tf-keras' serialization_lib imports a config's ``module``; the .h5 loader reaches it too
    for nested objects deserialized without a module table, so both formats are checked).
    """
    findings: list[str] = []
    lambdas: set[tuple[str, ...]] = set()  # their function configs need no second finding

    def add(finding: str) -> None:
        if finding not in findings:
            findings.append(finding)

    def where(path: tuple[str, ...]) -> str:
        return f"layer {'/'.join(path)!r}" if path else "the model config"

    def walk(node: Any, path: tuple[str, ...], root: bool) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item, path, False)
            return
        if not isinstance(node, dict):
            return
        class_name = node.get("class_name")
        inner = node.get("config")
        if isinstance(class_name, str) and isinstance(inner, dict) and not root:
            name = inner.get("name", node.get("name"))
            if isinstance(name, str) and name:
                path = (*path, name)
        if class_name == "Lambda":
            lambdas.add(path)
            add(f"Lambda layer {'/'.join(path) or '?'!r}")
        elif class_name == "__lambda__":
            add(f"Python lambda (bytecode) in {where(path)}")
        for key, value in node.items():
            if isinstance(key, str) and key.endswith("_type") and value == "lambda" and path not in lambdas:
                add(f"Python lambda (bytecode) in {where(path)} ({key})")
        if isinstance(class_name, str) and "config" in node:
            foreign = _foreign_import(node, class_name)
            if foreign:
                add(f"{where(path)} imports {foreign}")
        for value in node.values():
            walk(value, path, False)

    walk(config, (), True)
    return findings


def _foreign_import(node: dict[str, Any], class_name: str) -> str | None:
    """The module.name the .keras loader would import for this object, when that is not Keras itself."""
    module = node.get("module")
    if not isinstance(module, str):
        return None
    registered = node.get("registered_name")
    if isinstance(registered, str) and registered != class_name and keras.saving.get_registered_object(registered):
        return None  # found in the runner's registry, nothing is imported
    top = module.split(".")[0]
    if top in ("keras", "tf_keras"):
        return None
    if top == "tensorflow" and class_name == "__typespec__":
        return None
    inner = node.get("config")
    name = inner if class_name == "function" and isinstance(inner, str) else class_name
    if module == "builtins" and class_name == "function":
        if any(hasattr(getattr(keras, namespace, None), name) for namespace in _KERAS_FUNCTION_MODULES):
            return None
    return f"{module}.{name}"


def _unknown_classes(config: Any) -> list[str]:
    """Class names in a .keras file's config that neither tf-keras nor its registry provides."""
    unknown: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            name, module = node.get("class_name"), node.get("module")
            if isinstance(name, str) and "config" in node:
                registered = node.get("registered_name")
                if registered and registered != name:
                    if keras.saving.get_registered_object(registered) is None:
                        unknown.add(registered)
                elif isinstance(module, str) and module.split(".")[0] == "keras":
                    submodule = module.partition(".")[2]
                    namespace = getattr(keras, submodule, None) if submodule else keras
                    if namespace is not None and not hasattr(namespace, name):
                        unknown.add(name)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    return sorted(unknown)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:300] if text else ""


def _unpack_saved_model(archive_path: Path, source: str, work_dir: Path) -> Path:
    target = work_dir / "savedmodel"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    try:
        if zipfile.is_zipfile(archive_path):
            with zipfile.ZipFile(archive_path) as archive:
                archive.extractall(target)
        elif tarfile.is_tarfile(archive_path):
            with tarfile.open(archive_path) as archive:
                archive.extractall(target, filter="data")
        else:
            raise InputError(f"{source}: a SavedModel must be packed as .tar.gz, .tgz or .zip")
    except (tarfile.TarError, zipfile.BadZipFile, OSError) as error:
        raise InputError(f"{source}: cannot unpack the SavedModel archive ({error})") from None
    found = sorted(target.rglob("saved_model.pb"), key=lambda found_path: len(found_path.parts))
    if not found:
        raise InputError(f"{source}: the archive holds no saved_model.pb")
    return found[0].parent


# Ops of a SavedModel's graph that call back into Python or read/write arbitrary files. Loading a
# SavedModel for conversion runs some of its functions (resource initializers, restore functions), so
# these are refused by default. A denylist, not a sandbox: the pod's restrictions still matter.
UNSAFE_SAVEDMODEL_OPS = frozenset(
    {
        "PyFunc",
        "PyFuncStateless",
        "EagerPyFunc",
        "WriteFile",
        "ReadFile",
        "MatchingFiles",
        "ImmutableConst",
        "CreateSummaryFileWriter",
        "WholeFileReader",
        "WholeFileReaderV2",
        "TextLineReader",
        "TextLineReaderV2",
        "TFRecordReader",
        "TFRecordReaderV2",
        "FixedLengthRecordReader",
        "FixedLengthRecordReaderV2",
        "TFRecordDataset",
        "TFRecordDatasetV2",
        "TextLineDataset",
        "FixedLengthRecordDataset",
        "FixedLengthRecordDatasetV2",
        "CSVDataset",
        "CSVDatasetV2",
        "LoadDataset",
        "SaveDataset",
        "SaveDatasetV2",
        "DatasetToTFRecord",
    }
)


def find_unsafe_ops(saved_model_dir: Path, source: str) -> list[str]:
    """Unsafe op types in any graph or function of saved_model.pb (parsed as a protobuf, nothing runs)."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    try:
        saved_model.ParseFromString((saved_model_dir / "saved_model.pb").read_bytes())
    except Exception as error:  # protobuf raises DecodeError and others
        raise InputError(f"{source}: saved_model.pb is not a readable SavedModel ({_first_line(error)})") from None
    found: set[str] = set()
    for meta_graph in saved_model.meta_graphs:
        found.update(node.op for node in meta_graph.graph_def.node if node.op in UNSAFE_SAVEDMODEL_OPS)
        for function in meta_graph.graph_def.library.function:
            found.update(node.op for node in function.node_def if node.op in UNSAFE_SAVEDMODEL_OPS)
    return sorted(found)


def check_tfmot_structure(model: Any, step: str) -> None:
    """tfmot wraps the layers of a model one level deep (load_model already refused subclassed models)."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            raise UnsupportedLayerError(
                f"{step}: layer {layer.name!r} is a nested model, which tfmot cannot wrap. "
                "Flatten it into the outer model (e.g. build the outer model from its layers' outputs)"
            )


def weighted_layer_names(model: Any) -> list[str]:
    return [layer.name for layer in model.layers if layer.trainable_weights]
