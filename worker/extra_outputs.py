"""The outputs a submission asks for beyond the standard five (``outputs``): keypoints,
per-class masks, garments and the try-on pack, each made from what the standard outputs
already hold (the photo, its labels and persons at the photo's size, the people list).

Each group adds its files and its part of ``result.json``, and the seconds it took, so a
user can see what an output costs per photo (docs/tryon.md).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from common.jobs import OutputOptions, OutputGroup
from common.profiles import Profile
from m2fp_contract.errors import ErrorCode, InputRejected
from worker import garments, pose
from worker.pose import PoseEngine
from worker.tryon import SHOULDERS, missing_joints
from worker.tryon_pack import make_tryon_pack


@dataclass
class Frame:
    """A job's photo and what was found in it, at the photo's size."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    cihp: np.ndarray  # (H, W) uint8 CIHP ids (garments and try-on recipes are written for them)
    labels: np.ndarray  # (H, W) uint8 ids of the job's label set
    persons: np.ndarray  # (H, W) uint8 person ids as persons.png
    people: Optional[list[dict[str, Any]]]  # the summary's people (None: the model has no instance output)
    profile: Profile


@dataclass
class Extras:
    files: dict[str, bytes] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def _boxes(frame: Frame) -> dict[int, list[int]]:
    return {person["id"]: person["bbox"] for person in frame.people or []}


def _bodies(frame: Frame, options: OutputOptions,
            engine: Optional[PoseEngine]) -> tuple[dict[int, Optional[np.ndarray]], list[np.ndarray], dict[str, Any]]:
    """Each person's body (submitted, or found by the pose model), the submitted bodies that
    matched nobody, and the summary's ``keypoints`` part."""
    boxes = _boxes(frame)
    if options.keypoints is not None:
        assigned, rest = pose.assign_submitted([pose.from_flat(p) for p in options.keypoints], frame.persons, boxes)
        bodies: dict[int, Optional[np.ndarray]] = {person: assigned.get(person) for person in boxes}
        about: dict[str, Any] = {"source": "submitted"}
    else:
        if engine is None:
            raise RuntimeError("this worker has no pose engine")
        bodies, rest = pose.estimate_people(engine, frame.image, boxes), []
        about = {"source": "model", "model": engine.description}
    without = [person for person, body in bodies.items() if body is None]
    reason = None
    if not boxes:
        reason = "nobody was found in the photo"
    elif without:
        reason = (f"no body found for person {', '.join(map(str, without))}" if options.keypoints is None
                  else f"no submitted body fell on person {', '.join(map(str, without))}")
    about |= {"people": [{"id": person, "found": bodies[person] is not None} for person in sorted(bodies)],
              "unmatched": len(rest), "reason": reason}
    return bodies, rest, about


def _tryon(frame: Frame, options: OutputOptions, bodies: dict[int, Optional[np.ndarray]], out: Extras) -> None:
    """The try-on pack of the chosen person; a person the photo does not have fails the job
    (the pack was the point of asking), a person without a body leaves it out, saying why,
    and one without both hips gets the pack without the files drawn from them (``omitted``,
    each with why: tryon_pack.omitted_files)."""
    person = options.person or 1
    body = bodies.get(person)
    reason = None
    if body is None:
        reason = f"no body keypoints for person {person}: the recipes need its shoulders, elbows and wrists"
    elif missing_joints(body, SHOULDERS):
        reason = (f"person {person}'s shoulders were not both found: every recipe is drawn from them (a missing "
                  "one would be drawn at the photo's corner)")
    if reason:
        out.summary["tryon"] = {"person": person, "files": [], "sizes": None, "omitted": {}, "absent_reason": reason}
        return
    pack = make_tryon_pack(frame.image, frame.cihp, frame.persons, person, body)
    out.files |= pack.files
    out.summary["tryon"] = {**pack.info, "files": sorted(pack.files), "omitted": pack.omitted, "absent_reason": None}


def check_person(frame: Frame, options: OutputOptions) -> None:
    """:class:`InputRejected` when the try-on pack is asked for a person the photo does not
    have: the pack was the point of asking, so the job fails, saying which persons there are."""
    person = options.person or 1
    count = len(frame.people or [])
    if frame.people is None:
        raise InputRejected("try-on outputs need the persons of the photo, and this model reports none (it has no "
                            "instance output)", ErrorCode.NO_PERSON)
    if count == 0:
        raise InputRejected("try-on outputs were asked of a photo in which nobody was found", ErrorCode.NO_PERSON)
    if person > count:
        raise InputRejected(f"try-on outputs were asked for person {person}, and the photo has {count} "
                            f"(persons.png numbers them 1..{count} by area)", ErrorCode.PERSON_NOT_FOUND)


def render_extras(frame: Frame, options: OutputOptions, engine: Optional[PoseEngine]) -> Extras:
    """The files and summary parts of every group ``options`` asks for."""
    if options.wants(OutputGroup.TRYON):
        check_person(frame, options)
    out = Extras()
    if options.wants(OutputGroup.MASKS):
        began = time.perf_counter()
        out.files |= garments.class_masks(frame.labels, frame.profile.classes)
        out.seconds["masks"] = time.perf_counter() - began
    if options.wants(OutputGroup.GARMENTS):
        began = time.perf_counter()
        found = garments.garments(frame.image, frame.cihp, frame.persons, sorted(_boxes(frame)))
        out.files |= found.files
        out.summary["garments"] = {person: found.by_person.get(person, []) for person in _boxes(frame)}
        out.seconds["garments"] = time.perf_counter() - began
    if options.wants(OutputGroup.KEYPOINTS):
        began = time.perf_counter()
        bodies, rest, out.summary["keypoints"] = _bodies(frame, options, engine)
        out.files["keypoints.json"] = json.dumps(pose.openpose_document(bodies, rest)).encode()
        out.files["keypoints_coco18.json"] = json.dumps(pose.openpose_document(bodies, rest, coco18=True)).encode()
        out.seconds["keypoints"] = time.perf_counter() - began
        if options.wants(OutputGroup.TRYON):
            began = time.perf_counter()
            _tryon(frame, options, bodies, out)
            out.seconds["tryon"] = time.perf_counter() - began
    return out
