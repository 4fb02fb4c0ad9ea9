"""Dataset formats: COCO json (the one the rest reads), Pascal VOC and YOLO folders converted
to it, and class-stratified splits."""
