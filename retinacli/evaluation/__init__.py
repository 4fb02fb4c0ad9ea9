"""Evaluation and inference: `retina eval` and `retina predict`.

- `inference`: run a detector over a test loader (batched, no gradients, gathered over processes).
- `coco_eval`: COCO results and box AP; `evaluate_detector` is the one entry point training calls.
- `datasets`: the test dataset of a recipe, its resize, and matching model classes to it.
- `predict`: detections on loose images, drawn and listed in predictions.json.
"""
