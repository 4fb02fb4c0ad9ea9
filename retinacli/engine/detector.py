"""The RetinaNet detector (Lin et al., 2017): backbone + FPN, shared head, anchors, losses and
inference, with detectron2's numerics.

Shape legend: B images, L levels, A anchors per location, R anchors per image (sum over levels of
H_l * W_l * A), K classes without background, G ground-truth boxes, D detections.

Inputs are a list of (3, H_i, W_i) images, uint8 or float with values in 0..255, already resized
and in the model's channel order. They are normalised and padded together (bottom/right, to a
multiple of the backbone's `size_divisibility`), so the anchors follow the padded batch size.
Inference of several images in one batch therefore differs slightly from one image at a time
near the bottom/right borders, exactly as in detectron2, whose reference runs use batches of 1.

State dict roots: ``backbone.body.*`` (ResNet), ``backbone.fpn.*`` (FPN), ``head.*``. Anchors and
pixel statistics are non-persistent; the loss normaliser is the Python float `loss_normalizer`,
saved and restored by the checkpoint code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from retinacli.engine.anchors import AnchorGenerator
from retinacli.engine.box_coder import BoxCoder
from retinacli.engine.fpn import ResNetFPN
from retinacli.engine.head import RetinaNetHead
from retinacli.engine.losses import (
    IGNORE_LABEL,
    INITIAL_LOSS_NORMALIZER,
    BoxLossKind,
    retinanet_loss_sums,
    update_loss_normalizer,
)
from retinacli.engine.matcher import BACKGROUND, IGNORE, Matcher
from retinacli.engine.postprocess import postprocess_detections
from retinacli.engine.preprocess import normalize_and_pad
from retinacli.engine.structures import Detections, Targets, pad_targets


@dataclass
class NetworkOutputs:
    """Everything the network computes before losses or postprocessing.

    images: (B, 3, H, W) normalised, padded batch; input_sizes: per image (h, w) before padding;
    features: per level (B, C, H_l, W_l); logits: per level (B, H_l*W_l*A, K);
    deltas: per level (B, H_l*W_l*A, 4); anchors: per level (H_l*W_l*A, 4) XYXY input pixels.
    """

    images: Tensor
    input_sizes: list[tuple[int, int]]
    features: list[Tensor]
    logits: list[Tensor]
    deltas: list[Tensor]
    anchors: list[Tensor]


@dataclass
class AnchorTargets:
    """Training targets of every anchor, as detectron2's `label_anchors`.

    gt_labels: (B, R) int64, IGNORE_LABEL (-1) ignored, K background, 0..K-1 the matched class.
    matched_gt_boxes: (B, R, 4) float32 XYXY, the matched GT box (zeros for images without GT;
    meaningful only where the anchor is positive).
    """

    gt_labels: Tensor
    matched_gt_boxes: Tensor


class RetinaNet(nn.Module):
    """RetinaNet with detectron2's losses, normaliser and inference.

    Args (keyword-only):
        backbone: a ResNetFPN returning one feature map per anchor level.
        head: the shared RetinaNetHead (its num_classes and num_anchors must agree).
        anchor_generator: anchors per level; its strides must equal the backbone's out_strides.
        box_coder: encodes regression targets and decodes predictions.
        matcher: labels anchors from IoU (RetinaNet: [0.4, 0.5], labels [0, -1, 1], low-quality on).
        num_classes: K, without background.
        focal_alpha, focal_gamma: focal loss parameters (alpha < 0 disables alpha weighting).
        box_loss: "smooth_l1" (on deltas) or "giou" (on decoded boxes).
        smooth_l1_beta: smooth L1 transition point; 0 means L1. Unused with "giou".
        score_thresh: inference keeps candidates with score strictly above it, per level.
        topk_candidates: at most this many candidates per level, before NMS.
        nms_thresh: IoU above which a same-class lower-scored box is suppressed.
        detections_per_image: cap applied after NMS, before clipping.
        pixel_mean, pixel_std: 3 values in the images' channel order and 0..255 units.
    """

    def __init__(
        self,
        *,
        backbone: ResNetFPN,
        head: RetinaNetHead,
        anchor_generator: AnchorGenerator,
        box_coder: BoxCoder,
        matcher: Matcher,
        num_classes: int,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        box_loss: BoxLossKind = "smooth_l1",
        smooth_l1_beta: float = 0.1,
        score_thresh: float = 0.05,
        topk_candidates: int = 1000,
        nms_thresh: float = 0.5,
        detections_per_image: int = 100,
        pixel_mean: Sequence[float] = (103.53, 116.28, 123.675),
        pixel_std: Sequence[float] = (1.0, 1.0, 1.0),
    ) -> None:
        super().__init__()
        if head.num_classes != num_classes:
            raise ValueError(
                f"RetinaNet: head has {head.num_classes} classes but num_classes is {num_classes}"
            )
        if set(anchor_generator.num_anchors_per_location) != {head.num_anchors}:
            raise ValueError(
                f"RetinaNet: the anchor generator gives {anchor_generator.num_anchors_per_location} "
                f"anchors per location but the head predicts {head.num_anchors} on every level"
            )
        if list(anchor_generator.strides) != list(backbone.out_strides):
            raise ValueError(
                f"RetinaNet: anchor strides {anchor_generator.strides} differ from the backbone's "
                f"level strides {backbone.out_strides}"
            )
        if not (0.0 <= score_thresh < 1.0 and 0.0 <= nms_thresh <= 1.0):
            raise ValueError(
                f"RetinaNet: score_thresh must be in [0, 1) and nms_thresh in [0, 1], got "
                f"{score_thresh} and {nms_thresh}"
            )
        if topk_candidates < 1 or detections_per_image < 1:
            raise ValueError(
                f"RetinaNet: topk_candidates and detections_per_image must be >= 1, got "
                f"{topk_candidates} and {detections_per_image}"
            )
        if box_loss not in ("smooth_l1", "giou"):
            raise ValueError(f"RetinaNet: box_loss must be 'smooth_l1' or 'giou', got {box_loss!r}")
        if len(pixel_mean) != 3 or len(pixel_std) != 3 or min(pixel_std) <= 0:
            raise ValueError(
                f"RetinaNet: pixel_mean and pixel_std need 3 values (std > 0), got {pixel_mean}, {pixel_std}"
            )
        self.backbone = backbone
        self.head = head
        self.anchor_generator = anchor_generator
        self.box_coder = box_coder
        self.matcher = matcher
        self.num_classes = num_classes
        self.focal_alpha = float(focal_alpha)
        self.focal_gamma = float(focal_gamma)
        self.box_loss: BoxLossKind = box_loss
        self.smooth_l1_beta = float(smooth_l1_beta)
        self.score_thresh = float(score_thresh)
        self.topk_candidates = int(topk_candidates)
        self.nms_thresh = float(nms_thresh)
        self.detections_per_image = int(detections_per_image)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32), False)
        # detectron2's running loss normaliser: a plain float, not in the state dict.
        self.loss_normalizer: float = INITIAL_LOSS_NORMALIZER

    def run_network(self, images: Sequence[Tensor]) -> NetworkOutputs:
        """Normalise and pad `images`, run backbone and head, and build the anchors."""
        batch, input_sizes = normalize_and_pad(
            images,
            pixel_mean=self.pixel_mean,
            pixel_std=self.pixel_std,
            size_divisibility=self.backbone.size_divisibility,
        )
        features = self.backbone(batch)
        logits, deltas = self.head(features)
        anchors = self.anchor_generator.grid_anchors([tuple(f.shape[-2:]) for f in features])
        return NetworkOutputs(
            images=batch,
            input_sizes=input_sizes,
            features=features,
            logits=logits,
            deltas=deltas,
            anchors=anchors,
        )

    def label_anchors(self, anchors: Tensor, targets: Sequence[Targets]) -> AnchorTargets:
        """Match anchors (R, 4) against every image's GT, batched over images."""
        padded = pad_targets(list(targets), device=anchors.device)
        matches, match_labels = self.matcher.match_boxes(
            gt_boxes=padded.boxes, gt_valid=padded.valid, anchors=anchors
        )  # (B, R) each
        if padded.labels.shape[1] == 0:
            # No image of the batch has a box: everything is background.
            return AnchorTargets(
                gt_labels=torch.full_like(matches, self.num_classes),
                matched_gt_boxes=anchors.new_zeros((matches.shape[0], matches.shape[1], 4)),
            )
        gt_labels = padded.labels.gather(1, matches)  # (B, R)
        gt_labels = torch.where(match_labels == BACKGROUND, self.num_classes, gt_labels)
        gt_labels = torch.where(match_labels == IGNORE, IGNORE_LABEL, gt_labels)
        matched_gt_boxes = padded.boxes.gather(
            1, matches[:, :, None].expand(-1, -1, 4)
        )  # (B, R, 4)
        return AnchorTargets(gt_labels=gt_labels, matched_gt_boxes=matched_gt_boxes)

    def forward(
        self,
        images: Sequence[Tensor],
        targets: Sequence[Targets] | None = None,
        original_sizes: Sequence[tuple[int, int]] | None = None,
    ) -> dict[str, Tensor] | list[Detections]:
        """Training mode: losses of the batch; eval mode: detections of every image.

        Training (``model.train()``, `targets` required, one per image in input pixels): returns
        {"loss_cls", "loss_box_reg"} (scalar float32 tensors, sums divided by the running
        normaliser, which this call updates) and "num_pos_anchors" (0-dim int64, whole batch).
        Eval (``model.eval()``): returns one Detections per image in the pixels of
        `original_sizes` (per image (h, w); default: the input sizes).
        """
        if self.training:
            if targets is None:
                raise ValueError(
                    "RetinaNet.forward: training mode needs targets; call model.eval() for inference"
                )
            if len(targets) != len(images):
                raise ValueError(
                    f"RetinaNet.forward: {len(images)} images but {len(targets)} targets"
                )
            return self.losses(self.run_network(images), targets)
        if targets is not None:
            raise ValueError(
                "RetinaNet.forward: targets given in eval mode; call model.train() to compute losses"
            )
        return self.detect(self.run_network(images), original_sizes)

    def detect(
        self, net: NetworkOutputs, original_sizes: Sequence[tuple[int, int]] | None = None
    ) -> list[Detections]:
        """Detections of every image of `net` in the pixels of `original_sizes` (default: input sizes)."""
        return postprocess_detections(
            logits=net.logits,
            deltas=net.deltas,
            anchors=net.anchors,
            input_sizes=net.input_sizes,
            original_sizes=net.input_sizes if original_sizes is None else list(original_sizes),
            box_coder=self.box_coder,
            score_thresh=self.score_thresh,
            topk_candidates=self.topk_candidates,
            nms_thresh=self.nms_thresh,
            detections_per_image=self.detections_per_image,
        )

    def losses(self, net: NetworkOutputs, targets: Sequence[Targets]) -> dict[str, Tensor]:
        """Losses of `net` against `targets` (one per image); updates `loss_normalizer`.

        Returns the dict described in `forward`.
        """
        anchors = torch.cat(net.anchors)  # (R, 4)
        anchor_targets = self.label_anchors(anchors, targets)
        sums = retinanet_loss_sums(
            logits=net.logits,
            deltas=net.deltas,
            anchors=anchors,
            gt_labels=anchor_targets.gt_labels,
            matched_gt_boxes=anchor_targets.matched_gt_boxes,
            box_coder=self.box_coder,
            focal_alpha=self.focal_alpha,
            focal_gamma=self.focal_gamma,
            box_loss=self.box_loss,
            smooth_l1_beta=self.smooth_l1_beta,
        )
        self.loss_normalizer = update_loss_normalizer(self.loss_normalizer, int(sums.num_pos))
        return {
            "loss_cls": sums.cls / self.loss_normalizer,
            "loss_box_reg": sums.box / self.loss_normalizer,
            "num_pos_anchors": sums.num_pos,
        }
