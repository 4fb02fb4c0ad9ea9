"""PNG pictures for `retina anchors`: the cell anchors to scale, and the coverage histogram.

Both are drawn on an explicit matplotlib Agg canvas (no display, pyplot's backend left alone)
and written atomically (`files.atomic_write`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from retinacli.anchors_tool.coverage import SIZE_BUCKETS, CoverageReport
from retinacli.anchors_tool.layout import AnchorLayout, format_number
from retinacli.files import atomic_write

_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")
_PANEL_INCHES = 4.0
_MAX_COLUMNS = 3


def save_anchor_png(
    layout: AnchorLayout,
    path: str | os.PathLike[str],
    *,
    image: np.ndarray | None = None,
    title: str = "anchors",
) -> Path:
    """One panel per level: the input (blank, or `image` (H, W, 3) uint8 RGB of layout's image
    size) with that level's cell anchors centred on it, to scale in input pixels.

    Each size has its own colour; the dashed rectangle is the padded input. Returns the path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    height, width = layout.image_size
    pad_h, pad_w = layout.padded_size
    columns = min(len(layout.levels), _MAX_COLUMNS)
    rows = math.ceil(len(layout.levels) / columns)
    fig = Figure(figsize=(_PANEL_INCHES * columns, _PANEL_INCHES * rows * 0.85 + 0.4), dpi=100)
    FigureCanvasAgg(fig)
    cx, cy = width / 2.0, height / 2.0
    for index, level in enumerate(layout.levels):
        ax = fig.add_subplot(rows, columns, index + 1)
        if image is not None:
            ax.imshow(image, extent=(0, width, height, 0), interpolation="bilinear")
        else:
            ax.add_patch(Rectangle((0, 0), width, height, facecolor="0.93", edgecolor="0.6"))
        ax.add_patch(
            Rectangle(
                (0, 0), pad_w, pad_h, fill=False, edgecolor="0.5", linestyle="--", linewidth=0.6
            )
        )
        left, top, right, bottom = 0.0, 0.0, float(pad_w), float(pad_h)
        per_size = len(level.aspect_ratios)
        for k, (x0, y0, x1, y1) in enumerate(level.cell_anchors):
            colour = _COLOURS[(k // per_size) % len(_COLOURS)]
            ax.add_patch(
                Rectangle(
                    (cx + x0, cy + y0),
                    x1 - x0,
                    y1 - y0,
                    fill=False,
                    edgecolor=colour,
                    linewidth=1.2,
                )
            )
            left, top = min(left, cx + x0), min(top, cy + y0)
            right, bottom = max(right, cx + x1), max(bottom, cy + y1)
        ax.plot([cx], [cy], marker="+", color="black", markersize=6)
        margin = 0.03 * max(right - left, bottom - top)
        ax.set_xlim(left - margin, right + margin)
        ax.set_ylim(bottom + margin, top - margin)  # y down, as in the image
        ax.set_aspect("equal")
        ax.tick_params(labelsize=7)
        sizes = ", ".join(format_number(s) for s in level.sizes)
        ax.set_title(
            f"{level.name}: stride {level.stride}, sizes {sizes}\n"
            f"{level.anchors_per_location}/location, "
            f"{level.feature_size[0]}x{level.feature_size[1]} positions",
            fontsize=8,
        )
    fig.suptitle(
        f"{title}: input {height}x{width} (padded {pad_h}x{pad_w}), {layout.total_anchors} anchors",
        fontsize=10,
    )
    fig.tight_layout()
    return _save(fig, path)


def save_coverage_png(
    report: CoverageReport,
    path: str | os.PathLike[str],
    *,
    size_buckets: np.ndarray,
    after: CoverageReport | None = None,
    title: str = "anchor coverage",
) -> Path:
    """Histogram of every box's best anchor IoU, stacked by COCO size (`size_buckets` (N,) 0/1/2),
    the foreground threshold marked; `after` (a proposal) is drawn as an outline on top."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    bins = np.linspace(0.0, 1.0, 51)
    ious = np.asarray(report.best_ious)
    groups = [ious[size_buckets == i] for i in range(len(SIZE_BUCKETS))]
    labels = [f"{name} ({len(g)})" for name, g in zip(SIZE_BUCKETS, groups, strict=True)]
    ax.hist(groups, bins=bins, stacked=True, label=labels, color=_COLOURS[:3], alpha=0.8)
    if after is not None:
        ax.hist(
            np.asarray(after.best_ious),
            bins=bins,
            histtype="step",
            color="black",
            linewidth=1.2,
            label=f"proposal: {after.coverage:.1%} positive",
        )
    ax.axvline(report.threshold, color="tab:red", linestyle="--", linewidth=1.0)
    ax.annotate(
        f"foreground {report.threshold:g}",
        xy=(report.threshold, 1.0),
        xycoords=("data", "axes fraction"),
        xytext=(3, -12),
        textcoords="offset points",
        fontsize=8,
        color="tab:red",
    )
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("best IoU with any anchor")
    ax.set_ylabel("boxes")
    ax.set_title(
        f"{title}: {report.overall.total} boxes, {report.coverage:.1%} positive, "
        f"{report.overall.share('low_quality'):.1%} low-quality only, "
        f"{report.overall.share('none'):.1%} none",
        fontsize=9,
    )
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig: object, path: str | os.PathLike[str]) -> Path:
    target = Path(path)
    with atomic_write(target) as handle:
        fig.savefig(handle, format="png")  # type: ignore[attr-defined]
    return target
