"""One self-contained HTML page of a label audit (`retina data audit`'s folder): the counts per
kind and class, the gallery of the top issues and the table of issues, each filtered by kind
with radio buttons and CSS alone (the page carries no script, like the run page).

Values come from files a stranger may have made: they reach the HTML through
`retinacli.report.html` only, and any JSON shape renders (a field of the wrong type shows as a
dash). Rows and pictures carry `data-kind`, and numbers `data-count`, for scripts and tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from retinacli.report import html as h
from retinacli.report.page import GENERATOR, PAGE, STYLE, Picture

KINDS = ("missing", "wrong_class", "poor_box", "spurious", "duplicate")
MAX_TABLE_ROWS = 500


@dataclass(frozen=True)
class AuditPicture:
    """A picture of one issue: its kind (for the filter) and the picture."""

    kind: str
    picture: Picture


@dataclass(frozen=True)
class AuditPageData:
    """What the audit page shows: summary.json, the issues (issues.json, most suspicious first),
    the pictures, and what was left out and why."""

    title: str
    generated_at: str
    summary: Mapping[str, Any]
    issues: Sequence[Any]
    pictures: Sequence[AuditPicture] = ()
    left_out: Sequence[str] = ()
    missing: Mapping[str, str] = field(default_factory=dict)


def render_audit(data: AuditPageData) -> str:
    """The HTML page of `data`."""
    body = _summary(data) + _filters() + _gallery(data) + _table(data)
    nav = '<a href="#summary">summary</a><a href="#gallery">gallery</a><a href="#issues">issues</a>'
    return PAGE.format(
        title=h.text(data.title),
        generator=h.text(GENERATOR),
        style=STYLE + _FILTER_STYLE,
        nav=nav,
        body=body,
        generated=h.text(data.generated_at),
    )


def _mapping(value: Any) -> Mapping[Any, Any]:
    return value if isinstance(value, Mapping) else {}


def _summary(data: AuditPageData) -> str:
    s = _mapping(data.summary)
    share = s.get("share_of_images_with_issues")
    rows = [
        ("mode", h.text(s.get("mode", h.DASH))),
        ("source", h.text(s.get("source", h.DASH))),
        ("dataset", h.text(s.get("dataset", h.DASH))),
        ("images", h.count(s.get("num_images"))),
        ("labels", h.count(s.get("num_labels"))),
        ("issues", f'<span data-count="issues">{h.count(s.get("num_issues"))}</span>'),
        (
            "images with an issue",
            f"{h.count(s.get('images_with_issues'))} "
            f"({h.number(share * 100 if isinstance(share, int | float) and not isinstance(share, bool) else None, digits=1)}%)",
        ),
    ]
    thresholds = _mapping(s.get("thresholds"))
    if thresholds:
        rows.append(("thresholds", h.text(", ".join(f"{k} {v}" for k, v in thresholds.items()))))
    table = "<table class='status'>" + "".join(f"<tr><th>{h.text(k)}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"
    per_kind = _mapping(s.get("per_kind"))
    per_class = _mapping(s.get("per_class"))
    head = "<tr><th>kind</th><th>all</th>" + "".join(f"<th>{h.text(c)}</th>" for c in per_class) + "</tr>"
    counts = ""
    for kind in KINDS:
        cells = "".join(f"<td>{h.count(_mapping(v).get(kind))}</td>" for v in per_class.values())
        counts += f'<tr data-kind="{h.text(kind)}"><td>{h.text(kind)}</td><td data-count="{h.text(kind)}">{h.count(per_kind.get(kind))}</td>{cells}</tr>'
    table += f"<table><caption>issues per kind and class</caption>{head}{counts}</table>"
    if data.left_out:
        items = "".join(f"<li>{h.text(line)}</li>" for line in data.left_out)
        table += f'<div class="missing" id="left-out"><p>Left out of this page:</p><ul>{items}</ul></div>'
    for section, why in data.missing.items():
        table += f'<p class="missing">{h.text(section)}: {h.text(why)}</p>'
    return f'<section id="summary"><h2>summary</h2>{table}</section>'


def _filters() -> str:
    """Radio buttons that the CSS below uses to show one kind; they precede the gallery and the
    table as siblings, so `:checked ~` reaches both."""
    options = [("all", "all kinds"), *((k, k) for k in KINDS)]
    return "".join(
        f'<input type="radio" name="kind" id="show-{k}" class="filter"{" checked" if k == "all" else ""}>'
        f'<label for="show-{k}" class="filter">{h.text(label)}</label>'
        for k, label in options
    )


def _gallery(data: AuditPageData) -> str:
    if not data.pictures:
        return '<section id="gallery"><h2>gallery</h2><p class="missing">no pictures (--pictures 0, or none written)</p></section>'
    figures = "".join(
        f'<figure class="issue" data-kind="{h.text(p.kind)}"><img src="{h.data_uri(p.picture.mime, p.picture.data)}" '
        f'alt="{h.text(p.picture.caption)}"><figcaption>{h.text(p.picture.caption)}</figcaption></figure>'
        for p in data.pictures
    )
    intro = "<p>The most suspicious issues: the label in red, the model's detection in cyan.</p>"
    return f'<section id="gallery"><h2>gallery</h2>{intro}<div class="grid">{figures}</div></section>'


def _table(data: AuditPageData) -> str:
    head = "<tr><th>rank</th><th>kind</th><th>score</th><th>image</th><th>class</th><th>box (x, y, w, h)</th><th>detection</th></tr>"
    rows = ""
    for rank, issue in enumerate(data.issues[:MAX_TABLE_ROWS], start=1):
        i = _mapping(issue)
        det = _mapping(i.get("detection"))
        det_text = f"{h.text(det.get('category'))} {h.number(det.get('score'), digits=2)}" if det else h.DASH
        box = i.get("bbox")
        box_text = ", ".join(h.number(v, digits=0) for v in box) if isinstance(box, list) else h.DASH
        rows += (
            f'<tr class="issue" data-kind="{h.text(i.get("kind"))}"><td>{rank}</td><td>{h.text(i.get("kind"))}</td>'
            f'<td>{h.number(i.get("score"))}</td><td>{h.text(i.get("file_name"))} ({h.count(i.get("image_id"))})</td>'
            f'<td>{h.text(i.get("category"))}</td><td>{box_text}</td><td>{det_text}</td></tr>'
        )
    more = ""
    if len(data.issues) > MAX_TABLE_ROWS:
        more = f"<p>{h.count(len(data.issues) - MAX_TABLE_ROWS)} more in issues.json and issues.csv</p>"
    return f'<section id="issues"><h2>issues</h2><table><caption>most suspicious first</caption>{head}{rows}</table>{more}</section>'


_FILTER_STYLE = """
input.filter { display: none; }
label.filter { display: inline-block; margin: 16px 6px 0 0; padding: 4px 10px; border: 1px solid #ccd3dd;
  border-radius: 12px; cursor: pointer; font-size: 14px; background: #fff; }
input.filter:checked + label.filter { background: #1d4ed8; color: #fff; border-color: #1d4ed8; }
""" + "".join(
    f'#show-{k}:checked ~ section .issue:not([data-kind="{k}"]) {{ display: none; }}\n' for k in KINDS
)
