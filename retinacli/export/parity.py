"""Does an exported file compute what the PyTorch model computes?

For a full detector, on each image: the same detections, matched one to one (same class, score
within SCORE_TOLERANCE, every box coordinate within BOX_TOLERANCE pixels; greedily by
descending score, so that equal scores listed in another order still match). For a
network-only file: every level's scores (sigmoid of the logits) within SCORE_TOLERANCE, deltas
within DELTA_TOLERANCE and anchors within BOX_TOLERANCE. The largest differences are reported
either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from retinacli.engine.detector import RetinaNet
from retinacli.export.runtime import ExportedDetector

BOX_TOLERANCE = 0.01  # pixels
SCORE_TOLERANCE = 1e-4
DELTA_TOLERANCE = 1e-3


@dataclass
class Parity:
    """The comparison over `images` images: detections compared, the largest box and score
    differences of matched detections, and one line per mismatch."""

    images: int = 0
    detections: int = 0
    max_box_difference: float = 0.0
    max_score_difference: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def compare(model: RetinaNet, exported: ExportedDetector, images: Sequence[Tensor]) -> Parity:
    """Run both on each (3, H, W) uint8 image (already resized) and compare (module docstring)."""
    model = model.eval()
    parity = Parity()
    for n, image in enumerate(images):
        outputs = exported.run(image.numpy())
        with torch.inference_mode():
            if exported.metadata.network_only:
                net = model.run_network([image])
                _compare_network(parity, n, net, outputs, exported.metadata.num_levels)
            else:
                (dets,) = model([image])
                _compare_detections(parity, n, dets.boxes.numpy(), dets.scores.numpy(), dets.labels.numpy(), outputs)
        parity.images += 1
    return parity


def _compare_detections(
    parity: Parity, n: int, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, outputs: list[np.ndarray]
) -> None:
    other_boxes, other_scores, other_labels = outputs
    where = f"image {n} ({len(scores)} detections in PyTorch, {len(other_scores)} exported)"
    if len(other_scores) != len(scores):
        parity.problems.append(f"{where}: a different number of detections")
    free = np.ones(len(other_scores), dtype=bool)
    for i in np.argsort(-scores, kind="stable"):
        candidates = np.flatnonzero(free & (other_labels == labels[i]) & (np.abs(other_scores - scores[i]) <= SCORE_TOLERANCE))
        if candidates.size == 0:
            parity.problems.append(f"{where}: no exported detection of class {labels[i]} scores {scores[i]:.6f}")
            continue
        box_difference = np.abs(other_boxes[candidates] - boxes[i]).max(axis=1)
        j = candidates[int(np.argmin(box_difference))]
        free[j] = False
        parity.detections += 1
        parity.max_box_difference = max(parity.max_box_difference, float(box_difference.min()))
        parity.max_score_difference = max(parity.max_score_difference, float(abs(other_scores[j] - scores[i])))
        if box_difference.min() > BOX_TOLERANCE:
            parity.problems.append(
                f"{where}: a box differs by {box_difference.min():.4f} px (class {labels[i]}, score {scores[i]:.4f})"
            )


def _compare_network(parity: Parity, n: int, net: object, outputs: list[np.ndarray], num_levels: int) -> None:
    logits, deltas, anchors = outputs[:num_levels], outputs[num_levels : 2 * num_levels], outputs[2 * num_levels :]
    for level in range(num_levels):
        checks = (
            ("scores", torch.sigmoid(net.logits[level]).numpy(), 1 / (1 + np.exp(-logits[level])), SCORE_TOLERANCE),
            ("deltas", net.deltas[level].numpy(), deltas[level], DELTA_TOLERANCE),
            ("anchors", net.anchors[level].numpy(), anchors[level], BOX_TOLERANCE),
        )
        for name, ours, theirs, tolerance in checks:
            if ours.shape != theirs.shape:
                parity.problems.append(f"image {n}, level {level}: {name} of shape {theirs.shape}, expected {ours.shape}")
                continue
            difference = float(np.abs(ours - theirs).max()) if ours.size else 0.0
            if name == "scores":
                parity.max_score_difference = max(parity.max_score_difference, difference)
            elif name == "anchors":
                parity.max_box_difference = max(parity.max_box_difference, difference)
            if difference > tolerance:
                parity.problems.append(f"image {n}, level {level}: {name} differ by up to {difference:.6f}")
