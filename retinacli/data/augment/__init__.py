"""Training augmentation: the resize/flip pipeline (`resize_flip`, detectron2's) and the
box-aware augmentations (`box` settings and order; `color`, `geometry`, `mosaic`)."""
