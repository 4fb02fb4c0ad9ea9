"""How `retina anchors` shows its result: the anchor tables, the coverage report and the
suggestion (Rich), or `--json`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from retinacli.anchors_tool.coverage import SIZE_BUCKETS, Counts, CoverageReport
from retinacli.anchors_tool.layout import format_number
from retinacli.anchors_tool.suggest import Suggestion
from retinacli.cli.app import shown
from retinacli.commands.anchors import AnchorsResult


def result_json(result: AnchorsResult) -> dict[str, Any]:
    """`--json`: the layout JSON, or with --coverage {"coverage": ..., "suggestion": ...}."""
    if result.coverage is None:
        return result.layout.to_json()
    data: dict[str, Any] = {"coverage": result.coverage.to_json()}
    suggestion = result.suggestion
    if suggestion is not None:
        data["suggestion"] = {
            "improved": suggestion.improved,
            "candidate": suggestion.candidate,
            "sizes": [list(level) for level in suggestion.sizes],
            "aspect_ratios": [list(level) for level in suggestion.aspect_ratios],
            "before": _summary_json(suggestion.before),
            "after": _summary_json(suggestion.after),
            "snippet": suggestion.snippet(),
        }
    return data


def _summary_json(report: CoverageReport) -> dict[str, Any]:
    return {**report.overall.to_json(), "mean_best_iou": report.to_json()["mean_best_iou"]}


def render(result: AnchorsResult, console: Console) -> None:
    """Print the result: the anchor tables, or the coverage report (and suggestion)."""
    if result.coverage is None:
        _render_layout(result, console)
    else:
        _render_coverage(result, result.coverage, console)
        if result.suggestion is not None:
            _render_suggestion(result.suggestion, console)
    for path in result.saved:
        console.print(f"saved {shown(str(path))}", highlight=False)


def _render_layout(result: AnchorsResult, console: Console) -> None:
    layout = result.layout
    (h, w), (ph, pw) = layout.image_size, layout.padded_size
    console.print(
        f"[bold]anchors of {shown(result.source)}[/] for a {h}x{w} input (HxW), padded to "
        f"{ph}x{pw} (multiple of {result.spec.size_divisibility}); offset "
        f"{result.spec.offset}",
        highlight=False,
    )
    for level in layout.levels:
        fh, fw = level.feature_size
        # The level's summary is a line of its own: a table title would wrap at the table width.
        console.print(
            f"[bold]{level.name}[/]: stride {level.stride}, sizes "
            f"{', '.join(format_number(s) for s in level.sizes)}, aspect ratios "
            f"{', '.join(_ratio(r) for r in level.aspect_ratios)}; "
            f"{level.anchors_per_location} per location x {fh}x{fw} = {level.num_anchors}",
            highlight=False,
        )
        table = Table("size", "ratio", "w x h", "cell anchor (x0, y0, x1, y1)")
        per_size = len(level.aspect_ratios)
        for k, (x0, y0, x1, y1) in enumerate(level.cell_anchors):
            table.add_row(
                format_number(level.sizes[k // per_size]),
                _ratio(level.aspect_ratios[k % per_size]),
                f"{format_number(x1 - x0)} x {format_number(y1 - y0)}",
                ", ".join(format_number(v) for v in (x0, y0, x1, y1)),
            )
        console.print(table)
    total = Table("level", "stride", "per location", "feature (HxW)", "anchors", title="total")
    for level in layout.levels:
        fh, fw = level.feature_size
        total.add_row(
            level.name,
            str(level.stride),
            str(level.anchors_per_location),
            f"{fh}x{fw}",
            str(level.num_anchors),
        )
    total.add_row("all", "", "", "", str(layout.total_anchors), style="bold")
    console.print(total)


def _ratio(value: float) -> str:
    return f"{value:g}"


def _cell(counts: Counts, verdict: str) -> str:
    return f"{getattr(counts, verdict)} ({counts.share(verdict):.1%})"  # type: ignore[arg-type]


def _render_coverage(result: AnchorsResult, report: CoverageReport, console: Console) -> None:
    short, longest = result.test_resize
    console.print(
        f"[bold]anchor coverage of {shown(result.source)}[/]: {report.overall.total} boxes in "
        f"{report.num_images} training images at the test size (short side {short}, max "
        f"{longest}); positive = best IoU >= {report.threshold:g} "
        "(model.matcher.iou_thresholds[-1])",
        highlight=False,
    )
    table = Table("boxes", "count", "positive", "low-quality only", "none (IoU 0)")
    table.add_row("all", str(report.overall.total), *_verdict_cells(report.overall), style="bold")
    for name in SIZE_BUCKETS:
        counts = report.by_size[name]
        table.add_row(name, str(counts.total), *_verdict_cells(counts))
    for name, counts in report.by_class.items():
        table.add_row(f"class {shown(name)}", str(counts.total), *_verdict_cells(counts))
    console.print(table)
    rule = (
        "the low-quality rule still makes their best anchors positive"
        if report.allow_low_quality_matches
        else "allow_low_quality_matches is off, so they get no positive anchor"
    )
    console.print(
        f"mean best IoU {report.mean_best_iou:.3f}. Low-quality only: best IoU below "
        f"{report.threshold:g}; {rule}. Sizes: COCO small < 32², medium < 96², large, by "
        "area in original pixels.",
        highlight=False,
    )
    if report.num_dropped:
        console.print(f"{report.num_dropped} boxes became empty after the resize and are left out.")
    if report.worst:
        worst = Table(
            "image",
            "class",
            "box (original px)",
            "best IoU",
            "best anchor (test-size px)",
            title="worst boxes",
        )
        for w in report.worst:
            worst.add_row(
                f"{shown(Path(w.file_name).name)} (id {w.image_id})",
                shown(w.class_name),
                ", ".join(f"{v:.1f}" for v in w.box),
                f"{w.best_iou:.3f}",
                f"{w.level} " + ", ".join(f"{v:.1f}" for v in w.best_anchor),
            )
        console.print(worst)


def _verdict_cells(counts: Counts) -> list[str]:
    return [_cell(counts, v) for v in ("positive", "low_quality", "none")]


def _render_suggestion(suggestion: Suggestion, console: Console) -> None:
    before, after = suggestion.before, suggestion.after
    table = Table("", "recipe's anchors", "proposal", title="suggestion")
    for verdict, label in (
        ("positive", "positive"),
        ("low_quality", "low-quality only"),
        ("none", "none"),
    ):
        table.add_row(label, _cell(before.overall, verdict), _cell(after.overall, verdict))
    table.add_row("mean best IoU", f"{before.mean_best_iou:.3f}", f"{after.mean_best_iou:.3f}")
    console.print(table)
    if suggestion.improved:
        console.print(
            f"Proposal ({shown(suggestion.candidate)}): same levels, sizes per level and "
            "anchors per location, so the head stays valid. Paste into the recipe:",
            highlight=False,
        )
    else:
        console.print(
            "No candidate raises coverage over the recipe's anchors; keep them (unchanged):",
            highlight=False,
        )
    # soft_wrap: long YAML lines must stay whole to be pasted.
    console.print(shown(suggestion.snippet(), keep_newlines=True), highlight=False, soft_wrap=True, end="")
