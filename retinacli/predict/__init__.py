"""Predictions on images and videos a user points at (not a dataset): `images`, `video`, the
output `formats` (predictions.json, COCO results, YOLO txt), and `detectors` (the one
`ImageDetector` a model file and an exported file both are)."""
