"""Rich renderings several commands share."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Group
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
