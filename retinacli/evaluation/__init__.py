"""Evaluation on a dataset, from explicit typed arguments (no recipe).

- `detectors`: the one `ImageDetector` protocol that a model file (`TorchDetector`) and an
  exported file (`export.runtime.ExportedDetector`) both follow.
- `inference`: run a detector over a dataset or test loader (batched, no gradients, gathered
  over processes, in dataset order).
- `coco_eval`: COCO results and box AP from detections, no files.
- `outputs`: the evaluation's files, coco_results.json and metrics.json.
- `classes`: a model's class names, and how they map onto a dataset's categories.
- `diagnostics`, `diagnostics_output`, `diagnostic_plots`: PR curves, confusion matrix, errors
  and their pictures.

The commands compose them: inference, scoring, files, then diagnostics when asked.
"""
