"""Body keypoints per person, in OpenPose's formats: what the try-on recipes and the
pose-conditioned models downstream read.

A :class:`PoseEngine` finds one body in an image (the one the model is best at: a
single person, roughly centred). M2FP has already found everyone, so each person's box,
with a margin, is cropped and handed to it, and the points come back in the photo's
pixels, under the person's id in ``persons.png``. A submission may bring its own OpenPose
JSON instead; each of its people is then given to the person most of its points fall on.

Points are BODY_25 internally (COCO-18 is a subset of it, plus nothing): a missing point
is ``(0, 0, 0)``, exactly as OpenPose writes one, since the recipes test for that.
"""
from __future__ import annotations

from typing import Any, Optional, Protocol

import numpy as np

BODY_25 = ("Nose", "Neck", "RShoulder", "RElbow", "RWrist", "LShoulder", "LElbow", "LWrist", "MidHip", "RHip",
           "RKnee", "RAnkle", "LHip", "LKnee", "LAnkle", "REye", "LEye", "REar", "LEar", "LBigToe", "LSmallToe",
           "LHeel", "RBigToe", "RSmallToe", "RHeel")
# COCO-18's points, by their BODY_25 index (COCO-18 has no mid-hip and no feet).
COCO_18_FROM_BODY_25 = (0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18)
_NECK, _RSHOULDER, _LSHOULDER, _MIDHIP, _RHIP, _LHIP = 1, 2, 5, 8, 9, 12
CROP_MARGIN = 0.15  # of the person's box, on each side: the pose model needs to see the body's outline
MIN_CROP = 32  # px on a side: a person smaller than this has no body to find (and a 1-pixel crop no image)


class PoseEngine(Protocol):
    description: dict[str, str]  # named in result.json

    def estimate(self, image: np.ndarray) -> Optional[np.ndarray]:
        """The body in an ``(H, W, 3)`` uint8 RGB image: ``(25, 3)`` float32 BODY_25 points
        ``[x, y, confidence]`` in its pixels, or None when it finds no body."""
        ...


def missing(points: np.ndarray) -> np.ndarray:
    """Which points are absent (OpenPose's ``(0, 0, 0)``)."""
    return ~points.any(axis=-1)


def midpoint(points: np.ndarray, first: int, second: int) -> np.ndarray:
    """The point halfway between two (OpenPose's neck and mid-hip), absent unless both are
    there; its confidence the lower of theirs."""
    a, b = points[first], points[second]
    if not (a.any() and b.any()):
        return np.zeros(3, np.float32)
    return np.array([(a[0] + b[0]) / 2, (a[1] + b[1]) / 2, min(a[2], b[2])], np.float32)


def to_coco18(body25: np.ndarray) -> np.ndarray:
    return body25[list(COCO_18_FROM_BODY_25)].copy()


def from_flat(values: list[float]) -> np.ndarray:
    """One person of an OpenPose document (54 or 75 numbers) as BODY_25 points; COCO-18's
    mid-hip is made from its hips, its feet stay absent."""
    points = np.asarray(values, np.float32).reshape(-1, 3)
    if len(points) == len(BODY_25):
        return points
    body = np.zeros((len(BODY_25), 3), np.float32)
    body[list(COCO_18_FROM_BODY_25)] = points
    body[_MIDHIP] = midpoint(body, _RHIP, _LHIP)
    return body


def estimate_people(engine: PoseEngine, image: np.ndarray, boxes: dict[int, list[int]]) -> dict[int, Optional[np.ndarray]]:
    """Each person's body, from a crop of its box (``[x, y, w, h]``) with a margin; points
    the model places outside the crop are absent (it guesses those, and OpenPose could
    never have seen them)."""
    height, width = image.shape[:2]
    bodies: dict[int, Optional[np.ndarray]] = {}
    for person, (x, y, w, h) in boxes.items():
        left, top = max(0, int(x - CROP_MARGIN * w)), max(0, int(y - CROP_MARGIN * h))
        right, bottom = min(width, int(x + w + CROP_MARGIN * w) + 1), min(height, int(y + h + CROP_MARGIN * h) + 1)
        small = min(right - left, bottom - top) < MIN_CROP
        body = None if small else engine.estimate(np.ascontiguousarray(image[top:bottom, left:right]))
        if body is None:
            bodies[person] = None
            continue
        inside = (body[:, 0] >= 0) & (body[:, 0] < right - left) & (body[:, 1] >= 0) & (body[:, 1] < bottom - top)
        placed = body + np.array([left, top, 0], np.float32)
        bodies[person] = np.where((inside & ~missing(body))[:, None], placed, 0).astype(np.float32)
    return bodies


def assign_submitted(people: list[np.ndarray], persons: np.ndarray,
                     boxes: dict[int, list[int]]) -> tuple[dict[int, np.ndarray], list[np.ndarray]]:
    """Submitted bodies to the persons M2FP found: each goes to the person whose pixels
    most of its points fall on (inside whose box, when its points fall on no one), best
    match first, one body per person. Returns the assigned bodies and the rest."""
    votes: list[tuple[int, int, int]] = []  # (points on the person, -body index, person)
    height, width = persons.shape
    for index, body in enumerate(people):
        present = body[~missing(body)]
        xs = np.clip(present[:, 0].astype(int), 0, width - 1)
        ys = np.clip(present[:, 1].astype(int), 0, height - 1)
        on = np.bincount(persons[ys, xs], minlength=256)
        for person, (x, y, w, h) in boxes.items():
            inside = int(((present[:, 0] >= x) & (present[:, 0] < x + w) & (present[:, 1] >= y)
                          & (present[:, 1] < y + h)).sum())
            score = int(on[person]) * 1000 + inside  # pixels first, the box to break ties and misses
            if score:
                votes.append((score, -index, person))
    assigned: dict[int, np.ndarray] = {}
    used: set[int] = set()
    for _, negative_index, person in sorted(votes, reverse=True):
        if person not in assigned and -negative_index not in used:
            assigned[person] = people[-negative_index]
            used.add(-negative_index)
    return assigned, [body for index, body in enumerate(people) if index not in used]


def openpose_document(bodies: dict[int, Optional[np.ndarray]], unassigned: list[np.ndarray],
                      coco18: bool = False) -> dict[str, Any]:
    """OpenPose's JSON (version 1.3): one entry per body found, ``person_id`` its id in
    persons.png (``-1`` for a submitted body that matched no one), points rounded to
    0.01 px."""
    def entry(person: int, body: np.ndarray) -> dict[str, Any]:
        points = to_coco18(body) if coco18 else body
        return {"person_id": [person], "pose_keypoints_2d": [round(float(v), 4 if i % 3 == 2 else 2)
                                                             for i, v in enumerate(points.ravel())],
                "face_keypoints_2d": [], "hand_left_keypoints_2d": [], "hand_right_keypoints_2d": [],
                "pose_keypoints_3d": [], "face_keypoints_3d": [], "hand_left_keypoints_3d": [],
                "hand_right_keypoints_3d": []}

    people = [entry(person, body) for person, body in sorted(bodies.items()) if body is not None]
    people += [entry(-1, body) for body in unassigned]
    return {"version": 1.3, "people": people}
