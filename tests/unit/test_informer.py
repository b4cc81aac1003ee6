"""The watch-fed caches: list then watch, never older than what is stored, relist after 410 Gone."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from edgecompress_operator import informer as informer_module
from edgecompress_operator.informer import Informer, slim_job
from tests.waiting import wait_until


def obj(name: str, version: int, **fields: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ml", "resourceVersion": str(version), "managedFields": [{}]},
        **fields,
    }


class FakeServer:
    """Answers the informer's list and watch calls from scripted lists and event streams."""

    def __init__(self) -> None:
        self.lists: list[tuple[list[dict[str, Any]], str]] = []
        self.streams: list[list[dict[str, Any]]] = []
        self.watched_from: list[str] = []

    def list_objects(
        self, kind: str, namespace: str | None, selectors: dict[str, str]
    ) -> tuple[list[dict[str, Any]], str]:
        return self.lists.pop(0)

    def watch_objects(
        self, kind: str, namespace: str | None, selectors: dict[str, str], version: str, seconds: int
    ) -> tuple[Iterator[dict[str, Any]], Callable[[], None]]:
        self.watched_from.append(version)
        return iter(self.streams.pop(0)), lambda: None


def informer(server: FakeServer, seen: list[tuple[str, str]]) -> Informer:
    return Informer(
        "jobs",
        namespace=None,
        selectors={"label_selector": "edgecompress.io/compressionjob"},
        slim=slim_job,
        on_event=lambda event, item: seen.append((event, item["metadata"]["name"])),
        list_objects=server.list_objects,
        watch_objects=server.watch_objects,
    )


GONE = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old resource version"}}


def names(cache: Informer) -> dict[str, str]:
    return {item["metadata"]["name"]: item["metadata"]["resourceVersion"] for item in cache.items()}


def test_lists_then_applies_watch_events_from_the_lists_version() -> None:
    server, seen = FakeServer(), []
    server.lists = [([obj("a", 5, spec={"suspend": True, "template": {"big": 1}})], "10")]
    server.streams = [
        [
            {"type": "ADDED", "object": obj("b", 11)},
            {
                "type": "MODIFIED",
                "object": obj("a", 12, spec={"suspend": False, "completionMode": "Indexed", "template": {}}),
            },
            {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "13"}}},
            {"type": "DELETED", "object": obj("b", 14)},
        ],
        [GONE],
    ]
    cache = informer(server, seen)
    cache._list_and_watch()
    assert cache.synced.is_set()
    assert server.watched_from == ["10", "14"], "a watch continues from the last event it saw"
    assert names(cache) == {"a": "12"}
    assert seen == [("ADDED", "a"), ("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")]
    [item] = cache.items()
    assert "managedFields" not in item["metadata"] and item["spec"] == {
        "suspend": False,
        "completionMode": "Indexed",
    }, "slimmed"


def test_an_event_older_than_the_stored_copy_is_ignored() -> None:
    server, seen = FakeServer(), []
    server.lists = [([obj("a", 5)], "10")]
    cache = informer(server, seen)
    server.streams = [[{"type": "MODIFIED", "object": obj("a", 11)}, GONE]]
    cache.store(obj("a", 20))  # the operator's own write, answered before the watch caught up
    cache._list_and_watch()
    assert names(cache) == {"a": "20"}


def test_a_relist_drops_what_was_deleted_and_keeps_what_was_written_after_it() -> None:
    server, seen = FakeServer(), []
    cache = informer(server, seen)
    server.lists = [([obj("a", 5), obj("b", 6)], "10"), ([obj("a", 5)], "30")]
    server.streams = [[GONE], [GONE]]
    cache._list_and_watch()
    cache.store(obj("c", 31))  # created by the operator after the second list was taken
    cache.store(obj("a", 32))
    cache._list_and_watch()
    assert names(cache) == {"a": "32", "c": "31"}
    assert ("DELETED", "b") in seen


def test_a_failed_watch_makes_the_cache_not_current_until_it_lists_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(informer_module, "RETRY_SECONDS", (0.01, 0.01))
    relist, finish = threading.Event(), threading.Event()
    lists = [([obj("a", 5)], "10"), ([obj("a", 12)], "20")]

    def list_objects(kind: str, namespace: str | None, selectors: dict[str, str]) -> tuple[list[dict[str, Any]], str]:
        if len(lists) == 1:
            relist.wait(10)
        return lists.pop(0)

    def broken() -> Iterator[dict[str, Any]]:
        yield {"type": "MODIFIED", "object": obj("a", 11)}
        raise TimeoutError("read timed out: the connection went silent")

    def quiet() -> Iterator[dict[str, Any]]:
        finish.wait(10)
        yield GONE

    streams = [broken(), quiet()]
    cache = informer(FakeServer(), [])
    cache.list_objects = list_objects  # type: ignore[method-assign]
    cache.watch_objects = lambda *args: (streams.pop(0), lambda: None)  # type: ignore[method-assign]
    cache.start()
    try:
        wait_until(lambda: cache.synced.is_set() and not cache.current.is_set(), "the failed watch", 10, 0.01)
        assert names(cache) == {"a": "11"}, "what it had stays, for the next list to correct"
        relist.set()
        wait_until(cache.current.is_set, "the cache to list again", 10, 0.01)
        assert names(cache) == {"a": "12"}
    finally:
        finish.set()
        cache.stop()
