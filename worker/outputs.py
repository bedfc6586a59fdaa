"""The outputs of a job, built at the original image's resolution: colored map, label
map, person map, overlay and the JSON summary."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from common.images import encode_jpeg, encode_png, resize_labels
from common.jobs import OutputOptions
from common.labels import CIHP_CLASSES, PALETTE
from common.profiles import CIHP, PROFILES, Profile
from m2fp_contract.schema import LabelsFormat
from worker.engine import Parsing
from worker.extra_outputs import Frame, render_extras
from worker.instances import describe_people, person_map
from worker.pose import PoseEngine

OVERLAY_ALPHA = 0.5


def colorize(labels: np.ndarray, palette: np.ndarray = PALETTE) -> np.ndarray:
    """Class ids → palette colors, ``(H, W)`` → ``(H, W, 3)`` uint8."""
    return palette[np.minimum(labels, len(palette) - 1)]


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


def summarize(labels: np.ndarray, class_scores: dict[int, float], persons: int | None,
              profile: Profile = CIHP) -> dict[str, Any]:
    """Classes present (pixel fraction, score), the person count, and the palette legend,
    in ``profile``'s ids."""
    counts = np.bincount(labels.ravel(), minlength=len(profile.classes))
    total = labels.size
    palette = profile.palette
    classes = [
        {
            "id": class_id,
            "name": profile.classes[class_id],
            "color": [int(c) for c in palette[class_id]],
            "pixel_fraction": round(float(count) / total, 6),
            "score": round(class_scores[class_id], 4) if class_id in class_scores else None,
        }
        for class_id, count in enumerate(counts)
        if count > 0
    ]
    return {
        "width": int(labels.shape[1]),
        "height": int(labels.shape[0]),
        "labels": profile.name.value,
        "persons": persons,
        "classes": classes,
        "legend": profile.legend(),
    }


@dataclass
class RenderedOutputs:
    files: dict[str, bytes]  # output name → encoded bytes
    summary: dict[str, Any]


def profile_scores(parsing: Parsing, profile: Profile) -> dict[int, float]:
    """Each profile class's confidence: the pixel-weighted mean of the CIHP classes it takes."""
    counts = np.bincount(parsing.labels.ravel(), minlength=len(CIHP_CLASSES))
    sums: dict[int, float] = {}
    pixels: dict[int, int] = {}
    for cihp, score in parsing.class_scores.items():
        target = profile.from_cihp[cihp]
        if target == 0 and cihp != 0:
            continue  # a part the profile has no class for is background, but not background's confidence
        sums[target] = sums.get(target, 0.0) + score * counts[cihp]
        pixels[target] = pixels.get(target, 0) + int(counts[cihp])
    return {target: sums[target] / pixels[target] for target in sums}


def render(image: np.ndarray, parsing: Parsing, extra: dict[str, Any],
           output: OutputOptions = OutputOptions(), pose: Optional[PoseEngine] = None) -> RenderedOutputs:
    """Scale the parsing to ``image`` and encode colored map, labels, persons, overlay and
    summary, in the label set and format ``output`` asks for, and the groups of outputs it
    asks for beyond those (``pose`` finds the keypoints they need)."""
    height, width = image.shape[:2]
    profile = PROFILES[output.labels]
    decided = profile.lookup[parsing.labels]  # a part the profile has no class for is background
    full = resize_labels(decided, (width, height))
    colored = colorize(full, profile.palette)
    people = person_map(decided, parsing.persons or []).at((width, height))
    persons = people.ids
    summary = summarize(full, profile_scores(parsing, profile), parsing.person_count, profile)
    described = None if parsing.persons is None else describe_people(persons, full, people.scores, profile.classes)
    summary |= {
        # None: the model has no instance output, so nobody can say whether a person is there.
        "people": described,
        "no_person_detected": None if parsing.persons is None else not parsing.persons,
        "person_score_threshold": None if parsing.person_threshold is None else round(parsing.person_threshold, 4),
        "people_truncated": None if parsing.persons is None else people.truncated,
    } | extra
    files = {
        "colored.png": encode_png(colored),
        "labels.png": encode_png(full, profile.palette if output.labels_format is LabelsFormat.PALETTE else None),
        "persons.png": encode_png(persons),
        "overlay.jpg": encode_jpeg(blend(image, colored, full)),
    }
    if output.outputs:
        cihp = full if profile is CIHP else resize_labels(parsing.labels, (width, height))
        extras = render_extras(Frame(image, cihp, full, persons, described, profile), output, pose)
        files |= extras.files
        for person in described or []:
            if "garments" in extras.summary:
                person["garments"] = extras.summary["garments"][person["id"]]
        summary |= {key: value for key, value in extras.summary.items() if key != "garments"}
        summary |= {"outputs_requested": [group.value for group in output.outputs],
                    "output_seconds": {name: round(seconds, 3) for name, seconds in extras.seconds.items()}}
    files["result.json"] = json.dumps(summary, indent=2).encode()
    return RenderedOutputs(files=files, summary=summary)
