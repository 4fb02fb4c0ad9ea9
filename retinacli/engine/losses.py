"""RetinaNet training losses (Lin et al., 2017, Sec. 3 and 4), as detectron2 sums and normalises them.

Shape legend: B images, R anchors per image, K classes without background, P positive anchors
in the whole batch.

Anchor labels follow detectron2's `label_anchors`: IGNORE_LABEL (-1) for ignored anchors, K for
background and 0..K-1 for the class of a positive anchor.

- Classification: sigmoid focal loss (torchvision `sigmoid_focal_loss` semantics) over every
  non-ignored anchor x K classes, one-hot targets with no background column, summed.
- Box regression over positive anchors, summed: smooth L1 on encoded deltas (beta < 1e-5 means
  plain L1, as fvcore), or GIoU loss (eps 1e-7) on decoded boxes.
- Both sums are divided by a running normaliser, ``m * old + (1 - m) * max(P, 1)`` with m = 0.9
  and old = 100 for a new model, updated at every training forward (`update_loss_normalizer`).
Losses are computed in float32 whatever the dtype of the predictions (mixed precision).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import generalized_box_iou_loss

from retinacli.engine.box_coder import BoxCoder

IGNORE_LABEL = -1
INITIAL_LOSS_NORMALIZER = 100.0
LOSS_NORMALIZER_MOMENTUM = 0.9
# fvcore's smooth_l1_loss switches to plain L1 below this beta (avoids dividing by ~0).
_SMOOTH_L1_MIN_BETA = 1e-5
_GIOU_EPS = 1e-7

BoxLossKind = Literal["smooth_l1", "giou"]


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, *, alpha: float, gamma: float) -> Tensor:
    """Element-wise focal loss ``-alpha_t * (1 - p_t)**gamma * log(p_t)``, float32, same shape.

    `targets` are in [0, 1] and broadcast with `logits`. alpha < 0 disables the alpha weighting;
    with alpha < 0 and gamma = 0 this is exactly binary cross-entropy with logits.
    """
    logits = logits.float()
    targets = targets.float()
    prob = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets.expand_as(logits), reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * ((1 - p_t) ** gamma)
    if alpha >= 0:
        alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
        loss = alpha_t * loss
    return loss


def smooth_l1_loss(pred: Tensor, target: Tensor, *, beta: float) -> Tensor:
    """Element-wise Huber-like loss: ``0.5 * x**2 / beta`` if ``|x| < beta`` else ``|x| - 0.5 * beta``.

    beta < 1e-5 gives plain L1 (fvcore's rule). float32, same shape as the inputs.
    """
    diff = (pred.float() - target.float()).abs()
    if beta < _SMOOTH_L1_MIN_BETA:
        return diff
    return torch.where(diff < beta, 0.5 * diff**2 / beta, diff - 0.5 * beta)


def update_loss_normalizer(
    old: float, num_pos_anchors: int, *, momentum: float = LOSS_NORMALIZER_MOMENTUM
) -> float:
    """detectron2's running normaliser: ``momentum * old + (1 - momentum) * max(num_pos, 1)``."""
    return momentum * old + (1 - momentum) * max(int(num_pos_anchors), 1)


@dataclass
class LossSums:
    """Unnormalised loss sums of a batch: cls (), box () float32 with grad; num_pos () int64."""

    cls: Tensor
    box: Tensor
    num_pos: Tensor


def retinanet_loss_sums(
    *,
    logits: Tensor,
    deltas: Tensor,
    anchors: Tensor,
    gt_labels: Tensor,
    matched_gt_boxes: Tensor,
    box_coder: BoxCoder,
    focal_alpha: float,
    focal_gamma: float,
    box_loss: BoxLossKind,
    smooth_l1_beta: float,
) -> LossSums:
    """Summed focal and box losses of a batch, before normalisation.

    logits: (B, R, K); deltas: (B, R, 4); anchors: (R, 4) shared by all images;
    gt_labels: (B, R) int64 in {IGNORE_LABEL, 0..K-1, K}; matched_gt_boxes: (B, R, 4) XYXY pixels
    (read only at positive anchors).
    """
    num_images, num_anchors, num_classes = logits.shape
    if deltas.shape != (num_images, num_anchors, 4) or gt_labels.shape != (num_images, num_anchors):
        raise ValueError(
            f"retinanet_loss_sums: logits {tuple(logits.shape)}, deltas {tuple(deltas.shape)} and "
            f"gt_labels {tuple(gt_labels.shape)} disagree; expected (B, R, K), (B, R, 4), (B, R)"
        )
    if anchors.shape != (num_anchors, 4) or matched_gt_boxes.shape != deltas.shape:
        raise ValueError(
            f"retinanet_loss_sums: anchors {tuple(anchors.shape)} or matched_gt_boxes "
            f"{tuple(matched_gt_boxes.shape)} do not fit R = {num_anchors}"
        )
    valid = gt_labels != IGNORE_LABEL  # (B, R)
    positive = valid & (gt_labels != num_classes)  # (B, R)

    # One-hot over the K real classes: background (K) and ignored (-1) rows are all zeros.
    classes = torch.arange(num_classes, device=gt_labels.device)
    onehot = (gt_labels[:, :, None] == classes).to(torch.float32)  # (B, R, K)
    focal = sigmoid_focal_loss(logits, onehot, alpha=focal_alpha, gamma=focal_gamma)  # (B, R, K)
    cls_sum = torch.where(valid[:, :, None], focal, 0.0).sum()

    image_idx, anchor_idx = positive.nonzero(as_tuple=True)  # (P,) each
    pos_deltas = deltas[image_idx, anchor_idx].float()  # (P, 4)
    pos_anchors = anchors[anchor_idx]  # (P, 4)
    pos_gt = matched_gt_boxes[image_idx, anchor_idx]  # (P, 4)
    if box_loss == "smooth_l1":
        target = box_coder.encode(anchors=pos_anchors, gt_boxes=pos_gt)
        box_sum = smooth_l1_loss(pos_deltas, target, beta=smooth_l1_beta).sum()
    elif box_loss == "giou":
        pred_boxes = box_coder.decode(anchors=pos_anchors, deltas=pos_deltas)
        box_sum = generalized_box_iou_loss(
            pred_boxes, pos_gt.float(), reduction="sum", eps=_GIOU_EPS
        )
    else:
        raise ValueError(
            f"retinanet_loss_sums: box_loss must be 'smooth_l1' or 'giou', got {box_loss!r}"
        )
    return LossSums(cls=cls_sum, box=box_sum, num_pos=positive.sum())
