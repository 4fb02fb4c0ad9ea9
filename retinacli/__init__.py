"""retinacli: RetinaNet object detection from typed YAML recipes, faithful to detectron2."""

__version__ = "0.1.0"
