"""results.png: one panel per training quantity and per evaluation metric, the splits of a
metric on one panel."""

from __future__ import annotations

import io

from PIL import Image

from retinacli.training.results_plot import metric_panels, results_png


def test_splits_of_one_metric_share_a_panel_in_coco_order():
    names = ["val/AP50", "test/AP", "val/AP", "val/recall", "test/AP50", "loss_cls", "val/APl"]
    assert metric_panels(names) == {
        "AP": ["test/AP", "val/AP"],
        "AP50": ["test/AP50", "val/AP50"],
        "APl": ["val/APl"],
        "recall": ["val/recall"],
    }


def test_a_run_with_val_and_test_draws_ten_panels_not_sixteen():
    metrics = ("AP", "AP50", "AP75", "APs", "APm", "APl")
    records = [{"iteration": i, "loss_cls": 1.0, "loss_box_reg": 0.5, "total_loss": 1.5, "lr": 0.01} for i in range(6)]
    records += [{"iteration": i, **{f"val/{m}": 0.1 * i for m in metrics}} for i in (1, 3, 5)]
    records.append({"iteration": 5, **{f"test/{m}": 0.4 for m in metrics}})
    with Image.open(io.BytesIO(results_png(records))) as picture:
        # 4 training panels + 6 metric panels = 10: 4 columns x 3 rows of 400 x 300 px
        assert picture.format == "PNG" and picture.size == (1600, 900)


def test_nothing_logged_draws_nothing():
    assert results_png([]) is None
