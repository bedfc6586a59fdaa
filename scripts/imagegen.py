"""Images made on the fly for tests and benchmarks: photo-like content, odd formats."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image, ImageDraw


def photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A photo-like RGB array: a gradient sky, overlapping colored shapes, sensor noise."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, height)[:, None, None]
    base = (np.array([90, 140, 200]) * (1 - y) + np.array([60, 90, 60]) * y) * np.ones((1, width, 1))
    image = Image.fromarray(base.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(10):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1, y1 = x0 + int(rng.integers(width // 8, width // 2)), y0 + int(rng.integers(height // 8, height // 2))
        draw.ellipse([x0, y0, x1, y1], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    noisy = np.asarray(image).astype(np.int16) + rng.integers(-12, 13, (height, width, 3))
    return np.clip(noisy, 0, 255).astype(np.uint8)


def encode(array_or_image, fmt: str = "JPEG", exif_orientation: Optional[int] = None, **save) -> bytes:
    image = array_or_image if isinstance(array_or_image, Image.Image) else Image.fromarray(array_or_image)
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        save["exif"] = exif.tobytes()
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def photo_jpeg(width: int = 320, height: int = 240, seed: int = 0) -> bytes:
    return encode(photo(width, height, seed), "JPEG", quality=92)


# The one real photo of a person the project carries (NASA, public domain; tests/data/README.md).
ASTRONAUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "astronaut.jpg"
HAIR, UPPER_CLOTHES, TORSO_SKIN, FACE, LEFT_ARM, RIGHT_ARM = 2, 5, 10, 13, 14, 15
# Her shoulders, elbows and wrists as MediaPipe finds them in the whole photo (x, y): the
# suit's sleeves are drawn along them. A hand each outside the suit's outline (OOTDiffusion's
# recipe fills the mask's holes, so a hand inside the garment's outline is masked with it).
R_SHOULDER, R_ELBOW, R_WRIST = (113, 240), (65, 414), (135, 477)
L_SHOULDER, L_ELBOW, L_WRIST = (306, 257), (323, 375), (326, 461)
NECK, R_HIP, L_HIP = (210, 249), (160, 470), (260, 476)


def astronaut_body(width: int = 512, height: int = 512) -> list[float]:
    """Her body in OpenPose's BODY_25 list (x, y, confidence per point), the joints of the
    hand-made parse, in a copy of the photo scaled to ``width`` x ``height``: with her hips,
    which the pose model does not find in this portrait (it ends near them), so that the
    try-on pack is made whole (without both hips it leaves out its agnostic images)."""
    body = [0.0] * 75
    joints = {1: NECK, 2: R_SHOULDER, 3: R_ELBOW, 4: R_WRIST, 5: L_SHOULDER, 6: L_ELBOW, 7: L_WRIST,
              9: R_HIP, 12: L_HIP}
    for index, (x, y) in joints.items():
        body[index * 3:index * 3 + 3] = [x * width / 512, y * height / 512, 0.9]
    return body
R_HAND, L_HAND = (40, 480), (371, 459)
HAND_RADIUS = 20


def astronaut_parse() -> np.ndarray:
    """A hand-made CIHP parse of the astronaut photo (512x512): hair, face, neck skin, the
    suit (upper clothes, sleeves included) and two hands. The synthetic models' parse of a
    real photo is noise; try-on outputs are only checkable, and only timed fairly, on a
    parse whose garment, face and hands are where the photo has them."""
    canvas = Image.new("L", (512, 512), 0)
    draw = ImageDraw.Draw(canvas)
    draw.ellipse((165, 40, 285, 130), fill=HAIR)
    draw.rectangle((205, 180, 245, 215), fill=TORSO_SKIN)
    draw.polygon([(125, 215), (295, 225), (300, 511), (120, 511)], fill=UPPER_CLOTHES)
    draw.line([R_SHOULDER, R_ELBOW, R_WRIST], fill=UPPER_CLOTHES, width=44, joint="curve")
    draw.line([L_SHOULDER, L_ELBOW, L_WRIST], fill=UPPER_CLOTHES, width=44, joint="curve")
    draw.ellipse((180, 70, 270, 185), fill=FACE)
    for (x, y), label in ((R_HAND, RIGHT_ARM), (L_HAND, LEFT_ARM)):
        draw.ellipse((x - HAND_RADIUS, y - HAND_RADIUS, x + HAND_RADIUS, y + HAND_RADIUS), fill=label)
    return np.asarray(canvas)
