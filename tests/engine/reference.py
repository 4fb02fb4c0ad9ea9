"""Reference implementations the engine tests compare against (not part of the package).

- `sigmoid_focal_loss`: the element-wise focal loss (torchvision's semantics), which the fused
  `engine.losses.focal_loss_sum` must equal summed.
- `level_candidates`: one level's threshold, top-k and decoding for the whole batch, padded, the
  per-level candidates detectron2 computes before NMS.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from retinacli.engine.box_coder import BoxCoder
from retinacli.engine.postprocess import level_topk


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


@dataclass
class Candidates:
    """Pre-NMS candidates of a batch, padded to C per image; only entries with `valid` are real.

    boxes: (B, C, 4) float32 XYXY in input pixels; scores: (B, C) float32 after the sigmoid,
    descending within each level; labels: (B, C) int64; anchor_idx: (B, C) int64 index into the
    level's anchors; valid: (B, C) bool.
    """

    boxes: Tensor
    scores: Tensor
    labels: Tensor
    anchor_idx: Tensor
    valid: Tensor


def level_candidates(
    *,
    logits: Tensor,
    deltas: Tensor,
    anchors: Tensor,
    box_coder: BoxCoder,
    score_thresh: float,
    topk_candidates: int,
) -> Candidates:
    """Threshold, top-k and decode one level for the whole batch.

    logits: (B, N, K); deltas: (B, N, 4); anchors: (N, 4). Returns candidates padded to
    C <= min(N * K, topk_candidates) per image, sorted by descending score; entries past an
    image's own count have `valid` False. The selection is `level_topk`'s.
    """
    num_classes = logits.shape[2]
    top_logits, top_idx = level_topk(
        logits, score_thresh=score_thresh, topk_candidates=topk_candidates
    )
    top_scores = torch.sigmoid(top_logits)
    anchor_idx = top_idx // num_classes
    top_deltas = deltas.gather(1, anchor_idx[:, :, None].expand(-1, -1, 4))  # (B, C, 4)
    return Candidates(
        boxes=box_coder.decode(anchors=anchors[anchor_idx], deltas=top_deltas),
        scores=top_scores,
        labels=top_idx % num_classes,
        anchor_idx=anchor_idx,
        valid=top_scores > score_thresh,
    )
