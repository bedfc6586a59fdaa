"""The reference engine: modelscope's own M2FP model and postprocess, in torch.

It builds the model with modelscope's ``pipeline(...)`` (so loading matches the stock
path exactly) but calls the model itself, asking it to decide at the decision size
(worker.engine.decision_size: the photo's own, up to a bound): the stock pipeline then
converts every instance mask to float64 NumPy and drops the semantic map, which is what
a worker needs. The fast engine is checked against this one (tests and ``make bench``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from common.labels import NUM_PARTS
from worker.engine import LABELS_MAX_PIXELS, Parsing, Person, decision_size, model_input


class TorchEngine:
    def __init__(self, model_dir: Path, max_side: int, labels_max_pixels: int = LABELS_MAX_PIXELS) -> None:
        from modelscope.pipelines import pipeline
        from modelscope.utils.constant import Tasks

        self.model_dir = Path(model_dir)
        self.max_side = max_side
        self.labels_max_pixels = labels_max_pixels
        self.pipeline = pipeline(Tasks.image_segmentation, model=str(model_dir))
        self.model = self.pipeline.model
        check_model(self.model, self.model_dir)
        self.description: dict[str, Any] = {"engine": "torch", "precision": "fp32", "model": str(model_dir)}

    def parse(self, image: np.ndarray) -> Parsing:
        import torch

        resized, size = model_input(image, self.max_side)
        tensor = torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1))).float()
        width, height = decision_size((image.shape[1], image.shape[0]), size, self.labels_max_pixels)
        batch = {"batched_inputs": [{"image": tensor, "width": width, "height": height}]}
        with torch.no_grad():
            prediction = self.model(batch)["eval_result"][0]
        if "parsing" not in prediction:
            return Parsing(semantic=prediction["sem_seg"][:NUM_PARTS].numpy(), persons=None, person_threshold=None, size=size)
        parsing = prediction["parsing"]
        threshold = self.model.parsing_ins_score_thr
        humans = sorted((h for h in parsing["human_outputs"] if h["score"] >= threshold),
                        key=lambda h: h["score"], reverse=True)
        persons = [Person(score=float(h["score"]), mask_logits=h["mask"].numpy()) for h in humans]
        return Parsing(semantic=parsing["semantic_outputs"].numpy(), persons=persons,
                       person_threshold=threshold, size=size)

    def parse_stock(self, image: np.ndarray) -> dict[str, Any]:
        """The unmodified modelscope pipeline call, for benchmarks and comparisons."""
        from PIL import Image

        return self.pipeline(Image.fromarray(image))

    def stock_semantic(self, image: np.ndarray) -> Optional[np.ndarray]:
        """The semantic map the stock pipeline computes at the photo's own size (and then
        splits into masks): the reference for our full-size labels."""
        import torch
        from PIL import Image

        inputs = self.pipeline.preprocess(Image.fromarray(image), max_size=self.max_side)
        with torch.no_grad():
            prediction = self.model(inputs)["eval_result"][0]
        return prediction["parsing"]["semantic_outputs"].numpy() if "parsing" in prediction else None


def check_model(model: Any, model_dir: Path) -> None:
    """Refuse models this service cannot serve, naming the one it needs."""
    if getattr(model, "single_human", False):
        raise ValueError(f"{model_dir} is a single-person M2FP model; this service needs the "
                         "multi-person one (damo/cv_resnet101_image-multiple-human-parsing)")
    if len(model.classes) < NUM_PARTS:
        raise ValueError(f"{model_dir} has {len(model.classes)} classes, expected the 20 CIHP parts")
