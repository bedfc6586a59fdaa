"""Parses written by hand, behind the engine interface: the worker runs as in production
(its pose model included), but a photo of the size of a scripted label map parses to
that map, with the persons the test drew. A synthetic model's parse of a real photo is
noise; try-on outputs are only checkable on a parse whose garments, face and hands are
where the photo has them, and whose persons are where the test put them.

``M2FP_TEST_SCRIPTED_PARSE`` names one label map or several (joined by ``os.pathsep``):
8-bit PNGs of CIHP ids. Beside ``<name>.png`` a ``<name>.persons.png`` (8-bit, 0 =
nobody, one value per person) says who is who; without it there is one person wherever
a part is. A photo whose size no map has gets the model's own parse, so a worker can
serve other tests' photos too.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from common.labels import NUM_PARTS
from worker.engine import Parsing, ParsingEngine, Person

PERSONS_SUFFIX = ".persons.png"


def persons_path(labels: Path) -> Path:
    """Where the person map of the label map ``labels`` lies."""
    return labels.with_name(labels.name[:-len(".png")] + PERSONS_SUFFIX)


def write_scripted_parse(labels_path: Path, labels: np.ndarray, persons: Optional[np.ndarray] = None) -> Path:
    """Save a label map (and its person map) where :class:`ScriptedEngine` reads them;
    returns the path to name in ``M2FP_TEST_SCRIPTED_PARSE``."""
    Image.fromarray(labels.astype(np.uint8)).save(labels_path)
    if persons is not None:
        if persons.shape != labels.shape or ((labels > 0) & (persons == 0)).any():
            raise ValueError("the person map must have the labels' size and a person on every part pixel")
        Image.fromarray(persons.astype(np.uint8)).save(persons_path(labels_path))
    return labels_path


class ScriptedEngine:
    """The engine ``engine`` of the worker, with the scripted maps in front of it (by size)."""

    def __init__(self, engine: ParsingEngine, maps: Sequence[Path]) -> None:
        self.engine = engine
        self.description = {**engine.description, "engine": "scripted (tests)"}
        self.maps: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        for path in maps:
            labels = np.asarray(Image.open(path))
            extra = persons_path(path)
            persons = np.asarray(Image.open(extra)) if extra.exists() else (labels > 0).astype(np.uint8)
            self.maps[labels.shape[1], labels.shape[0]] = (labels, persons)

    def parse(self, image: np.ndarray) -> Parsing:
        height, width = image.shape[:2]
        scripted = self.maps.get((width, height))
        if scripted is None:
            return self.engine.parse(image)
        labels, persons = scripted
        semantic = np.full((NUM_PARTS, height, width), 0.005, np.float32)
        for class_id in np.unique(labels):
            semantic[class_id][labels == class_id] = 0.9
        found = [Person(score=0.95, mask_logits=np.where(persons == person, 5.0, -5.0).astype(np.float32))
                 for person in np.unique(persons) if person]
        return Parsing(semantic=semantic, persons=found, person_threshold=0.5, size=(width, height))
