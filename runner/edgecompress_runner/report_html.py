"""report.html: the run's report as one page people read, and its plots as PNG files.

The page is self-contained (inline CSS, the plots embedded as ``data:`` URIs, no script, no external
address), so it can be opened from a bucket, a mail or a CI artifact as it is. It shows the summary
(baseline against result, gates with their verdicts), the steps and, for an auto step, the Pareto fronts
(size and latency against fidelity), the per-layer sensitivity chart and the candidate table.

Plots are drawn with matplotlib's Agg renderer on a ``Figure`` of its own (no pyplot state) and saved
without the Software metadata, so the same report gives the same bytes. Numbers that cannot be drawn as
they are never stop the page: an infinite or very high SNR (a lossless candidate) is drawn at
``SNR_SHOWN_MAX_DB`` with a note, and NaN values are left out with a note.
"""

from __future__ import annotations

import base64
import html
import io
import math
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edgecompress_contract.report import AutoReport, GateResult, LayerSensitivity, Report, SearchCandidate

from .report import summary_rows

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "HTML_NAME",
    "PARETO_LATENCY",
    "PARETO_SIZE",
    "PLOT_FILES",
    "SENSITIVITY",
    "SNR_SHOWN_MAX_DB",
    "pareto_front",
    "plot_pngs",
    "png_size",
    "render_report_html",
]

HTML_NAME = "report.html"
PARETO_SIZE = "paretoSize"
PARETO_LATENCY = "paretoLatency"
SENSITIVITY = "sensitivity"
PLOT_FILES = {
    PARETO_SIZE: "plots/pareto-size.png",
    PARETO_LATENCY: "plots/pareto-latency.png",
    SENSITIVITY: "plots/sensitivity.png",
}
"""Each plot's name (its key in ``outputs.plots``) and its file, relative to the output folder."""

SNR_SHOWN_MAX_DB = 100.0
"""SNRs above this (identical outputs report 200 dB, or infinity) are drawn here, marked as at least this."""

_DPI = 100
_PARETO_INCHES = (7.0, 4.5)
_PRECISION_ORDER = ("weightOnlyInt4", "int4Blockwise", "weightOnlyInt8", "dynamicInt8", "float16", "float")
"""Bytes per weight, fewest first: the columns of the sensitivity chart."""
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height in pixels, from the PNG's header chunk."""
    if not png.startswith(_PNG_SIGNATURE) or png[12:16] != b"IHDR":
        raise ValueError("not a PNG file")
    width, height = struct.unpack(">II", png[16:24])
    return int(width), int(height)


def _auto_step(report: Report) -> AutoReport | None:
    return next((step for step in report.steps if isinstance(step, AutoReport)), None)


# --- numbers as they can be drawn ---


@dataclass(frozen=True)
class _Fidelity:
    """What the y axis of the Pareto plots shows: top-1 agreement (in %) or the worst output's SNR (dB)."""

    label: str
    unit: str
    of: Callable[[SearchCandidate], float | None]
    gate: str

    def shown(self, value: float | None) -> tuple[float | None, bool]:
        """The value drawn and whether it was clipped to the shown maximum; None for a value that cannot be drawn."""
        if value is None or math.isnan(value):
            return None, False
        if self.unit == "dB":
            return _shown_snr(value)
        return value * 100.0, False


def _shown_snr(value: float | None) -> tuple[float | None, bool]:
    if value is None or math.isnan(value) or value == -math.inf:
        return None, False
    if value > SNR_SHOWN_MAX_DB:
        return SNR_SHOWN_MAX_DB, True
    return value, False


def _fidelity_of(candidates: Sequence[SearchCandidate]) -> _Fidelity:
    if any(candidate.top1_agreement is not None for candidate in candidates):
        return _Fidelity("top-1 agreement with the float model", "%", lambda c: c.top1_agreement, "minFidelity")
    return _Fidelity("worst output's SNR against the float model", "dB", lambda c: c.snr_db, "minSnrDb")


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indexes of the points no other point beats (lower x and higher y, one of them strictly), by x then y."""
    front: list[int] = []
    for index, (x, y) in enumerate(points):
        dominated = any((other_x <= x and other_y >= y) and (other_x < x or other_y > y) for other_x, other_y in points)
        if not dominated and (x, y) not in [points[kept] for kept in front]:
            front.append(index)
    return sorted(front, key=lambda index: points[index])


# --- plots ---


def _stacked(points: Sequence[tuple[float, float]], *, log_x: bool) -> list[int]:
    """Per point, how many earlier points sit almost on it: its label goes that many lines lower."""
    xs = [math.log10(x) if log_x else x for x, _ in points]
    ys = [y for _, y in points]
    x_span, y_span = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
    levels: list[int] = []
    for index in range(len(points)):
        near = [
            levels[earlier]
            for earlier in range(index)
            if abs(xs[earlier] - xs[index]) < 0.12 * x_span and abs(ys[earlier] - ys[index]) < 0.04 * y_span
        ]
        levels.append(max(near) + 1 if near else 0)
    return levels


def _figure(inches: tuple[float, float]) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=inches, dpi=_DPI, layout="constrained")


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI, metadata={"Software": None})
    return buffer.getvalue()


def _pareto_png(
    auto: AutoReport, report: Report, *, cost: Callable[[SearchCandidate], float], cost_label: str, limit: float | None
) -> bytes | None:
    """Every candidate's cost (size or latency ratio) against its fidelity; None with nothing to draw."""
    fidelity = _fidelity_of(auto.candidates)
    drawn: list[tuple[SearchCandidate, float, float]] = []
    clipped: list[str] = []
    left_out: list[str] = []
    for candidate in auto.candidates:
        x, (y, was_clipped) = cost(candidate), fidelity.shown(fidelity.of(candidate))
        if y is None or not math.isfinite(x) or x <= 0:
            left_out.append(candidate.name)
            continue
        drawn.append((candidate, x, y))
        if was_clipped:
            clipped.append(candidate.name)
    if not drawn:
        return None
    figure = _figure(_PARETO_INCHES)
    axes = figure.add_subplot()
    front = pareto_front([(x, y) for _, x, y in drawn])
    axes.plot(
        [drawn[index][1] for index in front],
        [drawn[index][2] for index in front],
        drawstyle="steps-post",
        color="#4c72b0",
        linewidth=1.5,
        label="Pareto front",
        zorder=1,
    )
    for passed, marker, color, label in (
        (True, "o", "#2a9d4b", "passed every gate"),
        (False, "X", "#d1495b", "failed a gate"),
    ):
        points = [(x, y) for candidate, x, y in drawn if candidate.passed == passed]
        if points:
            xs, ys = [x for x, _ in points], [y for _, y in points]
            axes.scatter(xs, ys, marker=marker, s=45, color=color, label=label, zorder=3)
    for candidate, x, y in drawn:
        if candidate.chosen:
            axes.scatter([x], [y], marker="*", s=380, facecolor="none", edgecolor="#f4a300", linewidth=2.0, zorder=4)
            axes.scatter(
                [], [], marker="*", s=120, facecolor="none", edgecolor="#f4a300", label=f"chosen: {candidate.name}"
            )
    gate = next((found.limit for found in report.gates if found.name == fidelity.gate), None)
    if gate is not None:
        line = gate * 100.0 if fidelity.unit == "%" else gate
        axes.axhline(line, color="#888888", linestyle="--", linewidth=1, label=f"{fidelity.gate} {gate:g}", zorder=0)
    if limit is not None:
        axes.axvline(limit, color="#888888", linestyle=":", linewidth=1, label=f"limit {limit:g}", zorder=0)
    log_x = max(x for _, x, _ in drawn) / min(x for _, x, _ in drawn) > 10
    if log_x:
        from matplotlib.ticker import FormatStrFormatter

        axes.set_xscale("log")
        axes.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    stacked = _stacked([(x, y) for _, x, y in drawn], log_x=log_x)
    for (candidate, x, y), level in zip(drawn, stacked, strict=True):
        axes.annotate(
            candidate.name,
            (x, y),
            xytext=(6, 3 - 9 * level),
            textcoords="offset points",
            fontsize=7,
            color="#333333",
            zorder=5,
        )
    axes.set_xlabel(cost_label)
    axes.set_ylabel(f"{fidelity.label} ({fidelity.unit})")
    axes.grid(True, color="#e5e5e5", linewidth=0.6)
    axes.legend(fontsize=7, loc="best")
    notes = []
    if clipped:
        notes.append(f"≥ {SNR_SHOWN_MAX_DB:g} dB (lossless) drawn at {SNR_SHOWN_MAX_DB:g}: {', '.join(clipped)}")
    if left_out:
        notes.append(f"not drawn (no {fidelity.label} or ratio): {', '.join(left_out)}")
    if notes:
        axes.set_title("; ".join(notes), fontsize=7, loc="left", color="#666666")
    return _png(figure)


def _layer_label(row: LayerSensitivity) -> str:
    """The Keras layer names in an op's scope ('model/down/Conv2D;model/down/Relu;' -> 'down'), op and weights."""
    names: list[str] = []
    for entry in row.layer.split(";"):
        parts = [part for part in entry.split("/") if part]
        if parts:
            name = parts[1] if len(parts) > 2 else parts[0]
            if name not in names:
                names.append(name)
    shown = "/".join(names[:2]) or row.layer
    return f"{shown[:40]} ({row.op}, {row.weights:,} w)"


def _sensitivity_grid(
    rows: Sequence[LayerSensitivity],
) -> tuple[list[str], list[str], dict[tuple[str, str], LayerSensitivity]]:
    layers = list(dict.fromkeys(row.layer for row in rows))
    found = {row.precision for row in rows}
    precisions = [name for name in _PRECISION_ORDER if name in found] + sorted(found - set(_PRECISION_ORDER))
    return layers, precisions, {(row.layer, row.precision): row for row in rows}


def _sensitivity_png(auto: AutoReport) -> bytes | None:
    """A heat map: per analysed layer (rows) and precision (columns), the worst output's SNR in dB."""
    if not auto.sensitivity:
        return None
    import numpy as np

    layers, precisions, cells = _sensitivity_grid(auto.sensitivity)
    values = np.full((len(layers), len(precisions)), np.nan)
    for (layer, precision), row in cells.items():
        shown, _ = _shown_snr(row.snr_db) if row.applies else (None, False)
        if shown is not None:
            values[layers.index(layer), precisions.index(precision)] = shown
    figure = _figure((8.0, max(2.6, 0.55 * len(layers) + 1.6)))
    axes = figure.add_subplot()
    finite = values[np.isfinite(values)]
    low = float(finite.min()) if finite.size else 0.0
    high = float(finite.max()) if finite.size else SNR_SHOWN_MAX_DB
    from matplotlib import colormaps

    colormap = colormaps["viridis"].with_extremes(bad="#dddddd")
    image = axes.imshow(np.ma.masked_invalid(values), cmap=colormap, vmin=low, vmax=max(high, low + 1.0), aspect="auto")
    for (layer, precision), row in cells.items():
        at = (precisions.index(precision), layers.index(layer))
        shown, clipped = _shown_snr(row.snr_db) if row.applies else (None, False)
        if not row.applies:
            text = "does not apply"
        elif shown is None:
            text = "no SNR"
        else:
            text = f"{'≥' if clipped else ''}{shown:.1f} dB"
            if row.top1_agreement is not None and not math.isnan(row.top1_agreement):
                text += f"\n{row.top1_agreement:.1%}"
        light = shown is not None and shown > low + 0.6 * (high - low)
        axes.text(*at, text, ha="center", va="center", fontsize=7, color="black" if light or shown is None else "white")
    labels = {row.layer: _layer_label(row) for row in auto.sensitivity}
    axes.set_yticks(range(len(layers)), [labels[layer] for layer in layers], fontsize=7)
    axes.set_xticks(range(len(precisions)), precisions, fontsize=8)
    axes.set_xlabel("precision of the layer alone (every other op float)")
    figure.colorbar(image, ax=axes, label="worst output's SNR (dB)")
    if any(row.snr_db is not None and row.snr_db > SNR_SHOWN_MAX_DB for row in auto.sensitivity):
        axes.set_title(f"≥: at least {SNR_SHOWN_MAX_DB:g} dB, colored as {SNR_SHOWN_MAX_DB:g}", fontsize=7, loc="left")
    return _png(figure)


def plot_pngs(report: Report) -> dict[str, bytes]:
    """The plots that have data, by name (see ``PLOT_FILES``): none for a run without an auto step."""
    auto = _auto_step(report)
    if auto is None:
        return {}
    latency_limit = _latency_limit(report)
    size_limit = report.spec.gates.min_size_reduction
    plots = {
        PARETO_SIZE: _pareto_png(
            auto,
            report,
            cost=lambda candidate: candidate.size_ratio,
            cost_label="size / float size",
            limit=1.0 - size_limit if size_limit is not None and report.spec.gates.size_basis == "bytes" else None,
        ),
        PARETO_LATENCY: _pareto_png(
            auto,
            report,
            cost=lambda candidate: candidate.latency_ratio,
            cost_label="median latency / float latency (timed interleaved)",
            limit=latency_limit,
        ),
        SENSITIVITY: _sensitivity_png(auto),
    }
    return {name: png for name, png in plots.items() if png is not None}


def _latency_limit(report: Report) -> float | None:
    return next((gate.limit for gate in report.gates if gate.name == "maxLatencyRatio"), None)


# --- the page ---

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px auto; max-width: 1150px;
  color: #1d1d1f; line-height: 1.4; padding: 0 16px; }
h1 { font-size: 1.5em; margin-bottom: 4px; } h2 { font-size: 1.2em; margin-top: 28px; border-bottom: 1px solid #ddd; }
h3 { font-size: 1.05em; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 0.88em; }
th, td { border: 1px solid #d8d8d8; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.pass { color: #1b7f3b; font-weight: 600; } .fail { color: #b3261e; font-weight: 600; }
tr.chosen td { background: #fff4d6; font-weight: 600; }
.verdict { font-size: 1.1em; padding: 6px 10px; display: inline-block; border-radius: 4px; }
.verdict.pass { background: #e3f4e8; } .verdict.fail { background: #fbe4e2; }
.muted { color: #666; font-size: 0.85em; } code { font-size: 0.9em; word-break: break-all; }
figure { margin: 12px 0; } figcaption { font-size: 0.85em; color: #444; }
img { border: 1px solid #eee; max-width: 100%; height: auto; }
"""

_PLOT_CAPTIONS = {
    PARETO_SIZE: "Size against fidelity: every candidate, the Pareto front (no candidate is both smaller and "
    "more faithful than one on it), failed candidates marked X, the chosen one starred.",
    PARETO_LATENCY: "Latency against fidelity: the same candidates by their median latency relative to the float "
    "model, timed interleaved with it.",
    SENSITIVITY: "Per-layer sensitivity: each analysed layer quantized alone at each precision of its ladder; the "
    "worst output's SNR (and top-1 agreement, for classifiers).",
}


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _number(value: float | None, pattern: str = "{:.4g}") -> str:
    if value is None:
        return "—"
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    return pattern.format(value)


def _percent(value: float | None) -> str:
    return _number(None if value is None else value * 100.0, "{:.2f} %")


def _db(value: float | None) -> str:
    return _number(value, "{:.1f} dB")


def _table(
    header: Sequence[str], rows: Iterable[Sequence[str]], *, numeric: Sequence[int] = (), classes: Sequence[str] = ()
) -> str:
    """A table of cells that are already HTML (no header row when every header is empty); ``numeric`` columns
    are right-aligned, ``classes`` is each row's class."""
    head = "".join(f"<th>{cell}</th>" for cell in header)
    body = []
    for index, row in enumerate(rows):
        cells = "".join(
            f'<td class="num">{cell}</td>' if column in numeric else f"<td>{cell}</td>"
            for column, cell in enumerate(row)
        )
        row_class = classes[index] if index < len(classes) and classes[index] else ""
        body.append(f'<tr class="{row_class}">{cells}</tr>' if row_class else f"<tr>{cells}</tr>")
    thead = f"<thead><tr>{head}</tr></thead>" if any(header) else ""
    return f"<table>{thead}<tbody>{''.join(body)}</tbody></table>"


def _verdict(passed: bool) -> str:
    return '<span class="pass">PASS</span>' if passed else '<span class="fail">FAIL</span>'


def _gates_table(gates: Sequence[GateResult]) -> str:
    if not gates:
        return '<p class="muted">No gates were set.</p>'
    rows = [
        (
            f"<code>{_e(gate.name)}</code>",
            _verdict(gate.passed),
            _e(_number(gate.actual)),
            _e(f"{gate.limit:g}"),
            _e(gate.reason),
        )
        for gate in gates
    ]
    return _table(("gate", "verdict", "actual", "limit", "why"), rows, numeric=(2, 3))


def _summary(report: Report) -> str:
    verdict = "PASSED: every gate passed" if report.gates_passed else "GATES FAILED"
    job = report.source.job if report.source is not None else None
    rows = [
        (
            "model",
            f"<code>{_e(report.inputs.model.uri)}</code> ({_e(report.spec.model.format)}"
            + (f", {report.inputs.model.bytes:,} B)" if report.inputs.model.bytes is not None else ")"),
        )
    ]
    if job is not None and job.name:
        rows.insert(0, ("CompressionJob", _e(f"{job.namespace}/{job.name}" if job.namespace else job.name)))
    rows += [
        ("result", f"<code>{_e(report.outputs.tflite.uri)}</code>"),
        ("conversion", _e(f"{report.conversion.mode} ({report.conversion.quantizer})")),
        ("speed path", _e(report.conversion.speed_path)),
        ("evaluation", _e(f"{report.evaluation_samples} samples of {report.evaluation_data}; metric {report.metric}")),
    ]
    comparison = report.comparison
    rows += [
        ("compression", _e(f"{comparison.compression_ratio:g}x smaller ({comparison.size_reduction:.1%} fewer bytes)")),
        ("speed-up", _e(f"{_number(comparison.latency_speedup, '{:.3g}')}x the float model's speed")),
    ]
    if report.promotion is not None:
        promotion = report.promotion
        text = (
            f"promoted to {promotion.uri}"
            if promotion.promoted
            else f"not promoted: {promotion.message or promotion.reason}"
        )
        rows.append(("promotion", _e(text)))
    facts = _table(("", ""), [(f"<b>{name}</b>", value) for name, value in rows])
    numbers = _table(
        ("", "baseline (float)", f"result ({_e(report.conversion.mode)})"),
        [tuple(_e(cell) for cell in row) for row in summary_rows(report)[1:]],
        numeric=(1, 2),
    )
    status = "pass" if report.gates_passed else "fail"
    return (
        f'<p class="verdict {status}">{_e(verdict)}</p>{facts}<h2>Baseline and result</h2>{numbers}'
        f"<h2>Gates</h2>{_gates_table(report.gates)}"
    )


def _step_detail(step: object) -> str:
    if isinstance(step, AutoReport):
        picked = f"picked {step.chosen} of {len(step.candidates)} candidates"
        return f"objective {step.objective}; {picked}; {step.stopped_because}"
    for name in ("mode", "schedule", "scheme", "criterion"):
        value = getattr(step, name, None)
        if value is not None:
            return f"{name} {value}"
    return ""


def _steps(report: Report) -> str:
    if not report.steps:
        return '<p class="muted">No steps: the model was converted as it is.</p>'
    rows = [
        (str(index), f"<code>{_e(step.type)}</code>", _e(_step_detail(step)), _e(f"{step.seconds:.1f} s"))
        for index, step in enumerate(report.steps)
    ]
    return _table(("#", "step", "what it did", "time"), rows, numeric=(3,))


def _figure_html(name: str, png: bytes) -> str:
    width, height = png_size(png)
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure id="plot-{name}"><img alt="{_e(name)}" width="{width}" height="{height}" '
        f'src="data:image/png;base64,{data}"><figcaption>{_e(_PLOT_CAPTIONS[name])}</figcaption></figure>'
    )


def _candidate_table(auto: AutoReport) -> str:
    rows, classes = [], []
    for index, candidate in enumerate(auto.candidates, start=1):
        failed = [gate.name for gate in candidate.gates if not gate.passed]
        verdict = _verdict(candidate.passed) + (
            f' <span class="muted">{_e(", ".join(failed))}</span>' if failed else ""
        )
        name = _e(candidate.name) + (" ★ chosen" if candidate.chosen else "")
        rows.append(
            (
                str(index),
                name,
                _e(candidate.kind),
                _e(f"{candidate.size_bytes:,}"),
                _e(f"{candidate.size_ratio:.4f}"),
                _e(_percent(candidate.top1_agreement)),
                _e(_db(candidate.snr_db)),
                _e(f"{candidate.latency_ratio:.3f}"),
                verdict,
                _e(candidate.lost_because or ("chosen" if candidate.chosen else "")),
            )
        )
        classes.append("chosen" if candidate.chosen else "")
    header = (
        "#",
        "candidate",
        "kind",
        "bytes",
        "size ratio",
        "top-1 agreement",
        "SNR",
        "latency ratio",
        "gates",
        "why not chosen",
    )
    return _table(header, rows, numeric=(0, 3, 4, 5, 6, 7), classes=classes)


def _sensitivity_table(auto: AutoReport) -> str:
    layers, precisions, cells = _sensitivity_grid(auto.sensitivity)
    labels = {row.layer: _layer_label(row) for row in auto.sensitivity}
    rows = []
    for layer in layers:
        values = []
        for precision in precisions:
            row = cells.get((layer, precision))
            if row is None:
                values.append("")
            elif not row.applies:
                values.append('<span class="muted">does not apply</span>')
            else:
                agreement = f" / {_percent(row.top1_agreement)}" if row.top1_agreement is not None else ""
                values.append(_e(f"{_db(row.snr_db)}{agreement}"))
        rows.append((f'<span title="{_e(layer)}">{_e(labels[layer])}</span>', *values))
    return _table(("layer", *(_e(name) for name in precisions)), rows)


def _auto_section(auto: AutoReport, plots: Mapping[str, bytes]) -> str:
    parts = [
        "<h2>Auto-compression search</h2>",
        f"<p>Objective <b>{_e(auto.objective)}</b>; chosen <b>{_e(auto.chosen)}</b> "
        f"({'it passed every gate' if auto.passed else 'no candidate passed every gate; it came closest'}); "
        f"{len(auto.candidates)} candidates measured; {_e(auto.stopped_because)}.</p>",
    ]
    for name in (PARETO_SIZE, PARETO_LATENCY):
        if name in plots:
            parts.append(_figure_html(name, plots[name]))
    parts += ["<h3>Candidates</h3>", _candidate_table(auto)]
    if auto.unavailable:
        parts.append(
            _table(
                ("not measured", "why"), [(_e(name), _e(reason)) for name, reason in sorted(auto.unavailable.items())]
            )
        )
    parts.append("<h3>Per-layer sensitivity</h3>")
    if SENSITIVITY in plots:
        parts.append(_figure_html(SENSITIVITY, plots[SENSITIVITY]))
    if auto.sensitivity:
        parts.append(_sensitivity_table(auto))
    else:
        parts.append(
            '<p class="muted">No layer was analysed (the budget ended first, or no layer was large enough).</p>'
        )
    if auto.skipped_layers:
        skipped = ", ".join(f"<code>{_e(layer)}</code>" for layer in auto.skipped_layers)
        parts.append(f'<p class="muted">Below minWeights, float in mixed candidates: {skipped}</p>')
    if auto.cache is not None:
        parts.append(
            f'<p class="muted">Trial records: <code>{_e(auto.cache)}</code> ({auto.cache_hits} read from it).</p>'
        )
    return "".join(parts)


def _footer(report: Report) -> str:
    timings = ", ".join(f"{name} {seconds:g} s" for name, seconds in report.timings_seconds.items())
    versions = ", ".join(f"{name} {version}" for name, version in report.versions.items())
    return (
        f'<h2>Run</h2><p class="muted">Times: {_e(timings or "—")}<br>Versions: {_e(versions or "—")}<br>'
        f"Devices: {_e(', '.join(report.devices) or '—')}</p>"
    )


def render_report_html(report: Report, plots: Mapping[str, bytes] | None = None) -> str:
    """The page: summary, gates, steps and, for an auto step, its plots and tables.

    ``plots`` are ``plot_pngs(report)``'s (drawn here when not given); the page embeds them.
    """
    if plots is None:
        plots = plot_pngs(report)
    title = report.source.job.name if report.source is not None and report.source.job is not None else None
    title = f"edgecompress report: {title or report.inputs.model.uri.rstrip('/').rsplit('/', 1)[-1]}"
    auto = _auto_step(report)
    body = [
        f"<h1>{_e(title)}</h1>",
        f'<p class="muted">{_e(report.kind)} {_e(report.api_version)}; the numbers are report.json\'s.</p>',
        _summary(report),
        f"<h2>Steps</h2>{_steps(report)}",
        _auto_section(auto, plots) if auto is not None else "",
        _footer(report),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
