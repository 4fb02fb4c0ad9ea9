"""The Python API: what `from retinacli import ...` gives (docs/python.md).

- `detector`: `Detector` (load a model, exported or detectron2 file; predict, evaluate, export).
- `results`: `Result`, the detections of one image.
- `training`: `train`, `retina train` from Python.

Each is a thin layer over the functions the command line calls (`retinacli.commands`).
"""
