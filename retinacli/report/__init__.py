"""The run report: one self-contained HTML page of a training run (`retina report`)."""
