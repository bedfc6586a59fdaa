"""The model behind one small interface: load once, parse an RGB image into arrays.

The job runner only sees :class:`ParsingEngine`; a faster engine (ONNX, a traced
model, batching) can replace :class:`M2FPEngine` without touching the task.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Protocol

import numpy as np

from common.images import inference_size, resize_rgb
from common.labels import NUM_PARTS

# The stock M2FP pipeline runs the model with the short side at 640 px.
MODEL_SHORT_SIDE = 640


@dataclass
class Parsing:
    """What the model saw, at the resolution it ran at."""

    labels: np.ndarray  # (h, w) uint8 CIHP class ids
    class_scores: dict[int, float]  # mean model confidence over each present class's pixels
    persons: Optional[int]  # person instances, when the model has instance output
    size: tuple[int, int]  # (w, h) the model ran at


class ParsingEngine(Protocol):
    description: dict[str, Any]

    def parse(self, image: np.ndarray) -> Parsing:
        """Parse an ``(H, W, 3)`` uint8 RGB image."""
        ...


@dataclass
class M2FPEngine:
    """M2FP through modelscope's own model class, loaded once per process.

    It builds the model with modelscope's ``pipeline(...)`` (so loading matches the
    stock path exactly) but calls the model itself: the stock pipeline converts every
    instance mask of the original-size image to float64 NumPy and drops the semantic
    map, while the label map is all a worker needs.
    """

    model_dir: Path
    max_side: int
    description: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from modelscope.pipelines import pipeline
        from modelscope.utils.constant import Tasks

        self.pipeline = pipeline(Tasks.image_segmentation, model=str(self.model_dir))
        self.model = self.pipeline.model
        if getattr(self.model, "single_human", False):
            raise ValueError(
                f"{self.model_dir} is a single-person M2FP model; this service needs the "
                "multi-person one (damo/cv_resnet101_image-multiple-human-parsing)"
            )
        if len(self.model.classes) < NUM_PARTS:
            raise ValueError(f"{self.model_dir} has {len(self.model.classes)} classes, expected the 20 CIHP parts")
        self.description = {"engine": "m2fp-modelscope", "model": str(self.model_dir)}

    def parse(self, image: np.ndarray) -> Parsing:
        import torch

        height, width = image.shape[:2]
        size = inference_size(width, height, MODEL_SHORT_SIDE, self.max_side)
        resized = resize_rgb(image, size)
        tensor = torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1))).float()
        batch = {"batched_inputs": [{"image": tensor, "width": size[0], "height": size[1]}]}
        with torch.no_grad():
            prediction = self.model(batch)["eval_result"][0]
        if "parsing" in prediction:
            parsing = prediction["parsing"]
            probabilities = parsing["semantic_outputs"]
            threshold = self.model.parsing_ins_score_thr
            persons: Optional[int] = sum(1 for h in parsing["human_outputs"] if h["score"] >= threshold)
        else:
            probabilities = prediction["sem_seg"]
            persons = None
        labels = probabilities.argmax(dim=0)
        return Parsing(
            labels=labels.to(torch.uint8).numpy(),
            class_scores=_class_scores(probabilities, labels),
            persons=persons,
            size=size,
        )

    def parse_stock(self, image: np.ndarray) -> dict[str, Any]:
        """The unmodified modelscope pipeline call, for benchmarks and comparisons."""
        from PIL import Image

        return self.pipeline(Image.fromarray(image))


def _class_scores(probabilities: Any, labels: Any) -> dict[int, float]:
    confidence = probabilities.max(dim=0).values
    scores: dict[int, float] = {}
    for class_id in labels.unique().tolist():
        scores[int(class_id)] = float(confidence[labels == class_id].mean())
    return scores
