"""CIHP body-part classes and the color map human-parsing tools draw them with.

The colors are the PASCAL-VOC color map (bit-interleaved class index), which CIHP,
LIP and the tools built on them (SCHP, the M2FP demo) use for their colored maps, so
our ``colored.png`` reads the same as theirs.
"""
from __future__ import annotations

import re

import numpy as np

CIHP_CLASSES: tuple[str, ...] = (
    "Background", "Hat", "Hair", "Glove", "Sunglasses", "UpperClothes", "Dress",
    "Coat", "Socks", "Pants", "Torso-skin", "Scarf", "Skirt", "Face", "Left-arm",
    "Right-arm", "Left-leg", "Right-leg", "Left-shoe", "Right-shoe",
)
HUMAN_CLASS = "Human"
NUM_PARTS = len(CIHP_CLASSES)


def voc_colormap(n: int = 256) -> np.ndarray:
    """Return the ``(n, 3)`` uint8 PASCAL-VOC color map."""
    cmap = np.zeros((n, 3), dtype=np.uint8)
    for index in range(n):
        value, r, g, b = index, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (value & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        cmap[index] = (r, g, b)
    return cmap


PALETTE: np.ndarray = voc_colormap(NUM_PARTS)



def class_slug(name: str) -> str:
    """A class name as it appears in an output's file name: ``"UpperClothes"`` ->
    ``"upperclothes"``, ``"Left-arm"`` -> ``"left-arm"`` (lower case, so a name reads the
    same on case-insensitive file systems, and nothing a path or URL would change)."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
