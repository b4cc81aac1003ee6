"""A model file is untrusted input: loading it never runs Python code from it unless trustCode says so.

The attacker's model here has a Lambda layer whose function writes a marker file; building the
model (what tf-keras does while loading) calls it. The marker file tells whether the code ran.
"""

from __future__ import annotations

import json
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest

from edgecompress_contract.spec import ALLOW_TRUSTED_CODE_ENV, JOB_ENV, SOURCE_ENV
from edgecompress_runner.errors import ExitCode
from tests.conftest import job, run_job

pytestmark = pytest.mark.tf

MARKER_ENV = "EDGECOMPRESS_TEST_MARKER"
PTQ = [{"type": "ptq", "mode": "dynamic"}]


def write_marker(inputs: Any) -> Any:
    """The attacker's code: runs wherever the layer is called, i.e. while the model is built."""
    import os

    marker = os.environ.get("EDGECOMPRESS_TEST_MARKER")
    if marker:
        with open(marker, "a") as handle:
            handle.write("the model's code ran\n")
    return inputs * 1.0


def lambda_model() -> Any:
    from edgecompress_runner.tfcompat import keras

    inputs = keras.layers.Input((8, 8, 1))
    hidden = keras.layers.Lambda(write_marker, name="mark")(inputs)
    outputs = keras.layers.Dense(10, name="logits")(keras.layers.Flatten()(hidden))
    return keras.Model(inputs, outputs)


@pytest.fixture
def marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The marker path, set only after the test built and saved its model; no operator environment."""
    for name in (JOB_ENV, SOURCE_ENV, ALLOW_TRUSTED_CODE_ENV):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "marker"
    monkeypatch.setenv(MARKER_ENV, str(path))
    return path


@pytest.fixture(scope="module")
def lambda_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("lambda-models")
    model = lambda_model()
    paths = {"h5": folder / "evil.h5", "keras": folder / "evil.keras"}
    for path in paths.values():
        model.save(path)
    return paths


def assert_refused(run_dir: Path, document: dict[str, Any], marker: Path, message: str) -> dict[str, Any]:
    import re

    run = run_job(document, run_dir)
    assert run.exit_code == ExitCode.INVALID_INPUT, run.summary
    assert run.summary["reason"] == "UntrustedCode", run.summary
    assert re.search(message, run.summary["message"]), run.summary["message"]
    assert not marker.exists(), "the model's code ran"
    output = Path(document["output"]["uri"])
    assert not (output / "model.tflite").exists() and not (output / "report.json").exists()
    return run.summary


@pytest.mark.parametrize("model_format", ["h5", "keras"])
def test_lambda_model_is_refused_before_it_is_built(
    model_format: str, lambda_models: dict[str, Path], marker: Path, tmp_path: Path
) -> None:
    document = job(lambda_models[model_format], None, tmp_path / "out", PTQ)
    summary = assert_refused(
        tmp_path, document, marker, rf"evil\.{model_format}: the model carries Python code .*Lambda layer 'mark'"
    )
    assert "trustCode: true" in summary["message"] and "allowTrustedCode" in summary["message"]


@pytest.mark.parametrize("model_format", ["h5", "keras"])
def test_trusted_code_runs_in_a_local_run_and_the_report_says_so(
    model_format: str, lambda_models: dict[str, Path], marker: Path, tmp_path: Path
) -> None:
    document = job(lambda_models[model_format], None, tmp_path / "out", PTQ)
    document["model"]["trustCode"] = True
    run = run_job(document, tmp_path)
    assert run.exit_code == ExitCode.SUCCEEDED, run.summary
    assert marker.exists()
    assert run.report["trustedCode"] is True
    assert run.report["spec"]["model"]["trustCode"] is True


def test_a_model_without_code_reports_untrusted(digits_model: Path, marker: Path, tmp_path: Path) -> None:
    from edgecompress_runner.tfcompat import keras

    h5 = tmp_path / "plain.h5"
    keras.models.load_model(digits_model).save(h5)
    run = run_job(job(h5, None, tmp_path / "out", PTQ), tmp_path)
    assert run.exit_code == ExitCode.SUCCEEDED, run.summary
    assert run.report["trustedCode"] is False


def test_in_an_operator_pod_trust_needs_the_operators_permission(
    lambda_models: dict[str, Path], marker: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    document = job(lambda_models["h5"], None, tmp_path / "out", PTQ)
    document["model"]["trustCode"] = True
    monkeypatch.setenv(JOB_ENV, json.dumps(document))
    monkeypatch.setenv(SOURCE_ENV, json.dumps({"namespace": "team", "name": "evil", "uid": "u-1"}))
    assert_refused(
        tmp_path / "denied",
        document,
        marker,
        rf"evil\.h5: trustCode is true, but the operator that started this run does not allow trusted code "
        rf"\({ALLOW_TRUSTED_CODE_ENV} is not true",
    )
    monkeypatch.setenv(ALLOW_TRUSTED_CODE_ENV, "true")
    run = run_job(document, tmp_path / "allowed")
    assert run.exit_code == ExitCode.SUCCEEDED, run.summary
    assert marker.exists() and run.report["trustedCode"] is True


def test_an_hdf5_file_declared_keras_is_refused(lambda_models: dict[str, Path], marker: Path, tmp_path: Path) -> None:
    """tf-keras picks its loader from the content: HDF5 bytes named .keras would skip safe_mode."""
    disguised = tmp_path / "disguised.keras"
    disguised.write_bytes(lambda_models["h5"].read_bytes())
    document = job(disguised, None, tmp_path / "out", PTQ)
    run = run_job(document, tmp_path)
    assert run.exit_code == ExitCode.INVALID_INPUT, run.summary
    assert "disguised.keras: cannot load as a keras model (not a .keras zip archive)" in run.summary["message"]
    assert not marker.exists()


def test_a_savedmodel_is_converted_without_running_its_python(marker: Path, tmp_path: Path) -> None:
    """The Lambda's bytecode is in keras_metadata.pb; the converter reads only the TensorFlow graph."""
    from edgecompress_runner.tfcompat import tf

    folder = tmp_path / "evil_savedmodel"
    tf.saved_model.save(lambda_model(), str(folder))  # tracing calls the function: no marker path set yet
    if marker.exists():
        marker.unlink()
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as packed:
        packed.add(folder, arcname="evil_savedmodel")
    document = job(archive, None, tmp_path / "out", PTQ)
    document["model"]["format"] = "savedmodel"
    run = run_job(document, tmp_path)
    assert run.exit_code == ExitCode.SUCCEEDED, run.summary
    assert not marker.exists(), "converting a SavedModel ran Python from it"
    assert run.report["trustedCode"] is False


def test_a_savedmodel_whose_graph_writes_files_is_refused(marker: Path, tmp_path: Path) -> None:
    """Loading a SavedModel runs its resource initializers: graph ops, not Python, but they can touch files."""
    from edgecompress_runner.tfcompat import tf

    class Resource(tf.saved_model.experimental.TrackableResource):  # type: ignore[misc]
        def _create_resource(self) -> Any:
            return tf.raw_ops.VarHandleOp(dtype=tf.float32, shape=[], shared_name="")

        def _initialize(self) -> None:
            tf.io.write_file(str(marker), "the model's graph ran")
            tf.raw_ops.AssignVariableOp(resource=self.resource_handle, value=1.0)

    class Module(tf.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.resource = Resource()

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])  # type: ignore[misc]
        def serve(self, inputs: Any) -> Any:
            return inputs * tf.raw_ops.ReadVariableOp(resource=self.resource.resource_handle, dtype=tf.float32)

    module = Module()
    folder = tmp_path / "writer_savedmodel"
    tf.saved_model.save(module, str(folder), signatures={"serving_default": module.serve})
    marker.unlink(missing_ok=True)  # creating the resource here ran the initializer once
    archive = tmp_path / "writer.zip"
    with zipfile.ZipFile(archive, "w") as packed:
        for item in folder.rglob("*"):
            packed.write(item, item.relative_to(tmp_path))
    document = job(archive, None, tmp_path / "out", PTQ)
    document["model"]["format"] = "savedmodel"
    assert_refused(tmp_path / "run", document, marker, r"writer\.zip: the SavedModel's graph has ops .*: WriteFile\.")


def _layer(class_name: str, name: str, **config: Any) -> dict[str, Any]:
    return {"module": "keras.layers", "class_name": class_name, "config": {"name": name, **config}}


def _functional(*layers: dict[str, Any]) -> dict[str, Any]:
    return {"class_name": "Functional", "config": {"name": "model", "layers": list(layers)}}


BYTECODE = ["4wEAAAAA...", None, None]


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (_functional(_layer("Dense", "d", units=2)), []),
        (_functional(_layer("Lambda", "f", function=BYTECODE, function_type="lambda")), ["Lambda layer 'f'"]),
        (
            _functional(_layer("Lambda", "named", function="relu", function_type="function")),
            ["Lambda layer 'named'"],
        ),
        (
            _functional(_layer("TimeDistributed", "td", layer=_layer("Lambda", "inner", function_type="lambda"))),
            ["Lambda layer 'td/inner'"],
        ),
        (
            _functional(
                _layer("Bidirectional", "bi", layer=_layer("Lambda", "fw"), backward_layer=_layer("Lambda", "bw"))
            ),
            ["Lambda layer 'bi/fw'", "Lambda layer 'bi/bw'"],
        ),
        (
            {
                "class_name": "Sequential",
                "config": {"name": "outer", "layers": [_functional(_layer("Lambda", "deep"))]},
            },
            ["Lambda layer 'model/deep'"],
        ),
        (
            _functional(_layer("Dense", "d", activation={"class_name": "__lambda__", "config": {"value": BYTECODE}})),
            ["Python lambda (bytecode) in layer 'd'"],
        ),
        (
            _functional(_layer("RNN", "rnn", cell=_layer("DropoutWrapper", "w", dropout_fn_type="lambda"))),
            ["Python lambda (bytecode) in layer 'rnn/w' (dropout_fn_type)"],
        ),
        (
            _functional(
                _layer(
                    "Dense",
                    "d",
                    kernel_initializer={"module": "os", "class_name": "function", "config": "system"},
                    activation={"module": "builtins", "class_name": "function", "config": "relu"},
                    bias_initializer={"module": "builtins", "class_name": "function", "config": "exec"},
                )
            ),
            ["layer 'd' imports os.system", "layer 'd' imports builtins.exec"],
        ),
        (
            _functional({"module": "subprocess", "class_name": "Popen", "config": {"name": "p"}}),
            ["layer 'p' imports subprocess.Popen"],
        ),
    ],
    ids=[
        "plain",
        "lambda",
        "lambda-named-function",
        "time-distributed",
        "bidirectional",
        "nested-model",
        "lambda-activation",
        "cell-wrapper-bytecode",
        "foreign-functions",
        "foreign-class",
    ],
)
def test_find_code(config: dict[str, Any], expected: list[str]) -> None:
    from edgecompress_runner.model_io import find_code

    assert find_code(config) == expected
