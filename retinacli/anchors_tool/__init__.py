"""What `retina anchors` measures, from explicit typed arguments (no recipe).

- `layout`: the anchors of every pyramid level for one image size (table, JSON).
- `coverage`: the best IoU of every training box with the anchors of its image.
- `suggest`: anchor sizes and aspect ratios that raise that coverage.
- `plots`: the cell anchors to scale and the coverage histogram as PNG files.
"""
