"""The outputs of a job, built at the original image's resolution: colored map, label
map, person map, overlay and the JSON summary."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.images import encode_jpeg, encode_png
from common.labels import CIHP_CLASSES, PALETTE, legend
from worker.engine import Parsing
from worker.instances import describe_people, person_map

OVERLAY_ALPHA = 0.5


def colorize(labels: np.ndarray) -> np.ndarray:
    """Class ids → palette colors, ``(H, W)`` → ``(H, W, 3)`` uint8."""
    return PALETTE[np.minimum(labels, len(PALETTE) - 1)]


BLEND_ROWS = 256  # rows blended at a time: a 40-megapixel photo in float32 would take 2 GB


def blend(image: np.ndarray, colored: np.ndarray, labels: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """Colors over the photo where a part was found; background pixels stay the photo."""
    result = np.empty_like(image)
    for top in range(0, image.shape[0], BLEND_ROWS):
        rows = slice(top, top + BLEND_ROWS)
        out = image[rows].astype(np.float32)
        parts = labels[rows] > 0
        out[parts] = (1 - alpha) * out[parts] + alpha * colored[rows][parts].astype(np.float32)
        result[rows] = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    return result


def summarize(labels: np.ndarray, class_scores: dict[int, float], persons: int | None) -> dict[str, Any]:
    """Classes present (pixel fraction, score), the person count, and the palette legend."""
    counts = np.bincount(labels.ravel(), minlength=len(CIHP_CLASSES))
    total = labels.size
    classes = [
        {
            "id": class_id,
            "name": CIHP_CLASSES[class_id],
            "color": [int(c) for c in PALETTE[class_id]],
            "pixel_fraction": round(float(count) / total, 6),
            "score": round(class_scores[class_id], 4) if class_id in class_scores else None,
        }
        for class_id, count in enumerate(counts)
        if count > 0
    ]
    return {
        "width": int(labels.shape[1]),
        "height": int(labels.shape[0]),
        "persons": persons,
        "classes": classes,
        "legend": legend(),
    }


@dataclass
class RenderedOutputs:
    files: dict[str, bytes]  # output name → encoded bytes
    summary: dict[str, Any]


def render(image: np.ndarray, parsing: Parsing, extra: dict[str, Any]) -> RenderedOutputs:
    """Scale the parsing to ``image`` and encode colored map, labels, persons, overlay, summary."""
    height, width = image.shape[:2]
    full = parsing.labels_at((width, height))
    colored = colorize(full)
    people = person_map(parsing.labels, parsing.persons or [])
    persons = people.at((width, height))
    summary = summarize(full, parsing.class_scores, None if parsing.persons is None else len(people.scores))
    summary |= {
        # None: the model has no instance output, so nobody can say whether a person is there.
        "people": None if parsing.persons is None else describe_people(persons, full, people.scores, CIHP_CLASSES),
        "no_person_detected": None if parsing.persons is None else not people.scores,
        "person_score_threshold": None if parsing.person_threshold is None else round(parsing.person_threshold, 4),
    } | extra
    files = {
        "colored.png": encode_png(colored),
        "labels.png": encode_png(full),
        "persons.png": encode_png(persons),
        "overlay.jpg": encode_jpeg(blend(image, colored, full)),
        "result.json": json.dumps(summary, indent=2).encode(),
    }
    return RenderedOutputs(files=files, summary=summary)
