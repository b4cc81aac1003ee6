"""Prometheus metrics of the operator (prometheus-client), served on ``/metrics``.

Jobs by phase and the last result of each CompressionJob are derived from the CompressionJobs the
operator watches, so they are right again right after a restart and a deleted CompressionJob's
series disappear with it. Completions and durations are counted when the operator's status write that
finishes a job succeeds (once per job). Every value is read from a typed ``CompressionJobStatus``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edgecompress_contract.report import CompactMetrics
from edgecompress_contract.status import CompressionJobStatus
from edgecompress_contract.summary import RunSummary

from .status import parse_time

PHASES = ("Pending", "Running", "Succeeded", "Failed")
EXPECTED_OUTCOMES = (("Succeeded", "Succeeded"), ("Failed", "GatesFailed"), ("Failed", "InvalidInput"))
"""Series that exist from the start at 0, so rate() and increase() see the first completion."""
RECONCILE_ACTIONS = ("create", "suspend", "resume", "status")
"""What a reconcile pass does for one CompressionJob (labels of the error counter, pre-set to 0)."""
DURATION_BUCKETS = (30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 86400)


@dataclass(frozen=True)
class ResultGauge:
    """A per-CompressionJob gauge of the last run's result, read from a typed field of ``status.result``."""

    suffix: str
    help: str
    value: Callable[[RunSummary], float | None]


_RESULT_GAUGES = (
    ResultGauge(
        "baseline_size_bytes",
        "Size of the float baseline .tflite of the last run, in bytes.",
        lambda result: result.baseline.size_bytes if result.baseline else None,
    ),
    ResultGauge(
        "output_size_bytes",
        "Size of the compressed .tflite of the last run, in bytes.",
        lambda result: result.output.size_bytes if result.output else None,
    ),
    ResultGauge(
        "compression_ratio",
        "Baseline size divided by compressed size, last run.",
        lambda result: result.comparison.compression_ratio if result.comparison else None,
    ),
    ResultGauge(
        "accuracy_drop_ratio",
        "Baseline accuracy minus compressed accuracy (0.01 = one point), last run.",
        lambda result: result.comparison.accuracy_drop if result.comparison else None,
    ),
)
_LATENCIES: tuple[tuple[str, Callable[[CompactMetrics], float]], ...] = (
    ("50", lambda output: output.latency_p50_ms),
    ("95", lambda output: output.latency_p95_ms),
)


@dataclass(frozen=True)
class Observed:
    status: CompressionJobStatus
    created: str | None


class CompressionJobCollector(Collector):
    """Collects from a cache of CompressionJob statuses fed by the CR watch."""

    def __init__(self) -> None:
        self._observed: dict[tuple[str, str], Observed] = {}
        self._queue: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def set_queue(self, positions: dict[tuple[str, str], int]) -> None:
        """The queue as the last reconcile pass planned it (kept here, not in status: no writes per change)."""
        with self._lock:
            self._queue = dict(positions)

    def observe(self, namespace: str, name: str, status: CompressionJobStatus, created: str | None = None) -> None:
        with self._lock:
            self._observed[(namespace, name)] = Observed(status, created)

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._observed.pop((namespace, name), None)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            observed, queue = dict(self._observed), dict(self._queue)
        position = GaugeMetricFamily(
            "edgecompress_compressionjob_queue_position",
            "Place of a Queued CompressionJob in the queue (1 starts next), as of the last reconcile pass.",
            labels=["namespace", "name"],
        )
        for (namespace, name), place in sorted(queue.items()):
            if (namespace, name) in observed:
                position.add_metric([namespace, name], float(place))
        yield position
        by_phase = GaugeMetricFamily("edgecompress_compressionjobs", "CompressionJobs by phase.", labels=["phase"])
        counts: dict[str, int] = dict.fromkeys(PHASES, 0)
        for item in observed.values():
            counts[item.status.phase or "Pending"] += 1
        for phase, count in counts.items():
            by_phase.add_metric([phase], count)
        yield by_phase
        families = {
            gauge.suffix: GaugeMetricFamily(
                f"edgecompress_compressionjob_{gauge.suffix}", gauge.help, labels=["namespace", "name"]
            )
            for gauge in _RESULT_GAUGES
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
        for (namespace, name), item in sorted(observed.items()):
            status = item.status
            current_phase.add_metric([namespace, name, status.phase or "Pending"], 1.0)
            if item.created:
                created.add_metric([namespace, name], parse_time(item.created).timestamp())
            if status.start_time:
                started.add_metric([namespace, name], parse_time(status.start_time).timestamp())
            result = status.result
            if result is None:
                continue
            for gauge in _RESULT_GAUGES:
                value = gauge.value(result)
                if value is not None:
                    families[gauge.suffix].add_metric([namespace, name], float(value))
            if result.output is not None:
                for percentile, milliseconds in _LATENCIES:
                    latency.add_metric([namespace, name, percentile], milliseconds(result.output) / 1000.0)
            if result.gates_passed is not None:
                gates.add_metric([namespace, name], 1.0 if result.gates_passed else 0.0)
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
        self.reconcile_errors = Counter(
            "edgecompress_reconcile_errors",
            "API calls for one CompressionJob that failed in a reconcile pass (retried by the next pass), by action.",
            ["action"],
            registry=self.registry,
        )
        for result, reason in EXPECTED_OUTCOMES:
            self.completions.labels(result=result, reason=reason)
            self.duration.labels(result=result)
        for action in RECONCILE_ACTIONS:
            self.reconcile_errors.labels(action=action)

    def record_completion(self, status: CompressionJobStatus) -> None:
        """Counts a job that just reached Succeeded or Failed."""
        result = str(status.phase)
        self.completions.labels(result=result, reason=status.reason or result).inc()
        started, finished = status.start_time, status.completion_time
        if started and finished:
            seconds = (parse_time(finished) - parse_time(started)).total_seconds()
            self.duration.labels(result=result).observe(max(seconds, 0.0))


METRICS = OperatorMetrics()
