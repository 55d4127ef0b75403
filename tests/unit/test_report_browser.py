"""The run report in a real browser: headless Chromium (the system's, driven by Playwright) loads
report.html with the network off, makes no request but for the page itself, logs no console error
or page error, and draws a page that is not blank (its screenshot's pixels are checked).

Skips, saying why, where Playwright or a Chromium is missing (`make test` installs Debian's
chromium when it can)."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import pytest

from layerwise.config import load_config
from layerwise.train.trainer import fit

EVIL = "<img src=http://example.invalid/x.png onerror=alert(1)>"


def _chromium() -> str:
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    path = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if path is None:
        pytest.skip("no Chromium on PATH (Debian: apt-get install chromium); the report's browser test needs one")
    return path


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """A digits run's report, drawn on demand (curves, thumbnails), whose run name is HTML that
    would fetch an image if it were not escaped."""
    root = tmp_path_factory.mktemp("browser")
    run = root / "digits"
    fit(load_config(None, [f"--run.dir={run}", f"--run.name={EVIL}", "--run.plots=false", "--run.tensorboard=false",
                           "--train.threads=1", "--model.name=mlp", "--model.width=16", "--train.max_steps=30"]),
        show_progress=False)
    from layerwise.deploy.report import write_report

    return write_report(run)


def test_chromium_loads_the_report_offline_without_requests_or_errors(report):
    from PIL import Image
    from playwright.sync_api import Error, sync_playwright

    exe = _chromium()
    requests, problems = [], []
    args = ["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []  # root: no user namespaces
    with sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=exe, args=args)
        except Error as e:  # a Chromium Playwright cannot drive here
            pytest.skip(f"Chromium at {exe} does not start under Playwright: {str(e).splitlines()[0]}")
        try:
            context = browser.new_context(offline=True, viewport={"width": 1000, "height": 800})

            def block(route):  # anything but the page itself is recorded and refused
                if route.request.url != report.as_uri():
                    requests.append(route.request.url)
                    return route.abort()
                return route.continue_()

            context.route("**/*", block)
            page = context.new_page()
            page.on("request", lambda r: r.url != report.as_uri() and requests.append(r.url))
            page.on("console", lambda m: m.type in ("error", "warning") and problems.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
            page.goto(report.as_uri(), wait_until="load")
            title = page.title()
            shown = page.evaluate("Array.from(document.images).filter(i => i.complete && i.naturalWidth > 0).length")
            total = page.evaluate("document.images.length")
            png = page.screenshot(full_page=False)
        finally:
            browser.close()
    assert requests == [] and problems == []
    assert title == "layerwise run digits" and total >= 13 and shown == total  # curves + 12 thumbnails, all decoded
    im = Image.open(io.BytesIO(png)).convert("RGB")
    colors = im.getcolors(maxcolors=1 << 20)
    dark = sum(n for n, (r, g, b) in colors if r + g + b < 200)  # text and the header bar
    assert len(colors) > 50 and 0.02 < dark / (im.width * im.height) < 0.6
