"""The model behind one small interface: load once, parse an RGB image into arrays.

The job runner only sees :class:`ParsingEngine` and the :class:`Parsing` it returns.
Two engines implement it: :class:`worker.torch_engine.TorchEngine`, modelscope's own
model and postprocess (the reference), and :class:`worker.openvino_engine.OpenVINOEngine`,
the same network exported once to OpenVINO graphs (2.5 to 3.1 times the stock
pipeline's speed on two Zen 4 cores: docs/performance.md).
Both import this module for the shared types; the factory that picks one of them
(:mod:`worker.engine_loading`) imports them, so nothing here imports an engine.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol

import numpy as np

from common.images import DEFAULT_LABELS_MAX_PIXELS, inference_size, resize_labels, resize_rgb

# The stock M2FP pipeline runs the model with the short side at 640 px.
MODEL_SHORT_SIDE = 640
LABELS_MAX_PIXELS = DEFAULT_LABELS_MAX_PIXELS  # see decision_size


@dataclass
class Person:
    """One human instance the model found above its score threshold."""

    score: float
    mask_logits: np.ndarray  # (h, w) float32 at the decision size; the person is where > 0


@dataclass
class Parsing:
    """What the model found, decided at the decision size (the photo's, up to a bound)."""

    semantic: np.ndarray  # (20, h, w) float32 per-class probabilities (the model's semantic output)
    persons: Optional[list[Person]]  # human instances, best first; None if the model has no instance output
    person_threshold: Optional[float]  # the score a person needed
    size: tuple[int, int]  # (w, h) the model ran at
    labels: np.ndarray = field(init=False)  # (h, w) uint8 CIHP class ids at the decision size

    def __post_init__(self) -> None:
        self.labels = self.semantic.argmax(0).astype(np.uint8)

    @functools.cached_property
    def class_scores(self) -> dict[int, float]:
        """Mean model confidence over each present class's pixels."""
        confidence = self.semantic.max(0)
        counts = np.bincount(self.labels.ravel(), minlength=len(self.semantic))
        sums = np.bincount(self.labels.ravel(), weights=confidence.ravel(), minlength=len(self.semantic))
        return {int(c): float(sums[c] / counts[c]) for c in np.flatnonzero(counts)}

    @property
    def person_count(self) -> Optional[int]:
        return None if self.persons is None else len(self.persons)

    @property
    def decision_size(self) -> tuple[int, int]:
        return self.labels.shape[1], self.labels.shape[0]

    def labels_at(self, size: tuple[int, int]) -> np.ndarray:
        """Labels at ``size`` = ``(W, H)``: the decided ones, scaled (nearest) if the photo
        was larger than the decision bound."""
        return resize_labels(self.labels, size)


class ParsingEngine(Protocol):
    description: dict[str, Any]  # named in each job's summary: engine, precision, model

    def parse(self, image: np.ndarray) -> Parsing:
        """Parse an ``(H, W, 3)`` uint8 RGB image."""
        ...


def model_input(image: np.ndarray, max_side: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The stock pipeline's preprocessing: the photo resized (bilinear) to the inference size."""
    height, width = image.shape[:2]
    size = inference_size(width, height, MODEL_SHORT_SIDE, max_side)
    return resize_rgb(image, size), size


def decision_size(photo: tuple[int, int], inference: tuple[int, int], max_pixels: int) -> tuple[int, int]:
    """Where each pixel's class is decided: ``(w, h)``.

    The stock pipeline upsamples every instance's mask logits to the photo and decides
    there; deciding at the 640 px inference size and enlarging the result instead gives
    blocky edges (about 2 % of a photo's pixels differ: docs/performance.md). The
    cost of deciding at the photo grows with its pixels (100 logit maps), so photos up to
    ``max_pixels`` are decided at their own size, exactly as the stock pipeline does,
    and larger ones at the largest size within the bound, then scaled.
    """
    width, height = photo
    if width * height <= max_pixels:
        return photo
    if inference[0] * inference[1] >= max_pixels:
        return inference
    scale = math.sqrt(max_pixels / (width * height))
    return max(inference[0], int(width * scale)), max(inference[1], int(height * scale))
