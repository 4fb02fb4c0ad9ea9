"""One self-contained HTML page for a training run: no script, no network, every picture
embedded as a `data:` URI, so that the file can be mailed, archived or opened offline.

The page is made of sections in a fixed order (status, recipe, curves, evaluations, per-class
AP, diagnostics, gallery, log); a section whose data is missing says what is missing and how
to make it, instead of failing. Numbers that scripts and tests read back carry `data-metric`
(the key of metrics.json) or `data-class` attributes.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

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
    nav = "".join(f'<a href="#{key}">{label}</a>' for key, label in _SECTIONS)
    return _PAGE.format(
        title=_e(data.title),
        generator=GENERATOR,
        style=_STYLE,
        nav=nav,
        body="\n".join(sections),
        generated=_e(data.generated_at),
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
    return f'<section id="{key}"><h2>{label}</h2>\n{body}\n</section>'


def _missing(data: ReportData, key: str, default: str) -> str:
    return f'<p class="missing">{_e(data.missing.get(key, default))}</p>'


def _status(data: ReportData) -> str:
    rows = [("status", data.status)]
    if data.best:
        rows.append(
            (
                "best model",
                f"model_best.pth: {data.best['metric']} {_number(data.best['value'])} at iteration {data.best['iteration']}",
            )
        )
    if data.final is not None:
        where = f"{data.final.split}, iteration {data.final.iteration}" if data.final.iteration is not None else data.final.split
        rows.append(("final evaluation", where))
    body = "<table class='status'>" + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows) + "</table>"
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
                f"<tr><td><code>{_e(key)}</code></td><td><code>{_e(_json(value))}</code></td>"
                f"<td><code>{_e(_json(default))}</code></td></tr>"
            )
        body += "</table>"
    if data.recipe_text:
        body += f"<details><summary>the whole recipe</summary><pre>{_e(data.recipe_text)}</pre></details>"
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
    head = "".join(f"<th>{m}</th>" for m in METRIC_COLUMNS)
    body = ""
    for row in rows:
        attrs = ' class="final"' if final else ""
        cells = "".join(
            f'<td data-metric="{m}"{" data-final" if final else ""}>{_number(row.metrics.get(m))}</td>' for m in METRIC_COLUMNS
        )
        iteration = "" if row.iteration is None else str(row.iteration)
        body += f'<tr{attrs} data-split="{_e(row.split)}" data-iteration="{iteration}"><td>{_e(row.split)}</td><td>{iteration}</td>{cells}</tr>'
    return f"<table><caption>{_e(caption)}</caption><tr><th>split</th><th>iteration</th>{head}</tr>{body}</table>"


def _per_class(data: ReportData) -> str:
    if data.final is None:
        return _section("per-class", _missing(data, "per-class", "no evaluation yet"))
    per_category = data.final.metrics.get("per_category") or {}
    per_class = (data.diagnostics or {}).get("per_class", {})
    curves = ((data.diagnostics or {}).get("pr_curves") or {}).get("classes", {})
    head = "<tr><th>class</th><th>AP</th><th>AP50</th><th>threshold</th><th>precision</th><th>recall</th><th>F1</th><th>boxes</th></tr>"
    body = ""
    for name, value in sorted(per_category.items(), key=lambda item: (item[1] is None, item[1] or 0.0)):
        stats = per_class.get(name, {})
        ap50 = curves.get(name, {}).get("AP50")
        body += (
            f'<tr data-class="{_e(name)}"><td>{_e(name)}</td><td data-metric="AP">{_number(value)}</td>'
            f"<td>{_number(ap50)}</td><td>{_fraction(stats.get('threshold'))}</td>"
            f"<td>{_fraction(stats.get('precision'))}</td><td>{_fraction(stats.get('recall'))}</td>"
            f"<td>{_fraction(stats.get('f1'))}</td><td>{stats.get('ground_truth', '')}</td></tr>"
        )
    note = "" if per_class else "<p class='missing'>precision, recall and F1 come with the diagnostics (below).</p>"
    caption = f"per-class AP of the final evaluation ({data.final.split}), worst first"
    return _section("per-class", f"<table><caption>{_e(caption)}</caption>{head}{body}</table>{note}")


def _diagnostics(data: ReportData) -> str:
    if data.diagnostics is None:
        return _section(
            "diagnostics",
            _missing(data, "diagnostics", "no diagnostics: training writes them for its final evaluation"),
        )
    errors = data.diagnostics["errors"]
    gains = errors.get("ap50_gain") or {}
    rows = "".join(
        f'<tr data-error="{kind}"><td>{kind}</td><td>{count}</td><td>{_number(gains.get(kind))}</td></tr>'
        for kind, count in errors["false_positives"].items()
    )
    missed = sum(v["touched"] + v["untouched"] for v in errors["missed"].values())
    rows += f'<tr data-error="missed"><td>missed</td><td>{missed}</td><td>{_number(gains.get("missed"))}</td></tr>'
    table = (
        "<table><caption>errors above each class's threshold, and the AP50 fixing each type "
        f"would add</caption><tr><th>error</th><th>count</th><th>AP50 gain</th></tr>{rows}</table>"
    )
    sizes = "".join(
        f"<tr><td>{size}</td><td>{v['touched']}</td><td>{v['untouched']}</td></tr>" for size, v in errors["missed"].items()
    )
    table += f"<table><caption>missed objects by size</caption><tr><th>size</th><th>a detection touched it</th><th>untouched</th></tr>{sizes}</table>"
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
    return _section("log", f"<pre>{_e(chr(10).join(data.log_tail))}</pre>")


def _figure(picture: Picture) -> str:
    encoded = base64.b64encode(picture.data).decode("ascii")
    caption = _e(picture.caption)
    return f'<figure><img src="data:{picture.mime};base64,{encoded}" alt="{caption}"><figcaption>{caption}</figcaption></figure>'


def _number(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{float(value):.3f}"


def _fraction(value: Any) -> str:
    return "—" if value is None else f"{float(value):.2f}"


def _json(value: Any) -> str:
    import json

    return json.dumps(value)


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


_STYLE = """
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

_PAGE = """<!DOCTYPE html>
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
