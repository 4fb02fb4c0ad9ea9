"""Box <-> regression-delta transform of R-CNN (Girshick et al., 2014), as detectron2's
Box2BoxTransform computes it.

For an anchor with width w_a, height h_a and centre (x_a, y_a) and a box (w, h, x, y):
``dx = wx * (x - x_a) / w_a``, ``dy = wy * (y - y_a) / h_a``, ``dw = ww * log(w / w_a)``,
``dh = wh * log(h / h_a)``. Widths are ``x2 - x1`` with no ``+1`` (continuous pixel coordinates).
Decoding divides by the weights first and then clamps dw and dh to at most `scale_clamp`, so a
wild prediction cannot overflow `exp`. All arithmetic is float32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

# detectron2's _DEFAULT_SCALE_CLAMP: a box at most 1000/16 times larger than its anchor.
DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


class BoxCoder:
    """Encodes boxes relative to anchors and decodes deltas back to boxes.

    Args (keyword-only):
        weights: (wx, wy, ww, wh), multipliers of the four deltas (detectron2 BBOX_REG_WEIGHTS).
        scale_clamp: upper bound of dw and dh (after dividing by the weights) when decoding.

    Both methods broadcast over leading dimensions: ``anchors`` (..., 4) and the other argument
    (..., 4) must broadcast to a common shape, which the result has.
    """

    def __init__(
        self,
        *,
        weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
        scale_clamp: float = DEFAULT_SCALE_CLAMP,
    ) -> None:
        if len(weights) != 4 or min(weights) <= 0:
            raise ValueError(f"BoxCoder: weights must be 4 positive numbers, got {list(weights)}")
        self.weights = tuple(float(w) for w in weights)
        self.scale_clamp = float(scale_clamp)

    def encode(self, *, anchors: Tensor, gt_boxes: Tensor) -> Tensor:
        """Deltas that turn `anchors` into `gt_boxes`; both (..., 4) XYXY pixels -> (..., 4) float32.

        Anchors must have positive width and height (all generated anchors do).
        """
        anchors = anchors.float()
        gt_boxes = gt_boxes.float()
        wx, wy, ww, wh = self.weights
        a_w = anchors[..., 2] - anchors[..., 0]
        a_h = anchors[..., 3] - anchors[..., 1]
        a_x = anchors[..., 0] + 0.5 * a_w
        a_y = anchors[..., 1] + 0.5 * a_h
        g_w = gt_boxes[..., 2] - gt_boxes[..., 0]
        g_h = gt_boxes[..., 3] - gt_boxes[..., 1]
        g_x = gt_boxes[..., 0] + 0.5 * g_w
        g_y = gt_boxes[..., 1] + 0.5 * g_h
        dx = wx * (g_x - a_x) / a_w
        dy = wy * (g_y - a_y) / a_h
        dw = ww * torch.log(g_w / a_w)
        dh = wh * torch.log(g_h / a_h)
        return torch.stack((dx, dy, dw, dh), dim=-1)

    def decode(self, *, anchors: Tensor, deltas: Tensor) -> Tensor:
        """Boxes obtained by applying `deltas` (..., 4) to `anchors` (..., 4); float32 XYXY pixels."""
        deltas = deltas.float()
        anchors = anchors.float()
        wx, wy, ww, wh = self.weights
        a_w = anchors[..., 2] - anchors[..., 0]
        a_h = anchors[..., 3] - anchors[..., 1]
        a_x = anchors[..., 0] + 0.5 * a_w
        a_y = anchors[..., 1] + 0.5 * a_h
        dx = deltas[..., 0] / wx
        dy = deltas[..., 1] / wy
        # Clamp after dividing by the weights, as detectron2 does.
        dw = torch.clamp(deltas[..., 2] / ww, max=self.scale_clamp)
        dh = torch.clamp(deltas[..., 3] / wh, max=self.scale_clamp)
        ctr_x = dx * a_w + a_x
        ctr_y = dy * a_h + a_y
        w = torch.exp(dw) * a_w
        h = torch.exp(dh) * a_h
        return torch.stack(
            (ctr_x - 0.5 * w, ctr_y - 0.5 * h, ctr_x + 0.5 * w, ctr_y + 0.5 * h), dim=-1
        )
