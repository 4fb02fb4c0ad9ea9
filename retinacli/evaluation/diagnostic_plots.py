"""Pictures of the diagnostics: PR curves, the confusion matrix, the error breakdown, and the
images with the most errors drawn with their ground truth and predictions. Each picture keeps
to about page width whatever the number of classes (the 20 lowest-AP PR curves, the confusion
matrix of at most 25 classes: `confusion_classes`); the JSON files keep everything.

All are PNG files written atomically with matplotlib's Agg canvas (no display, pyplot's global
state untouched) or Pillow. Class names come from a dataset: matplotlib gets them through
`_plain` (control characters escaped, `$` not taken as the start of mathtext), so a name
neither fails to parse nor sends a raw control character to the terminal in a font warning.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from retinacli.data.visualize import label_font
from retinacli.evaluation.diagnostics import ERROR_TYPES, Diagnostics
from retinacli.files import atomic_write
from retinacli.text import printable

GROUND_TRUTH_COLOUR = (40, 200, 70)
PREDICTION_COLOUR = (230, 40, 40)
TRUE_POSITIVE_COLOUR = (30, 120, 230)
_MAX_PANELS = 20
_MAX_MATRIX_CLASSES = 25  # + background: 26 rows, about 1500 pixels square
_MAX_TICK_CHARS = 32


def _plain(text: str) -> str:
    """`text` as matplotlib shows it literally: control characters escaped, `$` escaped (a
    name like "$\\frac" would otherwise be parsed as mathtext, and fail)."""
    return printable(text).replace("$", r"\$")


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: str | os.PathLike[str]) -> Path:
    target = Path(path)
    fig.tight_layout()
    with atomic_write(target) as handle:
        fig.savefig(handle, format="png")
    return target


def save_pr_curves(diag: Diagnostics, path: str | os.PathLike[str]) -> Path:
    """One panel per class (the 20 lowest-AP classes when there are more): precision against
    recall at IoU 0.5 and averaged over 0.5:0.95, the APs in the title."""
    names = [n for n in diag.class_names if diag.pr_curves[n]["AP"] is not None]
    names.sort(key=lambda n: diag.pr_curves[n]["AP"])
    names = names[:_MAX_PANELS] or diag.class_names[:1]
    columns = min(4, len(names))
    rows = math.ceil(len(names) / columns)
    fig = _figure(3.2 * columns, 2.8 * rows)
    for index, name in enumerate(names, start=1):
        ax = fig.add_subplot(rows, columns, index)
        curves = diag.pr_curves[name]
        for key, label in (("iou50", "IoU 0.5"), ("iou50_95", "IoU 0.5:0.95")):
            values = np.asarray(curves[key], dtype=np.float64)
            ax.plot(diag.recall, np.where(values > -1, values, np.nan), label=label, linewidth=1.4)
        ap50, ap = curves["AP50"], curves["AP"]
        ax.set_title(f"{_plain(name)}: AP50 {_pct(ap50)}, AP {_pct(ap)}", fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall", fontsize=8)
        ax.set_ylabel("precision", fontsize=8)
        ax.grid(True, alpha=0.3)
        if index == 1:
            ax.legend(fontsize=7, loc="lower left")
    return _save(fig, path)


def confusion_classes(
    counts: np.ndarray | Sequence[Sequence[int]], *, limit: int = _MAX_MATRIX_CLASSES
) -> list[int]:
    """The class indices the confusion-matrix picture shows, in dataset order (the background
    row and column, the last, are always shown and not listed).

    counts: the (K + 1) x (K + 1) matrix of `Diagnostics.confusion`.
    limit: at most this many classes. With K <= limit, all K. Otherwise the classes present
    (any ground truth or any prediction above the threshold: a non-empty row or column); when
    more than `limit` are present, those of the largest off-diagonal class-to-class counts first
    (both classes of a pair, pairs that do not fit whole skipped), the rest of the room to the
    classes with the most errors of any kind (misses and false positives included), then the
    most boxes. Ties go to the lower index.
    """
    matrix = np.asarray(counts, dtype=np.int64)
    num_classes = matrix.shape[0] - 1
    if num_classes <= limit:
        return list(range(num_classes))
    present = _present_classes(matrix)
    if len(present) <= limit:
        return present
    chosen: set[int] = set()
    classes = matrix[:num_classes, :num_classes]
    off_diagonal = classes * (1 - np.eye(num_classes, dtype=np.int64))
    rows, columns = np.nonzero(off_diagonal)
    pairs = sorted(
        zip(rows.tolist(), columns.tolist(), strict=True), key=lambda rc: (-off_diagonal[rc], rc)
    )
    for row, column in pairs:
        new = {row, column} - chosen
        if len(chosen) + len(new) <= limit:
            chosen |= new
        if len(chosen) == limit:
            break
    totals = matrix.sum(axis=0) + matrix.sum(axis=1)  # row + column
    errors = totals - 2 * np.diagonal(matrix)  # the same without the diagonal
    rest = sorted(
        (k for k in present if k not in chosen), key=lambda k: (-errors[k], -totals[k], k)
    )
    chosen.update(rest[: limit - len(chosen)])
    return sorted(chosen)


def _present_classes(matrix: np.ndarray) -> list[int]:
    """The classes with a ground-truth box or a prediction (a non-empty row or column)."""
    num_classes = matrix.shape[0] - 1
    used = matrix.sum(axis=0)[:num_classes] + matrix.sum(axis=1)[:num_classes]
    return [int(k) for k in np.flatnonzero(used > 0)]


def _tick(name: str) -> str:
    """A class name as a tick label: at most _MAX_TICK_CHARS characters (longer ones end in "..."),
    then `_plain` (cut first, so no escape is split)."""
    if len(name) > _MAX_TICK_CHARS:
        name = name[: _MAX_TICK_CHARS - 3] + "..."
    return _plain(name)


def save_confusion_matrix(diag: Diagnostics, path: str | os.PathLike[str]) -> Path:
    """The row-normalised matrix as colours, with the counts written in.

    With more than 25 classes (_MAX_MATRIX_CLASSES) only `confusion_classes` are drawn (and the
    background row and column), with a line saying how many of how many; the colours stay each
    full row's shares. The picture stays within about 1500 x 1500 pixels whatever the number of
    classes; confusion_matrix.json and diagnostics.json keep the full matrix.
    """
    keep, names, title = _confusion_view(diag)
    counts = np.asarray(diag.confusion, dtype=np.int64)[np.ix_(keep, keep)]
    normalized = np.asarray(diag.confusion_normalized)[np.ix_(keep, keep)]
    size = max(4.0, 0.45 * len(keep) + 2.5)
    fig = _figure(size + 1.0, size)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(normalized, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the row")
    ax.set_xticks(range(len(keep)), labels=[*names, "missed"], rotation=60, ha="right", fontsize=9)
    ax.set_yticks(range(len(keep)), labels=[*names, "false pos."], fontsize=9)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    ax.set_title(title, fontsize=9)
    for (row, column), value in np.ndenumerate(counts):
        if value:
            colour = "white" if normalized[row, column] > 0.5 else "black"
            ax.text(column, row, str(value), ha="center", va="center", fontsize=8, color=colour)
    return _save(fig, path)


def _confusion_view(diag: Diagnostics) -> tuple[list[int], list[str], str]:
    """What the confusion-matrix picture draws: the rows and columns of `diag.confusion` (the
    shown classes, then the background), the shown classes' tick labels (`_tick`), the title."""
    num_classes = len(diag.class_names)
    shown = confusion_classes(diag.confusion)
    title = "confusion at IoU 0.5 (counts; colour: share of the row)"
    if len(shown) < num_classes:
        which = (
            "those in the ground truth or the predictions"
            if shown == _present_classes(np.asarray(diag.confusion))
            else "those with the most confusions"
        )
        title = (
            "confusion at IoU 0.5 (counts; colour: share of the full row)\n"
            f"{len(shown)} of {num_classes} classes shown: {which}; "
            "diagnostics.json holds the full matrix"
        )
    return [*shown, num_classes], [_tick(diag.class_names[k]) for k in shown], title


def save_error_breakdown(diag: Diagnostics, path: str | os.PathLike[str]) -> Path:
    """Two panels: false positives by type and missed objects by size (counts), and the AP50 each
    error type costs."""
    errors = diag.errors
    fig = _figure(10, 3.6)
    left = fig.add_subplot(1, 2, 1)
    kinds = list(ERROR_TYPES)
    left.bar(kinds, [errors["false_positives"][k] for k in kinds], color="tab:red", label="false positives")
    sizes = [f"missed {s}" for s in errors["missed"]]
    left.bar(sizes, [v["touched"] + v["untouched"] for v in errors["missed"].values()], color="tab:gray", label="missed")
    left.set_title("errors above the thresholds (counts)", fontsize=9)
    left.tick_params(axis="x", rotation=45, labelsize=8)
    right = fig.add_subplot(1, 2, 2)
    gains = errors.get("ap50_gain") or {}
    names = [k for k in (*kinds, "missed") if gains.get(k) is not None]
    right.bar(names, [gains[k] for k in names], color="tab:blue")
    right.set_title("AP50 gained if fixed (points)", fontsize=9)
    right.tick_params(axis="x", rotation=45, labelsize=8)
    return _save(fig, path)


def draw_image_errors(
    rgb: np.ndarray,
    entry: Mapping[str, Any],
    *,
    class_names: Sequence[str],
    min_side: int = 512,
    max_side: int = 1024,
) -> Image.Image:
    """An image with its ground truth (green, "gt <class>", "missed <class>" when no detection
    of its class found it) and the predictions above the thresholds: correct ones blue
    ("<class> 0.93"), errors red with their type ("background: dog 0.61"), under a one-line
    legend. The image is scaled so that its longer side is within [min_side, max_side]
    pixels (small images are enlarged so that the labels stay readable)."""
    image = Image.fromarray(np.ascontiguousarray(rgb), mode="RGB")
    longer = max(image.size)
    scale = min(max(1.0, min_side / longer), max_side / longer)
    if scale != 1.0:
        resample = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.BILINEAR
        image = image.resize((round(image.width * scale), round(image.height * scale)), resample)
    font = label_font()
    legend_height = 18
    canvas = Image.new("RGB", (image.width, image.height + legend_height), (255, 255, 255))
    canvas.paste(image, (0, legend_height))
    draw = ImageDraw.Draw(canvas)
    x = 4
    for colour, text in ((GROUND_TRUTH_COLOUR, "ground truth"), (TRUE_POSITIVE_COLOUR, "correct"), (PREDICTION_COLOUR, "error")):
        draw.rectangle((x, 4, x + 10, 14), fill=colour)
        draw.text((x + 14, 3), text, fill=(0, 0, 0), font=font)
        x += 24 + int(draw.textlength(text, font=font))
    font = label_font()
    missed = {tuple(m["box"]) for m in entry["missed"]}

    def box(xywh: Sequence[float], colour: tuple[int, int, int], text: str, below: bool) -> None:
        x, y, w, h = (v * scale for v in xywh)
        y += legend_height
        draw.rectangle((x, y, x + w, y + h), outline=colour, width=2)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        ty = y + h if below else max(legend_height, y - (bottom - top) - 3)
        draw.rectangle((x, ty, x + right - left + 3, ty + bottom - top + 3), fill=colour)
        draw.text((x + 1 - left, ty + 1 - top), text, fill=(255, 255, 255), font=font)

    for gt in entry["ground_truth"]:
        label = f"{'missed' if tuple(gt['box']) in missed else 'gt'} {printable(class_names[gt['class_index']])}"
        box(gt["box"], GROUND_TRUTH_COLOUR, label, below=True)
    for det in sorted(entry["detections"], key=lambda d: d["score"]):
        name = f"{printable(class_names[det['class_index']])} {det['score']:.2f}"
        if det["error"]:
            box(det["box"], PREDICTION_COLOUR, f"{det['error']}: {name}", below=False)
        else:
            box(det["box"], TRUE_POSITIVE_COLOUR, name, below=False)
    return canvas


def save_image_errors(
    rgb: np.ndarray, entry: Mapping[str, Any], path: str | os.PathLike[str], *, class_names: Sequence[str]
) -> Path:
    target = Path(path)
    picture = draw_image_errors(rgb, entry, class_names=class_names)
    with atomic_write(target) as handle:
        picture.save(handle, format="PNG")
    return target


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
