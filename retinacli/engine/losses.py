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

from collections.abc import Sequence
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


# Elements per chunk of `_FocalLossSum`: its temporaries (3 x 1 MiB) stay in cache on CPU, and
# freshly allocated large tensors (page faults) are avoided; GPUs get bigger chunks.
_FOCAL_CHUNK_CPU = 1 << 18
_FOCAL_CHUNK_GPU = 1 << 24
# Above this logit, log(sigmoid(-x)) is taken as -x (see `_FocalLossSum`).
_LOG_Q_SWITCH = 40.0


class _FocalLossSum(torch.autograd.Function):
    """Sum of the focal loss over (B, N, K) logits with one-hot targets, gradient included.

    Negative entries (target 0) contribute ``c_neg * p**g * softplus(x)``, weighted per anchor (0
    for ignored anchors), the P positive entries ``c_pos * (1 - p)**g * softplus(-x)``. The
    negatives are computed in one chunked pass over the logits, with the positive entries zeroed
    before the chunk's sum (so nothing is added and subtracted again), and each chunk summed with
    torch's pairwise summation: the result is as accurate as the element-wise formula summed
    (torchvision's `sigmoid_focal_loss`). The gradient, ``c_neg * p**g * (p + g * (1 - p) *
    softplus(x))`` for negatives, is computed in the same pass and saved, so backward is one
    multiplication.

    Every term is finite, with a finite gradient, for any finite logit: ``log(1 - p)`` is taken as
    ``-x`` above `_LOG_Q_SWITCH`, where ``sigmoid(-x)`` would underflow for x above about 88.7
    (``softplus(x) - x = log1p(exp(-x))`` is below 5e-18 there, far below float32 resolution).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        logits: Tensor,
        anchor_weight: Tensor,
        positive_flat: Tensor,
        alpha: float,
        gamma: float,
    ) -> Tensor:
        c_neg, c_pos = (1.0 - alpha, alpha) if alpha >= 0 else (1.0, 1.0)
        num_classes = logits.shape[-1]
        x_rows = logits.reshape(-1, num_classes)  # (B*N, K)
        weight_rows = (anchor_weight.reshape(-1, 1) * c_neg).to(torch.float32)  # (B*N, 1)
        grad = torch.empty_like(x_rows)
        chunk = _FOCAL_CHUNK_GPU if logits.is_cuda else _FOCAL_CHUNK_CPU
        rows = max(1, chunk // max(num_classes, 1))
        starts = list(range(0, x_rows.shape[0], rows))
        # Where each chunk's positives start in the (ascending) positive_flat indices.
        bounds = torch.tensor([*starts, x_rows.shape[0]], device=logits.device) * num_classes
        first_positive = torch.searchsorted(positive_flat, bounds).tolist()
        buffers = [x_rows.new_empty((min(rows, x_rows.shape[0]), num_classes)) for _ in range(3)]
        partial_sums = []
        for c, start in enumerate(starts):
            x = x_rows[start : start + rows]
            n = x.shape[0]
            q, log_q, p = (b[:n] for b in buffers)
            torch.sigmoid(torch.neg(x, out=q), out=q)  # 1 - p, accurate near p = 1
            torch.log(q, out=log_q)  # -softplus(x)
            if bool(x.amax() > _LOG_Q_SWITCH):  # rare: one read of the chunk otherwise
                torch.where(x > _LOG_Q_SWITCH, torch.neg(x, out=p), log_q, out=log_q)
            torch.sigmoid(x, out=p)
            g = grad[start : start + n]
            torch.addcmul(p, q, log_q, value=-gamma, out=g)  # p + g (1 - p) softplus(x)
            if gamma == 2.0:
                p.mul_(p)
            else:
                p.pow_(gamma)
            p.mul_(weight_rows[start : start + n])  # c_neg * w * p**g
            g.mul_(p)
            inside = positive_flat[first_positive[c] : first_positive[c + 1]] - start * num_classes
            p.view(-1)[inside] = 0.0  # positives are summed below with their own formula
            partial_sums.append(p.mul_(log_q).sum())
        total = -torch.stack(partial_sums).sum() if partial_sums else logits.new_zeros(())

        x = logits.reshape(-1)[positive_flat]  # (P,)
        p = torch.sigmoid(x)
        q = torch.sigmoid(-x)  # 1 - p
        sp_pos = F.softplus(-x)  # -log(p), finite for any finite x
        q_pow = q.pow(gamma)
        total = total + (c_pos * q_pow * sp_pos).sum()
        # d/dx [(1 - p)**g * softplus(-x)] = -(1 - p)**g * (g * p * softplus(-x) + (1 - p))
        grad.view(-1)[positive_flat] = -c_pos * q_pow * (gamma * p * sp_pos + q)
        ctx.save_for_backward(grad.view_as(logits))
        return total

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_output: Tensor):  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        return grad * grad_output, None, None, None, None


def focal_loss_sum(
    logits: Tensor, gt_labels: Tensor, *, num_classes: int, alpha: float, gamma: float
) -> Tensor:
    """Focal loss (float32) summed over non-ignored anchors x K classes, one-hot targets.

    logits: (B, N, K); gt_labels: (B, N) int64 in {IGNORE_LABEL, 0..K-1, K (background)}.
    Equals the element-wise focal loss of one-hot targets summed over non-ignored anchors, within
    float rounding, gradients included (tested against `tests/engine/reference.py`).
    """
    valid = gt_labels != IGNORE_LABEL  # (B, N)
    positive = valid & (gt_labels != num_classes)
    flat_anchor = positive.reshape(-1).nonzero().squeeze(1)  # (P,) index into B*N
    positive_flat = flat_anchor * num_classes + gt_labels.reshape(-1)[flat_anchor]  # into B*N*K
    return _FocalLossSum.apply(
        logits.float().contiguous(), valid.float(), positive_flat, float(alpha), float(gamma)
    )


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
    logits: Sequence[Tensor],
    deltas: Sequence[Tensor],
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

    logits: per level (B, N_l, K); deltas: per level (B, N_l, 4) (levels are kept apart so the
    big logits are never concatenated); anchors: (R, 4) shared by all images, R = sum of N_l;
    gt_labels: (B, R) int64 in {IGNORE_LABEL, 0..K-1, K}; matched_gt_boxes: (B, R, 4) XYXY pixels
    (read only at positive anchors).
    """
    if len(logits) == 0 or len(logits) != len(deltas):
        raise ValueError(
            f"retinanet_loss_sums: got {len(logits)} logit and {len(deltas)} delta levels; "
            f"expected the same non-zero number"
        )
    num_images, _, num_classes = logits[0].shape
    level_sizes = [int(x.shape[1]) for x in logits]
    num_anchors = sum(level_sizes)
    shapes_ok = all(
        lg.shape == (num_images, n, num_classes) and dl.shape == (num_images, n, 4)
        for lg, dl, n in zip(logits, deltas, level_sizes, strict=True)
    )
    if not shapes_ok or gt_labels.shape != (num_images, num_anchors):
        raise ValueError(
            f"retinanet_loss_sums: logits {[tuple(x.shape) for x in logits]}, deltas "
            f"{[tuple(x.shape) for x in deltas]} and gt_labels {tuple(gt_labels.shape)} disagree; "
            f"expected (B, N_l, K), (B, N_l, 4) per level and (B, sum N_l)"
        )
    if anchors.shape != (num_anchors, 4) or matched_gt_boxes.shape != (num_images, num_anchors, 4):
        raise ValueError(
            f"retinanet_loss_sums: anchors {tuple(anchors.shape)} or matched_gt_boxes "
            f"{tuple(matched_gt_boxes.shape)} do not fit R = {num_anchors}"
        )
    level_labels = gt_labels.split(level_sizes, dim=1)  # per level (B, N_l)
    cls_sum = torch.stack(
        [
            focal_loss_sum(lg, lb, num_classes=num_classes, alpha=focal_alpha, gamma=focal_gamma)
            for lg, lb in zip(logits, level_labels, strict=True)
        ]
    ).sum()

    positive = (gt_labels != IGNORE_LABEL) & (gt_labels != num_classes)  # (B, R)
    image_idx, anchor_idx = positive.nonzero(as_tuple=True)  # (P,) each
    pos_deltas = torch.cat(list(deltas), dim=1)[image_idx, anchor_idx].float()  # (P, 4)
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
