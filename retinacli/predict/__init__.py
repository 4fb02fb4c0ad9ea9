"""Predictions on images and videos a user points at (not a dataset): `images`, `video`, and
the output `formats` (predictions.json, COCO results, YOLO txt)."""
