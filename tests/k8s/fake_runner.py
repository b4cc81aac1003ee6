"""A runner that does no work: one progress line and a succeeded summary, for operator load tests.

Called like the real one: ``fake_runner.py run --summary-file PATH --progress log``.
"""

from __future__ import annotations

import json
import sys
import time

from edgecompress_contract.report import Artifact, CompactMetrics, Comparison
from edgecompress_contract.summary import Artifacts, ReportArtifact, RunSummary


def main() -> None:
    summary_file = sys.argv[sys.argv.index("--summary-file") + 1]
    print(json.dumps({"event": "phase", "phase": "download", "percent": 0.0}), file=sys.stderr, flush=True)
    time.sleep(0.2)
    metrics = CompactMetrics(size_bytes=4000, gzip_bytes=3000, latency_p50_ms=1.0, latency_p95_ms=1.2)
    summary = RunSummary(
        result="Succeeded",
        exit_code=0,
        message="all gates passed",
        baseline=metrics,
        output=metrics.model_copy(update={"size_bytes": 1000}),
        comparison=Comparison(size_reduction=0.75, compression_ratio=4.0, gzip_size_reduction=0.7, latency_speedup=1.0),
        gates=[],
        gates_passed=True,
        artifacts=Artifacts(
            tflite=Artifact(uri="s3://fake/model.tflite", sha256="0" * 64),
            report=ReportArtifact(uri="s3://fake/report.json", sha256="1" * 64),
        ),
    )
    with open(summary_file, "wb") as handle:
        handle.write(summary.encoded())


if __name__ == "__main__":
    main()
