"""Hand-made images for each issue kind: the changed box is found, its score above every
untouched box's; and properties of the scores on any input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retinacli.audit.scoring import LABEL_KINDS, AuditThresholds, score_image

# Three objects, each labelled and detected confidently and well.
BOXES = np.array([[10, 10, 50, 50], [100, 20, 160, 80], [40, 120, 100, 180]], dtype=np.float32)
CLASSES = np.array([0, 1, 2])
DET_BOXES = BOXES + np.array([1, -1, 1, 2], dtype=np.float32)  # IoU > 0.85 with each label
DET_SCORES = np.array([0.9, 0.8, 0.85], dtype=np.float32)
T = AuditThresholds()


def _score(label_boxes, label_classes, det_boxes=DET_BOXES, det_scores=DET_SCORES, det_classes=CLASSES, crowd=None):
    return score_image(
        label_boxes=np.asarray(label_boxes, dtype=np.float32),
        label_classes=np.asarray(label_classes),
        crowd_boxes=np.zeros((0, 4), np.float32) if crowd is None else np.asarray(crowd, np.float32),
        det_boxes=np.asarray(det_boxes, dtype=np.float32),
        det_scores=np.asarray(det_scores, dtype=np.float32),
        det_classes=np.asarray(det_classes),
        thresholds=T,
    )


def _column(kind: str) -> int:
    return LABEL_KINDS.index(kind)


def test_clean_labels_have_no_issue() -> None:
    scores = _score(BOXES, CLASSES)
    assert (scores.label_kind == -1).all()
    assert (scores.duplicate_of == -1).all()
    assert not scores.missing_reported.any()
    assert (scores.missing == 0).all()


def test_a_removed_box_is_missing_with_the_highest_missing_score() -> None:
    scores = _score(BOXES[[0, 2]], CLASSES[[0, 2]])  # the label of object 1 removed
    assert scores.missing_reported.tolist() == [False, True, False]
    assert scores.missing[1] == pytest.approx(0.8)
    assert scores.missing[1] > max(scores.missing[0], scores.missing[2])
    assert (scores.label_kind == -1).all()


def test_a_box_added_on_background_is_spurious() -> None:
    added = np.array([[200, 200, 240, 240]], dtype=np.float32)
    scores = _score(np.concatenate([BOXES, added]), np.append(CLASSES, 0))
    assert scores.label_kind.tolist() == [-1, -1, -1, _column("spurious")]
    spurious = scores.labels[:, _column("spurious")]
    assert spurious[3] == pytest.approx(1.0)
    assert spurious[3] > spurious[:3].max()
    assert scores.label_detection[3] == -1


def test_a_swapped_class_is_wrong_class_naming_the_detection() -> None:
    swapped = CLASSES.copy()
    swapped[1] = 2  # object 1 (class 1) labelled as class 2
    scores = _score(BOXES, swapped)
    assert scores.label_kind.tolist() == [-1, _column("wrong_class"), -1]
    wrong = scores.labels[:, _column("wrong_class")]
    assert wrong[1] == pytest.approx(0.8)
    assert wrong[1] > max(wrong[0], wrong[2])
    assert scores.label_detection[1] == 1


def test_a_box_shifted_by_half_its_size_is_a_poor_box() -> None:
    shifted = BOXES.copy()
    shifted[2] += np.array([30, 0, 30, 0], dtype=np.float32)  # half its width to the right
    scores = _score(shifted, CLASSES)
    assert scores.label_kind.tolist() == [-1, -1, _column("poor_box")]
    poor = scores.labels[:, _column("poor_box")]
    assert 0.5 < poor[2] < 0.85  # 0.85 x (1 - IoU ~ 1/3)
    assert poor[2] > max(poor[0], poor[1])
    assert scores.label_detection[2] == 2
    assert not scores.missing_reported.any()  # the detection overlaps the shifted label


def test_a_box_labelled_twice_is_a_duplicate_of_the_first() -> None:
    twice = np.concatenate([BOXES, BOXES[[1]] + 1.0])
    scores = _score(twice, np.append(CLASSES, 1))
    assert scores.duplicate_of.tolist() == [-1, -1, -1, 1]
    duplicate = scores.labels[:, _column("duplicate")]
    assert duplicate[3] > T.duplicate_iou > duplicate[:3].max()
    # the same box under another class is not a duplicate (it is a class question)
    other = _score(twice, np.append(CLASSES, 0))
    assert other.duplicate_of.tolist() == [-1, -1, -1, -1]


def test_a_detection_on_a_crowd_region_is_not_missing() -> None:
    scores = _score(BOXES[[0, 2]], CLASSES[[0, 2]], crowd=BOXES[[1]])
    assert not scores.missing_reported.any()


def test_missing_detections_of_one_object_are_reported_once() -> None:
    det_boxes = np.concatenate([DET_BOXES, DET_BOXES[[1]] + 2.0])
    scores = _score(
        BOXES[[0, 2]], CLASSES[[0, 2]], det_boxes=det_boxes,
        det_scores=np.append(DET_SCORES, 0.7), det_classes=np.append(CLASSES, 0),
    )
    assert scores.missing_reported.tolist() == [False, True, False, False]  # the best one


def test_an_unconfident_detection_keeps_a_label_spurious_but_ranks_it_lower() -> None:
    scores = _score(BOXES, CLASSES, det_scores=np.array([0.9, 0.3, 0.85], dtype=np.float32))
    assert scores.label_kind[1] == _column("spurious")
    assert scores.labels[1, _column("spurious")] == pytest.approx(0.7)
    assert scores.label_detection[1] == 1


def test_empty_images() -> None:
    nothing = _score(np.zeros((0, 4)), np.zeros(0, np.int64))
    assert nothing.labels.shape == (0, 4)
    assert nothing.missing_reported.all()
    blind = _score(BOXES, CLASSES, det_boxes=np.zeros((0, 4)), det_scores=np.zeros(0), det_classes=np.zeros(0, np.int64))
    assert (blind.label_kind == _column("spurious")).all()
    assert blind.labels[:, _column("spurious")] == pytest.approx([1.0, 1.0, 1.0])


@pytest.mark.parametrize(
    "changes",
    [{"score_thresh": 0.0}, {"match_iou": 1.5}, {"overlap_iou": 0.6}, {"duplicate_iou": -1.0}],
)
def test_thresholds_out_of_range_are_refused(changes: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        AuditThresholds(**changes)


_coord = st.floats(0, 200, allow_nan=False, width=32)


def _boxes(n: int) -> st.SearchStrategy[np.ndarray]:
    return st.lists(st.tuples(_coord, _coord, st.floats(1, 80, width=32), st.floats(1, 80, width=32)), min_size=n, max_size=n).map(
        lambda rows: np.array([[x, y, x + w, y + h] for x, y, w, h in rows], dtype=np.float32).reshape(-1, 4)
    )


@settings(max_examples=60, deadline=None)
@given(
    g=st.integers(0, 6),
    d=st.integers(0, 6),
    data=st.data(),
)
def test_scores_lie_in_0_1_and_each_label_has_at_most_one_kind(g: int, d: int, data: st.DataObject) -> None:
    labels = data.draw(_boxes(g))
    dets = data.draw(_boxes(d))
    label_classes = np.array(data.draw(st.lists(st.integers(0, 2), min_size=g, max_size=g)), dtype=np.int64)
    det_classes = np.array(data.draw(st.lists(st.integers(0, 2), min_size=d, max_size=d)), dtype=np.int64)
    det_scores = np.array(data.draw(st.lists(st.floats(0.05, 1.0), min_size=d, max_size=d)), dtype=np.float32)
    scores = _score(labels, label_classes, det_boxes=dets, det_scores=det_scores, det_classes=det_classes)
    assert scores.labels.shape == (g, 4)
    assert ((scores.labels >= 0) & (scores.labels <= 1 + 1e-6)).all()
    assert ((scores.missing >= 0) & (scores.missing <= 1)).all()
    assert set(scores.label_kind.tolist()) <= {-1, 0, 1, 2}
    # a reported kind points at a detection of the right class, or at none
    for k, kind in enumerate(scores.label_kind.tolist()):
        det = int(scores.label_detection[k])
        if kind == _column("wrong_class"):
            assert det_classes[det] != label_classes[k]
        elif kind == _column("poor_box"):
            assert det_classes[det] == label_classes[k]
        elif kind == -1:
            assert det == -1
    # a label drawn exactly on a confident detection of its class is never reported
    if d:
        same = _score(dets[:1], det_classes[:1], det_boxes=dets[:1], det_scores=np.array([0.9], np.float32), det_classes=det_classes[:1])
        assert same.label_kind.tolist() == [-1]
