"""From head outputs to detections in original-image pixels, as detectron2's RetinaNet inference.

Shape legend: B images, N_l = H_l * W_l * A anchors of level l, K classes, C candidates per image
(the sum over levels of min(N_l * K, topk_candidates)), D detections.

Per level: sigmoid scores, keep ``score > score_thresh`` (strict), then the ``topk_candidates``
best, sorted by descending score, decoded against their anchors. All levels are concatenated,
``torchvision.ops.batched_nms`` runs per class, and the first ``detections_per_image`` survivors
are kept. Only then are boxes scaled to the original size (x by orig_w / input_w, y by
orig_h / input_h), clipped to ``[0, W] x [0, H]`` and dropped if their width or height is <= 0,
so an image can end with fewer than ``detections_per_image`` boxes (a detectron2 quirk kept on
purpose). Thresholding and top-k are batched over images; only NMS loops over them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.ops import batched_nms

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

    logits: (B, N, K); deltas: (B, N, 4); anchors: (N, 4). Returns candidates with
    C = min(N * K, topk_candidates).
    """
    num_images, num_anchors, num_classes = logits.shape
    scores = torch.sigmoid(logits.float()).reshape(
        num_images, num_anchors * num_classes
    )  # (B, N*K)
    # Thresholding is monotone, so the top-k of all scores, cut at the threshold, is the top-k of
    # the scores above it: one batched topk instead of a ragged selection per image.
    k = min(num_anchors * num_classes, topk_candidates)
    top_scores, top_idx = scores.topk(k, dim=1, sorted=True)  # (B, C)
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

    # NMS is ragged: the only loop over images.
    kept_flat = []
    for i in range(num_images):
        cand = valid[i].nonzero().squeeze(1)  # (C_i,)
        keep = batched_nms(boxes[i, cand], scores[i, cand], labels[i, cand], nms_thresh)
        kept_flat.append(cand[keep[:detections_per_image]] + i * boxes.shape[1])
    flat = torch.cat(kept_flat)  # (sum D,) index into the (B*C) candidates
    image_idx = flat // boxes.shape[1]
    det_boxes = boxes.reshape(-1, 4)[flat]  # (sum D, 4)
    det_scores = scores.reshape(-1)[flat]
    det_labels = labels.reshape(-1)[flat]

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
