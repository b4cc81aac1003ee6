"""Watch-fed caches of CompressionJobs, runner Jobs, runner pods and FailedCreate Events (list once, then watch).

A pass reads what exists from these caches instead of listing everything again, so admitting a
thousand new CompressionJobs costs a thousand Job creates, not a thousand full LISTs. The pass
stays level-triggered: it recomputes the desired state from the whole cache every time.

The caches may lag the apiserver by a watch event. The pass copes with that: the objects the
apiserver returns for the operator's own writes are stored at once (``store``), an event older
than what is stored is ignored, status writes are conditional on the resourceVersion the pass
read (kube.patch_status), and what a stale cache could get badly wrong is read directly (a Job
missing from the cache before a CompressionJob is declared JobLost; the pod of a Job that just
finished). No pass runs before every cache has finished its first list (``synced``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

from . import kube

logger = logging.getLogger("edgecompress.informer")

Key = tuple[str, str]
ListObjects = Callable[[str, str | None, kube.Selectors], tuple[list[dict[str, Any]], str]]
WatchObjects = Callable[
    [str, str | None, kube.Selectors, str, int], tuple[Iterator[dict[str, Any]], Callable[[], None]]
]
OnEvent = Callable[[str, dict[str, Any]], None]

WATCH_SECONDS = 30
"""The apiserver ends each watch after this long and it is re-opened (from where it was, no list), so one whose
connection went dead without FIN or RST (a network partition) is noticed within this plus the API time limit."""
RETRY_SECONDS = (1.0, 10.0)
"""First and longest wait before listing again after a failed list or watch (doubling in between)."""
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def key_of(item: dict[str, Any]) -> Key:
    return item["metadata"]["namespace"], item["metadata"]["name"]


def resource_version(item: dict[str, Any]) -> int:
    """The resourceVersion as a number (etcd's revision), to tell which of two copies of an object is newer."""
    try:
        return int(item["metadata"].get("resourceVersion") or 0)
    except ValueError:
        return 0


def _slim_metadata(item: dict[str, Any]) -> dict[str, Any]:
    meta = {key: value for key, value in item["metadata"].items() if key != "managedFields"}
    annotations = meta.get("annotations")
    if annotations and LAST_APPLIED in annotations:
        meta["annotations"] = {key: value for key, value in annotations.items() if key != LAST_APPLIED}
    return meta


def slim_compression_job(item: dict[str, Any]) -> dict[str, Any]:
    """What the pass needs of a CompressionJob: all but managedFields and kubectl's copy of the spec."""
    return {**item, "metadata": _slim_metadata(item)}


JOB_SPEC_FIELDS = ("suspend", "completionMode", "completions", "parallelism")
"""What the pass reads of a Job's spec (a trials Job is Indexed: its trials done of ``completions``)."""


def slim_job(item: dict[str, Any]) -> dict[str, Any]:
    """What the pass needs of a runner Job: metadata, how it runs its pods and status (not the pod template)."""
    spec = item.get("spec") or {}
    return {
        "kind": "Job",
        "metadata": _slim_metadata(item),
        "spec": {name: spec[name] for name in JOB_SPEC_FIELDS if name in spec},
        "status": item.get("status") or {},
    }


def slim_event(item: dict[str, Any]) -> dict[str, Any]:
    """What the pass needs of a FailedCreate Event: which Job it is about, its message and time."""
    return {
        "kind": "Event",
        "metadata": _slim_metadata(item),
        **{key: item.get(key) for key in ("involvedObject", "message", "lastTimestamp", "eventTime")},
    }


def slim_pod(item: dict[str, Any]) -> dict[str, Any]:
    """What the pass needs of a runner pod: metadata and status (not the spec with the job's spec in its env)."""
    return {"kind": "Pod", "metadata": _slim_metadata(item), "status": item.get("status") or {}}


class Informer:
    """One kind's cache: lists, then watches from the list's resourceVersion, in a thread; relists on 410 Gone."""

    def __init__(
        self,
        kind: str,
        *,
        namespace: str | None,
        selectors: kube.Selectors,
        slim: Callable[[dict[str, Any]], dict[str, Any]],
        on_event: OnEvent,
        list_objects: ListObjects = kube.list_objects,
        watch_objects: WatchObjects = kube.watch_objects,
    ) -> None:
        self.kind, self.namespace, self.selectors = kind, namespace, selectors
        self.slim, self.on_event = slim, on_event
        self.list_objects, self.watch_objects = list_objects, watch_objects
        self.synced = threading.Event()
        self.current = threading.Event()
        """Set while the list or the watch that keeps the cache up to date works; cleared when one fails."""
        self._items: dict[Key, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._close: Callable[[], None] | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"informer-{self.kind}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._close is not None:
            try:
                self._close()
            except Exception:  # closing a stream that is already broken
                logger.debug("closing the %s watch failed", self.kind, exc_info=True)

    def items(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._items.values())

    def store(self, item: dict[str, Any]) -> None:
        """Keeps ``item`` (an object the apiserver returned or sent) unless a newer copy is stored already."""
        slim = self.slim(item)
        key = key_of(slim)
        with self._lock:
            stored = self._items.get(key)
            if stored is not None and resource_version(stored) > resource_version(slim):
                return
            self._items[key] = slim

    def _remove(self, item: dict[str, Any]) -> None:
        with self._lock:
            self._items.pop(key_of(item), None)

    def replace(self, items: list[dict[str, Any]], listed_version: str) -> list[dict[str, Any]]:
        """Makes the cache what a list returned, keeping copies stored after it; returns the objects dropped."""
        listed = {key_of(item): self.slim(item) for item in items}
        version = int(listed_version) if listed_version.isdigit() else 0
        with self._lock:
            dropped = [
                item for key, item in self._items.items() if key not in listed and resource_version(item) <= version
            ]
            for key, item in self._items.items():
                if resource_version(item) > resource_version(listed.get(key, item)) or (
                    key not in listed and resource_version(item) > version
                ):
                    listed[key] = item
            self._items = listed
        return dropped

    def _run(self) -> None:
        delay = RETRY_SECONDS[0]
        while not self._stopped.is_set():
            try:
                self._list_and_watch()
                delay = RETRY_SECONDS[0]
            except Exception as error:
                self.current.clear()
                if self._stopped.is_set():
                    return
                logger.warning("the %s watch failed (%s); listing again in %.0f s", self.kind, error, delay)
                self._stopped.wait(delay)
                delay = min(delay * 2, RETRY_SECONDS[1])

    def _list_and_watch(self) -> None:
        items, version = self.list_objects(self.kind, self.namespace, self.selectors)
        dropped = self.replace(items, version)
        self.synced.set()
        self.current.set()
        for item in dropped:
            self.on_event("DELETED", item)
        for item in items:
            self.on_event("ADDED", item)
        while not self._stopped.is_set():
            events, self._close = self.watch_objects(self.kind, self.namespace, self.selectors, version, WATCH_SECONDS)
            for event in events:
                kind, item = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if item.get("code") == 410:
                        logger.info("the %s watch expired (410 Gone); listing again", self.kind)
                        return
                    raise RuntimeError(f"watch error: {item.get('message')}")
                version = str(item.get("metadata", {}).get("resourceVersion") or version)
                if kind == "BOOKMARK":
                    continue
                if kind == "DELETED":
                    self._remove(item)
                else:
                    self.store(item)
                self.on_event(str(kind), item)


FAILED_CREATE = "reason=FailedCreate,involvedObject.kind=Job"
"""The Events the pass needs: why the Job controller cannot create a runner pod."""


class ClusterCache:
    """The caches a reconcile pass reads: CompressionJobs, runner Jobs, runner pods, and FailedCreate Events."""

    def __init__(self, informers: dict[str, Informer]) -> None:
        self.informers = informers

    @classmethod
    def watching(
        cls, namespace: str | None, runner_label: str, on_event: Callable[[str, str, dict[str, Any]], None]
    ) -> ClusterCache:
        kinds: dict[str, tuple[kube.Selectors, Callable[[dict[str, Any]], dict[str, Any]]]] = {
            kube.COMPRESSION_JOBS: ({}, slim_compression_job),
            kube.JOBS: ({"label_selector": runner_label}, slim_job),
            kube.PODS: ({"label_selector": runner_label}, slim_pod),
            kube.EVENTS: ({"field_selector": FAILED_CREATE}, slim_event),
        }
        return cls(
            {
                kind: Informer(
                    kind, namespace=namespace, selectors=selectors, slim=slim, on_event=partial(on_event, kind)
                )
                for kind, (selectors, slim) in kinds.items()
            }
        )

    def start(self) -> None:
        for informer in self.informers.values():
            informer.start()

    def stop(self) -> None:
        for informer in self.informers.values():
            informer.stop()

    def wait_synced(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        return all(informer.synced.wait(max(deadline - time.monotonic(), 0)) for informer in self.informers.values())

    def current(self) -> bool:
        """Every cache's list or watch works (a pass on a cache cut off from the apiserver would miss new objects)."""
        return all(informer.current.is_set() for informer in self.informers.values())

    def compression_jobs(self) -> list[dict[str, Any]]:
        return self.informers[kube.COMPRESSION_JOBS].items()

    def jobs(self) -> list[dict[str, Any]]:
        return self.informers[kube.JOBS].items()

    def pods(self) -> list[dict[str, Any]]:
        return self.informers[kube.PODS].items()

    def failed_creates(self) -> list[dict[str, Any]]:
        return self.informers[kube.EVENTS].items()

    def store(self, kind: str, item: dict[str, Any]) -> None:
        self.informers[kind].store(item)
