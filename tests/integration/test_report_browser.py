"""report.html of a real auto run, rendered by headless Chromium: its text, and every plot drawn on the page.

A plot counts as drawn when the screenshot holds the plot's own pixels, every one of them, at one place: the
page gives each image its size (so it is shown 1:1 at device scale 1), and a missing or undecodable image is
drawn as a small icon in an empty box, which cannot match. A copy of the page with one image's data broken is
rendered too, and that image must then not be found (the check can fail).
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from edgecompress_runner.errors import ExitCode
from tests.conftest import run_job
from tests.integration.conftest import auto_job

pytestmark = pytest.mark.tf

WINDOW = (1200, 6000)
"""Wide enough for the 800-pixel plots at their size, tall enough for the whole page."""


def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        pytest.fail(
            "chromium is not installed: apt-get install -y --no-install-recommends chromium (the Debian package; "
            ".ci/run installs it)"
        )
    return found


def browse(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium on a local page, with a profile of its own (other sessions may run it too)."""
    command = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        "--run-all-compositor-stages-before-draw",
        "--virtual-time-budget=5000",
        f"--user-data-dir={profile}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        *args,
        page.resolve().as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def screenshot(page: Path, folder: Path) -> np.ndarray:
    from PIL import Image

    shot = folder / f"{page.stem}.png"
    browse(page, folder / f"{page.stem}-profile", f"--screenshot={shot}")
    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.shape == (WINDOW[1], WINDOW[0], 3), pixels.shape
    return pixels


def rgb(png: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("RGB"))


def drawn_at(screen: np.ndarray, plot: np.ndarray) -> list[tuple[int, int]]:
    """Where the screenshot holds every pixel of ``plot`` (top left corners, x and y).

    The plot's most varied row is looked for in each screenshot row; each hit is then compared whole.
    """
    height, width, _ = plot.shape
    probe_row = max(range(height), key=lambda row: len(np.unique(plot[row].reshape(-1, 3), axis=0)))
    probe = plot[probe_row].tobytes()
    found = []
    for y in range(probe_row, screen.shape[0] - (height - probe_row) + 1):
        line = screen[y].tobytes()
        start = line.find(probe)
        while start != -1:
            if start % 3 == 0:
                x, top = start // 3, y - probe_row
                if np.array_equal(screen[top : top + height, x : x + width], plot):
                    found.append((x, top))
            start = line.find(probe, start + 1)
    return found


class _Text(HTMLParser):
    """The page's text as Chromium's DOM holds it (tags dropped, style and script left out)."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._skip += tag in ("style", "script")

    def handle_endtag(self, tag: str) -> None:
        self._skip -= tag in ("style", "script")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def page_text(dom: str) -> str:
    parser = _Text()
    parser.feed(dom)
    return re.sub(r"\s+", " ", " ".join(parser.parts))


def test_report_html_renders_in_chromium_with_every_plot_drawn(
    residual_tflite: Path, images_npz: Path, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    started = time.monotonic()
    run = run_job(auto_job(residual_tflite, images_npz, output, {"minFidelity": 0.97}, maxTrials=6), tmp_path / "work")
    job_seconds = time.monotonic() - started
    assert run.exit_code == ExitCode.SUCCEEDED, run.summary
    assert job_seconds < 20, job_seconds
    report = run.report
    (auto,) = report["steps"]
    page = output / "report.html"

    # Listed in report.json with their checksums, and the page's link in the summary.
    outputs = report["outputs"]
    assert (
        outputs["html"]["uri"] == str(page)
        and outputs["html"]["sha256"] == hashlib.sha256(page.read_bytes()).hexdigest()
    )
    files = {"paretoSize": "pareto-size.png", "paretoLatency": "pareto-latency.png", "sensitivity": "sensitivity.png"}
    assert {name: Path(artifact["uri"]).name for name, artifact in outputs["plots"].items()} == files
    plots = {name: (output / "plots" / file).read_bytes() for name, file in files.items()}
    for name, png in plots.items():
        assert hashlib.sha256(png).hexdigest() == outputs["plots"][name]["sha256"]
    assert run.summary["artifacts"]["html"]["sha256"] == outputs["html"]["sha256"]

    # The text Chromium read.
    dom = browse(page, tmp_path / "dom-profile", "--dump-dom").stdout
    text = page_text(dom)
    for candidate in auto["candidates"]:
        assert candidate["name"] in text and f"{candidate['sizeBytes']:,}" in text, candidate["name"]
    assert f"{auto['chosen']} ★ chosen" in text
    assert "minFidelity" in text and "PASSED: every gate passed" in text
    assert "Auto-compression search" in text and "Per-layer sensitivity" in text

    # Every plot drawn, whole, once; in the page's order (size, latency, sensitivity).
    screen = screenshot(page, tmp_path)
    places = {name: drawn_at(screen, rgb(png)) for name, png in plots.items()}
    assert all(len(found) == 1 for found in places.values()), places
    tops = [places[name][0][1] for name in ("paretoSize", "paretoLatency", "sensitivity")]
    assert tops == sorted(tops), places

    # The check can fail: the same page with the latency plot's data cut short shows no latency plot.
    broken = tmp_path / "broken.html"
    encoded = base64.b64encode(plots["paretoLatency"]).decode()
    html_text = page.read_text()
    assert html_text.count(encoded) == 1
    broken.write_text(html_text.replace(encoded, encoded[: len(encoded) // 3]))
    broken_screen = screenshot(broken, tmp_path)
    assert drawn_at(broken_screen, rgb(plots["paretoLatency"])) == []
    assert len(drawn_at(broken_screen, rgb(plots["paretoSize"]))) == 1
