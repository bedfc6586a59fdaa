"""Photos with a hand-made parse, persons and bodies, for a worker whose parse is scripted
(scripted_engine.py): what a test asks of the photo, it knows the answer of by hand."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from common.labels import PALETTE
from scripts.imagegen import encode
from tests.harness.scripted_engine import write_scripted_parse

HAIR, UPPER_CLOTHES, PANTS, FACE, LEFT_ARM, RIGHT_ARM = 2, 5, 9, 13, 14, 15
BODY_POINTS = {"Neck": 1, "RShoulder": 2, "RElbow": 3, "RWrist": 4, "LShoulder": 5, "LElbow": 6, "LWrist": 7,
               "RHip": 9, "LHip": 12}  # OpenPose BODY_25 indices


@dataclass(frozen=True)
class Scene:
    photo: bytes  # PNG: no EXIF orientation, no JPEG loss in the parse's colours
    labels: np.ndarray  # (H, W) CIHP ids
    persons: np.ndarray  # (H, W) person ids, as persons.png numbers them (1 = the largest)
    bodies: dict[int, list[float]]  # person id -> its BODY_25 pose_keypoints_2d (75 numbers)

    @property
    def size(self) -> tuple[int, int]:
        return self.labels.shape[1], self.labels.shape[0]

    def keypoints(self) -> dict:
        """Every body as OpenPose's JSON, person 1's first."""
        return {"people": [{"pose_keypoints_2d": self.bodies[person]} for person in sorted(self.bodies)]}

    def write_parse(self, directory: Path, name: str) -> Path:
        """The scripted parse's files in ``directory``; the path for M2FP_TEST_SCRIPTED_PARSE."""
        return write_scripted_parse(directory / f"{name}.png", self.labels, self.persons)


def _figure(draw: ImageDraw.ImageDraw, centre: int, top: int, scale: float) -> dict[str, tuple[float, float]]:
    """A standing figure facing the camera (its right arm on the photo's left): face, hair,
    top, sleeves-less arms and pants; returns its joints in the photo's pixels."""
    def at(dx: float, dy: float) -> tuple[float, float]:
        return centre + dx * scale, top + dy * scale

    def box(x0: float, y0: float, x1: float, y1: float) -> list[tuple[float, float]]:
        return [at(x0, y0), at(x1, y1)]

    draw.ellipse(box(-35, -10, 35, 30), fill=HAIR)
    draw.ellipse(box(-30, 0, 30, 70), fill=FACE)
    draw.rectangle(box(-60, 75, 60, 265), fill=UPPER_CLOTHES)
    draw.rectangle(box(-90, 75, -60, 255), fill=RIGHT_ARM)
    draw.rectangle(box(60, 75, 90, 255), fill=LEFT_ARM)
    draw.rectangle(box(-55, 265, 55, 420), fill=PANTS)
    return {"Neck": at(0, 75), "RShoulder": at(-55, 80), "RElbow": at(-75, 165), "RWrist": at(-75, 245),
            "LShoulder": at(55, 80), "LElbow": at(75, 165), "LWrist": at(75, 245), "RHip": at(-30, 265),
            "LHip": at(30, 265)}


def two_people() -> Scene:
    """A 640x480 photo of two people: a large one on the left (person 1) and a smaller one
    on the right (person 2), far enough apart that no try-on recipe drawn for one reaches
    the other."""
    labels_image, persons_image = Image.new("L", (640, 480), 0), Image.new("L", (640, 480), 0)
    bodies = {}
    for person, (centre, top, scale) in ((1, (170, 40, 1.0)), (2, (500, 150, 0.6))):
        figure = Image.new("L", (640, 480), 0)
        joints = _figure(ImageDraw.Draw(figure), centre, top, scale)
        labels_image.paste(figure, mask=figure.point(lambda value: 255 if value else 0))
        persons_image.paste(person, mask=figure.point(lambda value: 255 if value else 0))
        body = [0.0] * 75
        for name, (x, y) in joints.items():
            body[BODY_POINTS[name] * 3:BODY_POINTS[name] * 3 + 3] = [x, y, 0.9]
        bodies[person] = body
    labels, persons = np.asarray(labels_image), np.asarray(persons_image)
    # Each class's palette colour on a light background: flat areas, which JPEG keeps nearly exact.
    photo = np.where(labels[:, :, None] > 0, PALETTE[labels], np.uint8(220)).astype(np.uint8)
    return Scene(encode(photo, "PNG"), labels, persons, bodies)
