"""Fault injection for the worker tests, behind the production ``ParsingEngine`` seam.

While the hold file exists, :class:`HoldingEngine` keeps each job waiting inside
``parse`` (the job already shows ``running`` and its input was read), so a test can
kill the worker there, break the store, or let a time limit fire. A hold file that says
``deaf`` also ignores the soft time limit's signal while holding, as native code that
never returns to Python would, so that the hard limit has to act. Each holding
process writes ``holding-<pid>`` (containing its pid) next to the hold file.
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np

from worker.engine import Parsing, ParsingEngine


class HoldingEngine:
    def __init__(self, engine: ParsingEngine, hold_file: Path) -> None:
        self.engine = engine
        self.hold_file = hold_file

    @property
    def description(self) -> dict[str, Any]:
        return self.engine.description

    def parse(self, image: np.ndarray) -> Parsing:
        self._hold()
        return self.engine.parse(image)

    def _hold(self) -> None:
        if not self.hold_file.exists():
            return
        deaf = self.hold_file.read_text().strip() == "deaf"
        # Ignored, not blocked: the engine's runtime has threads of its own that would take a
        # signal this thread blocks, and Python runs the handler anyway (Celery's soft limit).
        previous = signal.signal(signal.SIGUSR1, signal.SIG_IGN) if deaf else None
        (self.hold_file.parent / f"holding-{os.getpid()}").write_text(str(os.getpid()))
        try:
            while self.hold_file.exists():
                time.sleep(0.05)
        finally:
            if deaf:
                signal.signal(signal.SIGUSR1, previous)
