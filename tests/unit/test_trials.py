"""A training trial's content key and index, without TensorFlow."""

from __future__ import annotations

from typing import Any

import pytest

from edgecompress_contract.spec import CompressionJobSpec, parse_spec
from edgecompress_runner.errors import InputError
from edgecompress_runner.trials import InputDigests, trial_index, trial_key

DIGESTS = InputDigests(model="a" * 64, dataset="b" * 64)


def trials_spec(**changes: Any) -> CompressionJobSpec:
    document: dict[str, Any] = {
        "model": {"uri": "s3://models/m.keras", "format": "keras"},
        "dataset": {"uri": "s3://data/d.npz"},
        "steps": [
            {
                "type": "auto",
                "maxTrials": 5,
                "trials": [{"preset": "qat"}, {"preset": "prune50Qat", "fineTune": {"epochs": 3}}],
            }
        ],
        "gates": {"minFidelity": 0.9},
        "output": {"uri": "s3://out/job/"},
    }
    for path, value in changes.items():
        target = document
        *parents, name = path.split(".")
        for parent in parents:
            target = target[parent] if not parent.isdigit() else target[int(parent)]  # type: ignore[index]
        target[name] = value
    return parse_spec(document)


def test_the_key_follows_the_inputs_bytes_and_the_recipe_not_the_uris_or_the_search() -> None:
    key = trial_key(trials_spec(), 1, DIGESTS)
    assert trial_key(trials_spec(), 1, DIGESTS) == key
    unchanged = [
        trials_spec(**{"model.uri": "s3://elsewhere/m.keras", "dataset.uri": "/local/d.npz"}),
        trials_spec(**{"output.uri": "s3://other/"}),
        trials_spec(**{"gates.minFidelity": 0.99, "steps.0.maxTrials": 50}),
    ]
    assert all(trial_key(spec, 1, DIGESTS) == key for spec in unchanged)
    changed = [
        trial_key(trials_spec(), 0, DIGESTS),
        trial_key(trials_spec(seed=7), 1, DIGESTS),
        trial_key(trials_spec(**{"steps.0.trials": [{"preset": "qat"}, {"preset": "prune50Qat"}]}), 1, DIGESTS),
        trial_key(trials_spec(), 1, InputDigests(model="c" * 64, dataset=DIGESTS.dataset)),
        trial_key(trials_spec(), 1, InputDigests(model=DIGESTS.model, dataset="c" * 64)),
    ]
    assert key not in changed and len(set(changed)) == len(changed)


def test_the_index_comes_from_the_option_else_the_completion_index(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "1")
    assert trial_index(trials_spec(), None) == 1
    assert trial_index(trials_spec(), 0) == 0
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "one")
    with pytest.raises(InputError, match="JOB_COMPLETION_INDEX: not a trial index"):
        trial_index(trials_spec(), None)
    with pytest.raises(InputError, match=r"spec.steps\[0\].trials: there is no trial 2; the auto step has 2"):
        trial_index(trials_spec(), 2)
    with pytest.raises(InputError, match=r"spec.steps\[0\].trials: the job has no training trials"):
        trial_index(trials_spec(**{"steps.0.trials": []}), 0)
    monkeypatch.delenv("JOB_COMPLETION_INDEX")
    with pytest.raises(InputError, match="give --index or set JOB_COMPLETION_INDEX"):
        trial_index(trials_spec(), None)
