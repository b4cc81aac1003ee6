"""report.html and its plots, drawn from reports built here (no TensorFlow)."""

from __future__ import annotations

import io
import math
import re
from typing import Any

import pytest

from edgecompress_contract.report import Report
from edgecompress_runner.report_html import (
    PARETO_LATENCY,
    PARETO_SIZE,
    SENSITIVITY,
    SNR_SHOWN_MAX_DB,
    pareto_front,
    plot_pngs,
    png_size,
    render_report_html,
)

BASELINE_BYTES = 1_138_840
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def metrics(size: int, *, agreement: float | None = None, snr: float | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {"sizeBytes": size, "gzipBytes": size - 1000, "latencyP50Ms": 0.04, "latencyP95Ms": 0.08}
    if agreement is not None:
        found["top1Agreement"] = agreement
    if snr is not None:
        found["snrDb"] = snr
    return found


def gate(name: str, actual: float | None, limit: float) -> dict[str, Any]:
    passed = actual is not None and (actual <= limit if name.startswith("max") else actual >= limit)
    return {"name": name, "passed": passed, "actual": actual, "limit": limit, "reason": f"{name} {actual} vs {limit}"}


def candidate(
    name: str, size: int, latency: float, *, agreement: float | None, snr: float | None, limit: float
) -> dict[str, Any]:
    fidelity = agreement if agreement is not None else snr
    verdict = gate("minFidelity" if agreement is not None else "minSnrDb", fidelity, limit)
    return {
        "name": name,
        "kind": "mixed" if name.startswith("mixed") else "wholeModel",
        "recipe": [{"scope": ".*", "precision": "dynamicInt8"}],
        "sizeBytes": size,
        "sizeRatio": round(size / BASELINE_BYTES, 4),
        **({"top1Agreement": agreement} if agreement is not None else {}),
        **({"snrDb": snr} if snr is not None else {}),
        "latencyRatio": latency,
        "gates": [verdict],
        "passed": verdict["passed"],
    }


def sensitivity_rows(snr_of_float16: float) -> list[dict[str, Any]]:
    rows = []
    for layer, weights in (("model/down/Conv2D;model/down/Relu;", 18432), ("model/hidden/MatMul;", 262144)):
        for precision, snr in (("weightOnlyInt4", 31.2), ("int4Blockwise", None), ("float16", snr_of_float16)):
            rows.append(
                {
                    "layer": layer,
                    "op": "CONV_2D" if "down" in layer else "FULLY_CONNECTED",
                    "weights": weights,
                    "precision": precision,
                    "applies": snr is not None,
                    "sizeBytes": BASELINE_BYTES - weights,
                    **({"snrDb": snr, "top1Agreement": 0.99} if snr is not None else {}),
                }
            )
    return rows


def report(*, auto: bool = True, classifier: bool = True, lossless_snr: float = 200.0) -> Report:
    """A report of an auto search (or of a plain ptq run), with the chosen candidate and one that failed."""
    quality_gate = ("minFidelity", 0.97) if classifier else ("minSnrDb", 30.0)
    fidelity = {"agreement": 0.98} if classifier else {"snr": 31.5}
    spec: dict[str, Any] = {
        "model": {"uri": "/models/residual.tflite", "format": "tflite"},
        "steps": [{"type": "auto", "maxTrials": 6}] if auto else [{"type": "ptq", "mode": "dynamic"}],
        "gates": {quality_gate[0]: quality_gate[1]},
        "output": {"uri": "/out/run"},
    }
    steps: list[dict[str, Any]] = [{"type": "ptq", "mode": "dynamic", "integerIO": False, "seconds": 0.4}]
    if auto:
        rows = [
            ("dynamic", 291_616, 1.279, 1.0, 41.6),
            ("float16", 572_768, 1.067, 1.0, lossless_snr),
            ("int8", 295_184, 0.639, 0.95, 24.1),
            ("mixed-1", 155_496, 3.135, 0.98, 31.5),
        ]
        candidates = [
            candidate(
                name,
                size,
                latency,
                agreement=agreement if classifier else None,
                snr=snr,
                limit=quality_gate[1],
            )
            for name, size, latency, agreement, snr in rows
        ]
        candidates[3]["chosen"] = True
        for found in candidates[:3]:
            found["lostBecause"] = "failed minFidelity" if not found["passed"] else "more bytes than the pick's"
        steps = [
            {
                "type": "auto",
                "objective": "size",
                "chosen": "mixed-1",
                "passed": True,
                "stoppedBecause": "a mixed candidate passed every gate",
                "sensitivity": sensitivity_rows(lossless_snr),
                "skippedLayers": ["model/probs/MatMul;"],
                "candidates": candidates,
                "unavailable": {"converterInt8": "the model is a .tflite"},
                "seconds": 2.2,
            }
        ]
    result_size = 155_496 if auto else 291_616
    document = {
        "spec": spec,
        "inputs": {"model": {"uri": "/models/residual.tflite", "sha256": "ab" * 32, "bytes": BASELINE_BYTES}},
        "outputs": {"tflite": {"uri": "/out/run/model.tflite", "sha256": "cd" * 32, "bytes": result_size}},
        "metric": "fidelity",
        "evaluationSamples": 400,
        "evaluationData": "dataset x_eval",
        "steps": steps,
        "conversion": {"mode": "auto" if auto else "dynamic", "speedPath": "float32 kernels", "sparseEncoding": False},
        "baseline": metrics(BASELINE_BYTES),
        "result": metrics(result_size, **fidelity),
        "comparison": {
            "sizeReduction": round(1 - result_size / BASELINE_BYTES, 4),
            "compressionRatio": round(BASELINE_BYTES / result_size, 3),
            "gzipSizeReduction": 0.8,
            "latencySpeedup": 0.319,
        },
        "gates": [gate(quality_gate[0], 0.98 if classifier else 31.5, quality_gate[1])],
        "gatesPassed": True,
        "timingsSeconds": {"total": 3.0},
    }
    return Report.model_validate(document)


def decoded_size(png: bytes) -> tuple[int, int]:
    """The image's size as matplotlib's PNG reader decodes it (rows, columns of pixels)."""
    from matplotlib.image import imread

    pixels = imread(io.BytesIO(png), format="png")
    assert pixels.ndim == 3 and pixels.shape[2] in (3, 4)
    return int(pixels.shape[1]), int(pixels.shape[0])


def test_page_shows_the_candidates_the_pick_and_the_gates() -> None:
    page = render_report_html(report())
    rows = re.findall(r"<tr(?: class=\"chosen\")?><td class=\"num\">\d+</td><td>([^<]+)</td>", page)
    assert rows == ["dynamic", "float16", "int8", "mixed-1 ★ chosen"]
    for size in ("291,616", "572,768", "295,184", "155,496"):
        assert f'<td class="num">{size}</td>' in page
    (chosen,) = re.findall(r'<tr class="chosen">(.*?)</tr>', page)
    assert "mixed-1" in chosen and "155,496" in chosen
    assert "<code>minFidelity</code>" in page and '<span class="pass">PASS</span>' in page
    assert "PASSED: every gate passed" in page
    assert "converterInt8" in page and "model/probs/MatMul;" in page
    assert "down (CONV_2D, 18,432 w)" in page and "hidden (FULLY_CONNECTED, 262,144 w)" in page


def test_page_is_self_contained() -> None:
    page = render_report_html(report())
    assert "<script" not in page and "http://" not in page and "https://" not in page
    sources = re.findall(r'<img [^>]*src="([^"]*)"', page)
    assert len(sources) == 3 and all(source.startswith("data:image/png;base64,") for source in sources)
    assert "<style>" in page and "<link" not in page


def test_plots_are_pngs_of_the_size_the_page_gives_them() -> None:
    data = report()
    plots = plot_pngs(data)
    assert set(plots) == {PARETO_SIZE, PARETO_LATENCY, SENSITIVITY}
    page = render_report_html(data, plots)
    for name, png in plots.items():
        assert png.startswith(PNG_SIGNATURE)
        assert decoded_size(png) == png_size(png)
        width, height = png_size(png)
        assert f'id="plot-{name}"><img alt="{name}" width="{width}" height="{height}"' in page
    assert png_size(plots[PARETO_SIZE]) == png_size(plots[PARETO_LATENCY]) == (700, 450)
    width, height = png_size(plots[SENSITIVITY])
    assert width == 800 and height > 200


def test_a_run_without_auto_step_has_a_page_without_plots() -> None:
    data = report(auto=False)
    assert plot_pngs(data) == {}
    page = render_report_html(data)
    assert "<img" not in page and "Auto-compression search" not in page
    assert "<code>ptq</code>" in page and "mode dynamic" in page and "<code>minFidelity</code>" in page
    assert "291,616 B" in page


@pytest.mark.parametrize("lossless_snr", [math.inf, 200.0, math.nan])
def test_odd_numbers_are_drawn_or_left_out_with_a_note(lossless_snr: float) -> None:
    data = report(classifier=False, lossless_snr=lossless_snr)
    plots = plot_pngs(data)
    assert set(plots) == {PARETO_SIZE, PARETO_LATENCY, SENSITIVITY}
    page = render_report_html(data, plots)
    expected = {math.inf: "∞", 200.0: "200.0 dB"}.get(lossless_snr, "NaN")
    assert f'<td class="num">{expected}</td>' in page


def test_the_same_report_gives_the_same_bytes() -> None:
    first, second = report(classifier=False, lossless_snr=math.inf), report(classifier=False, lossless_snr=math.inf)
    assert plot_pngs(first) == plot_pngs(second)
    assert render_report_html(first) == render_report_html(second)


def test_pareto_front_keeps_the_points_nothing_beats() -> None:
    points = [(0.26, 1.0), (0.50, 1.0), (0.26, 0.995), (0.14, 0.98), (0.26, 1.0), (0.3, 0.9)]
    assert pareto_front(points) == [3, 0]
    assert SNR_SHOWN_MAX_DB < 200
