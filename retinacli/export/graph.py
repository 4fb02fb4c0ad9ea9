"""The detector as one exportable graph: a uint8 image in, boxes, scores and classes out.

`DeployableRetinaNet` computes exactly what `RetinaNet` computes in eval mode for one image,
written with tensor operations only (no Python numbers taken from tensors, no data-dependent
Python control flow), so that `torch.export` and `torch.jit.trace` record the whole of it with
dynamic image sizes:

1. float, ``(x - pixel_mean) / pixel_std``, zero padding at the bottom and right to a multiple
   of the backbone's size divisibility;
2. backbone, FPN and head; the anchors of each level from the feature map's size, as
   `AnchorGenerator` lays them out;
3. per level: sigmoid scores, the ``topk_candidates`` best (taken over all scores and then
   thresholded, which selects the same set as detectron2's threshold-then-top-k), decoded;
4. class-wise NMS (`class_nms`: one NMS per class, exactly as `engine.postprocess`), the
   ``detections_per_image`` best, boxes clipped to the image and empty ones dropped.

Input: (3, H, W) uint8 in the model's channel order, already resized as the recipe's test
resize says; outputs are in the pixels of that input: boxes (D, 4) float32 XYXY, scores (D,)
float32 (descending), classes (D,) int64 contiguous class indices.

`NetworkOnly` stops after step 2: per level the logits (1, N_l, K), the box deltas (1, N_l, 4)
and the anchors (N_l, 4), for users who run their own postprocessing.

Shape legend: L levels, N_l anchors of level l, K classes, C candidates, D detections.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from retinacli.engine.detector import RetinaNet


@torch.library.custom_op("retinacli::class_nms", mutates_args=())
def class_nms(boxes: Tensor, scores: Tensor, classes: Tensor, iou_threshold: float, num_classes: int) -> Tensor:
    """Indices of the boxes kept by NMS run separately within each class (unordered).

    boxes (C, 4) XYXY, scores (C,), classes (C,) int64 in [0, num_classes). In eager mode and in
    TorchScript this is `engine.postprocess.per_class_nms`; ONNX export writes it as one
    NonMaxSuppression node with a class axis (`onnx_export`).
    """
    from retinacli.engine.postprocess import per_class_nms

    return per_class_nms(boxes, scores, classes, iou_threshold=iou_threshold)


def class_nms_torchvision(boxes: Tensor, scores: Tensor, classes: Tensor, iou_threshold: float, num_classes: int) -> Tensor:
    """`class_nms` with torchvision's NMS only, for TorchScript files that load without
    retinacli (a loop over the classes, each class's boxes in their original order); it is
    compiled with `torch.jit.script` (`scripted_class_nms`) so that tracing keeps the loop."""
    kept = [torch.zeros(0, dtype=torch.int64, device=boxes.device)]
    for c in range(num_classes):
        members = (classes == c).nonzero().reshape(-1)
        if members.numel() > 0:
            kept.append(members[torch.ops.torchvision.nms(boxes[members], scores[members], iou_threshold)])
    return torch.cat(kept)


@functools.cache
def scripted_class_nms() -> Any:
    """`class_nms_torchvision` compiled by TorchScript (once; its deprecation warning muted)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.script(class_nms_torchvision)


@class_nms.register_fake
def _class_nms_shape(boxes: Tensor, scores: Tensor, classes: Tensor, iou_threshold: float, num_classes: int) -> Tensor:
    count = torch.library.get_ctx().new_dynamic_size()
    return boxes.new_empty((count,), dtype=torch.int64)


class NetworkOnly(nn.Module):
    """Normalisation, padding, backbone, FPN, head and anchors of a `RetinaNet` (module docstring)."""

    def __init__(self, model: RetinaNet) -> None:
        super().__init__()
        self.backbone = model.backbone
        self.head = model.head
        self.register_buffer("pixel_mean", model.pixel_mean.detach().clone().reshape(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", model.pixel_std.detach().clone().reshape(3, 1, 1), persistent=False)
        generator = model.anchor_generator
        self.num_levels = generator.num_levels
        for level, cell in enumerate(generator.cell_anchors):
            self.register_buffer(f"cell_anchors_{level}", cell.detach().clone(), persistent=False)
        self.strides = [int(s) for s in generator.strides]
        self.offset = float(generator.offset)
        self.size_divisibility = int(model.backbone.size_divisibility)
        self.num_classes = int(model.num_classes)

    def network(self, image: Tensor) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """logits (1, N_l, K), deltas (1, N_l, 4) and anchors (N_l, 4) of every level."""
        height, width = image.shape[1], image.shape[2]
        x = (image.float() - self.pixel_mean) / self.pixel_std
        divisor = self.size_divisibility
        pad_h = (height + divisor - 1) // divisor * divisor - height
        pad_w = (width + divisor - 1) // divisor * divisor - width
        x = F.pad(x, (0, pad_w, 0, pad_h))[None]  # (1, 3, H', W'), zeros after normalising
        features = self.backbone(x)
        logits, deltas = self.head(features)
        anchors = [self._anchors(level, feature) for level, feature in enumerate(features)]
        return list(logits), list(deltas), anchors

    def _anchors(self, level: int, feature: Tensor) -> Tensor:
        cell = getattr(self, f"cell_anchors_{level}")  # (A, 4)
        stride = self.strides[level]
        shift_x = torch.arange(feature.shape[-1], dtype=torch.float32, device=cell.device) * stride
        shift_y = torch.arange(feature.shape[-2], dtype=torch.float32, device=cell.device) * stride
        shift_x = shift_x + self.offset * stride
        shift_y = shift_y + self.offset * stride
        grid_y, grid_x = torch.meshgrid(shift_y, shift_x, indexing="ij")
        x, y = grid_x.reshape(-1), grid_y.reshape(-1)
        shifts = torch.stack([x, y, x, y], dim=1)  # (H_l * W_l, 4), y outer, x inner
        return (shifts[:, None, :] + cell[None, :, :]).reshape(-1, 4)

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        logits, deltas, anchors = self.network(image)
        return (*logits, *deltas, *anchors)


class DeployableRetinaNet(NetworkOnly):
    """The whole detector for one image (module docstring); thresholds are the model's.

    scripted_nms: use `class_nms_scripted` (TorchScript files) instead of the `class_nms` op
    (eager, torch.export and ONNX).
    """

    def __init__(self, model: RetinaNet, *, scripted_nms: bool = False) -> None:
        super().__init__(model)
        self.scripted_nms = scripted_nms
        self.box_coder = model.box_coder
        self.score_thresh = float(model.score_thresh)
        self.topk_candidates = int(model.topk_candidates)
        self.nms_thresh = float(model.nms_thresh)
        self.detections_per_image = int(model.detections_per_image)

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        height, width = image.shape[1], image.shape[2]
        logits, deltas, anchors = self.network(image)
        boxes, scores, classes = [], [], []
        for level_logits, level_deltas, level_anchors in zip(logits, deltas, anchors, strict=True):
            flat = torch.sigmoid(level_logits[0].reshape(-1))  # (N_l * K,)
            # Pad with -inf so that a fixed k works for any size; the padding fails the threshold.
            padded = torch.cat([flat, flat.new_full((self.topk_candidates,), -torch.inf)])
            top, index = padded.topk(self.topk_candidates)  # (topk,)
            keep = top > self.score_thresh
            top, index = top[keep], index[keep]  # (C_l,)
            anchor = index // self.num_classes
            boxes.append(self.box_coder.decode(anchors=level_anchors[anchor], deltas=level_deltas[0][anchor]))
            scores.append(top)
            classes.append(index % self.num_classes)
        box, score, label = torch.cat(boxes), torch.cat(scores), torch.cat(classes)  # (C, 4), (C,), (C,)
        nms = scripted_class_nms() if self.scripted_nms else torch.ops.retinacli.class_nms
        kept = nms(box, score, label, self.nms_thresh, self.num_classes)
        # The best detections_per_image by score (padding again keeps k fixed).
        kept_scores = torch.cat([score[kept], score.new_full((self.detections_per_image,), -torch.inf)])
        kept = torch.cat([kept, kept.new_zeros((self.detections_per_image,))])
        best, order = kept_scores.topk(self.detections_per_image)
        kept = kept[order][best > -torch.inf]
        box, score, label = box[kept], score[kept], label[kept]
        limit_x = torch.full_like(box[:, 0], 1.0) * width
        limit_y = torch.full_like(box[:, 1], 1.0) * height
        box = torch.stack(
            [
                torch.minimum(box[:, 0].clamp(min=0), limit_x),
                torch.minimum(box[:, 1].clamp(min=0), limit_y),
                torch.minimum(box[:, 2].clamp(min=0), limit_x),
                torch.minimum(box[:, 3].clamp(min=0), limit_y),
            ],
            dim=1,
        )
        nonempty = (box[:, 2] > box[:, 0]) & (box[:, 3] > box[:, 1])
        return box[nonempty], score[nonempty], label[nonempty]
