"""The label map at the photo's own size, from class probabilities at the inference size.

The stock pipeline upsamples the model's mask logits to the photo before deciding each
pixel's class, which costs 100 full-size float maps (4 GB for a 10-megapixel photo).
Scaling the decided label map with nearest-neighbour instead is cheap but blocky.
:func:`labels_at_size` gives the argmax of the bilinearly upsampled class probabilities
(``F.interpolate(..., mode="bilinear", align_corners=False)``), exactly, while computing
it only where it can differ from the neighbours' common label: if the four inference
pixels around an output pixel all have class ``c``, every convex combination of their
probability vectors also has its maximum at ``c``. Only output pixels next to a class
boundary are interpolated, in row blocks, so memory stays a few times the label map.
"""
from __future__ import annotations

import numpy as np

BLOCK_PIXELS = 1 << 21  # output pixels handled at a time


def _source_index(out_size: int, in_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each output index: the two source indices and the weight of the second
    (PyTorch's ``area_pixel_compute_source_index`` for align_corners=False)."""
    scale = in_size / out_size
    source = np.maximum((np.arange(out_size, dtype=np.float64) + 0.5) * scale - 0.5, 0.0)
    low = np.minimum(source.astype(np.int64), in_size - 1)
    high = np.minimum(low + 1, in_size - 1)
    return low, high, (source - low).astype(np.float32)


def labels_at_size(probabilities: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(C, h, w)`` class probabilities → ``(H, W)`` uint8 labels at ``size`` = ``(W, H)``."""
    labels = probabilities.argmax(0).astype(np.uint8)
    width, height = size
    _, in_h, in_w = probabilities.shape
    if (width, height) == (in_w, in_h):
        return labels
    y0, y1, wy = _source_index(height, in_h)
    x0, x1, wx = _source_index(width, in_w)
    out = np.empty((height, width), dtype=np.uint8)
    rows = max(1, BLOCK_PIXELS // width)
    for top in range(0, height, rows):
        ys = slice(top, min(height, top + rows))
        a = labels[y0[ys]][:, x0]
        b = labels[y0[ys]][:, x1]
        c = labels[y1[ys]][:, x0]
        d = labels[y1[ys]][:, x1]
        block = a
        mixed = np.nonzero((a != b) | (a != c) | (a != d))
        if mixed[0].size:
            rows_in = mixed[0] + top
            ly, lx = wy[rows_in], wx[mixed[1]]
            sy0, sy1, sx0, sx1 = y0[rows_in], y1[rows_in], x0[mixed[1]], x1[mixed[1]]
            blended = (probabilities[:, sy0, sx0] * ((1 - ly) * (1 - lx))
                       + probabilities[:, sy0, sx1] * ((1 - ly) * lx)
                       + probabilities[:, sy1, sx0] * (ly * (1 - lx))
                       + probabilities[:, sy1, sx1] * (ly * lx))
            block[mixed] = blended.argmax(0)
        out[ys] = block
    return out
