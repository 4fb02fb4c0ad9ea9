"""Rich renderings several commands share."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Group
from rich.markup import escape
from rich.table import Table

from retinacli.text import printable


def shown(text: object) -> str:
    """`text` (a class name, an error kind from a diagnostics file) as Rich prints it literally:
    control characters escaped (`text.printable`), then Rich markup escaped."""
    return escape(printable(text))


def ap_text(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def interval_line(metrics: Mapping[str, Any]) -> str:
    """"AP 41.2, 95% interval 38.0 to 44.5; AP50 ..." from metrics.json's AP_ci and AP50_ci."""
    parts = []
    for name in ("AP", "AP50"):
        interval = metrics.get(f"{name}_ci")
        if metrics.get(name) is None or interval is None:
            parts.append(f"{name}: no interval (no ground truth)")
        else:
            parts.append(f"{name} {metrics[name]:.1f}, 95% interval {interval[0]:.1f} to {interval[1]:.1f}")
    samples = (metrics.get("bootstrap") or {}).get("samples")
    return "; ".join(parts) + (f" ({samples} resamplings of the images)" if samples else "")


def metrics_table(metrics: Mapping[str, Any], *, title: str) -> Group:
    """COCO AP (percent) as Rich tables: the summary row, then one row per category."""
    from retinacli.evaluation.coco_eval import METRIC_NAMES

    overall = Table(*METRIC_NAMES, title=title)
    overall.add_row(*(ap_text(metrics.get(name)) for name in METRIC_NAMES))
    per_category = Table("category", "AP")
    for name, value in (metrics.get("per_category") or {}).items():
        per_category.add_row(shown(name), ap_text(value))
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
            shown(name),
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
        table.add_row(shown(kind), str(counts[kind]), ap_text(gains.get(kind)))
    parts: list[Any] = [classes, table]
    if any(gain is not None for gain in gains.values()):  # measured (DiagnosticsOptions.ap_gain)
        parts.append(_dominant_error(counts, gains))
    return Group(*parts)


def _dominant_error(counts: Mapping[str, int], gains: Mapping[str, float | None]) -> str:
    """The error type whose fix would gain the most AP50, only when one does: an error that
    occurs (count > 0) with a gain that shows at one decimal; otherwise a line that says there is
    none (a gain of 0.0 is no reason to name an error, and without false positives only missed
    objects can cost AP)."""
    real = {
        kind: gain
        for kind, gain in gains.items()
        if gain is not None and round(gain, 1) > 0 and counts.get(kind, 0) > 0
    }
    if not real:
        if not any(counts.values()):
            return "dominant error: none (no errors above the thresholds)"
        return "dominant error: none (fixing no single error type would raise AP50)"
    top = max(real, key=lambda kind: real[kind])
    return f"dominant error: {shown(top)} (fixing it alone would add {real[top]:.1f} AP50 points)"


def _fraction(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"
