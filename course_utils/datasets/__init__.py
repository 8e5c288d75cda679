"""Data sets derived from Fashion-MNIST and digits, each built deterministically from a seed.

- ``pairs``: distorted images and the transformation-pair data set (chapter 3);
- ``canvas``: multi-garment segmentation canvases with per-pixel labels, and the one ``paste`` (chapter 6);
- ``spurious``: fashion items with digits, a spurious correlation under control (chapter 7).
"""
