"""Model builders shared by the engine tests: the golden detectron2 R18 case and tiny models."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from retinacli.engine.anchors import AnchorGenerator
from retinacli.engine.backbone import ResNet
from retinacli.engine.box_coder import BoxCoder
from retinacli.engine.detector import RetinaNet
from retinacli.engine.fpn import FPN, ResNetFPN
from retinacli.engine.head import RetinaNetHead
from retinacli.engine.losses import BoxLossKind
from retinacli.engine.matcher import BACKGROUND, FOREGROUND, IGNORE, Matcher
from retinacli.engine.norm import NormKind

# The golden config.yaml, value for value.
GOLDEN_ANCHOR_SIZES = [[x, x * 2 ** (1.0 / 3), x * 2 ** (2.0 / 3)] for x in [32, 64, 128, 256, 512]]
GOLDEN_PIXEL_MEAN = (103.53, 116.28, 123.675)  # BGR
LEVEL_STRIDES = [8, 16, 32, 64, 128]


def build_retinanet(
    *,
    depth: int = 18,
    norm: NormKind = "FrozenBN",
    freeze_at: int = 2,
    fpn_channels: int = 64,
    fpn_norm: NormKind = "none",
    head_norm: NormKind = "none",
    head_convs: int = 4,
    num_classes: int = 3,
    anchor_sizes: Sequence[Sequence[float]] = GOLDEN_ANCHOR_SIZES,
    aspect_ratios: Sequence[Sequence[float]] = ((0.5, 1.0, 2.0),),
    anchor_offset: float = 0.0,
    box_loss: BoxLossKind = "smooth_l1",
    smooth_l1_beta: float = 0.1,
    score_thresh: float = 0.05,
    topk_candidates: int = 1000,
    detections_per_image: int = 100,
) -> RetinaNet:
    """A RetinaNet with the golden case's settings unless told otherwise."""
    res2 = 64 if depth in (18, 34) else 256
    body = ResNet(
        depth=depth,
        norm=norm,
        freeze_at=freeze_at,
        stride_in_1x1=True,
        stem_out_channels=64,
        res2_out_channels=res2,
        out_features=["res3", "res4", "res5"],
    )
    channels = [body.feature_channels[f] for f in ("res3", "res4", "res5")]
    fpn = FPN(
        in_channels=channels,
        in_strides=[8, 16, 32],
        out_channels=fpn_channels,
        norm=fpn_norm,
        fuse_type="sum",
        top_block_input="res5",
    )
    anchors = AnchorGenerator(
        sizes=anchor_sizes, aspect_ratios=aspect_ratios, strides=LEVEL_STRIDES, offset=anchor_offset
    )
    head = RetinaNetHead(
        in_channels=fpn_channels,
        num_classes=num_classes,
        num_anchors=anchors.num_anchors_per_location[0],
        num_convs=head_convs,
        norm=head_norm,
        prior_prob=0.01,
    )
    return RetinaNet(
        backbone=ResNetFPN(body=body, fpn=fpn, in_features=["res3", "res4", "res5"]),
        head=head,
        anchor_generator=anchors,
        box_coder=BoxCoder(weights=(1.0, 1.0, 1.0, 1.0)),
        matcher=Matcher(
            iou_thresholds=[0.4, 0.5],
            iou_labels=[BACKGROUND, IGNORE, FOREGROUND],
            allow_low_quality_matches=True,
        ),
        num_classes=num_classes,
        focal_alpha=0.25,
        focal_gamma=2.0,
        box_loss=box_loss,
        smooth_l1_beta=smooth_l1_beta,
        score_thresh=score_thresh,
        topk_candidates=topk_candidates,
        nms_thresh=0.5,
        detections_per_image=detections_per_image,
        pixel_mean=GOLDEN_PIXEL_MEAN,
        pixel_std=(1.0, 1.0, 1.0),
    )


def random_images(sizes: Sequence[tuple[int, int]], *, seed: int = 0) -> list[torch.Tensor]:
    """uint8 (3, h, w) images of random pixels, one per (h, w)."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (3, h, w), generator=gen, dtype=torch.uint8) for h, w in sizes]
