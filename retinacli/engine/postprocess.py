"""From head outputs to detections in original-image pixels, as detectron2's RetinaNet inference.

Shape legend: B images, N_l = H_l * W_l * A anchors of level l, K classes, C candidates per image
(at most the sum over levels of min(N_l * K, topk_candidates)), D detections.

Per level: sigmoid scores, keep ``score > score_thresh`` (strict), then the ``topk_candidates``
best, sorted by descending score, decoded against their anchors. All levels are concatenated,
NMS runs per class (`per_class_nms`, as ``torchvision.ops.batched_nms``), and the first
``detections_per_image`` survivors by score are kept. Only then are boxes scaled to the original
size (x by orig_w / input_w, y by orig_h / input_h), clipped to ``[0, W] x [0, H]`` and dropped
if their width or height is <= 0, so an image can end with fewer than ``detections_per_image``
boxes (a detectron2 quirk kept on purpose). Everything is batched over images; only NMS loops,
over (image, class) groups.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.ops import nms

from retinacli.engine.box_coder import BoxCoder
from retinacli.engine.structures import Detections


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


# Candidates are pre-selected in logit space with this margin below logit(score_thresh), far
# wider than the float32 rounding of the sigmoid; the exact `score > score_thresh` test is then
# applied to the sigmoid of the survivors, so the result is the same as thresholding first.
_LOGIT_MARGIN = 1e-3


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
    image's own count have `valid` False.

    The top-k of N * K scores is found without sorting them all: if m is the k-th largest of
    the N per-anchor maxima (k <= N), at least k scores are >= m, so every top-k score is >= m. Only the
    anchors whose maximum is >= m (and above the threshold), about k of them, are examined
    class by class. Sigmoid is monotone, so the selection runs on logits and the sigmoid is
    computed for the selected ones only.
    """
    num_images, num_anchors, num_classes = logits.shape
    x = logits.float()
    k = min(num_anchors * num_classes, topk_candidates)
    if score_thresh >= 1.0 or k == 0 or num_images == 0:
        top_logits = x.new_zeros((num_images, 0))
        top_idx = torch.zeros((num_images, 0), dtype=torch.int64, device=x.device)
    else:
        cutoff = (
            math.log(score_thresh / (1.0 - score_thresh)) - _LOGIT_MARGIN
            if score_thresh > 0.0
            else -math.inf
        )
        anchor_max = x.amax(dim=2)  # (B, N)
        if k <= num_anchors:
            kth = anchor_max.topk(k, dim=1).values[:, -1:]  # (B, 1)
        else:  # fewer anchors than k: the maxima give no bound
            kth = x.new_full((num_images, 1), -math.inf)
        hit_anchors = ((anchor_max > cutoff) & (anchor_max >= kth)).reshape(-1).nonzero()
        hit_anchors = hit_anchors.squeeze(1)  # (M_a,) b * N + n, grouped by image
        sub = x.reshape(-1, num_classes)[hit_anchors]  # (M_a, K)
        image_of_row = hit_anchors // num_anchors
        keep = (sub > cutoff) & (sub >= kth[image_of_row])
        hit_row, hit_class = keep.nonzero(as_tuple=True)  # (M,) each
        image = image_of_row[hit_row]
        # Pack each image's survivors into (B, max_count), padded with -inf, then top-k.
        counts = torch.bincount(image, minlength=num_images)  # (B,)
        max_count = int(counts.max())
        slot = torch.arange(image.shape[0], device=x.device) - (counts.cumsum(0) - counts)[image]
        packed = x.new_full((num_images, max_count), -math.inf)
        packed[image, slot] = sub[hit_row, hit_class]
        packed_idx = torch.zeros((num_images, max_count), dtype=torch.int64, device=x.device)
        packed_idx[image, slot] = (
            hit_anchors[hit_row] - image * num_anchors
        ) * num_classes + hit_class
        top_logits, top_pos = packed.topk(min(k, max_count), dim=1, sorted=True)  # (B, C)
        top_idx = packed_idx.gather(1, top_pos)
    top_scores = torch.sigmoid(top_logits)
    anchor_idx = top_idx // num_classes
    labels = top_idx % num_classes
    top_deltas = deltas.gather(1, anchor_idx[:, :, None].expand(-1, -1, 4))  # (B, C, 4)
    boxes = box_coder.decode(anchors=anchors[anchor_idx], deltas=top_deltas)  # (B, C, 4)
    return Candidates(
        boxes=boxes,
        scores=top_scores,
        labels=labels,
        anchor_idx=anchor_idx,
        valid=top_scores > score_thresh,
    )


def per_class_nms(boxes: Tensor, scores: Tensor, groups: Tensor, *, iou_threshold: float) -> Tensor:
    """Non-maximum suppression run separately inside each group (e.g. image * K + class).

    boxes: (M, 4) XYXY; scores: (M,); groups: (M,) int64. Returns the indices of the kept
    boxes (unordered). Within a group this is `torchvision.ops.nms` on the group's boxes in
    their original order: the same result as torchvision's `batched_nms` on large inputs. (For
    up to 1000 boxes on CPU, `batched_nms` instead offsets boxes by class and runs one NMS; that
    rounds coordinates and can flip a suppression whose IoU lies within float rounding of the
    threshold. The per-group result is the exact one.)
    """
    if groups.numel() == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    order = torch.argsort(groups, stable=True)  # groups contiguous, original order inside
    sorted_boxes, sorted_scores = boxes[order], scores[order]
    _, sizes = torch.unique_consecutive(groups[order], return_counts=True)
    starts = torch.cumsum(sizes, 0) - sizes
    singles = starts[sizes == 1]  # nothing to suppress: kept without an NMS call
    kept = [singles]
    for start, size in zip(starts[sizes > 1].tolist(), sizes[sizes > 1].tolist(), strict=True):
        kept.append(
            nms(
                sorted_boxes[start : start + size],
                sorted_scores[start : start + size],
                iou_threshold,
            )
            + start
        )
    return order[torch.cat(kept)]


def postprocess_detections(
    *,
    logits: Sequence[Tensor],
    deltas: Sequence[Tensor],
    anchors: Sequence[Tensor],
    input_sizes: Sequence[tuple[int, int]],
    original_sizes: Sequence[tuple[int, int]],
    box_coder: BoxCoder,
    score_thresh: float,
    topk_candidates: int,
    nms_thresh: float,
    detections_per_image: int,
) -> list[Detections]:
    """Detections of every image, in the pixels of its original image.

    logits, deltas, anchors: per level, (B, N_l, K), (B, N_l, 4) and (N_l, 4).
    input_sizes: per image, the (h, w) of the model input before padding (after resizing).
    original_sizes: per image, the (h, w) the boxes are scaled to.
    """
    num_images = len(input_sizes)
    if len(original_sizes) != num_images:
        raise ValueError(
            f"postprocess_detections: {num_images} input sizes but {len(original_sizes)} original sizes"
        )
    if num_images == 0:
        return []
    per_level = [
        level_candidates(
            logits=lg,
            deltas=dl,
            anchors=an,
            box_coder=box_coder,
            score_thresh=score_thresh,
            topk_candidates=topk_candidates,
        )
        for lg, dl, an in zip(logits, deltas, anchors, strict=True)
    ]
    boxes = torch.cat([c.boxes for c in per_level], dim=1)  # (B, C, 4)
    scores = torch.cat([c.scores for c in per_level], dim=1)  # (B, C)
    labels = torch.cat([c.labels for c in per_level], dim=1)  # (B, C)
    valid = torch.cat([c.valid for c in per_level], dim=1)  # (B, C)

    # NMS for all images at once, per (image, class) group.
    num_classes = int(logits[0].shape[-1])
    image_idx, cand_idx = valid.nonzero(as_tuple=True)  # (M,) each, all candidates of the batch
    cand_boxes = boxes[image_idx, cand_idx]  # (M, 4)
    cand_scores = scores[image_idx, cand_idx]
    cand_labels = labels[image_idx, cand_idx]
    kept = per_class_nms(
        cand_boxes, cand_scores, image_idx * num_classes + cand_labels, iou_threshold=nms_thresh
    )  # (D_all,)
    # Per image, by descending score, cut to detections_per_image.
    kept = kept[cand_scores[kept].argsort(descending=True, stable=True)]
    kept = kept[image_idx[kept].argsort(stable=True)]
    kept_image = image_idx[kept]
    per_image = torch.bincount(kept_image, minlength=num_images)
    rank = (
        torch.arange(kept.shape[0], device=kept.device)
        - (per_image.cumsum(0) - per_image)[kept_image]
    )
    kept = kept[rank < detections_per_image]
    image_idx = image_idx[kept]
    det_boxes = cand_boxes[kept]  # (sum D, 4)
    det_scores = cand_scores[kept]
    det_labels = cand_labels[kept]

    # Rescale, clip and drop empty boxes for all images at once.
    device = det_boxes.device
    input_hw = torch.tensor(input_sizes, dtype=torch.float64)
    orig_hw = torch.tensor(original_sizes, dtype=torch.float64)
    # The factors are computed in float64 (Python floats in detectron2), then applied to float32.
    scale = (
        (orig_hw / input_hw).flip(1).to(device=device, dtype=torch.float32)
    )  # (B, 2) as (sx, sy)
    limit = orig_hw.flip(1).to(device=device, dtype=torch.float32)  # (B, 2) as (W, H)
    det_boxes = det_boxes * scale[image_idx].repeat(1, 2)
    det_limit = limit[image_idx].repeat(1, 2)  # (sum D, 4)
    det_boxes = torch.minimum(det_boxes.clamp(min=0), det_limit)
    nonempty = (det_boxes[:, 2] > det_boxes[:, 0]) & (det_boxes[:, 3] > det_boxes[:, 1])
    counts = torch.bincount(image_idx[nonempty], minlength=num_images).tolist()
    return [
        Detections(boxes=b, scores=s, labels=lb)
        for b, s, lb in zip(
            det_boxes[nonempty].split(counts),
            det_scores[nonempty].split(counts),
            det_labels[nonempty].split(counts),
            strict=True,
        )
    ]
