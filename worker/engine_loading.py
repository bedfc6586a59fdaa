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
    labels_max_pixels: int = LABELS_MAX_PIXELS
    precision_note: Optional[str] = None  # why the precision is not the one asked for, for each job's summary


def effective_precision(requested: str, cpu_has_bf16: bool) -> tuple[str, Optional[str]]:
    """The precision to run, and why it is not the one asked for (for the log and every
    job's summary): bf16 arithmetic needs avx512_bf16 or AMX, else everything runs fp32."""
    if requested == "fp32" or cpu_has_bf16:
        return requested, None
    return "fp32", f"M2FP_PRECISION={requested} asked for, but this CPU has neither avx512_bf16 nor AMX: running fp32"


def load_engine(choice: EngineChoice, max_side: int, threads: int, fallback: bool) -> ParsingEngine:
    """Load the chosen engine in this process; with ``fallback`` (M2FP_ENGINE=auto), an
    OpenVINO engine that cannot load gives way to torch with one warning."""
    if choice.kind == "openvino":
        try:
            from worker.openvino_engine import OpenVINOEngine  # OpenVINO may be missing: imported on use

            return OpenVINOEngine(choice.model_dir, choice.engine_dir, max_side, threads, choice.precision,
                                  choice.labels_max_pixels, choice.precision_note)
        except Exception as exc:  # an import error, a runtime that cannot compile here
            if not fallback:
                raise
            log.warning("OpenVINO engine cannot load (%s: %s); using the torch engine (slower). "
                        "Set M2FP_ENGINE=torch to silence this.", type(exc).__name__, exc)
    from worker.torch_engine import TorchEngine  # torch loads only in processes that use it

    return TorchEngine(choice.model_dir, max_side, choice.labels_max_pixels)
