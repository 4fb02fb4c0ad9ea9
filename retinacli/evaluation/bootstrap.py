"""Confidence intervals of COCO box AP by resampling images (the bootstrap), from pycocotools'
own per-image matches.

pycocotools matches detections to ground truth once per image and category (`COCOeval.evaluate`:
`evalImgs`), then `accumulate` pools the matches of all images into precision/recall curves. A
bootstrap sample draws N images with replacement; an image drawn w times counts w times. So the
matches are read once (`ImageMatches.of`) and each sample only re-pools them with its image
weights (`average_precision`): the same sort order, cumulative true/false positives weighted by
the image counts, the same precision envelope and the same 101 recall points as `accumulate`.
With every weight 1 the result is pycocotools' AP exactly (tested), for area "all" and its
largest max-detections setting (100), the numbers `retina eval` reports as AP and AP50.

The interval is the percentile interval of the resampled APs (2.5th and 97.5th percentile for
95 %): what a rerun on another draw of images of the same kind would give, not the spread over
training seeds (train twice for that).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_SAMPLES = 1000
_CHUNK = 64  # bootstrap samples pooled at once: (chunk, T, D) arrays
_EPS = np.spacing(1)  # pycocotools' guard against 0/0 in precision


@dataclass(frozen=True)
class CategoryMatches:
    """The detections of one category over all images, in pycocotools' pooled order
    (descending score, stable): their image, and whether each is a true or false positive at
    each IoU threshold (both False for an ignored detection)."""

    image: np.ndarray  # (D,) index into ImageMatches.image_ids
    true_positive: np.ndarray  # (T, D) bool
    false_positive: np.ndarray  # (T, D) bool
    ground_truth: np.ndarray  # (N,) non-ignored ground-truth boxes per image


@dataclass(frozen=True)
class ImageMatches:
    """Per-image matches of one evaluation, ready to re-pool under image weights."""

    image_ids: tuple[int, ...]  # (N,)
    iou_thresholds: np.ndarray  # (T,)
    recall_thresholds: np.ndarray  # (R,)
    categories: tuple[CategoryMatches, ...]  # (K,)

    @classmethod
    def of(cls, evaluator: Any) -> ImageMatches:
        """The matches of an evaluated `COCOeval` (bbox; after `evaluate()`), for area "all"
        and its largest max-detections setting."""
        params = evaluator.params
        image_ids = tuple(int(i) for i in params.imgIds)
        n_images, n_areas = len(image_ids), len(params.areaRng)
        max_det = int(params.maxDets[-1])
        n_thresholds = len(params.iouThrs)
        categories = []
        for k in range(len(params.catIds) if params.useCats else 1):
            entries = evaluator.evalImgs[k * n_areas * n_images : k * n_areas * n_images + n_images]  # area "all"
            present = [(i, e) for i, e in enumerate(entries) if e is not None]
            ground_truth = np.zeros(n_images, dtype=np.int64)
            for i, e in present:
                ground_truth[i] = int(np.count_nonzero(np.asarray(e["gtIgnore"]) == 0))
            if present:
                scores = np.concatenate([np.asarray(e["dtScores"][:max_det], dtype=np.float64) for _, e in present])
                image = np.concatenate([np.full(min(len(e["dtScores"]), max_det), i, dtype=np.int64) for i, e in present])
                matched = np.concatenate([np.asarray(e["dtMatches"]).reshape(n_thresholds, -1)[:, :max_det] for _, e in present], axis=1)
                ignored = np.concatenate([np.asarray(e["dtIgnore"]).reshape(n_thresholds, -1)[:, :max_det] for _, e in present], axis=1)
                order = np.argsort(-scores, kind="mergesort")  # as accumulate: ties keep image order
                matched, ignored, image = matched[:, order] != 0, ignored[:, order] != 0, image[order]
            else:
                image = np.zeros(0, dtype=np.int64)
                matched = ignored = np.zeros((n_thresholds, 0), dtype=bool)
            categories.append(
                CategoryMatches(
                    image=image,
                    true_positive=matched & ~ignored,
                    false_positive=~matched & ~ignored,
                    ground_truth=ground_truth,
                )
            )
        return cls(
            image_ids=image_ids,
            iou_thresholds=np.asarray(params.iouThrs, dtype=np.float64),
            recall_thresholds=np.asarray(params.recThrs, dtype=np.float64),
            categories=tuple(categories),
        )

    @property
    def num_images(self) -> int:
        return len(self.image_ids)


def average_precision(matches: ImageMatches, weights: np.ndarray) -> dict[str, np.ndarray]:
    """COCO AP (IoU 0.50:0.95) and AP50 in percent under image weights.

    weights: (B, N) non-negative counts of each image in each of B samples (all ones: the
        evaluation itself).
    Returns {"AP": (B,), "AP50": (B,)}; NaN where no category has ground truth in a sample.
    """
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 2 or weights.shape[1] != matches.num_images:
        raise ValueError(f"weights must be (B, {matches.num_images}), got {weights.shape}")
    t50 = int(np.argmin(np.abs(matches.iou_thresholds - 0.5)))
    ap, ap50 = [], []
    for start in range(0, len(weights), _CHUNK):
        chunk = weights[start : start + _CHUNK]
        precision = _precision(matches, chunk)  # (b, K, T, R), NaN where no ground truth
        ap.append(_mean_defined(precision.reshape(len(chunk), -1)))
        ap50.append(_mean_defined(precision[:, :, t50, :].reshape(len(chunk), -1)))
    return {"AP": np.concatenate(ap) * 100, "AP50": np.concatenate(ap50) * 100}


def _precision(matches: ImageMatches, weights: np.ndarray) -> np.ndarray:
    """Interpolated precision at each recall threshold, (B, K, T, R); NaN for a category without
    ground truth in a sample (pycocotools' -1)."""
    recall_points = matches.recall_thresholds
    n_samples, n_thresholds = len(weights), len(matches.iou_thresholds)
    out = np.full((n_samples, len(matches.categories), n_thresholds, len(recall_points)), np.nan)
    for k, cat in enumerate(matches.categories):
        positives = weights @ cat.ground_truth  # (B,)
        defined = positives > 0
        if not defined.any():
            continue
        n_dets = cat.image.size
        if n_dets == 0:
            out[defined, k] = 0.0
            continue
        per_det = weights[:, cat.image][:, None, :]  # (B, 1, D)
        tp = np.cumsum(cat.true_positive[None] * per_det, axis=2)  # (B, T, D)
        fp = np.cumsum(cat.false_positive[None] * per_det, axis=2)
        with np.errstate(invalid="ignore", divide="ignore"):
            recall = tp / positives[:, None, None]
        precision = tp / (tp + fp + _EPS)
        # the envelope: each precision raised to the best one at a higher recall
        precision = np.maximum.accumulate(precision[:, :, ::-1], axis=2)[:, :, ::-1]
        padded = np.concatenate([precision, np.zeros((n_samples, n_thresholds, 1))], axis=2)
        for b in np.flatnonzero(defined):
            for t in range(n_thresholds):
                index = np.searchsorted(recall[b, t], recall_points, side="left")  # D where never reached
                out[b, k, t] = padded[b, t, index]
    return out


def _mean_defined(values: np.ndarray) -> np.ndarray:
    """Row means over the defined (non-NaN) entries; NaN for a row with none."""
    defined = ~np.isnan(values)
    counts = defined.sum(axis=1)
    sums = np.where(defined, values, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def resample_weights(num_images: int, samples: int, seed: int) -> np.ndarray:
    """(samples, num_images) counts: each row N images drawn with replacement."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, num_images, size=(samples, num_images))
    weights = np.zeros((samples, num_images), dtype=np.float64)
    np.add.at(weights, (np.arange(samples)[:, None], draws), 1.0)
    return weights


@dataclass(frozen=True)
class Interval:
    """A point estimate and its percentile interval at `level`."""

    estimate: float
    low: float
    high: float
    level: float = 0.95

    @property
    def defined(self) -> bool:
        """False when no sample had ground truth to score (the bounds are NaN)."""
        return not (np.isnan(self.low) or np.isnan(self.high))

    def as_list(self) -> list[float]:
        return [self.low, self.high]


def _interval(estimate: float, resampled: np.ndarray, level: float) -> Interval:
    values = resampled[~np.isnan(resampled)]
    if values.size == 0:
        return Interval(estimate, float("nan"), float("nan"), level)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return Interval(float(estimate), float(low), float(high), level)


def bootstrap_intervals(
    matches: ImageMatches, *, samples: int = DEFAULT_SAMPLES, seed: int = 0, level: float = 0.95
) -> dict[str, Interval]:
    """{"AP": Interval, "AP50": Interval} of one evaluation, from `samples` resamplings of its
    images (seeded: the same call gives the same interval)."""
    _check(samples, level)
    point = average_precision(matches, np.ones((1, matches.num_images)))
    resampled = average_precision(matches, resample_weights(matches.num_images, samples, seed))
    return {name: _interval(float(point[name][0]), resampled[name], level) for name in ("AP", "AP50")}


def paired_difference(
    first: ImageMatches,
    second: ImageMatches,
    *,
    samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Interval]:
    """{"AP": Interval, "AP50": Interval} of `second` minus `first`, two evaluations of the same
    images: each sample draws one set of images and scores both models on it, so what the two
    share (hard images, easy images) cancels out."""
    _check(samples, level)
    if first.image_ids != second.image_ids:
        raise ValueError("the two evaluations are not of the same images")
    ones = np.ones((1, first.num_images))
    weights = resample_weights(first.num_images, samples, seed)
    a_point, b_point = average_precision(first, ones), average_precision(second, ones)
    a, b = average_precision(first, weights), average_precision(second, weights)
    return {
        name: _interval(float(b_point[name][0] - a_point[name][0]), b[name] - a[name], level) for name in ("AP", "AP50")
    }


def _check(samples: int, level: float) -> None:
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")


__all__: Sequence[str] = (
    "DEFAULT_SAMPLES",
    "ImageMatches",
    "Interval",
    "average_precision",
    "bootstrap_intervals",
    "paired_difference",
    "resample_weights",
)
