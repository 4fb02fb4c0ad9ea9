"""Propose anchor sizes and aspect ratios that raise a dataset's anchor coverage.

The proposal keeps the recipe's structure, so the head and its weights layout stay valid: the
same levels and strides, the same number of sizes on each level, and one list of aspect ratios
shared by every level (when the recipe's levels all have the same number of ratios; otherwise
the ratios are kept as they are and only sizes move).

Candidates:
- the recipe's anchors themselves, so the winner is never worse than the start;
- the recipe's sizes scaled by 2**(i/6), i = -3..3 (objects systematically larger or smaller),
  each level keeping its own sizes;
- grid-constrained k-medians of the box shapes under the 1 - IoU distance, started from the
  recipe's anchors and from the quantiles of the boxes: each box joins the (size, ratio) pair
  whose centred anchor has the highest IoU with it; each size becomes the median (in log space)
  of its boxes' sqrt(area), each ratio the median of its boxes' height / width. For centred
  boxes of one ratio, 1 - IoU grows with |log size ratio|, and for one area with |log ratio
  ratio|, so these medians are the k-medians centres of each factor. The sizes are sorted and
  dealt out to the levels in order, smallest to the finest stride;
- each clustering's sizes with the recipe's ratios and vice versa, and geometric blends
  (1/4, 1/2, 3/4 of the way) between the recipe's anchors and each clustering.
Every candidate is rounded as printed (sizes 0.01 px, ratios 0.001) and scored by the real
coverage (`coverage.best_anchor_ious`, anchors on their grids, the matcher's threshold): first
the boxes with a positive anchor, then the boxes with any overlap, then the mean best IoU. The
best one is then refined one size (and one shared ratio) at a time, by factors 2**(+-1/8) and
2**(+-1/4), for up to two passes: the clusterings ignore the grid, and a single size often
decides a few boxes. The winner is checked again on every box; unless it strictly raises
coverage there, the recipe's anchors are kept and the suggestion says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from retinacli.anchors_tool.coverage import (
    CoverageReport,
    GroundTruth,
    best_anchor_ious,
    coverage_report,
)
from retinacli.anchors_tool.layout import AnchorSpec

# Candidates are scored on at most this many boxes (a seeded sample); the winner on all of them.
MAX_SEARCH_BOXES = 20000
_KMEDIANS_ITERATIONS = 50
_SCALE_STEPS = (-3, -2, -1, 1, 2, 3)  # sizes * 2**(i/6)
_BLENDS = (0.25, 0.5, 0.75)
_REFINE_FACTORS = (2 ** (1 / 8), 2 ** (-1 / 8), 2 ** (1 / 4), 2 ** (-1 / 4))
_REFINE_PASSES = 2
_SIZE_DECIMALS = 2
_RATIO_DECIMALS = 3


@dataclass(frozen=True)
class Suggestion:
    """The proposed anchors (or the recipe's, when nothing beats them) and coverage before/after.

    sizes / aspect_ratios: one list per level (ratios: a single list when shared).
    improved: False means the recipe's anchors are kept (`after` is then `before`).
    candidate: which candidate won ("recipe" when kept).
    """

    before: CoverageReport
    after: CoverageReport
    sizes: tuple[tuple[float, ...], ...]
    aspect_ratios: tuple[tuple[float, ...], ...]
    improved: bool
    candidate: str

    def snippet(self) -> str:
        """The `model.anchors` YAML to paste into a recipe (explicit sizes, so scales: null)."""
        ratios = self.aspect_ratios
        if all(r == ratios[0] for r in ratios):
            ratios = ratios[:1]
        return (
            "model:\n"
            "  anchors:\n"
            f"    sizes: {_flow(self.sizes)}\n"
            "    scales: null\n"
            f"    aspect_ratios: {_flow(ratios)}\n"
        )


def suggest_anchors(
    spec: AnchorSpec,
    gt: GroundTruth,
    *,
    threshold: float,
    allow_low_quality_matches: bool = True,
    num_worst: int = 10,
    max_search_boxes: int = MAX_SEARCH_BOXES,
    seed: int = 0,
) -> Suggestion:
    """Search the candidates (module docstring) and return the best, never worse than `spec`."""
    before = coverage_report(
        spec,
        gt,
        threshold=threshold,
        allow_low_quality_matches=allow_low_quality_matches,
        num_worst=num_worst,
    )
    kept = Suggestion(
        before=before,
        after=before,
        sizes=spec.sizes,
        aspect_ratios=spec.aspect_ratios,
        improved=False,
        candidate="recipe",
    )
    if len(gt) == 0:
        return kept
    sample = _sample(gt, max_search_boxes, seed)
    best_name, best_spec, best_score = "recipe", spec, _score(spec, sample, threshold)
    for name, candidate in _candidates(spec, sample):
        score = _score(candidate, sample, threshold)
        if score > best_score:
            best_name, best_spec, best_score = name, candidate, score
    refined, refined_score = _refine(best_spec, best_score, sample, threshold)
    if refined_score > best_score:
        best_name, best_spec = f"{best_name}, then refined size by size", refined
    if best_spec is spec:
        return kept
    after = coverage_report(
        best_spec,
        gt,
        threshold=threshold,
        allow_low_quality_matches=allow_low_quality_matches,
        num_worst=num_worst,
    )
    # The guarantee: a proposal must raise coverage on every box, not only on the sample.
    if _coverage_key(after) <= _coverage_key(before):
        return kept
    return Suggestion(
        before=before,
        after=after,
        sizes=best_spec.sizes,
        aspect_ratios=best_spec.aspect_ratios,
        improved=True,
        candidate=best_name,
    )


def _refine(
    spec: AnchorSpec, score: tuple[int, int, float], gt: GroundTruth, threshold: float
) -> tuple[AnchorSpec, tuple[int, int, float]]:
    """Coordinate search from `spec`: each size, then each shared ratio, times 2**(+-1/8) or
    2**(+-1/4), kept when it scores higher; a few passes, stopping when nothing moves."""
    shared = all(r == spec.aspect_ratios[0] for r in spec.aspect_ratios)
    for _ in range(_REFINE_PASSES):
        moved = False
        for level, level_sizes in enumerate(spec.sizes):
            for i in range(len(level_sizes)):
                for factor in _REFINE_FACTORS:
                    sizes = [list(s) for s in spec.sizes]
                    sizes[level][i] = round(sizes[level][i] * factor, _SIZE_DECIMALS)
                    candidate = spec.with_anchors(sizes=sizes, aspect_ratios=spec.aspect_ratios)
                    candidate_score = _score(candidate, gt, threshold)
                    if candidate_score > score:
                        spec, score, moved = candidate, candidate_score, True
                        break
        for j in range(len(spec.aspect_ratios[0]) if shared else 0):
            for factor in _REFINE_FACTORS:
                ratios = list(spec.aspect_ratios[0])
                ratios[j] = round(ratios[j] * factor, _RATIO_DECIMALS)
                candidate = spec.with_anchors(
                    sizes=spec.sizes, aspect_ratios=[ratios] * len(spec.aspect_ratios)
                )
                candidate_score = _score(candidate, gt, threshold)
                if candidate_score > score:
                    spec, score, moved = candidate, candidate_score, True
                    break
        if not moved:
            break
    return spec, score


def _coverage_key(report: CoverageReport) -> tuple[int, int]:
    """Boxes with a positive anchor, then boxes with any overlap: what "raises coverage" means."""
    return report.overall.positive, report.overall.total - report.overall.none


def _score(spec: AnchorSpec, gt: GroundTruth, threshold: float) -> tuple[int, int, float]:
    iou = best_anchor_ious(spec, gt).iou
    return int((iou >= threshold).sum()), int((iou > 0).sum()), float(iou.double().mean())


def _sample(gt: GroundTruth, limit: int, seed: int) -> GroundTruth:
    if len(gt) <= limit:
        return gt
    keep = np.sort(np.random.default_rng(seed).choice(len(gt), size=limit, replace=False))
    return replace(
        gt,
        boxes=gt.boxes[keep],
        original_boxes=gt.original_boxes[keep],
        labels=gt.labels[keep],
        image_index=gt.image_index[keep],
    )


def _candidates(spec: AnchorSpec, gt: GroundTruth) -> list[tuple[str, AnchorSpec]]:
    """Every candidate but the recipe's own anchors, rounded as printed, without duplicates."""
    per_level = [len(level) for level in spec.sizes]
    shared = len({len(r) for r in spec.aspect_ratios}) == 1
    in_level_order = np.log(np.concatenate([np.asarray(s, dtype=np.float64) for s in spec.sizes]))
    sizes0 = np.sort(in_level_order)
    ratios0 = np.log(np.sort(np.asarray(spec.aspect_ratios[0], dtype=np.float64)))
    box_w = gt.boxes[:, 2].astype(np.float64) - gt.boxes[:, 0]
    box_h = gt.boxes[:, 3].astype(np.float64) - gt.boxes[:, 1]
    log_size = 0.5 * np.log(box_w * box_h)
    log_ratio = np.log(box_h / box_w)

    # (name, log sizes in level order, log shared ratios or None for the recipe's)
    raw: list[tuple[str, np.ndarray, np.ndarray | None]] = []
    for step in _SCALE_STEPS:
        raw.append((f"recipe sizes x 2^({step}/6)", in_level_order + step / 6 * math.log(2), None))
    k, r = len(sizes0), len(ratios0)
    starts = {
        "k-medians from the recipe": (sizes0, ratios0),
        "k-medians from the box quantiles": (
            np.quantile(log_size, (np.arange(k) + 0.5) / k),
            np.quantile(log_ratio, (np.arange(r) + 0.5) / r),
        ),
    }
    for name, (s_init, r_init) in starts.items():
        sizes, ratios = _grid_kmedians(log_size, log_ratio, s_init, r_init, move_ratios=shared)
        raw.append((name, sizes, ratios))
        raw.append((f"{name}, sizes only", sizes, None))
        if shared:
            raw.append((f"{name}, ratios only", in_level_order, ratios))
        for t in _BLENDS:
            blended_ratios = ratios0 + t * (ratios - ratios0) if shared else None
            raw.append(
                (f"{t:g} of the way to {name}", sizes0 + t * (sizes - sizes0), blended_ratios)
            )

    seen = {_key(spec.sizes, spec.aspect_ratios)}
    out = []
    for name, log_sizes, log_ratios in raw:
        flat = np.round(np.exp(log_sizes), _SIZE_DECIMALS)
        if np.any(flat <= 0):
            continue
        bounds = np.cumsum([0, *per_level])
        sizes = [flat[a:b].tolist() for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        if log_ratios is None or not shared:
            ratios = [list(level) for level in spec.aspect_ratios]
        else:
            shared_ratios = np.round(np.exp(np.sort(log_ratios)), _RATIO_DECIMALS)
            if np.any(shared_ratios <= 0):
                continue
            ratios = [shared_ratios.tolist() for _ in spec.aspect_ratios]
        key = _key(sizes, ratios)
        if key in seen:
            continue
        seen.add(key)
        out.append((name, spec.with_anchors(sizes=sizes, aspect_ratios=ratios)))
    return out


def _grid_kmedians(
    log_size: np.ndarray,
    log_ratio: np.ndarray,
    sizes: np.ndarray,
    ratios: np.ndarray,
    *,
    move_ratios: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """k-medians of box shapes on the grid sizes x ratios under 1 - IoU of centred boxes.

    All in log space: box i has log sqrt(area) `log_size[i]` and log(h / w) `log_ratio[i]`.
    Returns (sorted log sizes, sorted log ratios).
    """
    box_s = torch.from_numpy(log_size)
    box_r = torch.from_numpy(log_ratio)
    sizes, ratios = np.sort(sizes), np.sort(ratios)
    for _ in range(_KMEDIANS_ITERATIONS):
        iou = _centred_iou(box_s, box_r, torch.from_numpy(sizes), torch.from_numpy(ratios))
        nearest = iou.reshape(len(box_s), -1).argmax(dim=1).numpy()  # (N,) into sizes x ratios
        size_of, ratio_of = nearest // len(ratios), nearest % len(ratios)
        new_sizes = np.array(
            [
                np.median(log_size[size_of == i]) if np.any(size_of == i) else s
                for i, s in enumerate(sizes)
            ]
        )
        new_ratios = ratios
        if move_ratios:
            new_ratios = np.array(
                [
                    np.median(log_ratio[ratio_of == j]) if np.any(ratio_of == j) else q
                    for j, q in enumerate(ratios)
                ]
            )
        new_sizes, new_ratios = np.sort(new_sizes), np.sort(new_ratios)
        if np.allclose(new_sizes, sizes, atol=1e-6) and np.allclose(new_ratios, ratios, atol=1e-6):
            break
        sizes, ratios = new_sizes, new_ratios
    return sizes, ratios


def _centred_iou(
    box_s: torch.Tensor, box_r: torch.Tensor, sizes: torch.Tensor, ratios: torch.Tensor
) -> torch.Tensor:
    """IoU of centred boxes (N) with centred anchors (S sizes x R ratios) -> (N, S, R).

    A shape of log size s and log ratio q has w = e^(s - q/2), h = e^(s + q/2).
    """
    bw, bh = torch.exp(box_s - box_r / 2), torch.exp(box_s + box_r / 2)  # (N,)
    aw = torch.exp(sizes[:, None] - ratios[None, :] / 2)  # (S, R)
    ah = torch.exp(sizes[:, None] + ratios[None, :] / 2)
    inter = torch.minimum(bw[:, None, None], aw) * torch.minimum(bh[:, None, None], ah)
    return inter / (bw[:, None, None] * bh[:, None, None] + aw * ah - inter)


def _key(sizes: object, ratios: object) -> str:
    return repr(
        ([[float(v) for v in level] for level in sizes], [[float(v) for v in r] for r in ratios])  # type: ignore[union-attr]
    )


def _flow(levels: tuple[tuple[float, ...], ...] | list[list[float]]) -> str:
    return (
        "[" + ", ".join("[" + ", ".join(_number(v) for v in level) + "]" for level in levels) + "]"
    )


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
