"""The watch-fed caches: list then watch, never older than what is stored, relist after 410 Gone."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from edgecompress_operator.informer import Informer, slim_job


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

    def list_objects(self, kind: str, namespace: str | None, selector: str | None) -> tuple[list[dict[str, Any]], str]:
        return self.lists.pop(0)

    def watch_objects(
        self, kind: str, namespace: str | None, selector: str | None, version: str, seconds: int
    ) -> tuple[Iterator[dict[str, Any]], Callable[[], None]]:
        self.watched_from.append(version)
        return iter(self.streams.pop(0)), lambda: None


def informer(server: FakeServer, seen: list[tuple[str, str]]) -> Informer:
    return Informer(
        "jobs",
        namespace=None,
        label_selector="edgecompress.io/compressionjob",
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
            {"type": "MODIFIED", "object": obj("a", 12)},
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
    assert "managedFields" not in item["metadata"] and item["spec"] == {"suspend": None}, "slimmed"


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
