"""Prometheus metrics of the operator (prometheus-client), served on ``/metrics``.

Jobs by phase and the last result of each CompressionJob are derived from the CompressionJobs the
operator watches, so they are right again right after a restart and a deleted CompressionJob's
series disappear with it. Completions and durations are counted when the operator sees a job finish.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

PHASES = ("Pending", "Running", "Succeeded", "Failed")
EXPECTED_OUTCOMES = (("Succeeded", "Succeeded"), ("Failed", "GatesFailed"), ("Failed", "InvalidInput"))
"""Series that exist from the start at 0, so rate() and increase() see the first completion."""
DURATION_BUCKETS = (30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 86400)

_RESULT_GAUGES = (
    ("baseline_size_bytes", "Size of the float baseline .tflite of the last run, in bytes.", ("baseline", "sizeBytes")),
    ("output_size_bytes", "Size of the compressed .tflite of the last run, in bytes.", ("output", "sizeBytes")),
    ("compression_ratio", "Baseline size divided by compressed size, last run.", ("comparison", "compressionRatio")),
    (
        "accuracy_drop_ratio",
        "Baseline accuracy minus compressed accuracy (0.01 = one point), last run.",
        ("comparison", "accuracyDrop"),
    ),
)
_LATENCIES = (("50", "latencyP50Ms"), ("95", "latencyP95Ms"))


class CompressionJobCollector(Collector):
    """Collects from a cache of CompressionJob statuses fed by the CR watch."""

    def __init__(self) -> None:
        self._statuses: dict[tuple[str, str], dict[str, Any]] = {}
        self._lock = threading.Lock()

    def observe(self, namespace: str, name: str, status: dict[str, Any], created: str | None = None) -> None:
        with self._lock:
            self._statuses[(namespace, name)] = {**status, "_created": created}

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._statuses.pop((namespace, name), None)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            statuses = dict(self._statuses)
        by_phase = GaugeMetricFamily("edgecompress_compressionjobs", "CompressionJobs by phase.", labels=["phase"])
        counts = dict.fromkeys(PHASES, 0)
        for status in statuses.values():
            phase = status.get("phase") or "Pending"
            counts[phase] = counts.get(phase, 0) + 1
        for phase, count in counts.items():
            by_phase.add_metric([phase], count)
        yield by_phase
        families = {
            suffix: GaugeMetricFamily(f"edgecompress_compressionjob_{suffix}", text, labels=["namespace", "name"])
            for suffix, text, _ in _RESULT_GAUGES
        }
        latency = GaugeMetricFamily(
            "edgecompress_compressionjob_latency_seconds",
            "Per-sample inference latency of the compressed .tflite in the last run, by percentile.",
            labels=["namespace", "name", "percentile"],
        )
        gates = GaugeMetricFamily(
            "edgecompress_compressionjob_gates_passed",
            "1 if every gate of the last run passed, else 0.",
            labels=["namespace", "name"],
        )
        current_phase = GaugeMetricFamily(
            "edgecompress_compressionjob_status_phase",
            "1 for the current phase of each CompressionJob.",
            labels=["namespace", "name", "phase"],
        )
        created = GaugeMetricFamily(
            "edgecompress_compressionjob_created_timestamp_seconds",
            "When the CompressionJob was created (Unix time).",
            labels=["namespace", "name"],
        )
        started = GaugeMetricFamily(
            "edgecompress_compressionjob_start_timestamp_seconds",
            "When its runner started (Unix time).",
            labels=["namespace", "name"],
        )
        for (namespace, name), status in sorted(statuses.items()):
            current_phase.add_metric([namespace, name, status.get("phase") or "Pending"], 1.0)
            if status.get("_created"):
                created.add_metric([namespace, name], _parse_time(status["_created"]).timestamp())
            if status.get("startTime"):
                started.add_metric([namespace, name], _parse_time(status["startTime"]).timestamp())
            result = status.get("result")
            if not isinstance(result, dict):
                continue
            for suffix, _, (section, key) in _RESULT_GAUGES:
                value = (result.get(section) or {}).get(key)
                if isinstance(value, (int, float)):
                    families[suffix].add_metric([namespace, name], float(value))
            for percentile, key in _LATENCIES:
                value = (result.get("output") or {}).get(key)
                if isinstance(value, (int, float)):
                    latency.add_metric([namespace, name, percentile], float(value) / 1000.0)
            if "gatesPassed" in result:
                gates.add_metric([namespace, name], 1.0 if result["gatesPassed"] else 0.0)
        yield from families.values()
        yield latency
        yield gates
        yield current_phase
        yield created
        yield started


class OperatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.jobs = CompressionJobCollector()
        self.registry.register(self.jobs)
        self.completions = Counter(
            "edgecompress_compressionjob_completions",
            "CompressionJobs that finished, by result (Succeeded or Failed) and reason.",
            ["result", "reason"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "edgecompress_compressionjob_duration_seconds",
            "Time from the runner's start to the end of the CompressionJob, by result.",
            ["result"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        for result, reason in EXPECTED_OUTCOMES:
            self.completions.labels(result=result, reason=reason)
            self.duration.labels(result=result)

    def record_completion(self, status: dict[str, Any]) -> None:
        """Counts a job that just reached Succeeded or Failed."""
        result = str(status.get("phase"))
        self.completions.labels(result=result, reason=str(status.get("reason", result))).inc()
        started, finished = status.get("startTime"), status.get("completionTime")
        if started and finished:
            seconds = (_parse_time(finished) - _parse_time(started)).total_seconds()
            self.duration.labels(result=result).observe(max(seconds, 0.0))


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


METRICS = OperatorMetrics()
