"""One self-contained HTML page of a `retina tune` folder: the study's counts and best trial, the
table of trials, and Optuna's pictures (optimisation history, parameter importances).

Values come from trials.json, which a stranger may have made: they reach the HTML through
`retinacli.report.html` only, and any JSON shape renders (a field of the wrong type shows as a
dash). Rows carry `data-state` for scripts and tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from retinacli.report import html as h
from retinacli.report.page import GENERATOR, PAGE, STYLE, Picture

MAX_TABLE_ROWS = 1000


@dataclass(frozen=True)
class TunePageData:
    """What the page shows: trials.json (`study`, `objective`, `trials`, `best`), the pictures,
    and what was left out and why."""

    title: str
    generated_at: str
    study: Mapping[str, Any]
    pictures: Sequence[Picture] = ()
    left_out: Sequence[str] = ()
    missing: Mapping[str, str] = field(default_factory=dict)


def render_tune(data: TunePageData) -> str:
    """The HTML page of `data`."""
    body = _summary(data) + _pictures(data) + _table(data)
    nav = '<a href="#summary">summary</a><a href="#pictures">pictures</a><a href="#trials">trials</a>'
    return PAGE.format(
        title=h.text(data.title), generator=h.text(GENERATOR), style=STYLE, nav=nav, body=body, generated=h.text(data.generated_at)
    )


def _mapping(value: Any) -> Mapping[Any, Any]:
    return value if isinstance(value, Mapping) else {}


def _trials(data: TunePageData) -> list[Mapping[Any, Any]]:
    trials = data.study.get("trials")
    return [_mapping(t) for t in trials] if isinstance(trials, list) else []


def _params(value: Any) -> str:
    return ", ".join(f"{h.text(k)} = {h.text(v)}" for k, v in _mapping(value).items()) or h.DASH


def _summary(data: TunePageData) -> str:
    trials = _trials(data)
    states: dict[str, int] = {}
    for t in trials:
        state = t.get("state") if isinstance(t.get("state"), str) else "?"
        states[state] = states.get(state, 0) + 1
    counts = "".join(f'<tr><th>{h.text(k)}</th><td data-count="{h.text(k)}">{v}</td></tr>' for k, v in sorted(states.items()))
    best = _mapping(data.study.get("best"))
    best_text = (
        f"<p>best: trial {h.count(best.get('number'))}, {h.text(data.study.get('objective'))} "
        f"{h.number(best.get('value'), digits=2)}, with {_params(best.get('params'))} (best.yaml)</p>"
        if best
        else '<p class="missing">no trial has completed yet</p>'
    )
    problems = "".join(f'<p class="missing">{h.text(v)}</p>' for v in data.missing.values())
    left = "".join(f"<li>{h.text(v)}</li>" for v in data.left_out)
    left_out = f"<ul>{left}</ul>" if left else ""
    return (
        f'<section id="summary"><h2>study {h.text(data.study.get("study"))}</h2>{problems}{best_text}'
        f"<table><caption>trials by state</caption>{counts}</table>{left_out}</section>"
    )


def _pictures(data: TunePageData) -> str:
    if not data.pictures:
        return '<section id="pictures"><h2>pictures</h2><p class="missing">none yet (they need a complete trial)</p></section>'
    figures = "".join(
        f'<figure><img src="{h.data_uri(p.mime, p.data)}" alt="{h.text(p.caption)}"><figcaption>{h.text(p.caption)}</figcaption></figure>'
        for p in data.pictures
    )
    return f'<section id="pictures"><h2>pictures</h2><div class="grid">{figures}</div></section>'


def _table(data: TunePageData) -> str:
    trials = _trials(data)
    head = "<tr><th>trial</th><th>state</th><th>value</th><th>evaluations</th><th>seconds</th><th>iterations</th><th>values</th></tr>"
    rows = ""
    for t in trials[:MAX_TABLE_ROWS]:
        evaluations = t.get("evaluations")
        shown = ", ".join(h.number(v, digits=1) for v in evaluations) if isinstance(evaluations, list) else h.DASH
        rows += (
            f'<tr class="trial" data-state="{h.text(t.get("state"))}"><td>{h.count(t.get("number"))}</td>'
            f'<td>{h.text(t.get("state"))}</td><td>{h.number(t.get("value"), digits=2)}</td><td>{shown}</td>'
            f'<td>{h.number(t.get("seconds"), digits=0)}</td><td>{h.count(t.get("iterations"))}</td><td>{_params(t.get("params"))}</td></tr>'
        )
    more = f"<p>{h.count(len(trials) - MAX_TABLE_ROWS)} more in trials.json</p>" if len(trials) > MAX_TABLE_ROWS else ""
    return f'<section id="trials"><h2>trials</h2><table>{head}{rows}</table>{more}</section>'
