"""Predictions on images and videos a user points at (not a dataset): `images`, `video` and the
output `formats` (predictions.json, COCO results, YOLO txt). What runs the images is an
`evaluation.detectors.ImageDetector`: a model file or an exported file, alike."""
