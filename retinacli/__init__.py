"""retinacli: RetinaNet object detection from typed YAML recipes, faithful to detectron2.

The Python API (docs/python.md)::

    from retinacli import Detector
    detector = Detector.load("output/run/model_final.pth")
    results = detector.predict(["street.jpg", "images/"])

`Detector`, `Result` and `train` are imported on first use, so `import retinacli` (and the
command line) does not load torch until they are needed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Detector", "Result", "__version__", "train"]

if TYPE_CHECKING:
    from retinacli.api.detector import Detector
    from retinacli.api.results import Result
    from retinacli.api.training import train


def __getattr__(name: str) -> Any:
    if name == "Detector":
        from retinacli.api.detector import Detector

        return Detector
    if name == "Result":
        from retinacli.api.results import Result

        return Result
    if name == "train":
        from retinacli.api.training import train

        return train
    raise AttributeError(f"module 'retinacli' has no attribute {name!r}")
