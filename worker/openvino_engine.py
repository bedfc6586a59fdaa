"""The fast engine: M2FP's network as OpenVINO graphs, the postprocess outside them.

The graphs (built once per checkpoint by :mod:`worker.engine_cache`, one per part of
:data:`worker.network.PARTS`) map the normalized, padded image to class and mask logits
at any size; :mod:`worker.postprocess` turns those into the semantic map and the person
instances exactly as modelscope's model does.

Every graph is compiled once, for every input size, when the process starts: a photo of
a shape the process has not seen costs no compilation inside its job (the fixed-shape
compilations of earlier versions added 1.9-2.6 s to the first photo of every new shape
on Zen 4, and kept two). Numbers in docs/performance.md.
"""
from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any, Optional

import numpy as np

from common.labels import NUM_PARTS
from worker.engine import LABELS_MAX_PIXELS, Parsing, Person, decision_size, model_input
from worker.network import PARTS, PIXEL_MEAN, PIXEL_STD, Part, padded_size
from worker.postprocess import ModelHeads, parse_logits

HEADS_FILE = "heads.json"
# The OpenVINO precision each part runs at, per M2FP_PRECISION. "mixed" keeps in fp32 what
# M2FP itself never ran in reduced precision (the pixel decoder's deformable-attention
# encoder) and the decision tail (class and mask logits, their einsum); the postprocess
# (upsampling, argmax) is fp32 in every mode.
PART_PRECISIONS = {
    "fp32": {"backbone": "f32", "encoder": "f32", "decoder": "f32", "heads": "f32"},
    "mixed": {"backbone": "bf16", "encoder": "f32", "decoder": "bf16", "heads": "f32"},
    "bf16": {"backbone": "bf16", "encoder": "bf16", "decoder": "bf16", "heads": "bf16"},
}
# The nodes that carry the arithmetic, whose runtime precision is what a precision mode means.
COMPUTE_NODES = {"Convolution", "FullyConnected", "MatMul", "Subgraph", "GridSample", "Interpolate"}

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
    """OpenVINO CPU plugin settings for one graph. OpenVINO runs in bf16 on CPUs that have
    it unless told f32, which moves labels (docs/performance.md), so every graph names its
    precision."""
    config: dict[str, Any] = {
        "INFERENCE_NUM_THREADS": threads,
        "NUM_STREAMS": 1,
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": precision,
        # Each process would pin its threads to the first cores: two single-threaded
        # model processes then share one core (measured: 12.4 jobs/min instead of ~22).
        "ENABLE_CPU_PINNING": False,
    }
    if precision == "bf16":
        # OpenVINO 2026.4's fused attention kernels ("snippets") fail at run time on the
        # transformer decoder in bf16 with dynamic shapes ("Cannot initialize brgemm
        # descriptor"); without them the same graph runs (tests/test_fast_engine.py).
        config["SNIPPETS_MODE"] = "DISABLE"
    return config


def stages(precision: str) -> list[tuple[tuple[Part, ...], str]]:
    """The parts grouped into the graphs to compile: consecutive parts of one precision
    run as one graph (no boundary between them), so fp32 is a single graph."""
    plan = PART_PRECISIONS[precision]
    grouped: list[tuple[tuple[Part, ...], str]] = []
    for part in PARTS:
        if grouped and grouped[-1][1] == plan[part.name]:
            grouped[-1] = (grouped[-1][0] + (part,), plan[part.name])
        else:
            grouped.append(((part,), plan[part.name]))
    return grouped


def joined(core: Any, entry: Path, parts: tuple[Part, ...]) -> Any:
    """One OpenVINO model of consecutive ``parts``: each part's inputs wired to the outputs
    of the same name before it."""
    import openvino as ov

    models = [core.read_model(entry / f"{part.name}.xml") for part in parts]
    produced: dict[str, Any] = {}
    parameters = []
    for model in models:
        for parameter in model.get_parameters():
            source = next((produced[name] for name in parameter.output(0).get_names() if name in produced), None)
            if source is None:
                parameters.append(parameter)
                continue
            for target in list(parameter.output(0).get_target_inputs()):
                target.replace_source_output(source)
        for result in model.get_results():
            for name in result.output(0).get_names():
                produced[name] = result.input_value(0)
    return ov.Model(list(models[-1].get_results()), parameters, "+".join(part.name for part in parts))


class CompiledNetwork:
    """The exported parts compiled for this CPU at ``precision``: image tensor → logits."""

    def __init__(self, entry: Path, threads: int, precision: str = "fp32", core: Optional[Any] = None) -> None:
        import openvino as ov

        self.core = core or ov.Core()
        self.precision = precision
        self.stages = []
        for parts, part_precision in stages(precision):
            compiled = self.core.compile_model(joined(self.core, entry, parts), "CPU",
                                               compile_config(threads, part_precision))
            self.stages.append(_Stage(parts, part_precision, compiled))

    def logits(self, tensor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Class logits ``(Q, K+1)`` and mask logits ``(Q, H/4, W/4)`` of one padded image."""
        values: dict[str, np.ndarray] = {"image": tensor}
        for stage in self.stages:
            # Each stage reads the previous one's output buffers in place; the request
            # reuses its buffers, so only the last outputs are copied out.
            result = stage.request.infer({name: values[name] for name in stage.inputs}, share_inputs=True,
                                         share_outputs=True)
            values.update(zip(stage.outputs, result.to_tuple()))
        return np.array(values["class_logits"][0]), np.array(values["mask_logits"][0])

    def runtime_precisions(self) -> dict[str, Counter]:
        """What the compute nodes of each compiled graph actually run at (its parts joined
        by "+"), read from the compiled graph's ``runtimePrecision`` per node: the check
        that a precision mode is what it says."""
        found: dict[str, Counter] = {}
        for stage in self.stages:
            counts = found.setdefault(stage.name, Counter())
            for node in stage.compiled.get_runtime_model().get_ops():
                info = node.get_rt_info()
                if info["layerType"].astype(str) in COMPUTE_NODES:
                    counts[info["runtimePrecision"].astype(str)] += 1
        return found


class _Stage:
    """One compiled graph of consecutive parts of one precision, and its request."""

    def __init__(self, parts: tuple[Part, ...], precision: str, compiled: Any) -> None:
        self.name = "+".join(part.name for part in parts)
        self.precision, self.compiled = precision, compiled
        consumed = {name for part in parts for name in part.inputs}
        self.inputs = [next(iter(port.get_names() & consumed)) for port in compiled.inputs]
        self.outputs = [next(iter(port.get_names() & set(parts[-1].outputs))) for port in compiled.outputs]
        self.request = compiled.create_infer_request()


class OpenVINOEngine:
    """The compiled network and the postprocess: a :class:`worker.engine.ParsingEngine`."""

    def __init__(self, model_dir: Path, engine_dir: Path, max_side: int, threads: int,
                 precision: str = "fp32", labels_max_pixels: int = LABELS_MAX_PIXELS,
                 precision_note: Optional[str] = None) -> None:
        import openvino as ov

        self.max_side = max_side
        self.labels_max_pixels = labels_max_pixels
        self.heads = ModelHeads(**json.loads((engine_dir / HEADS_FILE).read_text()))
        self.network = CompiledNetwork(engine_dir, threads, precision)
        ran = self.network.runtime_precisions()
        log.info("OpenVINO graphs compiled for every input size, %s: %s", precision,
                 "; ".join(f"{name} {dict(counts)}" for name, counts in ran.items()))
        if precision != "fp32" and not any("bf16" in counts for counts in ran.values()):
            # OpenVINO runs f32 where the CPU cannot run bf16: the summary says what ran.
            precision_note = precision_note or (f"M2FP_PRECISION={precision} asked for bf16, which this CPU "
                                                "does not run: every part ran fp32")
            precision = "fp32"
        self.description: dict[str, Any] = {"engine": "openvino", "precision": precision, "model": str(model_dir),
                                            "runtime": ov.get_version().split("-")[0]}
        if precision_note:
            self.description["precision_note"] = precision_note

    def parse(self, image: np.ndarray) -> Parsing:
        import torch

        resized, size = model_input(image, self.max_side)
        class_logits, mask_logits = self.network.logits(preprocess(resized))
        width, height = decision_size((image.shape[1], image.shape[0]), size, self.labels_max_pixels)
        result = parse_logits(torch.from_numpy(class_logits), torch.from_numpy(mask_logits),
                              (size[1], size[0]), self.heads, (height, width))
        persons = [Person(score=s, mask_logits=m) for s, m in zip(result.person_scores, result.person_masks)]
        return Parsing(semantic=result.semantic[:NUM_PARTS], persons=persons,
                       person_threshold=self.heads.threshold, size=size)
