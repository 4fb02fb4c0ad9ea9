"""Rich renderings several commands share."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Group
from rich.markup import escape
from rich.table import Table


def ap_text(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def metrics_table(metrics: Mapping[str, Any], *, title: str) -> Group:
    """COCO AP (percent) as Rich tables: the summary row, then one row per category."""
    from retinacli.evaluation.coco_eval import METRIC_NAMES

    overall = Table(*METRIC_NAMES, title=title)
    overall.add_row(*(ap_text(metrics.get(name)) for name in METRIC_NAMES))
    per_category = Table("category", "AP")
    for name, value in (metrics.get("per_category") or {}).items():
        per_category.add_row(str(name), ap_text(value))
    return Group(overall, per_category)


def diagnostics_summary(content: Mapping[str, Any], *, worst_classes: int = 5) -> Group:
    """The few lines a person reads first: the worst classes (by AP) with their precision and
    recall at the threshold, and the error types ordered by the AP fixing them would gain."""
    curves = content["pr_curves"]["classes"]
    per_class = content["per_class"]
    ranked = sorted(
        (name for name in content["classes"] if curves[name]["AP"] is not None), key=lambda n: curves[n]["AP"]
    )
    classes = Table("class", "AP", "AP50", "threshold", "precision", "recall", "F1", title="worst classes")
    for name in ranked[:worst_classes]:
        stats = per_class[name]
        classes.add_row(
            escape(name),
            ap_text(curves[name]["AP"]),
            ap_text(curves[name]["AP50"]),
            _fraction(stats["threshold"]),
            _fraction(stats["precision"]),
            _fraction(stats["recall"]),
            _fraction(stats["f1"]),
        )
    errors = content["errors"]
    gains = errors.get("ap50_gain") or {}
    counts = dict(errors["false_positives"])
    counts["missed"] = sum(v["touched"] + v["untouched"] for v in errors["missed"].values())
    table = Table("error", "count", "AP50 gained if fixed", title="errors (above the thresholds)")
    order = sorted(counts, key=lambda kind: -(gains.get(kind) or 0.0))
    for kind in order:
        table.add_row(kind, str(counts[kind]), ap_text(gains.get(kind)))
    parts: list[Any] = [classes, table]
    if gains and any(v is not None for v in gains.values()):
        top = max((k for k in gains if gains[k] is not None), key=lambda k: gains[k])
        parts.append(f"dominant error: {top} (fixing it alone would add {gains[top]:.1f} AP50 points)")
    return Group(*parts)


def _fraction(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"
