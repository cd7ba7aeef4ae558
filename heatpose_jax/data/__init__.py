"""Datasets and the batches they become: joints and skeletons, the dataset specs,
the TFDS builders' contract (`features`), the synthetic people, COCO-format and
FLIC labels, the input pipeline, the canvas cache, on-device augmentation, the
top-down person crop. Imports `core` only (docs/design.md, "Packages").
"""
