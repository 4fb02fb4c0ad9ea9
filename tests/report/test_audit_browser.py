"""The page of an audit folder in headless Chromium: pictures load, nothing is fetched, and the
kind filters (radio buttons and CSS, no script) show one kind at a time."""

from __future__ import annotations

import json

from PIL import Image

from retinacli.audit.issues import find_issues, predictions_from_results, summarize
from retinacli.audit.outputs import draw_issues, write_issues
from retinacli.audit.scoring import AuditThresholds
from retinacli.build import DatasetFiles, build_given_dataset
from retinacli.commands.report import report
from retinacli.files import prepare_output_dir
from tests.audit.handmade import COCO, RESULTS


def _audit_folder(tmp_path):
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    for img in COCO["images"]:
        Image.new("RGB", (img["width"], img["height"]), (90, 120, 150)).save(images / img["file_name"])
    (tmp_path / "data.json").write_text(json.dumps(COCO))
    dataset = build_given_dataset(DatasetFiles(tmp_path / "data.json", images))
    issues = find_issues(dataset, predictions_from_results(RESULTS, dataset), AuditThresholds())
    out = prepare_output_dir(tmp_path / "audit", command="data audit")
    write_issues(out, issues, summary={**summarize(dataset, issues), "mode": "model"})
    draw_issues(out, issues, dataset, limit=10)
    return out, issues


def test_audit_page_filters_by_kind_in_chromium(chromium, tmp_path):
    from playwright.sync_api import sync_playwright

    out, issues = _audit_folder(tmp_path)
    page_file = report(out, out=tmp_path / "audit.html").path
    problems: list[str] = []
    requested: list[str] = []
    visible = "k => Array.from(document.querySelectorAll('.issue')).filter(e => e.offsetParent !== null).map(e => e.dataset.kind)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.on("request", lambda request: requested.append(request.url))
            page.goto(page_file.as_uri())
            page.wait_for_load_state("load")
            images = page.evaluate("Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)")
            shown_all = page.evaluate(visible)
            page.click("label[for=show-missing]")
            shown_missing = page.evaluate(visible)
            page.click("label[for=show-wrong_class]")
            shown_wrong = page.evaluate(visible)
            counts = page.evaluate("Object.fromEntries(Array.from(document.querySelectorAll('td[data-count]')).map(e => [e.dataset.count, e.textContent]))")
        finally:
            browser.close()
    assert problems == []
    assert [u for u in requested if not u.startswith(("file:", "data:"))] == []
    assert len(images) == len(issues) and all(images)
    kinds = [i.kind for i in issues]
    assert sorted(shown_all) == sorted(kinds * 2)  # each issue: a picture and a table row
    assert shown_missing == ["missing", "missing"]
    assert shown_wrong == ["wrong_class", "wrong_class"]
    assert counts == {"missing": "1", "wrong_class": "1", "poor_box": "0", "spurious": "1", "duplicate": "1"}
