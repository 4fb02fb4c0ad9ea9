"""`results.png`: a run's curves from its `metrics.jsonl`, one panel per quantity.

Panels: the training losses (`loss_cls`, `loss_box_reg`, `total_loss`), the learning rate, and
one panel per evaluation metric (`AP`, `AP50`, ..., in COCO's order) holding a line per split
that logged it (`val/AP` and `test/AP` together, the test set often a single point at the end),
each against the 0-based iteration. Training rewrites it after every evaluation and at the end,
atomically.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from retinacli.files import atomic_write

TRAINING_PANELS = ("loss_cls", "loss_box_reg", "total_loss", "lr")
METRIC_ORDER = ("AP", "AP50", "AP75", "APs", "APm", "APl")
"""Evaluation panels come in this order, then any other metric by name."""


def metric_panels(names: Sequence[str]) -> dict[str, list[str]]:
    """Evaluation series `split/metric` grouped by metric: {"AP": ["test/AP", "val/AP"], ...},
    panels in METRIC_ORDER then by name, splits by name."""
    grouped: dict[str, list[str]] = {}
    for name in sorted(n for n in names if "/" in n):
        grouped.setdefault(name.split("/", 1)[1], []).append(name)
    rank = {metric: index for index, metric in enumerate(METRIC_ORDER)}
    return {m: grouped[m] for m in sorted(grouped, key=lambda m: (rank.get(m, len(rank)), m))}


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, float | None]]:
    """The JSON lines of `path` ([] when it does not exist); a partial last line is skipped."""
    target = Path(path)
    if not target.is_file():
        return []
    lines = []
    for text in target.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(text)
        except json.JSONDecodeError:
            continue  # a line being written
        if isinstance(record, dict) and isinstance(record.get("iteration"), int):
            lines.append(record)
    return lines


def series(records: Sequence[Mapping[str, float | None]]) -> dict[str, tuple[list[int], list[float]]]:
    """name -> (iterations, values) for every scalar of the records (null values left out)."""
    found: dict[str, tuple[list[int], list[float]]] = {}
    for record in records:
        for name, value in record.items():
            if name == "iteration" or not isinstance(value, int | float) or not math.isfinite(value):
                continue
            xs, ys = found.setdefault(name, ([], []))
            xs.append(int(record["iteration"]))
            ys.append(float(value))
    return found


def save_results_png(metrics_path: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path | None:
    """Draw the panels (module docstring) into the PNG `out`; None when there is nothing to draw."""
    picture = results_png(read_metrics(metrics_path))
    if picture is None:
        return None
    target = Path(out)
    with atomic_write(target) as handle:
        handle.write(picture)
    return target


def results_png(records: Sequence[Mapping[str, float | None]]) -> bytes | None:
    """The panels (module docstring) of `records` as PNG bytes; None when there is nothing to draw."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    curves = series(records)
    panels: list[tuple[str, list[str]]] = [(n, [n]) for n in TRAINING_PANELS if n in curves]
    panels += list(metric_panels(list(curves)).items())
    if not panels:
        return None
    columns = min(4, len(panels))
    rows = -(-len(panels) // columns)
    fig = Figure(figsize=(4 * columns, 3 * rows), dpi=100)
    FigureCanvasAgg(fig)
    for index, (title, members) in enumerate(panels, start=1):
        ax = fig.add_subplot(rows, columns, index)
        evaluation = "/" in members[0]
        for name in members:
            xs, ys = curves[name]
            label = name.split("/", 1)[0] if evaluation else None
            ax.plot(xs, ys, marker="o" if evaluation else None, markersize=3, linewidth=1.2, label=label)
        if evaluation:
            ax.legend(fontsize="small")
        ax.set_title(title)
        ax.set_xlabel("iteration")
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
