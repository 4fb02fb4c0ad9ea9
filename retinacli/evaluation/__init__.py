"""Evaluation and inference, from explicit typed arguments (no recipe).

- `inference`: run a detector over a test loader (batched, no gradients, gathered over processes).
- `coco_eval`: COCO results and box AP; `evaluate_detector` is the one entry point.
- `classes`: a model's class names, and how they map onto a dataset's categories.
- `predict`: detections on loose images, drawn and listed in predictions.json.
"""
