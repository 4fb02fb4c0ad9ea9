"""`retina report` on a run folder made to harm (issue 20): values of its files that carry HTML
and script, picture names that leave the folder (absolute, `..`, a link to outside), files that
are links to outside, and files too large to read. The page shows every value as text, embeds
nothing from outside the run folder, names what it left out, and nothing but the page is
written (exit 0: the page is still made, with the refusals on it and in the terminal)."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import signal
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from retinacli.commands.report import PICTURE_BYTES, report
from tests.cli_helpers import run_cli
from tests.fuzzing import opened_outside, watch_opens
from tests.snapshots import changed_outside, snapshot

PWN = "<script>window.pwned = 1; document.title = 'pwned'</script>"
IMG = "\"><img src=x onerror=\"window.pwned = 1; document.title = 'pwned'\">"
SVG = "<svg onload=\"window.pwned = 1\"></svg>"
PAYLOADS = (PWN, IMG, SVG)

# What a page of ours is made of; anything else came from data.
TAGS = {
    "html", "head", "meta", "title", "style", "body", "header", "h1", "nav", "a", "main", "section",
    "h2", "h3", "p", "table", "caption", "tr", "th", "td", "code", "details", "summary", "pre",
    "figure", "img", "figcaption", "div", "footer", "ul", "li",
}
ATTRIBUTES = {
    "lang", "charset", "name", "content", "href", "id", "class", "data-metric", "data-final",
    "data-class", "data-split", "data-iteration", "data-error", "src", "alt",
}


class _Markup(HTMLParser):
    """Every start tag with its attributes, and the text of the page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text = ""

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text += data


def markup_problems(page: str) -> list[str]:
    """Tags and attributes a page of ours never has, and pictures that are not embedded data."""
    parser = _Markup()
    parser.feed(page)
    parser.close()
    problems = [f"tag <{tag}>" for tag, _ in parser.tags if tag not in TAGS]
    problems += [f"attribute {name} on <{tag}>" for tag, attrs in parser.tags for name in attrs if name not in ATTRIBUTES]
    problems += [
        f"<img src={attrs.get('src', '')[:40]!r}>"
        for tag, attrs in parser.tags
        if tag == "img" and not str(attrs.get("src", "")).startswith("data:image/")
    ]
    return problems


def page_text(page: str) -> str:
    parser = _Markup()
    parser.feed(page)
    return parser.text


def _png(color: tuple[int, int, int], size: int = 40) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format="PNG")
    return buffer.getvalue()


def tampered_run(finished_run: Path, tmp_path: Path) -> dict[str, Path]:
    """A copy of the finished run in tmp_path/run with hostile values and names, and the files
    outside it that it points at."""
    run = tmp_path / "run"
    shutil.copytree(finished_run, run, symlinks=True)
    outside = {
        "outside_png": tmp_path / "outside.png",
        "secret_png": tmp_path / "secret" / "holiday.png",
        "private_json": tmp_path / "secret" / "private.json",
        "private_log": tmp_path / "secret" / "notes.txt",
    }
    outside["outside_png"].write_bytes(_png((250, 10, 10)))
    outside["secret_png"].parent.mkdir()
    outside["secret_png"].write_bytes(_png((10, 250, 10)))
    outside["private_json"].write_text(json.dumps({"AP": 98.7654, "AP50": 99.1234, "per_category": {"private-class": 97.5}}))
    outside["private_log"].write_text("my private notes: the door code is 4711\n")

    final = run / "eval_test"
    diagnostics = json.loads((final / "diagnostics.json").read_text())
    errors = diagnostics["errors"]
    errors["false_positives"] = {PWN: 3, IMG: 1, "background": "<b>not a count</b>"}
    errors["ap50_gain"] = {PWN: 1.5, IMG: SVG, "missed": 2.0}
    errors["missed"] = {IMG: {"touched": SVG, "untouched": 2}, PWN: [1, 2], "small": {"touched": 1, "untouched": 0}}
    diagnostics["per_class"][PWN] = {"threshold": IMG, "precision": 0.5, "recall": SVG, "f1": None, "ground_truth": PWN}
    diagnostics["per_class"]["circle"]["ground_truth"] = IMG
    diagnostics["pr_curves"]["classes"][PWN] = {"AP50": SVG}
    (final / "worst_images" / "link.png").symlink_to(outside["outside_png"])
    diagnostics["worst_images"] += [
        {"file": str(outside["secret_png"]), "image_id": 90001, "errors": {PWN: 1}},
        {"file": "../../outside.png", "image_id": 90002, "errors": {IMG: 1}},
        {"file": "worst_images/link.png", "image_id": 90003, "errors": {SVG: 1}},
        {"file": IMG, "image_id": PWN, "errors": [PWN]},
        "not an entry",
    ]
    (final / "diagnostics.json").write_text(json.dumps(diagnostics))

    metrics = json.loads((final / "metrics.json").read_text())
    metrics["per_category"][PWN] = 0.25
    metrics["per_category"][IMG] = SVG
    metrics["APm"] = PWN
    (final / "metrics.json").write_text(json.dumps(metrics))

    (final / "pr_curves.png").unlink()
    (final / "pr_curves.png").symlink_to(outside["outside_png"])
    (run / "eval" / "1" / "metrics.json").unlink()
    (run / "eval" / "1" / "metrics.json").symlink_to(outside["private_json"])
    (run / "log.txt").unlink()
    (run / "log.txt").symlink_to(outside["private_log"])
    big = final / "confusion_matrix.png"
    with big.open("wb") as handle:
        handle.truncate(2 * PICTURE_BYTES)  # sparse: a picture over the limit

    lines = (run / "config.yaml").read_text().splitlines()  # recipe values: JSON strings are YAML
    lines = [f"output_dir: {json.dumps(PWN)}" if line.startswith("output_dir:") else line for line in lines]
    cache = next(i for i, line in enumerate(lines) if line.strip().startswith("cache_dir:"))  # data.train's
    lines[cache] = lines[cache].split(":")[0] + f": {json.dumps(IMG)}"
    (run / "config.yaml").write_text("\n".join(lines) + "\n")
    with (run / "metrics.jsonl").open("a") as handle:
        handle.write(json.dumps({"iteration": 6, f"val/{PWN}": 1.0, "val/$\\frac{1}{0}$": 2.0, "loss_cls": IMG}) + "\n")
    return outside


def test_a_tampered_run_folder_gives_a_page_of_text_that_embeds_nothing_from_outside(
    finished_run, tmp_path, capsys, monkeypatch
):
    outside = tampered_run(finished_run, tmp_path)
    run = tmp_path / "run"
    before = snapshot(tmp_path)
    with watch_opens() as opened:
        result = run_cli(["report", str(run)], capsys, monkeypatch)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert opened_outside(opened, tmp_path, run) == []  # what is left out is never read
    assert changed_outside(before, tmp_path, "run/report.html") == []
    page = (run / "report.html").read_text(encoding="utf-8")

    for payload in PAYLOADS:
        assert payload not in page
    assert markup_problems(page) == []
    text = page_text(page)
    for payload in (PWN, IMG):  # shown as text where it was a name (SVG was only ever a value)
        assert payload in text
    # nothing from outside the run folder: not the pictures, not the json, not the log
    for name in ("outside_png", "secret_png"):
        assert base64.b64encode(outside[name].read_bytes()).decode() not in page
    for marker in ("98.765", "99.123", "private-class", "door code", "90001", "90002", "90003"):
        assert marker not in page, marker
    diagnostics_section = page[page.index('<section id="diagnostics">') :].split("</section>")[0]
    assert diagnostics_section.count("<img ") == 2  # errors.png and the run's own worst image

    left_out = " ".join(result.stdout.split())
    for named in (
        f"eval_test/diagnostics.json: worst_images file '{outside['secret_png']}' is an absolute path",
        "eval_test/diagnostics.json: worst_images file '../../outside.png' is a name that leaves the folder",
        "eval_test/diagnostics.json: worst_images file 'worst_images/link.png' is a link to outside",
        "'eval_test/pr_curves.png': a link to outside the folder",
        "'eval/1/metrics.json': a link to outside the folder",
        "'log.txt': a link to outside the folder",
        "eval_test/confusion_matrix.png: 41.9 MB, over the 21.0 MB a report reads; not read",
    ):
        assert f"left out {named}" in left_out, result.stdout
        assert named.replace("'", "&#x27;") in " ".join(page.split()), named
    assert "metrics.jsonl: 2 value name(s) not drawn" in left_out
    assert "gallery drawn from" not in left_out  # the run's dataset is read only with --gallery N


def test_terminal_output_from_the_run_folder_is_escaped(finished_run, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run, symlinks=True)
    diagnostics = json.loads((run / "eval_test" / "diagnostics.json").read_text())
    diagnostics["worst_images"] = [{"file": "/\x1b]0;owned\x07\x1b[2J[red]x[/red]", "image_id": 1, "errors": {}}]
    (run / "eval_test" / "diagnostics.json").write_text(json.dumps(diagnostics))
    result = run_cli(["report", str(run), "--gallery", "0"], capsys, monkeypatch)
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\x07" not in result.output
    assert "[red]x[/red]" in result.stdout and "\\x1b" in result.stdout


def test_a_hostile_page_runs_no_script_in_chromium(finished_run, chromium, tmp_path):
    from playwright.sync_api import sync_playwright

    tampered_run(finished_run, tmp_path)
    page_file = report(tmp_path / "run", gallery=0).path
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(page_file.as_uri())
            page.wait_for_load_state("load")
            pwned = page.evaluate("typeof window.pwned")
            title = page.title()
            injected = page.evaluate(
                "document.querySelectorAll('script, svg, [onerror], [onload], img:not([src^=\"data:\"])').length"
            )
            shown = page.evaluate("document.body.innerText")
        finally:
            browser.close()
    assert pwned == "undefined" and "pwned" not in title and title.startswith("retina run:")
    assert injected == 0
    assert "window.pwned = 1" in shown  # the payloads are there, as text


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_in_the_run_folder_is_not_read(finished_run, tmp_path, capsys, monkeypatch):
    """A FIFO named like a run file would block a reader for ever: it is left out, not opened."""
    run = tmp_path / "run"
    shutil.copytree(finished_run, run, symlinks=True)
    (run / "log.txt").unlink()
    os.mkfifo(run / "log.txt")

    def hung(signum, frame):
        raise TimeoutError("retina report blocked on the FIFO")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(120)
    try:
        result = run_cli(["report", str(run), "--gallery", "0"], capsys, monkeypatch)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert result.exit_code == 0, result.output
    assert "left out log.txt: not a regular file; not read" in result.stdout
