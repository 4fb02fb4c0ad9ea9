"""`results.png`: a run's curves from its `metrics.jsonl`, one panel per quantity.

Panels: the training losses (`loss_cls`, `loss_box_reg`, `total_loss`), the learning rate, and
every evaluation metric the file holds (`val/AP`, `val/AP50`, ..., `test/AP`), each against the
0-based iteration. Training rewrites it after every evaluation and at the end, atomically.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from retinacli.files import atomic_write

TRAINING_PANELS = ("loss_cls", "loss_box_reg", "total_loss", "lr")


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
    names = [n for n in TRAINING_PANELS if n in curves]
    names += sorted(n for n in curves if "/" in n)
    if not names:
        return None
    columns = min(4, len(names))
    rows = -(-len(names) // columns)
    fig = Figure(figsize=(4 * columns, 3 * rows), dpi=100)
    FigureCanvasAgg(fig)
    for index, name in enumerate(names, start=1):
        ax = fig.add_subplot(rows, columns, index)
        xs, ys = curves[name]
        ax.plot(xs, ys, marker="o" if "/" in name else None, markersize=3, linewidth=1.2)
        ax.set_title(name)
        ax.set_xlabel("iteration")
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
