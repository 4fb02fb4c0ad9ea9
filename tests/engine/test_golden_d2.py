"""The engine against detectron2's own outputs on the golden case d2_retinanet_r18.

Tolerances follow the case README ("Suggested tolerances"): features and head outputs atol 1e-4,
boxes 1e-3 px, scores 1e-5, losses rtol 1e-5; counts, classes, anchor labels and num_pos exact.
Switching detectron2 from 2 threads to 1 moved its own numbers by at most 3.1e-5 px (boxes),
1.8e-7 (scores) and 1.5e-5 (FPN features), so these bounds leave room for float-order noise only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.testing import assert_close

from retinacli.commands.import_detectron2 import import_detectron2
from retinacli.commands.model_files import load_detector
from retinacli.data.augment.resize_flip import resize_image, resized_hw
from retinacli.data.images import read_image
from retinacli.engine.detector import RetinaNet
from retinacli.engine.losses import IGNORE_LABEL
from retinacli.engine.structures import Detections, Targets
from retinacli.weights.names import detectron2_to_retinacli
from tests.engine.builders import build_retinanet
from tests.engine.reference import level_candidates

NUM_CLASSES = 3
LEVELS = ("p3", "p4", "p5", "p6", "p7")
FEATURE_ATOL = 1e-4
BOX_ATOL = 1e-3
SCORE_ATOL = 1e-5
LOSS_RTOL = 1e-5
MIN_SIZE, MAX_SIZE = 320, 533  # INPUT.MIN_SIZE_TEST/TRAIN and MAX_SIZE_TEST/TRAIN


@pytest.fixture(scope="module")
def golden_model(golden_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> RetinaNet:
    """The golden case the way a user gets it: `retina import-detectron2` turns detectron2's
    config.yaml and model_final.pth into a recipe and a model file, which the engine loads."""
    out = tmp_path_factory.mktemp("imported")
    import_detectron2(golden_dir / "config.yaml", golden_dir / "model_final.pth", out)
    return load_detector(out / "model.pth").model


def test_import_builds_the_model_the_config_describes(golden_dir: Path, golden_model: RetinaNet) -> None:
    """The imported recipe gives the same architecture as building from the config's values by
    hand, and every detectron2 weight lands in it unchanged."""
    by_hand = build_retinanet()
    state = torch.load(golden_dir / "model_final.pth", weights_only=True)["model"]
    mapped, unmapped = detectron2_to_retinacli(state)
    assert unmapped == []
    by_hand.load_state_dict(mapped, strict=True)
    imported = golden_model.state_dict()
    assert imported.keys() == by_hand.state_dict().keys()
    for key, value in by_hand.state_dict().items():
        assert_close(imported[key], value, rtol=0, atol=0, msg=key)


@pytest.fixture(scope="module")
def expected(golden_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(golden_dir / "expected" / "tensors.pt", weights_only=True)


@pytest.fixture(scope="module")
def inference_json(golden_dir: Path) -> list[dict[str, Any]]:
    return json.loads((golden_dir / "expected" / "inference.json").read_text())


@pytest.fixture(scope="module")
def losses_json(golden_dir: Path) -> dict[str, Any]:
    return json.loads((golden_dir / "expected" / "losses.json").read_text())


@pytest.fixture(scope="module")
def images(golden_dir: Path, inference_json: list[dict[str, Any]]) -> list[torch.Tensor]:
    """The 7 golden images as detectron2 feeds them: BGR, ResizeShortestEdge(320, 533), (3, h, w)."""
    out = []
    for entry in inference_json:
        pixels = read_image(golden_dir / "images" / entry["file_name"], input_format="BGR")
        h, w = resized_hw(
            height=pixels.shape[0], width=pixels.shape[1], short_size=MIN_SIZE, max_size=MAX_SIZE
        )
        assert [h, w] == entry["resized_hw"]
        out.append(torch.from_numpy(resize_image(pixels, height=h, width=w)).permute(2, 0, 1))
    return out


def golden_targets(
    expected: dict[str, torch.Tensor], image_indices: range | list[int]
) -> list[Targets]:
    return [
        Targets(
            boxes=expected[f"train/img{i}/gt_boxes"], labels=expected[f"train/img{i}/gt_classes"]
        )
        for i in image_indices
    ]


# ---------------------------------------------------------------- anchors and network outputs


def test_anchors_equal_detectron2(
    golden_model: RetinaNet, expected: dict[str, torch.Tensor]
) -> None:
    train_hw = [tuple(expected[f"train/feature_hw/{lv}"].tolist()) for lv in LEVELS]
    for level, anchors in zip(
        LEVELS, golden_model.anchor_generator.grid_anchors(train_hw), strict=True
    ):
        assert_close(anchors, expected[f"train/anchors/{level}"], atol=1e-4, rtol=0)
    eval_hw = [tuple(expected[f"eval/img0/fpn/{lv}_shape"][-2:].tolist()) for lv in LEVELS]
    for level, anchors in zip(
        LEVELS, golden_model.anchor_generator.grid_anchors(eval_hw), strict=True
    ):
        assert_close(anchors, expected[f"eval/img0/anchors/{level}"], atol=1e-4, rtol=0)


def test_eval_image0_features_and_head(
    golden_model: RetinaNet, expected: dict[str, torch.Tensor], images: list[torch.Tensor]
) -> None:
    golden_model.eval()
    assert torch.equal(images[0].permute(1, 2, 0), expected["eval/img0/resized_image_hwc_uint8"])
    with torch.no_grad():
        net = golden_model.run_network([images[0]])
        # Stem and every stage, res2 included (the golden model only outputs res3..res5).
        body = golden_model.backbone.body
        x = torch.nn.functional.max_pool2d(body.bn1(body.conv1(net.images)).relu(), 3, 2, 1)
        bottom_up = {"stem": x}
        for name, stage in zip(("res2", "res3", "res4", "res5"), body.stages, strict=True):
            x = bottom_up[name] = stage(x)
        logits_raw, deltas_raw = golden_model.head.forward_raw(net.features)
    assert_close(net.images, expected["eval/img0/input_normalized_padded"], atol=0, rtol=0)
    for name, feature in bottom_up.items():
        assert_close(feature, expected[f"eval/img0/backbone/{name}"], atol=FEATURE_ATOL, rtol=0)
    for i, level in enumerate(LEVELS):
        assert_close(net.features[i], expected[f"eval/img0/fpn/{level}"], atol=FEATURE_ATOL, rtol=0)
        assert_close(
            logits_raw[i], expected[f"eval/img0/head/logits/{level}"], atol=FEATURE_ATOL, rtol=0
        )
        assert_close(
            deltas_raw[i], expected[f"eval/img0/head/deltas/{level}"], atol=FEATURE_ATOL, rtol=0
        )
        assert_close(net.anchors[i], expected[f"eval/img0/anchors/{level}"], atol=1e-4, rtol=0)


def test_eval_image0_decode_candidates(
    golden_model: RetinaNet, expected: dict[str, torch.Tensor], images: list[torch.Tensor]
) -> None:
    golden_model.eval()
    with torch.no_grad():
        net = golden_model.run_network([images[0]])
    for i, level in enumerate(LEVELS):
        key = f"eval/img0/decode/{level}"
        cand = level_candidates(
            logits=net.logits[i],
            deltas=net.deltas[i],
            anchors=net.anchors[i],
            box_coder=golden_model.box_coder,
            score_thresh=golden_model.score_thresh,
            topk_candidates=golden_model.topk_candidates,
        )
        scores_all = torch.sigmoid(net.logits[i][0])
        assert int((scores_all > golden_model.score_thresh).sum()) == int(
            expected[f"{key}/num_above_thresh"]
        )
        valid = cand.valid[0]
        ours_scores = cand.scores[0, valid]
        assert bool((ours_scores[:-1] >= ours_scores[1:]).all()), (
            "candidates must be sorted by score"
        )
        # Same candidate set; the order of exactly tied scores is free, so compare by flat index.
        ours_flat = cand.anchor_idx[0, valid] * NUM_CLASSES + cand.labels[0, valid]
        theirs_flat = expected[f"{key}/anchor_idx"] * NUM_CLASSES + expected[f"{key}/class_idx"]
        ours_order, theirs_order = ours_flat.argsort(), theirs_flat.argsort()
        assert torch.equal(ours_flat[ours_order], theirs_flat[theirs_order])
        assert_close(
            ours_scores[ours_order],
            expected[f"{key}/scores"][theirs_order],
            atol=SCORE_ATOL,
            rtol=0,
        )
        assert_close(
            cand.boxes[0, valid][ours_order],
            expected[f"{key}/boxes"][theirs_order],
            atol=BOX_ATOL,
            rtol=0,
        )


def _assert_same_detections(ours: Detections, entry: dict[str, Any]) -> None:
    """Same count; every expected detection has its own twin (class equal, box and score close).

    detectron2's order is by descending score; among exactly tied scores any order is right.
    """
    boxes = torch.tensor(entry["boxes_xyxy"], dtype=torch.float32).reshape(-1, 4)
    scores = torch.tensor(entry["scores"], dtype=torch.float32)
    classes = torch.tensor(entry["classes"], dtype=torch.int64)
    name = entry["file_name"]
    assert ours.boxes.shape == boxes.shape, (
        f"{name}: {len(ours.boxes)} detections, detectron2 has {len(boxes)}"
    )
    assert bool((ours.scores[:-1] >= ours.scores[1:]).all()), f"{name}: scores not descending"
    free = torch.ones(len(boxes), dtype=torch.bool)
    for box, score, cls in zip(boxes, scores, classes, strict=True):
        box_err = (ours.boxes - box).abs().amax(dim=1)
        twin = (
            free
            & (ours.labels == cls)
            & ((ours.scores - score).abs() <= SCORE_ATOL)
            & (box_err <= BOX_ATOL)
        )
        assert bool(twin.any()), (
            f"{name}: no twin for detectron2's {cls.item()} {score.item():.6f} {box.tolist()}"
        )
        free[torch.where(twin, box_err, torch.inf).argmin()] = False


def test_inference_all_images_one_at_a_time(
    golden_model: RetinaNet, inference_json: list[dict[str, Any]], images: list[torch.Tensor]
) -> None:
    golden_model.eval()
    with torch.no_grad():
        for entry, image in zip(inference_json, images, strict=True):
            (dets,) = golden_model([image], original_sizes=[(entry["height"], entry["width"])])
            _assert_same_detections(dets, entry)


def test_eval_image0_final_tensors(
    golden_model: RetinaNet, expected: dict[str, torch.Tensor], images: list[torch.Tensor]
) -> None:
    golden_model.eval()
    with torch.no_grad():
        (dets,) = golden_model(
            [images[0]], original_sizes=[tuple(expected["eval/img0/original_hw"].tolist())]
        )
    # Positional comparison: image 0 has no exactly tied scores.
    assert_close(dets.boxes, expected["eval/img0/final_boxes"], atol=BOX_ATOL, rtol=0)
    assert_close(dets.scores, expected["eval/img0/final_scores"], atol=SCORE_ATOL, rtol=0)
    assert torch.equal(dets.labels, expected["eval/img0/final_classes"])


# ---------------------------------------------------------------- training: labels and losses


def test_anchor_labels_equal_detectron2(
    golden_model: RetinaNet,
    expected: dict[str, torch.Tensor],
    losses_json: dict[str, Any],
    images: list[torch.Tensor],
) -> None:
    golden_model.eval()  # labels do not depend on the mode; eval leaves the normaliser alone
    with torch.no_grad():
        net = golden_model.run_network(images)
        anchors = torch.cat(net.anchors)
        targets = golden_model.label_anchors(anchors, golden_targets(expected, range(7)))
        logits = torch.cat(net.logits, dim=1)
        deltas = torch.cat(net.deltas, dim=1)
    assert list(net.images.shape) == losses_json["batching"]["padded_batch_tensor_shape"]
    assert anchors.shape[0] == losses_json["num_anchors_per_image"]
    total_pos = 0
    for i, per_image in enumerate(losses_json["per_image"]):
        labels = targets.gt_labels[i]
        assert torch.equal(labels, expected[f"train/img{i}/gt_labels"])
        pos = ((labels >= 0) & (labels != NUM_CLASSES)).nonzero().squeeze(1)
        assert torch.equal(pos, expected[f"train/img{i}/pos_anchor_idx"])
        assert torch.equal(
            targets.matched_gt_boxes[i, pos], expected[f"train/img{i}/pos_matched_gt_boxes"]
        )
        assert_close(
            logits[i, pos], expected[f"train/img{i}/pos_pred_logits"], atol=FEATURE_ATOL, rtol=0
        )
        assert_close(
            deltas[i, pos], expected[f"train/img{i}/pos_pred_deltas"], atol=FEATURE_ATOL, rtol=0
        )
        assert len(pos) == per_image["num_pos_anchors"]
        assert int((labels == IGNORE_LABEL).sum()) == per_image["num_ignored_anchors"]
        assert int((labels == NUM_CLASSES).sum()) == per_image["num_negative_anchors"]
        total_pos += len(pos)
    assert total_pos == int(expected["train/num_pos_anchors"]) == 728


def test_training_losses_all_images_one_batch(
    golden_model: RetinaNet,
    expected: dict[str, torch.Tensor],
    losses_json: dict[str, Any],
    images: list[torch.Tensor],
) -> None:
    golden_model.train()
    golden_model.loss_normalizer = 100.0  # a fresh detectron2 model
    with torch.no_grad():
        out = golden_model(images, golden_targets(expected, range(7)))
    assert out["num_pos_anchors"].dtype == torch.int64 and out["num_pos_anchors"].dim() == 0
    assert int(out["num_pos_anchors"]) == losses_json["num_pos_anchors"] == 728
    assert golden_model.loss_normalizer == losses_json["normalizer"]  # 0.9 * 100 + 0.1 * 728
    expected_cls = torch.tensor(losses_json["loss_cls"], dtype=torch.float32)
    expected_box = torch.tensor(losses_json["loss_box_reg"], dtype=torch.float32)
    assert_close(out["loss_cls"], expected_cls, rtol=LOSS_RTOL, atol=0)
    assert_close(out["loss_box_reg"], expected_box, rtol=LOSS_RTOL, atol=0)


def test_training_losses_batches_of_two(
    golden_model: RetinaNet,
    expected: dict[str, torch.Tensor],
    losses_json: dict[str, Any],
    images: list[torch.Tensor],
) -> None:
    batches = losses_json.get("batches_of_2")
    if not batches:
        pytest.skip("losses.json has no batches_of_2 entries")
    golden_model.train()
    for batch in batches:
        indices = [image_id - 1 for image_id in batch["image_ids"]]
        golden_model.loss_normalizer = 100.0  # detectron2 ran each batch on a fresh model
        with torch.no_grad():
            net = golden_model.run_network([images[i] for i in indices])
            out = golden_model([images[i] for i in indices], golden_targets(expected, indices))
        assert list(net.images.shape) == batch["padded_input_shape"]
        assert golden_model.loss_normalizer == pytest.approx(batch["normalizer"], rel=1e-12)
        assert_close(out["loss_cls"], torch.tensor(batch["loss_cls"]), rtol=LOSS_RTOL, atol=0)
        assert_close(
            out["loss_box_reg"], torch.tensor(batch["loss_box_reg"]), rtol=LOSS_RTOL, atol=0
        )


# ---------------------------------------------------------------- loss sums and gradients


def _golden_batch(golden_model: RetinaNet, expected, images):
    golden_model.eval()
    with torch.no_grad():
        net = golden_model.run_network(images)
        anchors = torch.cat(net.anchors)
        targets = golden_model.label_anchors(anchors, golden_targets(expected, range(7)))
    return net, anchors, targets


def _reference_sums(logits64, deltas64, anchors, targets, *, beta: float):
    """detectron2's two loss sums in float64: fvcore's sigmoid focal loss over non-ignored
    anchors x classes, and smooth L1 of Box2BoxTransform deltas over positive anchors."""
    from tests.engine.reference import sigmoid_focal_loss

    labels = targets.gt_labels
    onehot = torch.nn.functional.one_hot(labels.clamp(min=0), NUM_CLASSES + 1)[..., :NUM_CLASSES].double()
    valid = (labels != IGNORE_LABEL).double()[..., None]
    cls = (sigmoid_focal_loss(logits64, onehot, alpha=0.25, gamma=2.0) * valid).sum()
    positive = (labels >= 0) & (labels != NUM_CLASSES)
    image, anchor = positive.nonzero(as_tuple=True)
    a, gt = anchors[anchor].double(), targets.matched_gt_boxes[image, anchor].double()
    aw, ah = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]
    gw, gh = gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]
    target = torch.stack(
        (
            (gt[:, 0] + 0.5 * gw - (a[:, 0] + 0.5 * aw)) / aw,
            (gt[:, 1] + 0.5 * gh - (a[:, 1] + 0.5 * ah)) / ah,
            torch.log(gw / aw),
            torch.log(gh / ah),
        ),
        dim=1,
    )
    diff = (deltas64[image, anchor] - target).abs()
    box = torch.where(diff < beta, 0.5 * diff**2 / beta, diff - 0.5 * beta).sum()
    return cls, box


def test_loss_sums_are_as_accurate_as_an_elementwise_sum(golden_model, expected, losses_json, images) -> None:
    from retinacli.engine.losses import retinanet_loss_sums

    net, anchors, targets = _golden_batch(golden_model, expected, images)
    sums = retinanet_loss_sums(
        logits=net.logits, deltas=net.deltas, anchors=anchors, gt_labels=targets.gt_labels,
        matched_gt_boxes=targets.matched_gt_boxes, box_coder=golden_model.box_coder,
        focal_alpha=0.25, focal_gamma=2.0, box_loss="smooth_l1", smooth_l1_beta=0.1,
    )
    # detectron2's float32 sums (losses.json). A plain float32 element-wise sum of our logits is
    # within 1e-7 of them; the fused focal loss must be as close (it was 3.4e-7 before it summed
    # each chunk pairwise without adding and subtracting the positives).
    assert_close(sums.cls, torch.tensor(losses_json["loss_cls_sum"]), rtol=1e-7, atol=0)
    assert_close(sums.box, torch.tensor(losses_json["loss_box_reg_sum"]), rtol=1e-6, atol=0)


def test_loss_gradients_equal_a_float64_computation_of_detectron2s_formulas(
    golden_model, expected, images
) -> None:
    from retinacli.engine.losses import retinanet_loss_sums

    net, anchors, targets = _golden_batch(golden_model, expected, images)
    logits = [x.clone().requires_grad_() for x in net.logits]
    deltas = [x.clone().requires_grad_() for x in net.deltas]
    sums = retinanet_loss_sums(
        logits=logits, deltas=deltas, anchors=anchors, gt_labels=targets.gt_labels,
        matched_gt_boxes=targets.matched_gt_boxes, box_coder=golden_model.box_coder,
        focal_alpha=0.25, focal_gamma=2.0, box_loss="smooth_l1", smooth_l1_beta=0.1,
    )
    (sums.cls + sums.box).backward()
    logits64 = torch.cat([x.detach().double() for x in net.logits], dim=1).requires_grad_()
    deltas64 = torch.cat([x.detach().double() for x in net.deltas], dim=1).requires_grad_()
    cls64, box64 = _reference_sums(logits64, deltas64, anchors, targets, beta=0.1)
    (cls64 + box64).backward()
    assert_close(sums.cls.double(), cls64, rtol=1e-6, atol=0)
    assert_close(sums.box.double(), box64, rtol=1e-6, atol=0)
    grad_logits = torch.cat([x.grad for x in logits], dim=1).double()
    grad_deltas = torch.cat([x.grad for x in deltas], dim=1).double()
    # The largest gradients are about 0.75 (focal) and 1 (smooth L1 slope).
    assert_close(grad_logits, logits64.grad, rtol=1e-5, atol=1e-7)
    # Inside |x| < beta the smooth-L1 gradient is x / beta: the float32 regression targets
    # (detectron2 encodes them in float32 too; rounding up to ~4e-7 on values up to ~3) are
    # amplified by 1 / beta = 10, so deltas get 4e-6 of float32 noise (8.0e-6 seen at most).
    assert_close(grad_deltas, deltas64.grad, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- options verified to be live
# The case README's "Config options verified to be live": each option changed alone, with
# detectron2's numbers (printed to 5 or 6 significant digits, so compared to half a unit of the
# last digit printed).


def _printed(text: str) -> Any:
    decimals = len(text.split(".")[1]) if "." in text else 0
    return pytest.approx(float(text), abs=0.5 * 10**-decimals)


def _import_with(golden_dir: Path, tmp_path: Path, overrides: list[str]) -> RetinaNet:
    return load_detector(_imported(golden_dir, tmp_path), overrides).model


def _imported(golden_dir: Path, tmp_path: Path) -> Path:
    path = tmp_path / "model.pth"
    if not path.exists():
        import_detectron2(golden_dir / "config.yaml", golden_dir / "model_final.pth", tmp_path)
    return path


def _detect_all(model: RetinaNet, images, inference_json) -> list[Detections]:
    model.eval()
    with torch.no_grad():
        return [
            model([image], original_sizes=[(e["height"], e["width"])])[0]
            for image, e in zip(images, inference_json, strict=True)
        ]


def _same(a: Detections, b: Detections) -> bool:
    return (
        a.boxes.shape == b.boxes.shape
        and torch.equal(a.labels, b.labels)
        and bool(torch.allclose(a.boxes, b.boxes, atol=BOX_ATOL, rtol=0))
        and bool(torch.allclose(a.scores, b.scores, atol=SCORE_ATOL, rtol=0))
    )


INFERENCE_OPTIONS = [
    # (override, images whose detections change, detections on img_00 after)
    ("model.anchors.offset=0.5", 6, 72),
    ("model.test.topk_candidates=100000", 4, 82),
    ("model.test.score_thresh=0.1", 6, 14),
    ("model.test.nms_thresh=0.6", 6, 100),
    ("model.test.detections_per_image=1000", 0, 68),
    ("model.test.detections_per_image=50", 4, 50),
    ("model.input_format=RGB", 6, None),
    ("model.backbone.freeze_at=0", 0, 68),
    ("model.head.prior_prob=0.02", 0, 68),
]


@pytest.mark.parametrize(("override", "changed", "img0"), INFERENCE_OPTIONS, ids=[o[0] for o in INFERENCE_OPTIONS])
def test_live_inference_options_change_what_detectron2_changed(
    override, changed, img0, golden_model, golden_dir, inference_json, images, tmp_path_factory
) -> None:
    model = _import_with(golden_dir, tmp_path_factory.getbasetemp() / "live", [override])
    fed = images
    if override == "model.input_format=RGB":  # read as RGB, as detectron2's read_image then does
        fed = [img.flip(0) for img in images]
    base = _detect_all(golden_model, images, inference_json)
    after = _detect_all(model, fed, inference_json)
    assert sum(not _same(a, b) for a, b in zip(base, after, strict=True)) == changed
    if img0 is not None:
        assert len(after[0].boxes) == img0


LOSS_OPTIONS = [
    # (override, loss_cls, loss_box_reg, normalizer) after, as printed by the case README
    ("model.anchors.offset=0.5", "1.36984", "0.558613", "163.6"),
    ("model.loss.smooth_l1_beta=0.0", "1.09477", "0.559986", "162.8"),
    ("model.matcher.iou_thresholds=[0.3, 0.6]", "0.393146", "0.0941403", "106.6"),
    ("model.loss.focal_gamma=1.5", "1.58053", "0.190246", "162.8"),
    ("model.backbone.freeze_at=0", "1.09477", "0.190246", "162.8"),
    ("model.head.prior_prob=0.02", "1.09477", "0.190246", "162.8"),
]


@pytest.mark.parametrize(("override", "cls", "box", "normalizer"), LOSS_OPTIONS, ids=[o[0] for o in LOSS_OPTIONS])
def test_live_loss_options_change_what_detectron2_changed(
    override, cls, box, normalizer, golden_dir, expected, images, tmp_path_factory
) -> None:
    model = _import_with(golden_dir, tmp_path_factory.getbasetemp() / "live", [override])
    model.train()
    with torch.no_grad():
        out = model(images, golden_targets(expected, range(7)))
    assert float(out["loss_cls"]) == _printed(cls)
    assert float(out["loss_box_reg"]) == _printed(box)
    assert model.loss_normalizer == _printed(normalizer)
