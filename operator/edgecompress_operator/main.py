"""kopf entry point: thin decorators only; the work is in handlers/.

Run: ``kopf run --all-namespaces -m edgecompress_operator.main`` (configuration from EDGECOMPRESS_*).
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from edgecompress_runner.spec import API_GROUP, API_VERSION

from . import kube
from .config import load_config
from .crd import PLURAL
from .handlers.handle_create import create_runner_job
from .handlers.handle_job_event import reflect_job
from .manifests import JOB_LABEL


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    memo.config = load_config()
    kube.load_client_config()
    settings.posting.level = logging.INFO
    settings.persistence.finalizer = f"{API_GROUP}/finalizer"


@kopf.on.create(API_GROUP, API_VERSION, PLURAL)
def on_create(
    name: str, namespace: str | None, uid: str, spec: kopf.Spec, memo: Any,
    logger: logging.Logger | logging.LoggerAdapter[Any], patch: kopf.Patch, **_: Any,
) -> None:
    assert namespace is not None
    patch.status["job"] = create_runner_job(name, namespace, uid, dict(spec), memo.config, logger)


@kopf.on.event("batch", "v1", "jobs", labels={JOB_LABEL: kopf.PRESENT})
def on_job_event(body: kopf.Body, **_: Any) -> None:
    reflect_job(dict(body))
