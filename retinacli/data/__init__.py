"""Datasets, checks, augmentation and loaders; see docs/data.md.

Modules are imported directly (`from retinacli.data.loader import build_train_loader`), so
importing this package stays cheap.
"""
