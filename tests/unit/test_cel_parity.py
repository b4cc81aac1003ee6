"""Every CEL rule in the CRD judges specs exactly as its Python twin does (no apiserver needed).

The rules are collected from the generated CRD, each is matched with its twin (a rule of
``edgecompress_contract.rules``, or pydantic's validation of the step union for the rules that tie
fields to step types), and both are evaluated on a seeded corpus of generated specs. The e2e table
in tests/e2e/test_crd.py shows that the real apiserver agrees with these CEL expressions.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cel
import pytest
from pydantic import TypeAdapter, ValidationError

from edgecompress_contract.rules import SPEC_RULES, STEP_RULES
from edgecompress_contract.spec import SKIP_RULES, CompressionJobSpec, Step
from edgecompress_operator.crd import build_crd

SEED = 20261123
SPECS = 1000


def _maybe(rng: random.Random, **choices: list[Any]) -> dict[str, Any]:
    """Each field set to one of its choices, or left out (as a user may leave it out)."""
    picked: dict[str, Any] = {}
    for name, values in choices.items():
        if rng.random() < 0.6:
            picked[name] = rng.choice(values)
    return picked


def random_step(rng: random.Random, kind: str) -> dict[str, Any]:
    skips = {"skipLayers": [[], ["conv1"]], "skipFirstAndLast": [True, False]}
    if kind == "prune":
        return {
            "type": "prune",
            **_maybe(
                rng,
                schedule=["polynomialDecay", "constantSparsity", "oneShot"],
                initialSparsity=[0.0, 0.3, 0.5, 0.9],
                targetSparsity=[0.3, 0.5, 0.8],
                pattern=["unstructured", "2:4"],
                allocation=["uniform", "sensitivity"],
                layerDistillation=[0, 30],
                beginStep=[0, 10],
                endStep=[5, 10, 100],
                **skips,
            ),
        }
    if kind == "cluster":
        return {"type": "cluster", **_maybe(rng, numberOfClusters=[8, 16], **skips)}
    if kind == "qat":
        return {"type": "qat", **_maybe(rng, **skips)}
    if kind == "reduceFilters":
        return {"type": "reduceFilters", **_maybe(rng, targetReduction=[0.25, 0.5], criterion=["l1", "l2"], **skips)}
    if kind == "ptq":
        mode = rng.choice(["dynamic", "float16", "int8", "int16x8"])
        return {"type": "ptq", "mode": mode, **_maybe(rng, integerIO=[True, False], **skips)}
    if kind == "auto":
        return {
            "type": "auto",
            **_maybe(
                rng,
                objective=["size", "latency", "balanced"],
                maxTrials=[4, 20],
                minWeights=[0, 1024],
                trials=[[], [{"preset": "qat"}], [{"preset": "prune50Qat"}, {"preset": "cluster16Qat"}]],
                parallelism=[1, 2],
            ),
        }
    student_format = rng.choice(["keras", "h5", "savedmodel", "tflite"])
    return {"type": "distill", "student": {"uri": "s3://bucket/student", "format": student_format}}


def random_spec(rng: random.Random) -> dict[str, Any]:
    kinds = ["prune", "cluster", "qat", "ptq", "distill", "reduceFilters", "auto"]
    steps = [random_step(rng, rng.choice(kinds)) for _ in range(rng.randint(1, 4))]
    output: dict[str, Any] = {"uri": rng.choice(["s3://bucket/out", "s3://bucket/out/"])}
    if rng.random() < 0.3:
        output["split"] = {"after": ["block1"]}
    spec: dict[str, Any] = {
        "model": {"uri": "s3://bucket/model", "format": rng.choice(["keras", "h5", "savedmodel", "tflite"])},
        "steps": steps,
        "output": output,
    }
    if rng.random() < 0.5:
        spec["dataset"] = {"uri": "s3://bucket/data.npz"}
    gates = rng.choice(
        [None, {}, {"maxAccuracyDrop": 0.01}, {"minSizeReduction": 0.5}, {"minFidelity": 0.98}, {"minSnrDb": 25.0}]
    )
    if gates is not None:
        spec["gates"] = gates
    promotion = rng.choice(
        [None, None, "s3://bucket/out", "s3://bucket/out/", "s3://bucket/out//", "s3://bucket/stable/"]
    )
    if promotion is not None:
        spec["promotion"] = {"uri": promotion}
    if rng.random() < 0.3:
        outputs = [{"name": rng.choice(["frames", "pitch"]), "task": "regression"} for _ in range(rng.randint(0, 3))]
        spec["evaluation"] = {"outputs": outputs}
    return spec


@functools.cache
def corpus() -> list[tuple[dict[str, Any], CompressionJobSpec]]:
    """Generated specs that pass every field check, with their typed form (cross-field rules not applied)."""
    rng = random.Random(SEED)
    specs = []
    for _ in range(SPECS):
        document = random_spec(rng)
        specs.append((document, CompressionJobSpec.model_validate(document, context={SKIP_RULES: True})))
    return specs


@functools.cache
def mixed_steps() -> list[dict[str, Any]]:
    """Steps that may carry another type's field or lack a required one (for the union's CEL rules)."""
    rng = random.Random(SEED + 1)
    extras = [
        ("numberOfClusters", 8), ("centroidInit", "linear"), ("mode", "int8"), ("integerIO", False),
        ("representativeSamples", 10), ("targetSparsity", 0.5), ("initialSparsity", 0.1),
        ("schedule", "constantSparsity"), ("allocation", "sensitivity"), ("layerDistillation", 30),
        ("pattern", "2:4"), ("beginStep", 0), ("endStep", 10), ("frequency", 5), ("temperature", 2.0), ("alpha", 0.5),
        ("student", {"uri": "s3://bucket/s", "format": "keras"}), ("skipLayers", ["conv1"]), ("skipFirstAndLast", True),
        ("fineTune", {"epochs": 1}), ("targetReduction", 0.5), ("criterion", "l2"), ("minChannels", 4),
        ("roundTo", 4), ("layers", ["conv1"]), ("objective", "latency"), ("maxTrials", 3),
        ("maxMinutes", 5.0), ("precisions", ["float16"]), ("blockSize", 64), ("minWeights", 0),
        ("sensitivitySamples", 8), ("cacheURI", "s3://bucket/trials/"),
        ("maxLatencyRatio", 1.0), ("trials", [{"preset": "qat"}]), ("parallelism", 2),
    ]  # fmt: skip
    steps = []
    for _ in range(2000):
        step = random_step(rng, rng.choice(["prune", "cluster", "qat", "ptq", "distill", "reduceFilters", "auto"]))
        if rng.random() < 0.5:
            name, value = rng.choice(extras)
            step[name] = value
        if rng.random() < 0.2:
            step.pop(rng.choice(["mode", "student"]), None)
        steps.append(step)
    return steps


STEP_ADAPTER: TypeAdapter[Any] = TypeAdapter(Step)


def step_errors(step: dict[str, Any]) -> set[tuple[str, str]]:
    """(error type, field) of every problem pydantic finds in one step."""
    try:
        STEP_ADAPTER.validate_python(step)
    except ValidationError as error:
        return {(item["type"], str(item["loc"][-1])) for item in error.errors() if item["loc"]}
    return set()


@dataclass(frozen=True)
class Twin:
    """A CEL rule of the CRD with its Python twin; ``broken`` judges the object CEL sees as ``self``."""

    name: str
    scope: str
    cel_rule: str
    broken: Callable[[dict[str, Any], Any], bool]


def crd_rules() -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    spec = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec_rules = [rule for rule in spec["x-kubernetes-validations"] if "oldSelf" not in rule["rule"]]
    return spec_rules, spec["properties"]["steps"]["items"]["x-kubernetes-validations"]


def twins() -> tuple[list[Twin], list[str]]:
    """Every CEL rule matched with its Python twin, and the rules (either side) that have none."""
    spec_rules, step_rules = crd_rules()
    by_cel_spec = {rule.cel: rule for rule in SPEC_RULES}
    by_cel_step = {rule.cel: rule for rule in STEP_RULES}
    found: list[Twin] = []
    lonely: list[str] = []
    for crd_rule in spec_rules:
        spec_rule = by_cel_spec.pop(crd_rule["rule"], None)
        if spec_rule is None:
            lonely.append(f"CEL without a Python twin: {crd_rule['message']}")
            continue
        found.append(Twin(spec_rule.name, "spec", crd_rule["rule"],
                          lambda _, typed, rule=spec_rule: bool(rule.violations(typed))))  # fmt: skip
    for crd_rule in step_rules:
        step_rule = by_cel_step.pop(crd_rule["rule"], None)
        message = crd_rule["message"]
        if step_rule is not None:
            found.append(Twin(step_rule.name, "step", crd_rule["rule"],
                              lambda _, typed, rule=step_rule: rule.broken(typed) is not None))  # fmt: skip
        elif " is only valid for steps of type " in message:
            field = message.split(" ", 1)[0]
            found.append(Twin(f"only-valid:{field}", "union", crd_rule["rule"],
                              lambda raw, _, field=field: ("extra_forbidden", field) in step_errors(raw)))  # fmt: skip
        elif message.startswith("a ") and " step needs " in message:
            field = message.rsplit(" ", 1)[-1]
            kind = message.split(" ")[1]
            found.append(Twin(f"needs:{kind}.{field}", "union", crd_rule["rule"],
                              lambda raw, _, kind=kind, field=field: raw["type"] == kind
                              and ("missing", field) in step_errors(raw)))  # fmt: skip
        else:
            lonely.append(f"CEL without a Python twin: {message}")
    lonely += [
        f"Python rule without CEL in the CRD: {rule.name}" for rule in [*by_cel_spec.values(), *by_cel_step.values()]
    ]
    return found, lonely


def test_every_rule_has_a_twin_on_the_other_side() -> None:
    found, lonely = twins()
    print("rules found:", ", ".join(twin.name for twin in found))
    assert not lonely, lonely
    assert {rule.name for rule in SPEC_RULES + STEP_RULES} <= {twin.name for twin in found}


@pytest.mark.parametrize("twin", twins()[0], ids=lambda twin: twin.name)
def test_cel_and_python_agree_on_the_corpus(twin: Twin) -> None:
    if twin.scope == "spec":
        cases = [(document, typed) for document, typed in corpus()]
    elif twin.scope == "step":
        cases = [
            (raw, typed)
            for document, spec in corpus()
            for raw, typed in zip(document["steps"], spec.steps, strict=True)
        ]
    else:
        cases = [(raw, None) for raw in mixed_steps()]
    verdicts = {True: 0, False: 0}
    for raw, typed in cases:
        python_broken = twin.broken(raw, typed)
        cel_broken = not cel.evaluate(twin.cel_rule, {"self": raw})
        assert cel_broken == python_broken, (
            f"{twin.name}: CEL says broken={cel_broken}, Python {python_broken} for {raw}"
        )
        verdicts[python_broken] += 1
    assert verdicts[True] and verdicts[False], (
        f"the corpus never {'breaks' if not verdicts[True] else 'keeps'} {twin.name}"
    )
