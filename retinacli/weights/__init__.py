"""Weight files: reading every supported format, one name table, loading into a model.

- `pickles`: the restricted unpickler for `.pkl` files (numpy arrays only, nothing executed).
- `readers`: `read_weights_file` tells the formats apart and returns a flat state dict.
- `names`: detectron2 <-> retinacli names (one table, both directions), Caffe2 -> detectron2,
  torchvision -> retinacli.
- `loading`: `init_from_weights` (what fits, reported) and `load_exactly` (every key, or an
  error), both into an already built model.
- `zoo`: pretrained weights by name (`zoo.json`: URL, size, hashes, the recipe keys that belong to
  the weights, where each fact comes from); the standard library only.
- `download`: fetching a zoo file into torch's hub cache: resumable, bounded, verified.
"""
