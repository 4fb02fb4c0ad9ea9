"""`retina report`: the page of a finished run shows the run's own numbers; a run that has just
started gets a page that says what is missing; wrong folders are refused, and an existing page
(at --out or the default RUN_DIR/report.html) is replaced only with --overwrite."""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser

from retinacli.commands.report import report
from tests.cli_helpers import run_cli
from tests.snapshots import changed_outside, snapshot


class _Cells(HTMLParser):
    """Every <td> with a data-metric attribute: (row attributes, cell attributes, text)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, str | None]] = []
        self.cells: list[tuple[dict[str, str | None], dict[str, str | None], str]] = []
        self._cell: dict[str, str | None] | None = None
        self._text = ""
        self.images = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr":
            self.rows.append(attrs)
        elif tag == "td" and "data-metric" in attrs:
            self._cell, self._text = attrs, ""
        elif tag == "img":
            self.images += 1
            assert attrs["src"].startswith("data:image/"), "every picture is embedded"

    def handle_data(self, data):
        if self._cell is not None:
            self._text += data

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.cells.append((self.rows[-1], self._cell, self._text))
            self._cell = None


def _cells(path):
    parser = _Cells()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def _shown(value):
    return "—" if value is None else f"{value:.3f}"


def test_page_numbers_are_those_of_the_metrics_files(finished_run, tmp_path, capsys, monkeypatch):
    out = tmp_path / "page.html"
    result = run_cli(["report", str(finished_run), "--out", str(out), "--gallery", "8"], capsys, monkeypatch)
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.stdout and "finished" in result.stdout
    page = _cells(out)
    test_metrics = json.loads((finished_run / "eval_test" / "metrics.json").read_text())
    final = {cell["data-metric"]: text for row, cell, text in page.cells if "data-final" in cell}
    assert final == {name: _shown(test_metrics[name]) for name in ("AP", "AP50", "AP75", "APs", "APm", "APl")}
    per_class = {row["data-class"]: text for row, cell, text in page.cells if row.get("data-class")}
    assert per_class == {name: _shown(v) for name, v in test_metrics["per_category"].items()}
    history = [
        (row["data-split"], row["data-iteration"], text)
        for row, cell, text in page.cells
        if cell["data-metric"] == "AP" and "data-final" not in cell and row.get("data-split")
    ]
    expected = [
        ("val", str(it), _shown(json.loads((finished_run / "eval" / str(it) / "metrics.json").read_text())["AP"]))
        for it in (1, 3, 5)
    ]
    assert history == [*expected, ("test", "5", _shown(test_metrics["AP"]))]
    # curves, 3 diagnostics pictures and the gallery's 3 validation images at least
    assert page.images >= 1 + 3 + 3
    text = out.read_text(encoding="utf-8")
    assert "model.test.score_thresh" in text  # the recipe's difference from the defaults


def test_a_run_that_has_just_started_gets_a_page_saying_what_is_missing(finished_run, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(finished_run / "config.yaml", run / "config.yaml")
    lines = (finished_run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])  # a line being written
    result = report(run)
    assert result.path == run / "report.html" and result.path.is_file()
    assert result.num_evaluations == 0 and "not finished" in result.status
    assert set(result.missing) >= {"diagnostics"}
    page = result.path.read_text(encoding="utf-8")
    assert "no evaluation yet" in page
    assert "data:image/png;base64," in page  # the curves of the first logged line


def test_refuses_what_is_not_a_run_and_files_it_did_not_write(finished_run, tmp_path, capsys, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli(["report", str(empty)], capsys, monkeypatch)
    assert result.exit_code == 2 and "not a training run folder" in result.stderr
    foreign = tmp_path / "notes.html"
    foreign.write_bytes(b"<p>my notes</p>\n")
    before = snapshot(tmp_path)
    result = run_cli(["report", str(finished_run), "--out", str(foreign), "--gallery", "0"], capsys, monkeypatch)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"{foreign}: already exists; pass --overwrite to replace it, or choose another --out" in " ".join(result.stderr.split())
    assert foreign.read_bytes() == b"<p>my notes</p>\n"
    assert changed_outside(before, tmp_path) == []
    # A file with a report's generator tag (anyone can write one) is no exception: an earlier
    # report, too, is replaced only with --overwrite.
    page = tmp_path / "report.html"
    assert run_cli(["report", str(finished_run), "--out", str(page), "--gallery", "0"], capsys, monkeypatch).exit_code == 0
    first = page.read_bytes()
    assert b'<meta name="generator" content="retinacli report">' in first
    result = run_cli(["report", str(finished_run), "--out", str(page), "--gallery", "0"], capsys, monkeypatch)
    assert result.exit_code == 2 and "--overwrite" in result.stderr and page.read_bytes() == first
    again = ["report", str(finished_run), "--out", str(page), "--gallery", "0", "--overwrite"]
    assert run_cli(again, capsys, monkeypatch).exit_code == 0
    # A folder at --out is refused even with --overwrite.
    result = run_cli(["report", str(finished_run), "--out", str(empty), "--overwrite"], capsys, monkeypatch)
    assert result.exit_code == 2 and "is a folder" in result.stderr


def test_the_default_page_in_the_run_folder_is_replaced_only_with_overwrite(finished_run, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run, symlinks=True)
    (run / "report.html").unlink(missing_ok=True)
    args = ["report", str(run), "--gallery", "0"]
    assert run_cli(args, capsys, monkeypatch).exit_code == 0
    first = (run / "report.html").read_bytes()
    before = snapshot(tmp_path)
    result = run_cli(args, capsys, monkeypatch)
    assert result.exit_code == 2 and "report.html: already exists; pass --overwrite" in " ".join(result.stderr.split())
    assert (run / "report.html").read_bytes() == first and changed_outside(before, tmp_path) == []
    result = run_cli([*args, "--overwrite"], capsys, monkeypatch)
    assert result.exit_code == 0 and changed_outside(before, tmp_path, "run/report.html") == []
