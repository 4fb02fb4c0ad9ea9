"""The diagnostics' pictures stay readable at page width whatever the number of classes: the
confusion matrix of an 80-class dataset shows the classes that matter, its JSON keeps all."""

from __future__ import annotations

import numpy as np
from PIL import Image

from retinacli.evaluation.diagnostic_plots import (
    _confusion_view,
    _tick,
    confusion_classes,
    save_confusion_matrix,
)
from retinacli.evaluation.diagnostics import Diagnostics

PAGE_WIDTH = 1600  # pixels: a page is about 1200, the picture may be a little wider


def _diagnostics(counts: np.ndarray, names: list[str] | None = None) -> Diagnostics:
    num_classes = counts.shape[0] - 1
    return Diagnostics(
        class_names=names or [f"class {k}" for k in range(num_classes)],
        recall=[],
        pr_curves={},
        thresholds={},
        per_class={},
        confusion=counts.tolist(),
        errors={},
    )


def _eighty_classes() -> np.ndarray:
    """80 classes (+ background, index 80): 30 present (even indices 0..58) with 40 to 300
    correct boxes and a few misses and false positives each, 50 empty; three heavy confusions
    between odd-one-out pairs: 61 taken for 63 (90 boxes), 65 for 67 (70), 69 for 71 (50)."""
    counts = np.zeros((81, 81), dtype=np.int64)
    rng = np.random.default_rng(0)
    for k in range(0, 60, 2):
        counts[k, k] = rng.integers(40, 300)
        counts[k, 80] = rng.integers(1, 5)  # missed
        counts[80, k] = rng.integers(1, 5)  # false positives
    counts[61, 63], counts[65, 67], counts[69, 71] = 90, 70, 50
    return counts


def test_eighty_classes_show_the_confused_pairs_not_the_empty_classes():
    counts = _eighty_classes()
    shown = confusion_classes(counts)
    assert len(shown) == 25
    assert {61, 63, 65, 67, 69, 71} <= set(shown)  # the heavy confusions
    present = {k for k in range(80) if counts[k].sum() + counts[:, k].sum() > 0}
    assert set(shown) <= present  # no empty class
    assert shown == sorted(shown)  # dataset order
    keep, names, title = _confusion_view(_diagnostics(counts))
    assert keep == [*shown, 80]  # the background row and column kept, last
    assert names == [f"class {k}" for k in shown]
    assert "25 of 80 classes shown: those with the most confusions" in title
    assert "diagnostics.json holds the full matrix" in title


def test_the_rest_of_the_room_goes_to_the_classes_with_most_errors():
    # 30 present classes, each with 1 correct box; class k (even) has k // 2 misses: after the
    # pair (1, 3) (5 boxes), the 23 left are the even classes with the most misses, 58 down to 14.
    counts = np.zeros((81, 81), dtype=np.int64)
    for k in range(0, 56, 2):
        counts[k, k] = 1
        counts[k, 80] = k // 2
    counts[1, 3] = 5
    shown = confusion_classes(counts)
    assert shown == [1, 3, *range(10, 56, 2)]


def test_a_pair_that_does_not_fit_whole_is_skipped():
    # limit 3: pair (0, 1) with 9 takes two places; (2, 3) with 8 needs two, one is left: skipped;
    # (2, 0) with 7 needs only class 2: taken. Class 3 (8 confusions) stays out.
    counts = np.zeros((6, 6), dtype=np.int64)
    counts[0, 1], counts[2, 3], counts[2, 0] = 9, 8, 7
    assert confusion_classes(counts, limit=3) == [0, 1, 2]


def test_when_the_present_classes_fit_they_are_all_shown():
    counts = np.zeros((81, 81), dtype=np.int64)
    for k in (2, 7, 40, 79):
        counts[k, k] = 3
    counts[80, 11] = 1  # a class only predicted (a false positive) is present too
    counts[12, 80] = 1  # and one only in the ground truth (missed)
    assert confusion_classes(counts) == [2, 7, 11, 12, 40, 79]
    _, _, title = _confusion_view(_diagnostics(counts))
    assert "6 of 80 classes shown: those in the ground truth or the predictions" in title


def test_few_classes_keep_every_class_and_the_old_picture(tmp_path):
    counts = np.array([[5, 1, 0, 2], [0, 0, 0, 0], [0, 3, 4, 1], [1, 0, 2, 0]])
    assert confusion_classes(counts) == [0, 1, 2]  # the empty class 1 too
    diag = _diagnostics(counts, ["cat", "dog", "bird"])
    keep, names, title = _confusion_view(diag)
    assert keep == [0, 1, 2, 3]
    assert names == ["cat", "dog", "bird"]
    assert title == "confusion at IoU 0.5 (counts; colour: share of the row)"
    path = save_confusion_matrix(diag, tmp_path / "confusion_matrix.png")
    with Image.open(path) as picture:
        assert picture.size == (530, 430)  # (max(4, 0.45 * 4 + 2.5) + 1) x 4.3 inches at 100 dpi


def test_the_eighty_class_picture_fits_a_page(tmp_path):
    counts = _eighty_classes()
    names = [f"class {k}" for k in range(80)]
    names[61] = "$\\frac{a}{b}"  # mathtext if not escaped: would fail to parse
    names[63] = "bell\x07 and a name far too long to be a tick label in full"
    diag = _diagnostics(counts, names)
    path = save_confusion_matrix(diag, tmp_path / "confusion_matrix.png")
    with Image.open(path) as picture:
        width, height = picture.size
    # before: (0.45 * 81 + 2.5 + 1) x (0.45 * 81 + 2.5) inches, 3995 x 3895 pixels
    assert (width, height) == (1520, 1420)
    assert width <= PAGE_WIDTH and height <= PAGE_WIDTH
    _, shown_names, _ = _confusion_view(diag)
    assert "\\$\\frac{a}{b}" in shown_names  # `$` escaped for matplotlib, as before
    assert "bell\\x07 and a name far too long..." in shown_names  # cut, then escaped
    assert diag.to_json()["confusion_matrix"]["counts"] == counts.tolist()  # the JSON keeps all 81


def test_many_more_classes_still_fit(tmp_path):
    counts = np.zeros((1001, 1001), dtype=np.int64)
    counts[np.arange(1000), np.arange(1000)] = 1  # every class present
    counts[np.arange(0, 1000, 3), np.arange(1, 1001, 3)] = 2
    diag = _diagnostics(counts, [f"a fairly long class name {k}" for k in range(1000)])
    path = save_confusion_matrix(diag, tmp_path / "confusion_matrix.png")
    with Image.open(path) as picture:
        assert picture.width <= PAGE_WIDTH and picture.height <= PAGE_WIDTH


def test_nothing_present_draws_the_background_alone(tmp_path):
    diag = _diagnostics(np.zeros((81, 81), dtype=np.int64))
    assert confusion_classes(diag.confusion) == []
    keep, _, title = _confusion_view(diag)
    assert keep == [80]
    assert "0 of 80 classes shown" in title
    assert save_confusion_matrix(diag, tmp_path / "confusion_matrix.png").is_file()


def test_tick_labels_cut_before_escaping():
    assert _tick("x" * 40) == "x" * 29 + "..."
    assert _tick("$" * 40) == "\\$" * 29 + "..."  # no escape split in half
    assert _tick("cat") == "cat"
