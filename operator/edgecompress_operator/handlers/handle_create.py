"""A new CompressionJob: validate its spec, create its runner Job."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from edgecompress_runner.errors import SpecError
from edgecompress_runner.spec import parse_spec

from .. import kube
from ..config import Config
from ..manifests import build_job


def create_runner_job(
    name: str, namespace: str, uid: str, spec: dict[str, Any], config: Config,
    logger: logging.Logger | logging.LoggerAdapter[Any],
) -> str:
    """Creates the runner Job (or finds it, when retried) and returns its name."""
    try:
        parsed = parse_spec(dict(spec))
    except SpecError as error:
        raise kopf.PermanentError(f"invalid spec: {error}") from None
    manifest = build_job(name, namespace, uid, parsed, config)
    job = str(manifest["metadata"]["name"])
    if kube.create_job(manifest):
        logger.info("created runner Job %s", job)
    else:
        logger.info("runner Job %s already exists", job)
    return job
