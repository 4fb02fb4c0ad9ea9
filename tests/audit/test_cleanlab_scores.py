"""cleanlab's scores of the same labels and detections, in our issue format."""

from __future__ import annotations

import pytest

from retinacli.audit.issues import predictions_from_results
from tests.audit.handmade import RESULTS

pytest.importorskip("cleanlab", reason="cleanlab is an optional extra: pip install -e '.[dev]'")


def test_cleanlab_scores_name_the_same_boxes(dataset) -> None:
    from retinacli.audit.cleanlab_scores import cleanlab_scores

    scores = cleanlab_scores(dataset, predictions_from_results(RESULTS, dataset), confident=0.5)
    quality = scores["image_quality"]
    assert [q["quality"] for q in quality] == sorted(q["quality"] for q in quality)
    assert {q["image_id"] for q in quality} == {1, 2, 3}
    boxes = scores["boxes"]
    assert set(boxes) == {"missing", "wrong_class", "poor_box"}
    assert {i["annotation_id"] for i in boxes["wrong_class"]} == {1, 2, 3, 4, 5}  # every label scored
    assert boxes["wrong_class"][0]["annotation_id"] == 2  # the square labelled triangle ranks first
    assert boxes["missing"][0]["bbox"] == [100, 30, 40, 40] and boxes["missing"][0]["image_id"] == 2
    for kind in boxes.values():
        assert all(0.0 <= i["score"] <= 1.0 for i in kind)
        assert [i["score"] for i in kind] == sorted((i["score"] for i in kind), reverse=True)
