"""The detector in plain PyTorch: backbone, FPN, head, anchors, matcher, box coder, losses,
postprocessing and the RetinaNet module that joins them (imports only torch, torchvision and
`retinacli.levels`)."""
