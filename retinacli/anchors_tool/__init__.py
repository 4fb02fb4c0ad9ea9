"""`retina anchors`: see a recipe's anchors, and whether a dataset's boxes will ever match them.

- `layout`: the anchors of every pyramid level for one image size (table, JSON).
- `coverage`: the best IoU of every training box with the anchors of its image.
- `suggest`: anchor sizes and aspect ratios that raise that coverage.
- `plots`: the cell anchors to scale and the coverage histogram as PNG files.
"""
