"""Loading input models (.keras, .h5, SavedModel archives) and telling the user why one cannot be used."""

from __future__ import annotations

import json
import shutil
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecompress_contract.spec import ModelFormat

from .errors import InputError, UnsupportedLayerError
from .tfcompat import keras, tf


@dataclass
class LoadedModel:
    """A Keras model (trainable) or a SavedModel directory (convertible only)."""

    source: str
    keras_model: Any = None
    saved_model_dir: Path | None = None

    def converter(self) -> Any:
        if self.keras_model is not None:
            return tf.lite.TFLiteConverter.from_keras_model(self.keras_model)
        return tf.lite.TFLiteConverter.from_saved_model(str(self.saved_model_dir))

    def require_keras(self, step: str) -> Any:
        if self.keras_model is None:
            raise InputError(f"{step}: {self.source} is a SavedModel, which cannot be fine-tuned")
        return self.keras_model


def _keras3_hint(source: str, version: str) -> UnsupportedLayerError:
    return UnsupportedLayerError(
        f"{source}: saved with Keras {version}; tensorflow-model-optimization needs a tf-keras "
        "(Keras 2) model. Re-save it with tf_keras (pip install tf-keras, TF_USE_LEGACY_KERAS=1), "
        "or export a SavedModel and use only a ptq step"
    )


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


def load_model(path: Path, model_format: str, source: str, work_dir: Path) -> LoadedModel:
    if model_format == ModelFormat.SAVEDMODEL:
        return LoadedModel(source=source, saved_model_dir=_unpack_saved_model(path, source, work_dir))
    version = _saved_keras_version(path, model_format)
    if version and version.startswith("3."):
        raise _keras3_hint(source, version)
    unknown = _unknown_classes(path) if model_format == ModelFormat.KERAS else []
    if unknown:
        raise InputError(
            f"{source}: the model uses classes the runner cannot import: {', '.join(unknown)}. "
            "The runner loads only built-in tf-keras classes (custom or subclassed classes need your "
            "code): rebuild the model from built-in layers, or export a SavedModel and use only a ptq step"
        )
    suffix = ".keras" if model_format == ModelFormat.KERAS else ".h5"
    named = path.with_suffix(suffix)
    if named != path:
        shutil.copyfile(path, named)
    try:
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


def _unknown_classes(path: Path) -> list[str]:
    """Class names in a .keras file's config that neither tf-keras nor its registry provides."""
    if not zipfile.is_zipfile(path):
        return []
    with zipfile.ZipFile(path) as archive:
        if "config.json" not in archive.namelist():
            return []
        config = json.loads(archive.read("config.json"))
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
