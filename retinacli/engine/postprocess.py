"""From head outputs to detections in original-image pixels, as detectron2's RetinaNet inference.

Shape legend: B images, N_l = H_l * W_l * A anchors of level l, K classes, C candidates per image
(at most the sum over levels of min(N_l * K, topk_candidates)), D detections.

Per level: sigmoid scores, keep ``score > score_thresh`` (strict), then the ``topk_candidates``
best, sorted by descending score (`level_topk` finds them on the logits, so the sigmoid is only
computed for them). All levels are concatenated and the survivors decoded against their anchors;
NMS runs per class (`per_class_nms`, as ``torchvision.ops.batched_nms``), and the first
``detections_per_image`` survivors by score are kept. Only then are boxes scaled to the original
size (x by orig_w / input_w, y by orig_h / input_h), clipped to ``[0, W] x [0, H]`` and dropped
if their width or height is <= 0, so an image can end with fewer than ``detections_per_image``
boxes (a detectron2 quirk kept on purpose). Everything is batched over images; only NMS loops,
over (image, class) groups.

Exact: the candidate set (the logit-space selection is a superset, then the exact threshold and
top-k apply), the decoding, and NMS within each group (see `per_class_nms`). Left to float
details: a score may differ by an ulp from a sigmoid over the whole level (PyTorch's vectorised
and scalar sigmoid paths differ), and scores equal as floats may be ordered either way at the
top-k cut and within NMS.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.ops import nms

from retinacli.engine.box_coder import BoxCoder
from retinacli.engine.structures import Detections

# Candidates are pre-selected in logit space with this margin below logit(score_thresh), far
# wider than the float32 rounding of the sigmoid; the exact `score > score_thresh` test is then
# applied to the sigmoid of the survivors, so the result is the same as thresholding first.
_LOGIT_MARGIN = 1e-3


def level_topk(
    logits: Tensor, *, score_thresh: float, topk_candidates: int
) -> tuple[Tensor, Tensor]:
    """The candidates of one level for the whole batch, before the exact threshold test.

    logits: (B, N, K). Returns (top_logits, top_idx), both (B, C) with
    C <= min(N * K, topk_candidates): per image, the logits of the best scores, descending,
    and their indices n * K + c. They include every one of the top-k scores above
    `score_thresh`; entries past an image's own count are -inf, and a few entries just below
    the threshold may be included: callers keep ``sigmoid(top_logits) > score_thresh``.

    The top-k of N * K scores is found without sorting them all. Anchors are taken in groups of
    G consecutive ones (G * K contiguous scores; G = 2 when N is even and k <= N / 2, else 1):
    if m is the k-th largest of the N / G group maxima, at least k scores are >= m, so every
    top-k score is >= m and lies in a group whose maximum is >= m. Only those groups (and only
    if above the threshold), about k of them, are examined score by score. (G = 2 only because
    PyTorch's CPU max over rows of 2 * 80 values runs about 2.5 times faster than over rows of
    80.) Sigmoid is monotone, so the selection runs on logits and the sigmoid is computed for
    the selected ones only.
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
        group = 2 if num_anchors % 2 == 0 and k <= num_anchors // 2 else 1
        num_groups = num_anchors // group
        rows = x.reshape(num_images * num_groups, group * num_classes)  # image-major groups
        group_max = rows.amax(dim=1).reshape(num_images, num_groups)  # (B, N / G)
        if k <= num_groups:
            kth = group_max.kthvalue(num_groups - k + 1, dim=1, keepdim=True).values  # (B, 1)
        else:  # fewer groups than k: the maxima give no bound
            kth = x.new_full((num_images, 1), -math.inf)
        bound = kth.clamp(min=cutoff)  # (B, 1); >= instead of > cutoff: within the margin
        hit_groups = (group_max >= bound).reshape(-1).nonzero().squeeze(1)  # (M_g,)
        sub = rows.index_select(0, hit_groups)  # (M_g, G * K); rows b * N / G + g by image
        image_of_row = hit_groups // num_groups
        keep = sub >= bound[image_of_row]
        hit_row, hit_col = keep.nonzero(as_tuple=True)  # (M,) each
        image = image_of_row[hit_row]
        # Pack each image's survivors into (B, max_count), padded with -inf, then top-k.
        counts = torch.bincount(image, minlength=num_images)  # (B,)
        max_count = int(counts.max())
        slot = torch.arange(image.shape[0], device=x.device) - (counts.cumsum(0) - counts)[image]
        packed = x.new_full((num_images, max_count), -math.inf)
        packed[image, slot] = sub[hit_row, hit_col]
        packed_idx = torch.zeros((num_images, max_count), dtype=torch.int64, device=x.device)
        # Row g of image b starts at score (g * G) * K of the image: index n * K + c.
        packed_idx[image, slot] = (hit_groups[hit_row] - image * num_groups) * (
            group * num_classes
        ) + hit_col
        top_logits, top_pos = packed.topk(min(k, max_count), dim=1, sorted=True)  # (B, C)
        top_idx = packed_idx.gather(1, top_pos)
    return top_logits, top_idx


def per_class_nms(boxes: Tensor, scores: Tensor, groups: Tensor, *, iou_threshold: float) -> Tensor:
    """Non-maximum suppression run separately inside each group (e.g. image * K + class).

    boxes: (M, 4) XYXY; scores: (M,); groups: (M,) int64. Returns the indices of the kept
    boxes (unordered). Within a group this is `torchvision.ops.nms` on the group's boxes in
    their original order: the same result as torchvision's `batched_nms` on large inputs. (For
    up to 1000 boxes on CPU, `batched_nms` instead offsets boxes by class and runs one NMS; that
    rounds coordinates and can flip a suppression whose IoU lies within float rounding of the
    threshold. The per-group result is the exact one.) On a GPU the candidates are moved to the
    CPU for this (one copy each way; a Python loop of per-group CUDA launches, each waiting for
    the device, would cost more than the whole NMS).
    """
    if groups.numel() == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    if boxes.device.type != "cpu":
        # One transfer each way instead of one NMS launch (and host sync) per group: the
        # candidates are a few thousand boxes, and CPU NMS keeps exactly the same ones.
        kept = per_class_nms(boxes.cpu(), scores.cpu(), groups.cpu(), iou_threshold=iou_threshold)
        return kept.to(boxes.device)
    order = torch.argsort(groups, stable=True)  # groups contiguous, original order inside
    sorted_boxes, sorted_scores = boxes[order], scores[order]
    _, sizes = torch.unique_consecutive(groups[order], return_counts=True)
    starts = torch.cumsum(sizes, 0) - sizes
    kept = [starts[sizes == 1]]  # nothing to suppress: kept without an NMS call
    size_list = sizes.tolist()
    for start, size, group_boxes, group_scores in zip(
        starts.tolist(),
        size_list,
        sorted_boxes.split(size_list),
        sorted_scores.split(size_list),
        strict=True,
    ):
        if size > 1:
            kept.append(nms(group_boxes, group_scores, iou_threshold) + start)
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
    # Per level, the candidates' scores, classes, deltas and anchors: (B, C_l) and (B, C_l, 4).
    num_classes = int(logits[0].shape[-1])
    top_scores, labels, top_deltas, top_anchors = [], [], [], []
    for lg, dl, an in zip(logits, deltas, anchors, strict=True):
        level_logits, level_idx = level_topk(
            lg, score_thresh=score_thresh, topk_candidates=topk_candidates
        )
        anchor_idx = level_idx // num_classes
        # Sigmoid per level: its vectorised and scalar paths can differ by an ulp, so the
        # floats depend on the tensor layout; one call per level keeps them stable.
        top_scores.append(torch.sigmoid(level_logits))
        labels.append(level_idx % num_classes)
        top_deltas.append(dl.gather(1, anchor_idx[:, :, None].expand(-1, -1, 4)))
        top_anchors.append(an[anchor_idx])
    # All levels at once: exact threshold on the sigmoid, decoding of the survivors only.
    scores = torch.cat(top_scores, dim=1)  # (B, C)
    image_idx, cand_idx = (scores > score_thresh).nonzero(as_tuple=True)  # (M,) each
    cand_scores = scores[image_idx, cand_idx]
    cand_labels = torch.cat(labels, dim=1)[image_idx, cand_idx]
    cand_boxes = box_coder.decode(
        anchors=torch.cat(top_anchors, dim=1)[image_idx, cand_idx],
        deltas=torch.cat(top_deltas, dim=1)[image_idx, cand_idx],
    )  # (M, 4)

    # NMS for all images at once, per (image, class) group.
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
