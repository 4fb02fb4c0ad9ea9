"""One self-contained HTML page for a training run: no script, no network, every picture
embedded as a `data:` URI, so that the file can be mailed, archived or opened offline.

The page is made of sections in a fixed order (status, recipe, curves, evaluations, per-class
AP, diagnostics, gallery, log); a section whose data is missing says what is missing and how
to make it, instead of failing. Numbers that scripts and tests read back carry `data-metric`
(the key of metrics.json) or `data-class` attributes.

The data comes from a run folder that may be a stranger's: every value reaches the HTML through
`retinacli.report.html` (`h.text`, `h.number`, `h.count`, `h.data_uri`), whatever its source,
and the rendering accepts any JSON shape (a field of the wrong type shows as a dash or is left
out, never an exception). Which files are read, and how much, is decided by the commands layer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from retinacli.report import html as h

GENERATOR = "retinacli report"
METRIC_COLUMNS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


@dataclass(frozen=True)
class Picture:
    """An image to embed: its bytes, their MIME type and a caption."""

    data: bytes
    caption: str
    mime: str = "image/png"


@dataclass(frozen=True)
class Evaluation:
    """One evaluation of the run: split ("val" or "test"), iteration, and its metrics.json."""

    split: str
    iteration: int | None
    metrics: Mapping[str, Any]


@dataclass(frozen=True)
class ReportData:
    """Everything the page shows; None or empty where the run does not have it (yet)."""

    title: str
    status: str
    generated_at: str
    recipe_changes: Sequence[tuple[str, Any, Any]] | None = None  # (dotted key, value, default)
    recipe_text: str | None = None
    curves: Picture | None = None
    evaluations: Sequence[Evaluation] = ()
    final: Evaluation | None = None
    best: Mapping[str, Any] | None = None
    diagnostics: Mapping[str, Any] | None = None
    diagnostics_pictures: Sequence[Picture] = ()
    worst_images: Sequence[Picture] = ()
    gallery: Sequence[Picture] = ()
    log_tail: Sequence[str] = ()
    missing: Mapping[str, str] = field(default_factory=dict)  # section -> what is missing and why
    left_out: Sequence[str] = ()  # what the run folder holds that the page does not show, and why


def render_report(data: ReportData) -> str:
    """The HTML page of `data`."""
    sections = [
        _status(data),
        _recipe(data),
        _curves(data),
        _evaluations(data),
        _per_class(data),
        _diagnostics(data),
        _gallery(data),
        _log(data),
    ]
    nav = "".join(f'<a href="#{h.text(key)}">{h.text(label)}</a>' for key, label in _SECTIONS)
    return PAGE.format(
        title=h.text(data.title),
        generator=h.text(GENERATOR),
        style=STYLE,
        nav=nav,
        body="\n".join(sections),
        generated=h.text(data.generated_at),
    )


_SECTIONS = (
    ("status", "status"),
    ("recipe", "recipe"),
    ("curves", "training curves"),
    ("evaluations", "evaluations"),
    ("per-class", "per-class AP"),
    ("diagnostics", "diagnostics"),
    ("gallery", "gallery"),
    ("log", "log"),
)


def _section(key: str, body: str) -> str:
    label = dict(_SECTIONS)[key]
    return f'<section id="{h.text(key)}"><h2>{h.text(label)}</h2>\n{body}\n</section>'


def _missing(data: ReportData, key: str, default: str) -> str:
    return f'<p class="missing">{h.text(data.missing.get(key, default))}</p>'


def _mapping(value: Any) -> Mapping[Any, Any]:
    """`value` when it is a JSON object, else an empty one (a file of another shape)."""
    return value if isinstance(value, Mapping) else {}


def _ascending(value: Any) -> tuple[bool, float]:
    """Sort key: numbers from the lowest, then everything that is not a number."""
    shown = h.number(value, digits=6)
    return (shown == h.DASH, 0.0 if shown == h.DASH else float(shown))


def _status(data: ReportData) -> str:
    rows = [("status", h.text(data.status))]
    if data.best:
        best = data.best
        rows.append(
            (
                "best model",
                f"model_best.pth: {h.text(best.get('metric'))} {h.number(best.get('value'))} "
                f"at iteration {h.count(best.get('iteration'))}",
            )
        )
    if data.final is not None:
        where = h.text(data.final.split)
        if data.final.iteration is not None:
            where += f", iteration {h.count(data.final.iteration)}"
        rows.append(("final evaluation", where))
    body = "<table class='status'>" + "".join(f"<tr><th>{h.text(k)}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"
    if data.left_out:
        items = "".join(f"<li>{h.text(line)}</li>" for line in data.left_out)
        body += f'<div class="missing" id="left-out"><p>Left out of this page:</p><ul>{items}</ul></div>'
    if data.final is not None:
        body += _metric_table([data.final], caption=f"COCO box AP of the final evaluation ({data.final.split})", final=True)
    return _section("status", body)


def _recipe(data: ReportData) -> str:
    if data.recipe_changes is None:
        return _section("recipe", _missing(data, "recipe", "config.yaml is missing"))
    if not data.recipe_changes:
        body = "<p>The recipe is all defaults.</p>"
    else:
        body = "<p>What the run's recipe (config.yaml) sets differently from the defaults:</p>"
        body += "<table class='recipe'><tr><th>key</th><th>value</th><th>default</th></tr>"
        for key, value, default in data.recipe_changes:
            body += (
                f"<tr><td><code>{h.text(key)}</code></td><td><code>{h.text(_json(value))}</code></td>"
                f"<td><code>{h.text(_json(default))}</code></td></tr>"
            )
        body += "</table>"
    if data.recipe_text:
        body += f"<details><summary>the whole recipe</summary><pre>{h.text(data.recipe_text)}</pre></details>"
    return _section("recipe", body)


def _curves(data: ReportData) -> str:
    if data.curves is None:
        return _section("curves", _missing(data, "curves", "metrics.jsonl has no logged iteration yet"))
    return _section("curves", _figure(data.curves))


def _evaluations(data: ReportData) -> str:
    if not data.evaluations:
        return _section("evaluations", _missing(data, "evaluations", "no evaluation yet"))
    return _section("evaluations", _metric_table(data.evaluations, caption="every evaluation, in order"))


def _metric_table(rows: Sequence[Evaluation], *, caption: str, final: bool = False) -> str:
    head = "".join(f"<th>{h.text(m)}</th>" for m in METRIC_COLUMNS)
    body = ""
    for row in rows:
        attrs = ' class="final"' if final else ""
        metrics = _mapping(row.metrics)
        cells = "".join(
            f'<td data-metric="{h.text(m)}"{" data-final" if final else ""}>{h.number(metrics.get(m))}</td>'
            for m in METRIC_COLUMNS
        )
        iteration = "" if row.iteration is None else h.count(row.iteration)
        body += (
            f'<tr{attrs} data-split="{h.text(row.split)}" data-iteration="{iteration}">'
            f"<td>{h.text(row.split)}</td><td>{iteration}</td>{cells}</tr>"
        )
    return f"<table><caption>{h.text(caption)}</caption><tr><th>split</th><th>iteration</th>{head}</tr>{body}</table>"


def _per_class(data: ReportData) -> str:
    if data.final is None:
        return _section("per-class", _missing(data, "per-class", "no evaluation yet"))
    per_category = _mapping(_mapping(data.final.metrics).get("per_category"))
    diagnostics = _mapping(data.diagnostics)
    per_class = _mapping(diagnostics.get("per_class"))
    curves = _mapping(_mapping(diagnostics.get("pr_curves")).get("classes"))
    head = "<tr><th>class</th><th>AP</th><th>AP50</th><th>threshold</th><th>precision</th><th>recall</th><th>F1</th><th>boxes</th></tr>"
    body = ""
    for name, value in sorted(per_category.items(), key=lambda item: _ascending(item[1])):
        stats = _mapping(per_class.get(name))
        ap50 = _mapping(curves.get(name)).get("AP50")
        body += (
            f'<tr data-class="{h.text(name)}"><td>{h.text(name)}</td><td data-metric="AP">{h.number(value)}</td>'
            f"<td>{h.number(ap50)}</td><td>{h.number(stats.get('threshold'), digits=2)}</td>"
            f"<td>{h.number(stats.get('precision'), digits=2)}</td><td>{h.number(stats.get('recall'), digits=2)}</td>"
            f"<td>{h.number(stats.get('f1'), digits=2)}</td><td>{h.count(stats.get('ground_truth'))}</td></tr>"
        )
    note = "" if per_class else "<p class='missing'>precision, recall and F1 come with the diagnostics (below).</p>"
    caption = f"per-class AP of the final evaluation ({data.final.split}), worst first"
    return _section("per-class", f"<table><caption>{h.text(caption)}</caption>{head}{body}</table>{note}")


def _diagnostics(data: ReportData) -> str:
    if data.diagnostics is None:
        return _section(
            "diagnostics",
            _missing(data, "diagnostics", "no diagnostics: training writes them for its final evaluation"),
        )
    errors = _mapping(_mapping(data.diagnostics).get("errors"))
    gains = _mapping(errors.get("ap50_gain"))
    missed_by_size = _mapping(errors.get("missed"))
    rows = "".join(
        f'<tr data-error="{h.text(kind)}"><td>{h.text(kind)}</td><td>{h.count(count)}</td>'
        f"<td>{h.number(gains.get(kind))}</td></tr>"
        for kind, count in _mapping(errors.get("false_positives")).items()
    )
    missed = sum(
        value
        for counts in missed_by_size.values()
        for value in (_mapping(counts).get("touched"), _mapping(counts).get("untouched"))
        if h.count(value) != h.DASH
    )
    rows += (
        f'<tr data-error="missed"><td>missed</td><td>{h.count(missed)}</td>'
        f'<td>{h.number(gains.get("missed"))}</td></tr>'
    )
    table = (
        "<table><caption>errors above each class's threshold, and the AP50 fixing each type "
        f"would add</caption><tr><th>error</th><th>count</th><th>AP50 gain</th></tr>{rows}</table>"
    )
    sizes = "".join(
        f"<tr><td>{h.text(size)}</td><td>{h.count(_mapping(v).get('touched'))}</td>"
        f"<td>{h.count(_mapping(v).get('untouched'))}</td></tr>"
        for size, v in missed_by_size.items()
    )
    table += (
        "<table><caption>missed objects by size</caption><tr><th>size</th><th>a detection touched it</th>"
        f"<th>untouched</th></tr>{sizes}</table>"
    )
    pictures = "".join(_figure(p) for p in data.diagnostics_pictures)
    worst = ""
    if data.worst_images:
        worst = "<h3>images with the most errors</h3><div class='grid'>" + "".join(_figure(p) for p in data.worst_images) + "</div>"
    return _section("diagnostics", table + pictures + worst)


def _gallery(data: ReportData) -> str:
    if not data.gallery:
        return _section("gallery", _missing(data, "gallery", "no predictions to show yet"))
    intro = "<p>Predictions above each class's threshold (blue: correct, red: error, with its type) and the ground truth (green).</p>"
    return _section("gallery", intro + "<div class='grid'>" + "".join(_figure(p) for p in data.gallery) + "</div>")


def _log(data: ReportData) -> str:
    if not data.log_tail:
        return _section("log", _missing(data, "log", "log.txt is missing"))
    return _section("log", f"<pre>{h.text(chr(10).join(data.log_tail))}</pre>")


def _figure(picture: Picture) -> str:
    caption = h.text(picture.caption)
    return (
        f'<figure><img src="{h.data_uri(picture.mime, picture.data)}" alt="{caption}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def _json(value: Any) -> str:
    return json.dumps(value)


STYLE = """
body { font-family: system-ui, sans-serif; margin: 0; color: #1d2330; background: #fafbfc; }
header { background: #1d2330; color: #fff; padding: 12px 24px; }
header h1 { margin: 0; font-size: 20px; }
nav { padding: 6px 24px; background: #e9edf3; position: sticky; top: 0; }
nav a { margin-right: 16px; color: #1d4ed8; text-decoration: none; font-size: 14px; }
main { padding: 0 24px 48px; max-width: 1400px; }
section { margin-top: 28px; }
h2 { border-bottom: 1px solid #ccd3dd; padding-bottom: 4px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 14px; }
caption { text-align: left; font-weight: 600; padding: 4px 0; }
th, td { border: 1px solid #d5dbe3; padding: 3px 8px; text-align: right; }
th { background: #eef1f5; }
td:first-child, th:first-child { text-align: left; }
table.recipe td, table.recipe th, table.status td { text-align: left; }
.missing { color: #8a5a00; background: #fff7e6; padding: 6px 10px; border-left: 3px solid #f0b429; }
figure { margin: 8px 0; display: inline-block; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #d5dbe3; }
figcaption { font-size: 12px; color: #555; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(320px, 1fr)); gap: 12px; }
.grid img { width: 100%; }
pre { background: #f0f2f5; padding: 8px; overflow-x: auto; font-size: 12px; }
footer { color: #777; font-size: 12px; padding: 12px 24px; }
"""

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="generator" content="{generator}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{style}</style>
</head>
<body>
<header><h1>{title}</h1></header>
<nav>{nav}</nav>
<main>
{body}
</main>
<footer>made by retina report at {generated}</footer>
</body>
</html>
"""
