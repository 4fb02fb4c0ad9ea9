"""Diagnostics on pycocotools' own evaluation: PR curves, thresholds, confusion matrix, errors."""

from __future__ import annotations

import numpy as np
import pytest

from retinacli.evaluation.coco_eval import coco_ground_truth, evaluate_boxes
from retinacli.evaluation.diagnostics import diagnose

CATEGORIES = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]


def _gt(images, annotations):
    data = {
        "images": [{"id": i, "file_name": f"{i}.png", "width": 200, "height": 200} for i in images],
        "annotations": [
            {"id": n + 1, "image_id": img, "category_id": cat, "bbox": box, "area": box[2] * box[3], "iscrowd": 0}
            for n, (img, cat, box) in enumerate(annotations)
        ],
        "categories": CATEGORIES,
    }
    return coco_ground_truth(data)


def _run(gt, results, **kwargs):
    metrics, evaluator = evaluate_boxes(gt, results)
    return metrics, diagnose(evaluator, class_names=["cat", "dog"], **kwargs)


def test_perfect_predictions_give_an_identity_matrix_and_no_error():
    annotations = [(1, 1, [10, 10, 50, 50]), (1, 2, [100, 100, 40, 60]), (2, 2, [20, 30, 80, 40])]
    gt = _gt([1, 2], annotations)
    results = [{"image_id": i, "category_id": c, "bbox": b, "score": 0.9} for i, c, b in annotations]
    metrics, diag = _run(gt, results)
    assert diag.confusion == [[1, 0, 0], [0, 2, 0], [0, 0, 0]]
    assert diag.errors["false_positives"] == {k: 0 for k in ("class", "localisation", "both", "duplicate", "background")}
    assert all(v == {"touched": 0, "untouched": 0} for v in diag.errors["missed"].values())
    assert all(gain == pytest.approx(0.0, abs=1e-9) for gain in diag.errors["ap50_gain"].values())
    for name in ("cat", "dog"):
        stats = diag.per_class[name]
        assert (stats["precision"], stats["recall"], stats["f1"]) == (1.0, 1.0, 1.0)
        assert diag.thresholds[name] == pytest.approx(0.9)
    assert metrics["AP"] == pytest.approx(100.0)


def test_one_error_of_each_type_is_named_as_that_type():
    # image 1: a cat (A) and a dog (B) far apart; image 2: a cat (C) nobody finds.
    a, b, c = [10, 10, 40, 40], [120, 120, 40, 40], [60, 60, 30, 30]
    gt = _gt([1, 2], [(1, 1, a), (1, 2, b), (2, 1, c)])
    results = [
        {"image_id": 1, "category_id": 1, "bbox": a, "score": 0.95},  # true positive
        {"image_id": 1, "category_id": 1, "bbox": [12, 12, 40, 40], "score": 0.9},  # duplicate of A
        {"image_id": 1, "category_id": 2, "bbox": [11, 11, 40, 40], "score": 0.85},  # dog on the cat: class
        # A dog box overlapping B at IoU 20*40 / (1600 + 1600 - 800) = 1/3: localisation
        {"image_id": 1, "category_id": 2, "bbox": [140, 120, 40, 40], "score": 0.8},
        # A cat box on B at IoU 1/3: both (another class, poorly placed)
        {"image_id": 1, "category_id": 1, "bbox": [120, 140, 40, 40], "score": 0.75},
        {"image_id": 1, "category_id": 1, "bbox": [150, 10, 30, 30], "score": 0.99},  # background
    ]
    _, diag = _run(gt, results, threshold=0.5)
    assert diag.errors["false_positives"] == {"class": 1, "localisation": 1, "both": 1, "duplicate": 1, "background": 1}
    assert diag.errors["missed"]["small"] == {"touched": 0, "untouched": 1}  # C (30 x 30 < 32²)
    assert diag.errors["missed"]["medium"] == {"touched": 1, "untouched": 0}  # B: only poor boxes
    # Rows: ground truth cat, dog, false positives; columns: predicted cat, dog, missed.
    # A: cat TP. B: missed (the localisation box is 1/3 IoU). The dog on A overlaps an already
    # matched cat: a false positive (A is counted once, on the diagonal).
    assert diag.confusion == [[1, 0, 1], [0, 0, 1], [3, 2, 0]]
    counts = np.asarray(diag.confusion)
    assert counts.sum() == 3 + 5  # ground-truth boxes + false positives
    gains = diag.errors["ap50_gain"]
    # The background box outscores the true positive: removing it raises the cat's precision.
    # The duplicate comes after the match, where precision no longer counts: it costs nothing.
    assert gains["background"] > 0 and gains["missed"] > 0 and gains["duplicate"] == pytest.approx(0.0)
    worst = diag.images[0]
    assert worst["image_id"] == 1 and worst["num_errors"] == 6  # 5 false positives and B missed
    assert sorted(d["error"] or "tp" for d in worst["detections"]) == sorted(
        ["tp", "duplicate", "class", "localisation", "both", "background"]
    )


def test_a_wrong_class_on_an_unfound_object_is_off_the_diagonal():
    box = [10, 10, 50, 50]
    gt = _gt([1], [(1, 1, box)])
    _, diag = _run(gt, [{"image_id": 1, "category_id": 2, "bbox": box, "score": 0.9}], threshold=0.5)
    assert diag.confusion == [[0, 1, 0], [0, 0, 0], [0, 0, 0]]  # a cat predicted as a dog
    assert diag.errors["false_positives"]["class"] == 1
    assert diag.errors["ap50_gain"]["class"] == pytest.approx(100.0)  # relabelled, it is perfect


def test_pr_curve_areas_are_the_reported_aps():
    rng = np.random.default_rng(0)
    annotations, results = [], []
    for image in range(1, 31):
        for _ in range(rng.integers(1, 5)):
            x, y, w, h = (float(v) for v in (*rng.uniform(0, 120, 2), *rng.uniform(15, 70, 2)))
            category = int(rng.integers(1, 3))
            annotations.append((image, category, [x, y, w, h]))
            if rng.random() < 0.8:  # found, with some jitter and sometimes the wrong class
                jitter = rng.normal(0, 4, 4)
                label = category if rng.random() < 0.85 else 3 - category
                results.append({"image_id": image, "category_id": label, "bbox": [x + jitter[0], y + jitter[1], w + jitter[2], h + jitter[3]], "score": float(rng.uniform(0.3, 1))})
        for _ in range(rng.integers(0, 3)):  # clutter
            results.append({"image_id": image, "category_id": int(rng.integers(1, 3)), "bbox": [*rng.uniform(0, 150, 2).tolist(), 20.0, 20.0], "score": float(rng.uniform(0, 0.6))})
    gt = _gt(range(1, 31), annotations)
    metrics, diag = _run(gt, results)
    for name in ("cat", "dog"):
        curves = diag.pr_curves[name]
        assert curves["AP"] == pytest.approx(metrics["per_category"][name], abs=1e-3)
        assert float(np.mean(curves["iou50_95"])) * 100 == pytest.approx(metrics["per_category"][name], abs=1e-3)
        assert 0 < diag.thresholds[name] < 1
    ap50_mean = np.mean([diag.pr_curves[n]["AP50"] for n in ("cat", "dog")])
    assert ap50_mean == pytest.approx(metrics["AP50"], abs=1e-3)
    counts = np.asarray(diag.confusion)
    false_positives = counts[-1].sum() + sum(
        counts[i, j] for i in range(2) for j in range(2) if i != j
    )
    # every ground-truth box once (a row of its class), and every false positive once
    assert counts[:2].sum() == len(annotations)
    assert counts.sum() == len(annotations) + counts[-1].sum()
    assert false_positives >= counts[-1].sum()
