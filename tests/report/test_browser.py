"""The report page in a real browser (headless Chromium): every image loads, nothing is fetched
from the network, no console error; a screenshot is kept beside the page."""

from __future__ import annotations

from PIL import Image

from retinacli.commands.report import report


def test_report_page_loads_in_chromium_without_errors(finished_run, chromium, tmp_path):
    from playwright.sync_api import sync_playwright

    page_file = report(finished_run, out=tmp_path / "report.html", gallery=8).path
    problems: list[str] = []
    requested: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.on("request", lambda request: requested.append(request.url))
            page.goto(page_file.as_uri())
            page.wait_for_load_state("load")
            images = page.evaluate(
                "Array.from(document.images).map(i => ({alt: i.alt, ok: i.complete && i.naturalWidth > 0}))"
            )
            sections = page.evaluate("Array.from(document.querySelectorAll('section')).map(s => s.id)")
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert problems == []
    assert len(images) >= 7 and all(image["ok"] for image in images), [i["alt"] for i in images if not i["ok"]]
    assert [url for url in requested if not url.startswith(("file:", "data:"))] == []  # self-contained
    assert sections == ["status", "recipe", "curves", "evaluations", "per-class", "diagnostics", "gallery", "log"]
    with Image.open(shot) as picture:
        assert picture.format == "PNG" and picture.width == 1280 and picture.height > 2000
