"""The bootstrap of COCO AP: pycocotools' own numbers at unit weights, intervals that contain
the estimate and shrink with more images, and a paired difference of a model with itself at 0."""

from __future__ import annotations

import random
import warnings

import numpy as np
import pytest

from retinacli.evaluation.bootstrap import (
    ImageMatches,
    average_precision,
    bootstrap_intervals,
    paired_difference,
    resample_weights,
)
from retinacli.evaluation.coco_eval import coco_ground_truth, evaluate_boxes


def synthetic(num_images: int, seed: int, *, noise: float = 6.0, classes: int = 3):
    """A COCO json of `num_images` images and results of a noisy detector of its boxes: each box
    found (shifted by `noise` pixels, sometimes as another class), plus false positives."""
    rng = random.Random(seed)
    images, annotations, results = [], [], []
    for image_id in range(1, num_images + 1):
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "width": 320, "height": 240})
        for _ in range(rng.randint(0, 4)):
            w, h = rng.uniform(16, 120), rng.uniform(16, 120)
            x, y = rng.uniform(0, 320 - w), rng.uniform(0, 240 - h)
            category = rng.randint(1, classes)
            annotations.append(
                {"id": len(annotations) + 1, "image_id": image_id, "category_id": category, "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0}
            )
            if rng.random() < 0.8:
                found = category if rng.random() < 0.9 else rng.randint(1, classes)
                box = [x + rng.gauss(0, noise), y + rng.gauss(0, noise), w + rng.gauss(0, noise), h + rng.gauss(0, noise)]
                results.append({"image_id": image_id, "category_id": found, "bbox": box, "score": rng.random()})
        for _ in range(rng.randint(0, 2)):
            results.append(
                {"image_id": image_id, "category_id": rng.randint(1, classes), "bbox": [rng.uniform(0, 200), rng.uniform(0, 150), 40.0, 40.0], "score": rng.random() * 0.6}
            )
    categories = [{"id": c, "name": f"c{c}"} for c in range(1, classes + 1)]
    return {"images": images, "annotations": annotations, "categories": categories}, results


def evaluated(num_images: int, seed: int, **kwargs):
    data, results = synthetic(num_images, seed, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metrics, evaluator = evaluate_boxes(coco_ground_truth(data), results)
    return metrics, ImageMatches.of(evaluator)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_unit_weights_give_pycocotools_ap_exactly(seed: int) -> None:
    metrics, matches = evaluated(60, seed)
    ours = average_precision(matches, np.ones((1, matches.num_images)))
    assert ours["AP"][0] == pytest.approx(metrics["AP"], abs=1e-9)
    assert ours["AP50"][0] == pytest.approx(metrics["AP50"], abs=1e-9)


def test_an_image_drawn_twice_counts_as_two_copies_of_it() -> None:
    # the weighted pooling equals pycocotools on a dataset where the images really are copied
    data, results = synthetic(12, seed=5)
    copies = {"images": list(data["images"]), "annotations": list(data["annotations"]), "categories": data["categories"]}
    copied_results = list(results)
    twice = [3, 7]  # these images appear twice
    for n, image_id in enumerate(twice):
        new_id = 1000 + n
        copies["images"].append({**data["images"][image_id - 1], "id": new_id})
        for a in data["annotations"]:
            if a["image_id"] == image_id:
                copies["annotations"].append({**a, "id": 5000 + len(copies["annotations"]), "image_id": new_id})
        copied_results += [{**r, "image_id": new_id} for r in results if r["image_id"] == image_id]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected, _ = evaluate_boxes(coco_ground_truth(copies), copied_results)
        _, evaluator = evaluate_boxes(coco_ground_truth(data), results)
    matches = ImageMatches.of(evaluator)
    weights = np.ones((1, matches.num_images))
    for image_id in twice:
        weights[0, matches.image_ids.index(image_id)] = 2
    assert average_precision(matches, weights)["AP"][0] == pytest.approx(expected["AP"], abs=1e-6)


def test_resampled_weights_draw_n_images() -> None:
    weights = resample_weights(50, 200, seed=3)
    assert weights.shape == (200, 50)
    assert (weights.sum(axis=1) == 50).all()
    assert np.array_equal(weights, resample_weights(50, 200, seed=3))
    assert not np.array_equal(weights, resample_weights(50, 200, seed=4))


def test_the_interval_contains_the_estimate_and_shrinks_with_more_images() -> None:
    small = bootstrap_intervals(evaluated(40, seed=11)[1], samples=300, seed=0)
    large = bootstrap_intervals(evaluated(400, seed=11)[1], samples=300, seed=0)
    for intervals in (small, large):
        for name in ("AP", "AP50"):
            ci = intervals[name]
            assert ci.low < ci.estimate < ci.high, (name, ci)
    for name in ("AP", "AP50"):
        assert large[name].high - large[name].low < 0.6 * (small[name].high - small[name].low)


def test_a_model_against_itself_differs_by_exactly_zero() -> None:
    _, matches = evaluated(80, seed=2)
    difference = paired_difference(matches, matches, samples=200, seed=0)
    for name in ("AP", "AP50"):
        assert difference[name].estimate == 0
        assert difference[name].low == 0 and difference[name].high == 0


def test_a_better_model_is_found_better() -> None:
    _, worse = evaluated(200, seed=4, noise=14.0)
    _, better = evaluated(200, seed=4, noise=2.0)
    difference = paired_difference(worse, better, samples=300, seed=0)["AP"]
    assert difference.estimate > 0 and difference.low > 0


def test_evaluations_of_other_images_are_refused() -> None:
    with pytest.raises(ValueError, match="same images"):
        paired_difference(evaluated(30, seed=0)[1], evaluated(31, seed=0)[1], samples=10)
