"""Who is who: the person each part pixel belongs to, and what each person is made of.

M2FP finds part masks and human masks as separate queries, and modelscope's pipeline
hands them over as one flat list with no link between a part and its person. The link
is made here from the model's own human instances (:class:`worker.engine.Person`,
whichever engine ran): every part pixel goes to the person whose mask logit is highest
there, so a part pixel belongs to exactly one person and background stays background,
as in CIHP's ``Human_ids`` maps; when the model found nobody, no pixel has a person,
parts included. Persons are numbered 1..N by area, largest first; a
person whose mask won no part pixel is left out; more than :data:`MAX_PERSONS` are cut
to the best-scoring ones (with a warning, and ``people_truncated`` in the summary), since
the map is 8-bit; the real model keeps at most 100 instances, so only a model changed to
keep more can get there.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.images import resize_labels
from worker.engine import Person

log = logging.getLogger(__name__)

MAX_PERSONS = 255
_BLOCK_ROWS = 256  # rows counted at a time: a 40-megapixel photo stays within a few MB of temporaries


@dataclass
class PersonMap:
    """Person ids per pixel at the decision size, and each id's model score (``scores[id - 1]``)."""

    ids: np.ndarray  # (h, w) uint8: 0 background, 1..N
    scores: list[float]
    truncated: bool = False  # the model found more than MAX_PERSONS; only the best-scoring are here

    def at(self, size: tuple[int, int]) -> "PersonMap":
        """The map at ``size`` = ``(W, H)``, scaled as the labels are (nearest), its persons
        numbered anew by their area there (scaling moves areas unevenly)."""
        ids = resize_labels(self.ids, size)
        ids, order = _by_area(ids, len(self.scores))
        return PersonMap(ids, [self.scores[index] for index in order], self.truncated)


def _by_area(owner: np.ndarray, count: int) -> tuple[np.ndarray, list[int]]:
    """``owner`` renumbered 1..n by area, largest first, without persons of no area; and
    the old index (id - 1) of each new id."""
    areas = np.bincount(owner.ravel(), minlength=count + 1)[1:]
    order = [int(index) for index in np.argsort(-areas, kind="stable") if areas[index] > 0]
    renumber = np.zeros(count + 1, np.uint8)
    renumber[[index + 1 for index in order]] = np.arange(1, len(order) + 1)
    return renumber[owner], order


def person_map(labels: np.ndarray, persons: list[Person]) -> PersonMap:
    """Assign each part pixel of ``labels`` (CIHP ids, 0 = background) to one of ``persons``
    (best score first, mask logits at the labels' size). With no person, every pixel is
    0, parts included: there is nobody to give them to (``no_person_detected``)."""
    truncated = len(persons) > MAX_PERSONS
    if truncated:
        log.warning("%d persons found; persons.png keeps the %d best-scoring", len(persons), MAX_PERSONS)
        persons = persons[:MAX_PERSONS]
    if not persons:
        return PersonMap(np.zeros(labels.shape, np.uint8), [])
    best = np.full(labels.shape, -np.inf, np.float32)
    owner = np.zeros(labels.shape, np.uint8)
    for number, person in enumerate(persons, start=1):  # a running argmax: one map in memory at a time
        higher = person.mask_logits > best
        owner[higher] = number
        np.maximum(best, person.mask_logits, out=best)
    owner[labels == 0] = 0
    ids, order = _by_area(owner, len(persons))
    return PersonMap(ids, [persons[index].score for index in order], truncated)


def describe_people(ids: np.ndarray, labels: np.ndarray, scores: list[float],
                    class_names: tuple[str, ...]) -> list[dict[str, Any]]:
    """Each person of a full-size map: id, score, bbox ``[x, y, w, h]``, share of the
    photo, and its parts (class id, name, share of the person's pixels), largest first."""
    count = len(scores)
    if count == 0:
        return []
    classes = len(class_names)
    height, width = ids.shape
    pixels = np.zeros((count + 1, classes), np.int64)
    rows = np.zeros((count + 1, height), bool)
    cols = np.zeros((count + 1, width), bool)
    for top in range(0, height, _BLOCK_ROWS):
        block, parts = ids[top:top + _BLOCK_ROWS], labels[top:top + _BLOCK_ROWS]
        span = block.shape[0]
        pixels += np.bincount((block.astype(np.int64) * classes + parts).ravel(),
                              minlength=(count + 1) * classes).reshape(count + 1, classes)
        per_row = np.bincount((block + np.arange(span)[:, None] * (count + 1)).ravel(),
                              minlength=span * (count + 1)).reshape(span, count + 1)
        rows[:, top:top + span] = per_row.T > 0
        cols |= np.bincount((block.astype(np.int64) * width + np.arange(width)).ravel(),
                            minlength=(count + 1) * width).reshape(count + 1, width) > 0
    people = []
    for person in range(1, count + 1):
        area = int(pixels[person].sum())
        ys, xs = np.flatnonzero(rows[person]), np.flatnonzero(cols[person])
        people.append({
            "id": person,
            "score": round(scores[person - 1], 4),
            "bbox": [int(xs[0]), int(ys[0]), int(xs[-1] - xs[0] + 1), int(ys[-1] - ys[0] + 1)],
            "pixel_fraction": round(area / ids.size, 6),
            "parts": [{"id": int(part), "name": class_names[part], "pixel_fraction": round(pixels[person, part] / area, 6)}
                      for part in np.flatnonzero(pixels[person]) if part > 0],
        })
    return people

