"""Which engine a worker loads: the start-up check's choice, and the factory that loads it.

Kept apart from :mod:`worker.engine` (the interface and its data types), which both
engines import: only this module imports the engines, so there is no import circle.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from worker.engine import LABELS_MAX_PIXELS, ParsingEngine

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineChoice:
    """What the worker's start-up check decided, for every pool process to load."""

    kind: str  # "openvino" or "torch"
    model_dir: Path
    engine_dir: Optional[Path] = None  # the OpenVINO cache entry
    precision: str = "fp32"
    static_shapes: int = 2
    labels_max_pixels: int = LABELS_MAX_PIXELS


def load_engine(choice: EngineChoice, max_side: int, threads: int, fallback: bool) -> ParsingEngine:
    """Load the chosen engine in this process; with ``fallback`` (M2FP_ENGINE=auto), an
    OpenVINO engine that cannot load gives way to torch with one warning."""
    if choice.kind == "openvino":
        try:
            from worker.openvino_engine import OpenVINOEngine  # OpenVINO may be missing: imported on use

            return OpenVINOEngine(choice.model_dir, choice.engine_dir, max_side, threads, choice.precision,
                                  choice.static_shapes, choice.labels_max_pixels)
        except Exception as exc:  # an import error, a runtime that cannot compile here
            if not fallback:
                raise
            log.warning("OpenVINO engine cannot load (%s: %s); using the torch engine (slower). "
                        "Set M2FP_ENGINE=torch to silence this.", type(exc).__name__, exc)
    from worker.torch_engine import TorchEngine  # torch loads only in processes that use it

    return TorchEngine(choice.model_dir, max_side, choice.labels_max_pixels)
