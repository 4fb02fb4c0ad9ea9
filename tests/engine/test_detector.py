"""RetinaNet end to end on a tiny model: losses, normaliser, no-GT images, invariances, inference."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from retinacli.engine.detector import RetinaNet
from retinacli.engine.structures import Targets
from tests.engine.builders import build_retinanet, random_images

TINY_SIZES = [[16.0], [32.0], [64.0], [128.0], [256.0]]


def tiny(**overrides) -> RetinaNet:
    torch.manual_seed(0)
    kwargs = {
        "fpn_channels": 32,
        "head_convs": 1,
        "num_classes": 2,
        "anchor_sizes": TINY_SIZES,
        "aspect_ratios": [[1.0]],
        "score_thresh": 0.005,
        "topk_candidates": 50,
    }
    kwargs.update(overrides)
    return build_retinanet(**kwargs)


def targets() -> list[Targets]:
    return [
        Targets(
            boxes=torch.tensor([[4.0, 6.0, 30.0, 40.0], [40.0, 10.0, 90.0, 60.0]]),
            labels=torch.tensor([1, 0]),
        ),
        Targets(boxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.int64)),
        Targets(boxes=torch.tensor([[10.0, 10.0, 50.0, 30.0]]), labels=torch.tensor([1])),
    ]


SIZES = [(64, 96), (60, 90), (70, 64)]


def test_training_outputs_gradients_and_normalizer() -> None:
    model = tiny().train()
    out = model(random_images(SIZES), targets())
    assert set(out) == {"loss_cls", "loss_box_reg", "num_pos_anchors"}
    assert (
        out["loss_cls"].dim() == 0
        and out["loss_cls"].dtype == torch.float32
        and out["loss_cls"].requires_grad
    )
    assert out["num_pos_anchors"].dtype == torch.int64 and out["num_pos_anchors"].dim() == 0
    num_pos = int(out["num_pos_anchors"])
    assert num_pos > 0
    assert model.loss_normalizer == 0.9 * 100.0 + (1 - 0.9) * num_pos
    (out["loss_cls"] + out["loss_box_reg"]).backward()
    assert model.backbone.body.conv1.weight.grad is None  # frozen by freeze_at=2
    assert model.backbone.body.layer2[0].conv1.weight.grad is not None
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    second = model(random_images(SIZES), targets())
    assert model.loss_normalizer == 0.9 * (0.9 * 100.0 + (1 - 0.9) * num_pos) + (1 - 0.9) * int(
        second["num_pos_anchors"]
    )


def test_batch_without_gt_has_zero_box_loss_and_finite_gradients() -> None:
    model = tiny().train()
    empty = [Targets(boxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.int64))] * 2
    out = model(random_images(SIZES[:2]), empty)
    assert out["loss_box_reg"].item() == 0.0 and int(out["num_pos_anchors"]) == 0
    assert model.loss_normalizer == 0.9 * 100.0 + (1 - 0.9) * 1
    (out["loss_cls"] + out["loss_box_reg"]).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_batched_labels_equal_one_image_at_a_time() -> None:
    model = tiny().eval()
    with torch.no_grad():
        net = model.run_network(random_images(SIZES))
    anchors = torch.cat(net.anchors)
    batched = model.label_anchors(anchors, targets())
    for i, t in enumerate(targets()):
        single = model.label_anchors(anchors, [t])
        assert torch.equal(batched.gt_labels[i], single.gt_labels[0])
        positive = (single.gt_labels[0] >= 0) & (single.gt_labels[0] != model.num_classes)
        assert torch.equal(
            batched.matched_gt_boxes[i][positive], single.matched_gt_boxes[0][positive]
        )
    assert bool((batched.gt_labels[1] == model.num_classes).all())  # no GT: all background


def test_gt_order_does_not_change_the_losses() -> None:
    model = tiny().train()
    images = random_images(SIZES)
    shuffled = [Targets(boxes=t.boxes.flip(0), labels=t.labels.flip(0)) for t in targets()]
    with torch.no_grad():
        a = model(images, targets())
        model.loss_normalizer = 100.0
        b = model(images, shuffled)
    assert_close(a["loss_cls"], b["loss_cls"], rtol=1e-6, atol=0)
    assert_close(a["loss_box_reg"], b["loss_box_reg"], rtol=1e-6, atol=0)
    assert int(a["num_pos_anchors"]) == int(b["num_pos_anchors"])


def test_giou_and_bfloat16_autocast_give_float32_losses() -> None:
    model = tiny(box_loss="giou").train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(random_images(SIZES[:1]), targets()[:1])
    assert out["loss_cls"].dtype == torch.float32 and out["loss_box_reg"].dtype == torch.float32
    assert torch.isfinite(out["loss_box_reg"]) and out["loss_box_reg"].item() > 0


def test_inference_batched_same_size_equals_single_and_rescales() -> None:
    model = tiny().eval()
    images = random_images([(64, 96), (64, 96)], seed=3)
    with torch.no_grad():
        batched = model(images)
        singles = [model([img])[0] for img in images]
        halved = model([images[0]], original_sizes=[(32, 48)])[0]
    assert len(batched) == 2
    # Same-size images pad alike, so only the convs' float order differs between batch sizes.
    for b, s in zip(batched, singles, strict=True):
        assert len(s.scores) > 0
        assert_close(b.boxes, s.boxes, atol=1e-3, rtol=0)
        assert_close(b.scores, s.scores, atol=1e-5, rtol=0)
        assert torch.equal(b.labels, s.labels)
    assert bool((halved.boxes[:, 2] <= 48).all()) and bool((halved.boxes[:, 3] <= 32).all())
    assert_close(halved.scores, singles[0].scores[: len(halved.scores)], atol=0, rtol=0)


def test_user_errors() -> None:
    model = tiny()
    model.train()
    with pytest.raises(ValueError, match="training mode needs targets"):
        model(random_images(SIZES[:1]))
    with pytest.raises(ValueError, match="1 images but 3 targets"):
        model(random_images(SIZES[:1]), targets())
    model.eval()
    with pytest.raises(ValueError, match="eval mode"):
        model(random_images(SIZES[:1]), targets()[:1])
    with pytest.raises(ValueError, match="no images"):
        model([])
    with pytest.raises(ValueError, match="classes"):
        RetinaNet(
            backbone=model.backbone,
            head=model.head,
            anchor_generator=model.anchor_generator,
            box_coder=model.box_coder,
            matcher=model.matcher,
            num_classes=5,
        )


@pytest.mark.parametrize(
    "overrides",
    [
        {"score_thresh": 1.0},
        {"topk_candidates": 0},
        {"detections_per_image": 0},
        {"box_loss": "l2"},
    ],
)
def test_bad_inference_settings_raise(overrides: dict) -> None:
    with pytest.raises(ValueError, match="RetinaNet"):
        tiny(**overrides)


def test_state_dict_roots() -> None:
    roots = {
        ".".join(k.split(".")[:2]) if k.startswith("backbone.") else k.split(".")[0]
        for k in tiny().state_dict()
    }
    assert roots == {"backbone.body", "backbone.fpn", "head"}
