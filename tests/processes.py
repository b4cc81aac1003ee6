"""Stopping the test servers and pod processes (terminate, wait, then kill), and probing their HTTP endpoints."""

from __future__ import annotations

import subprocess
import urllib.error
import urllib.request
from typing import Any


def stop_process(process: subprocess.Popen[Any], timeout: float = 20) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


def http_status(url: str, timeout: float = 2) -> int:
    """The HTTP status of a GET, or 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return 0
