"""Whether the files a run is about to download fit its work folder, checked before the first download.

In a pod the work folder is on the scratch emptyDir, whose ``sizeLimit`` the filesystem does not show
(statvfs reports the node's disk; the kubelet evicts the pod past the limit), so the operator passes the
limit in bytes (``SCRATCH_LIMIT_ENV``) and the space left is the smaller of the disk's free space and the
limit minus what the work folder already holds.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from edgecompress_contract.spec import SCRATCH_LIMIT_ENV

from .errors import InputError


def used_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def available_bytes(work_dir: Path) -> tuple[int, int | None]:
    """(bytes the work folder can still take, the scratch limit when the operator set one)."""
    free = shutil.disk_usage(work_dir).free
    raw_limit = os.environ.get(SCRATCH_LIMIT_ENV)
    if not raw_limit:
        return free, None
    limit = int(raw_limit)
    return min(free, limit - used_bytes(work_dir)), limit


def human(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{count} B"


def check_downloads_fit(sizes: dict[str, int], work_dir: Path) -> None:
    """Refuses (exit 20) downloads of ``sizes`` (bytes by spec field) that the work folder cannot hold."""
    needed = sum(sizes.values())
    available, limit = available_bytes(work_dir)
    if needed <= available:
        return
    listed = ", ".join(f"{field} {human(size)}" for field, size in sizes.items())
    if limit is not None:
        raise InputError(
            f"spec.execution.scratchSizeLimit: the downloads ({listed}) need {human(needed)} but the scratch volume "
            f"({human(limit)}) has {human(max(available, 0))} left; raise spec.execution.scratchSizeLimit (the "
            "operator's default is its defaultScratchSizeLimit setting)"
        )
    raise InputError(
        f"{next(iter(sizes))}: the downloads ({listed}) need {human(needed)} but the work folder {work_dir} has "
        f"{human(available)} free; give --work-dir on a larger disk"
    )
