"""Full-size labels: exactly the argmax of bilinearly upsampled class probabilities."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from worker import resolution
from worker.resolution import labels_at_size


def smooth_probabilities(classes: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Class maps with regions and boundaries, like a parsing's, not white noise."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.random((1, classes, max(2, height // 4), max(2, width // 4))).astype(np.float32))
    return F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)[0].clamp(0).numpy()


def reference(probabilities: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """torch's bilinear upsampling of every channel, then argmax; and the top-2 margin."""
    width, height = size
    full = F.interpolate(torch.from_numpy(probabilities)[None], size=(height, width), mode="bilinear",
                         align_corners=False)[0]
    top2 = full.topk(2, dim=0).values
    return full.argmax(0).numpy().astype(np.uint8), (top2[0] - top2[1]).numpy()


@pytest.mark.parametrize("in_size, out_size", [
    ((40, 30), (97, 71)),     # upscaling by a non-integer factor
    ((40, 30), (160, 120)),   # exactly 4x
    ((64, 48), (50, 37)),     # a photo smaller than the inference size
    ((33, 17), (33, 17)),     # the same size: the argmax itself
])
def test_labels_equal_the_argmax_of_full_bilinear_upsampling(in_size, out_size, monkeypatch):
    monkeypatch.setattr(resolution, "BLOCK_PIXELS", 997)  # many row blocks, one row split oddly
    probabilities = smooth_probabilities(20, in_size[1], in_size[0])
    labels = labels_at_size(probabilities, out_size)
    expected, margin = reference(probabilities, out_size)
    assert labels.shape == (out_size[1], out_size[0]) and labels.dtype == np.uint8
    differ = labels != expected
    assert (margin[differ] < 1e-5).all()  # only float ties may go either way
    assert differ.mean() < 1e-3


def test_boundaries_follow_the_probabilities_not_the_pixel_grid():
    """Two classes split along a diagonal: nearest-neighbour scaling gives a staircase
    of 8-pixel steps, bilinear a line within a pixel of the true one."""
    h = w = 16
    ys, xs = np.mgrid[0:h, 0:w]
    left = 1 / (1 + np.exp(-(xs - ys) / 2.0))
    probabilities = np.stack([left, 1 - left]).astype(np.float32)
    labels = labels_at_size(probabilities, (128, 128))
    ys, xs = np.mgrid[0:128, 0:128]
    true = ((xs + 0.5) / 8 - 0.5) - ((ys + 0.5) / 8 - 0.5) < 0
    assert (labels.astype(bool) != true).mean() < 0.01
