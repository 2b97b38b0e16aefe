"""Headless Chromium (Debian's, driven by playwright) on a report file."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")


def open_in_chromium(report: Path, screenshot: Path | None = None
                     ) -> tuple[list[str], list[str], dict]:
    """(console errors, requested URLs, what the page shows) of ``report`` in headless Chromium."""
    sync_api = pytest.importorskip("playwright.sync_api")
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    errors, requests = [], []
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch_persistent_context(
                profile, executable_path=str(CHROMIUM), headless=True,
                args=["--no-sandbox", "--disable-gpu", "--no-first-run",
                      "--disable-background-networking", "--disable-component-update"])
            page = browser.new_page()
            page.on("console", lambda message: errors.append(message.text)
                    if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("request", lambda request: requests.append(request.url))
            page.goto(report.as_uri())
            page.wait_for_load_state("load")
            shown = {
                "served": page.eval_on_selector_all(
                    "#traffic-table tbody tr", "rows => rows.map(r => [r.dataset.runId, "
                    "Number(r.querySelector('.served').textContent)])"),
                "accuracy_n": page.eval_on_selector_all(
                    "#accuracy-table tbody tr", "rows => rows.map(r => [r.dataset.runId, "
                    "Number(r.querySelector('.n').textContent)])"),
                "charts": page.eval_on_selector_all("figure svg", "nodes => nodes.length"),
                "agreement_rows": page.eval_on_selector_all("#agreement-table tbody tr",
                                                            "rows => rows.length"),
                "language_rows": page.eval_on_selector_all(
                    "#languages-table tbody tr", "rows => rows.map(r => [r.dataset.runId, "
                    "r.dataset.drift, r.querySelector('.unsupported-share')?.textContent.trim(), "
                    "getComputedStyle(r.querySelector('.unsupported-share') || r).color])"),
                "feedback_languages": page.eval_on_selector_all(
                    "#feedback-languages-table tbody tr", "rows => rows.map(r => "
                    "[r.dataset.language, r.querySelector('.share').textContent])"),
            }
            if screenshot is not None:
                screenshot.parent.mkdir(exist_ok=True)
                page.screenshot(path=str(screenshot), full_page=True)
            browser.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    return errors, requests, shown
