"""Focal and box losses: hand values, properties against BCE, no-GT and ignore handling."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.testing import assert_close

from retinacli.engine import losses
from retinacli.engine.box_coder import BoxCoder
from retinacli.engine.losses import (
    IGNORE_LABEL,
    focal_loss_sum,
    retinanet_loss_sums,
    smooth_l1_loss,
    update_loss_normalizer,
)
from tests.engine.reference import sigmoid_focal_loss

K = 3
logit_lists = st.lists(
    st.floats(min_value=-30, max_value=30, allow_nan=False, width=32), min_size=1, max_size=32
)


def test_focal_loss_hand_computed() -> None:
    # logit 0 -> p = 0.5. target 1: ce = log 2, (1 - p_t)^2 = 0.25, alpha_t = 0.25 -> 0.25 * 0.25 * log 2.
    # target 0: alpha_t = 0.75 -> 0.75 * 0.25 * log 2.
    loss = sigmoid_focal_loss(torch.zeros(2), torch.tensor([1.0, 0.0]), alpha=0.25, gamma=2.0)
    assert_close(
        loss, torch.tensor([0.0625 * math.log(2), 0.1875 * math.log(2)]), atol=1e-7, rtol=0
    )


@settings(max_examples=50, deadline=None)
@given(
    logits=logit_lists,
    alpha=st.floats(0.0, 1.0),
    gamma=st.floats(0.0, 5.0),
    seed=st.integers(0, 2**16),
)
def test_focal_loss_never_exceeds_bce(
    logits: list[float], alpha: float, gamma: float, seed: int
) -> None:
    x = torch.tensor(logits)
    t = torch.randint(0, 2, x.shape, generator=torch.Generator().manual_seed(seed)).float()
    bce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    assert bool((sigmoid_focal_loss(x, t, alpha=alpha, gamma=gamma) <= bce + 1e-6).all())


@settings(max_examples=50, deadline=None)
@given(logits=logit_lists, seed=st.integers(0, 2**16))
def test_focal_without_alpha_and_gamma_is_bce_gradients_included(
    logits: list[float], seed: int
) -> None:
    x1 = torch.tensor(logits, requires_grad=True)
    x2 = torch.tensor(logits, requires_grad=True)
    t = torch.rand(x1.shape, generator=torch.Generator().manual_seed(seed))
    focal = sigmoid_focal_loss(x1, t, alpha=-1.0, gamma=0.0)
    bce = F.binary_cross_entropy_with_logits(x2, t, reduction="none")
    assert_close(focal, bce, atol=1e-6, rtol=1e-6)
    focal.sum().backward()
    bce.sum().backward()
    assert_close(x1.grad, x2.grad, atol=1e-6, rtol=1e-6)


def test_focal_loss_computes_in_float32() -> None:
    loss = sigmoid_focal_loss(
        torch.zeros(4, dtype=torch.bfloat16), torch.ones(4), alpha=0.25, gamma=2.0
    )
    assert loss.dtype == torch.float32


def test_smooth_l1_hand_computed() -> None:
    # beta 0.1: |x| = 0.05 < beta -> 0.5 * 0.05^2 / 0.1 = 0.0125; |x| = 0.3 -> 0.3 - 0.05 = 0.25.
    # beta 0 (and below 1e-5): plain L1.
    pred = torch.tensor([0.05, -0.3])
    assert_close(
        smooth_l1_loss(pred, torch.zeros(2), beta=0.1),
        torch.tensor([0.0125, 0.25]),
        atol=1e-7,
        rtol=0,
    )
    assert_close(
        smooth_l1_loss(pred, torch.zeros(2), beta=0.0), torch.tensor([0.05, 0.3]), atol=0, rtol=0
    )
    assert_close(
        smooth_l1_loss(pred, torch.zeros(2), beta=1e-6), torch.tensor([0.05, 0.3]), atol=0, rtol=0
    )


def test_loss_normalizer_update() -> None:
    # 0.9 * 100 + 0.1 * 728 = 162.8 (detectron2's float: 162.79999999999998); no positives count as 1.
    assert update_loss_normalizer(100.0, 728) == 0.9 * 100.0 + (1 - 0.9) * 728
    assert update_loss_normalizer(100.0, 728) == 162.79999999999998
    assert update_loss_normalizer(100.0, 0) == 0.9 * 100.0 + (1 - 0.9) * 1


def _inputs(num_images: int, num_anchors: int, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    xy = torch.rand(num_anchors, 2, generator=gen) * 100
    anchors = torch.cat([xy, xy + 10 + torch.rand(num_anchors, 2, generator=gen) * 40], dim=1)
    gt = anchors[None].repeat(num_images, 1, 1) + torch.randn(
        num_images, num_anchors, 4, generator=gen
    )
    labels = torch.randint(-1, K + 1, (num_images, num_anchors), generator=gen)
    return {
        "logits": torch.randn(num_images, num_anchors, K, generator=gen, requires_grad=True),
        "deltas": torch.randn(num_images, num_anchors, 4, generator=gen, requires_grad=True),
        "anchors": anchors,
        "gt_labels": labels,
        "matched_gt_boxes": gt,
    }


def _sums(inputs: dict, box_loss: str = "smooth_l1"):
    # Split the anchors into two levels, as the detector passes them.
    cut = inputs["logits"].shape[1] // 3
    levels = {
        k: list(inputs[k].split([cut, inputs[k].shape[1] - cut], dim=1))
        for k in ("logits", "deltas")
    }
    return retinanet_loss_sums(
        **{**inputs, **levels},
        box_coder=BoxCoder(),
        focal_alpha=0.25,
        focal_gamma=2.0,
        box_loss=box_loss,
        smooth_l1_beta=0.1,
    )


def test_no_positive_anchors_give_exactly_zero_box_loss_and_finite_gradients() -> None:
    for box_loss in ("smooth_l1", "giou"):
        inputs = _inputs(2, 30)
        inputs["gt_labels"] = torch.full((2, 30), K)  # every anchor background
        sums = _sums(inputs, box_loss)
        assert sums.box.item() == 0.0 and int(sums.num_pos) == 0
        (sums.cls + sums.box).backward()
        assert torch.isfinite(inputs["logits"].grad).all()
        assert torch.equal(inputs["deltas"].grad, torch.zeros_like(inputs["deltas"]))


def test_ignored_anchors_contribute_nothing() -> None:
    inputs = _inputs(1, 40)
    sums = _sums(inputs)
    (sums.cls + sums.box).backward()
    ignored = inputs["gt_labels"] == IGNORE_LABEL
    assert bool(ignored.any())
    assert bool((inputs["logits"].grad[ignored] == 0).all())
    assert bool((inputs["deltas"].grad[ignored] == 0).all())
    changed = {k: (v.detach().clone() if torch.is_tensor(v) else v) for k, v in inputs.items()}
    changed["logits"][ignored] = 50.0
    assert_close(_sums(changed).cls, sums.cls.detach(), atol=0, rtol=0)


def test_batched_sums_equal_the_sum_over_images() -> None:
    inputs = _inputs(3, 60, seed=4)
    batched = _sums(inputs)
    singles = [
        _sums({k: (v[i : i + 1] if k != "anchors" else v) for k, v in inputs.items()})
        for i in range(3)
    ]
    assert_close(batched.cls, sum(s.cls for s in singles), rtol=1e-5, atol=0)
    assert_close(batched.box, sum(s.box for s in singles), rtol=1e-5, atol=0)
    assert int(batched.num_pos) == sum(int(s.num_pos) for s in singles)
    assert batched.num_pos.dtype == torch.int64


def test_giou_loss_is_zero_for_a_perfect_prediction() -> None:
    inputs = _inputs(1, 20, seed=5)
    coder = BoxCoder()
    perfect = coder.encode(anchors=inputs["anchors"], gt_boxes=inputs["matched_gt_boxes"][0])[None]
    inputs["deltas"] = perfect.requires_grad_(True)
    inputs["gt_labels"] = torch.zeros(1, 20, dtype=torch.int64)  # all positive, class 0
    sums = _sums(inputs, "giou")
    assert int(sums.num_pos) == 20
    assert sums.box.item() < 1e-4


@settings(max_examples=30, deadline=None)
@given(
    alpha=st.sampled_from([0.25, 0.5, -1.0]),
    gamma=st.sampled_from([0.0, 1.5, 2.0]),
    seed=st.integers(0, 2**16),
    chunk=st.sampled_from([1, 7, 1 << 18]),
)
def test_fused_focal_sum_equals_elementwise_sum_gradients_included(
    alpha: float, gamma: float, seed: int, chunk: int
) -> None:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(-1, K + 1, (2, 25), generator=gen)  # ignore, classes, background
    logits = (torch.randn(2, 25, K, generator=gen) * 6).requires_grad_(True)
    ref_logits = logits.detach().clone().requires_grad_(True)
    onehot = (labels[:, :, None] == torch.arange(K)).float()
    valid = (labels != IGNORE_LABEL)[:, :, None]
    ref = torch.where(
        valid, sigmoid_focal_loss(ref_logits, onehot, alpha=alpha, gamma=gamma), 0.0
    ).sum()
    saved = losses._FOCAL_CHUNK_CPU
    losses._FOCAL_CHUNK_CPU = chunk  # rows per chunk = chunk // K, at least 1: chunk seams tested
    try:
        fused = focal_loss_sum(logits, labels, num_classes=K, alpha=alpha, gamma=gamma)
    finally:
        losses._FOCAL_CHUNK_CPU = saved
    assert_close(fused, ref.detach(), rtol=1e-5, atol=1e-6)
    (2.0 * fused).backward()
    (2.0 * ref).backward()
    assert_close(logits.grad, ref_logits.grad, rtol=1e-4, atol=1e-6)


def _focal_float64(logits: torch.Tensor, gt_labels: torch.Tensor, *, alpha: float, gamma: float) -> torch.Tensor:
    """detectron2's formula (fvcore's sigmoid_focal_loss over non-ignored anchors, one-hot
    targets) in float64, for reference sums and gradients."""
    x = logits.double()
    num_classes = x.shape[-1]
    onehot = F.one_hot(gt_labels.clamp(min=0), num_classes + 1)[..., :num_classes].double()
    valid = (gt_labels != IGNORE_LABEL).double()[..., None]
    return (sigmoid_focal_loss(x, onehot, alpha=alpha, gamma=gamma) * valid).sum()


@settings(max_examples=40, deadline=None)
@given(
    extreme=st.lists(st.sampled_from([1e4, -1e4, 88.0, 88.8, 89.5, 103.0, 200.0, -200.0, 40.0, 41.0]),
                     min_size=4, max_size=4),
    labels=st.lists(st.integers(-1, 2), min_size=2, max_size=2),
    gamma=st.sampled_from([0.0, 1.5, 2.0]),
)
def test_focal_loss_is_finite_for_any_finite_logit(extreme, labels, gamma) -> None:
    # Logits of 88.7 and above used to give inf (log of an underflowed sigmoid) and NaN gradients.
    logits = torch.tensor(extreme, dtype=torch.float32).reshape(1, 2, 2).requires_grad_()
    gt = torch.tensor([labels])  # -1 ignored, 0/1 a class, 2 background (K = 2)
    total = focal_loss_sum(logits, gt, num_classes=2, alpha=0.25, gamma=gamma)
    total.backward()
    assert math.isfinite(float(total.detach())) and bool(torch.isfinite(logits.grad).all())
    reference = logits.detach().clone().requires_grad_()
    expected = _focal_float64(reference, gt, alpha=0.25, gamma=gamma)
    expected.backward()
    assert_close(total.double(), expected, rtol=1e-6, atol=1e-6)
    assert_close(logits.grad.double(), reference.grad.double(), rtol=1e-5, atol=1e-6)
