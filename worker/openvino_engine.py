"""The fast engine: M2FP's network as an OpenVINO graph, the postprocess outside it.

The graph (built once per checkpoint by :mod:`worker.engine_cache`) maps the normalized,
padded image to class and mask logits at any size; :mod:`worker.postprocess` turns those
into the semantic map and the person instances exactly as modelscope's model does.
Measured on this project's 2-core machines it parses a photo in 0.24 (Zen 5) to 0.38
(Zen 4) of the stock pipeline's time with the same labels (docs/performance.md).
"""
from __future__ import annotations

import json
import logging
from collections import OrderedDict, deque
from pathlib import Path
from typing import Any

import numpy as np

from common.labels import NUM_PARTS
from worker.engine import LABELS_MAX_PIXELS, Parsing, Person, decision_size, model_input
from worker.network import PIXEL_MEAN, PIXEL_STD, padded_size
from worker.postprocess import ModelHeads, parse_logits

GRAPH_FILE = "model.xml"
HEADS_FILE = "heads.json"
# Parses looked back on, and how many of them may evict a compiled shape before the
# operator is told that the fixed-shape compilations do not suit this traffic.
EVICTION_WINDOW = 20
EVICTION_WARNING = 5

log = logging.getLogger(__name__)


def heads_of(model: Any) -> ModelHeads:
    """The class layout of a loaded modelscope ``M2FP``, as the postprocess needs it."""
    return ModelHeads(num_parts=model.num_parsing, human_class=model.num_parsing,
                      threshold=float(model.parsing_ins_score_thr))


def preprocess(resized: np.ndarray) -> np.ndarray:
    """``(h, w, 3)`` uint8 → ``(1, 3, H, W)`` float32, normalized and zero-padded to
    multiples of 32 at the bottom and right (what ``M2FP.forward`` and ``ImageList`` do)."""
    height, width = resized.shape[:2]
    padded_w, padded_h = padded_size(width, height)
    tensor = np.zeros((1, 3, padded_h, padded_w), dtype=np.float32)
    mean = np.asarray(PIXEL_MEAN, dtype=np.float32)[:, None, None]
    std = np.asarray(PIXEL_STD, dtype=np.float32)[:, None, None]
    tensor[0, :, :height, :width] = (resized.transpose(2, 0, 1).astype(np.float32) - mean) / std
    return tensor


def compile_config(threads: int, precision: str) -> dict[str, Any]:
    """OpenVINO CPU plugin settings. OpenVINO runs in bf16 on CPUs that have it unless told
    f32, which moves labels (docs/performance.md); f32 is the default here."""
    return {
        "INFERENCE_NUM_THREADS": threads,
        "NUM_STREAMS": 1,
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
        # Each process would pin its threads to the first cores: two single-threaded
        # model processes then share one core (measured: 12.4 jobs/min instead of ~22).
        "ENABLE_CPU_PINNING": False,
    }


class OpenVINOEngine:
    """The graph compiled per input shape, the last ``static_shapes`` shapes kept.

    The exported graph is dynamic, but OpenVINO runs it 8-10 % faster compiled for
    one fixed shape (it fuses the element-wise work of the attention layers), and there
    are only a few padded shapes in practice (the short side is always 640; 4:3, 3:2
    and 16:9 photos give three widths). A shape not among the kept ones costs one
    compilation (1.0-1.3 s for the full-size model on two cores), and traffic that keeps changing
    shape is better served by the dynamic graph (``static_shapes=0``, compiled once):
    the engine logs a warning saying so when a quarter of recent parses recompiled.
    """

    def __init__(self, model_dir: Path, engine_dir: Path, max_side: int, threads: int,
                 precision: str = "fp32", static_shapes: int = 2,
                 labels_max_pixels: int = LABELS_MAX_PIXELS) -> None:
        import openvino as ov

        self.max_side = max_side
        self.labels_max_pixels = labels_max_pixels
        self.static_shapes = static_shapes
        self.heads = ModelHeads(**json.loads((engine_dir / HEADS_FILE).read_text()))
        self.core = ov.Core()
        self.graph = self.core.read_model(engine_dir / GRAPH_FILE)
        self.config = compile_config(threads, precision)
        self.requests: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self.evictions: deque[bool] = deque(maxlen=EVICTION_WINDOW)  # per parse: did it evict a shape?
        self.warned = False
        if not static_shapes:
            self.requests[()] = self.core.compile_model(self.graph, "CPU", self.config).create_infer_request()
        self.description: dict[str, Any] = {"engine": "openvino", "precision": precision, "model": str(model_dir),
                                            "runtime": ov.get_version().split("-")[0]}

    def request_for(self, shape: tuple[int, ...]) -> Any:
        """The inference request compiled for ``shape`` (the dynamic one when not static)."""
        if not self.static_shapes:
            return self.requests[()]
        if shape in self.requests:
            self.requests.move_to_end(shape)
            self.evictions.append(False)
            return self.requests[shape]
        self.evictions.append(len(self.requests) >= self.static_shapes)
        if sum(self.evictions) >= EVICTION_WARNING and not self.warned:
            self.warned = True
            log.warning("photos keep changing shape: %d of the last %d parses compiled the graph again "
                        "(about 1 s each); set OPENVINO_STATIC_SHAPES=0 (one dynamic graph) or raise it",
                        sum(self.evictions), len(self.evictions))
        while len(self.requests) >= self.static_shapes:
            self.requests.popitem(last=False)  # frees that compiled graph before compiling the next
        graph = self.graph.clone()
        graph.reshape({0: list(shape)})
        self.requests[shape] = self.core.compile_model(graph, "CPU", self.config).create_infer_request()
        return self.requests[shape]

    def logits(self, tensor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Class logits ``(Q, K+1)`` and mask logits ``(Q, H/4, W/4)`` of one padded image."""
        result = self.request_for(tensor.shape).infer({0: tensor})
        return np.array(result[0][0]), np.array(result[1][0])  # copies: the request reuses its buffers

    def parse(self, image: np.ndarray) -> Parsing:
        import torch

        resized, size = model_input(image, self.max_side)
        class_logits, mask_logits = self.logits(preprocess(resized))
        width, height = decision_size((image.shape[1], image.shape[0]), size, self.labels_max_pixels)
        result = parse_logits(torch.from_numpy(class_logits), torch.from_numpy(mask_logits),
                              (size[1], size[0]), self.heads, (height, width))
        persons = [Person(score=s, mask_logits=m) for s, m in zip(result.person_scores, result.person_masks)]
        return Parsing(semantic=result.semantic[:NUM_PARTS], persons=persons,
                       person_threshold=self.heads.threshold, size=size)
