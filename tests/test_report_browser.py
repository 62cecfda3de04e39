"""``report.html`` in a real browser: headless Chromium, driven by Playwright.

Enable with ``pip install -e ".[browser]"`` and Debian's ``apt install chromium`` (or set
``CTSIM_CHROMIUM`` to another Chromium binary); then ``pytest -m browser``. Skipped otherwise.
"""

from __future__ import annotations

import os
import shutil

import pytest

from .test_compare import swept, user  # noqa: F401 (fixtures: a 2 × 3 sweep and its comparison)

CHROMIUM = os.environ.get("CTSIM_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
try:
    from playwright.sync_api import sync_playwright
except ImportError:  # the browser extra is not installed
    sync_playwright = None

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(sync_playwright is None, reason='needs pip install -e ".[browser]"'),
    pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (apt install chromium)"),
]
FLAGS = [  # offline: no background connections, no first-run pages
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def numbers(page, column: int) -> list[float]:
    values = page.eval_on_selector_all(
        f"#summary tbody tr td:nth-child({column + 1})", "cells => cells.map(c => c.dataset.value)"
    )
    return [float(v) for v in values]


def test_the_report_loads_offline_with_every_image_and_sorts(swept):  # noqa: F811
    report = swept / "comparison" / "report.html"
    errors, requests = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(report.as_uri())
        page.wait_for_load_state("load")
        images = page.eval_on_selector_all(
            "img", "imgs => imgs.map(i => [i.alt, i.complete && i.naturalWidth > 0])"
        )
        heads = page.eval_on_selector_all("#summary thead th", "ths => ths.map(t => t.textContent)")
        column = heads.index("accuracy")
        page.click(f"#summary thead th:nth-child({column + 1})")
        ascending = numbers(page, column)
        state = page.get_attribute(f"#summary thead th:nth-child({column + 1})", "aria-sort")
        page.click(f"#summary thead th:nth-child({column + 1})")
        descending = numbers(page, column)
        names = heads.index("pipeline")
        page.click(f"#summary thead th:nth-child({names + 1})")
        pipelines = page.eval_on_selector_all(
            f"#summary tbody tr td:nth-child({names + 1})", "cells => cells.map(c => c.textContent)"
        )
        browser.close()
    assert errors == []
    assert len(images) >= 4 and all(ok for _, ok in images), images
    assert all(url.startswith(("file:", "data:")) for url in requests), requests  # nothing fetched
    assert state == "ascending" and ascending == sorted(ascending) and len(ascending) == 2
    assert descending == sorted(ascending, reverse=True)
    assert pipelines == sorted(pipelines)
