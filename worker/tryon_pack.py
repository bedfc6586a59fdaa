"""The try-on pack of one person: parse agnostic, gray agnostic images and inpainting masks
(worker.tryon's recipes), at the photo's size and in the 768x1024 frame the try-on models
read, with the numbers that map one onto the other.

The photo goes into 768x1024 by letterboxing (aspect kept, centred, white bars) rather than
the recipes' plain resize, so no body is stretched and a client can map results back.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Collection, Iterator

import numpy as np

from common.images import encode_jpeg, encode_png, resize_labels, resize_rgb
from common.labels import PALETTE
from m2fp_contract.schema import TRYON_FILES, TRYON_SIZES
from worker.tryon import (HIPS, agnostic_hrviton, agnostic_vitonhd, inpaint_gray, inpaint_mask, missing_joints,
                          parse_agnostic)

FRAME = (768, 1024)  # VITON-HD / HR-VITON / OOTDiffusion working size (w, h)
OOTD_SIZE = (384, 512)  # where run_ootd.py computes its masks (w, h)
JPEG_QUALITY = 95
# file stem -> get_mask_location (category, model_type)
INPAINT_VARIANTS = {"upper": ("upper_body", "dc"), "upper_hd": ("upper_body", "hd"),
                    "lower": ("lower_body", "dc"), "dresses": ("dresses", "dc")}
# The pack's files whose recipe draws the hips without testing them (VITON-HD get_img_agnostic
# and HR-VITON get_agnostic both draw the torso to 9 and 12); the parse-agnostic map and the
# inpaint masks read only the neck, shoulders, elbows and wrists.
NEEDS_HIPS = ("agnostic_vitonhd.jpg", "agnostic_hrviton.jpg")


def omitted_files(body25: np.ndarray) -> dict[str, str]:
    """The pack's files (names as in TRYON_FILES) that this body cannot give, each with why:
    with a hip missing (a half-body photo), both agnostic images would gray a wedge from the
    shoulders to the photo's corner, so they are left out, as the whole pack is when a
    shoulder is missing (worker.extra_outputs), and the other files are still made."""
    hips = missing_joints(body25, HIPS)
    if not hips:
        return {}
    named = " and ".join({9: "right hip", 12: "left hip"}[joint] for joint in hips)
    reason = (f"the {named} {'was' if len(hips) == 1 else 'were'} not found: the recipe draws the torso to both hips "
              "(a missing one would be drawn at the photo's corner); the parse-agnostic map and the inpaint masks "
              "do not need them")
    return {name: reason for name in NEEDS_HIPS}


@dataclass(frozen=True)
class Letterbox:
    """A photo placed in a target frame: resized by ``scale`` to ``resized`` (w, h), then
    padded by ``pad`` = (left, top, right, bottom) pixels."""

    scale: float
    pad: tuple[int, int, int, int]
    resized: tuple[int, int]

    @property
    def frame(self) -> tuple[int, int]:
        """The target frame's (w, h)."""
        left, top, right, bottom = self.pad
        return self.resized[0] + left + right, self.resized[1] + top + bottom


def letterbox(size_wh: tuple[int, int], target: tuple[int, int] = FRAME) -> Letterbox:
    """The largest fit of a ``size_wh`` photo in ``target``, centred; odd padding puts the
    extra pixel right or bottom."""
    width, height = size_wh
    scale = min(target[0] / width, target[1] / height)
    resized = (max(1, round(width * scale)), max(1, round(height * scale)))
    left, top = (target[0] - resized[0]) // 2, (target[1] - resized[1]) // 2
    pad = (left, top, target[0] - resized[0] - left, target[1] - resized[1] - top)
    return Letterbox(scale, pad, resized)


def _place(array: np.ndarray, box: Letterbox, fill: int) -> np.ndarray:
    width, height = box.frame
    out = np.full((height, width) + array.shape[2:], fill, dtype=array.dtype)
    left, top = box.pad[:2]
    out[top:top + array.shape[0], left:left + array.shape[1]] = array
    return out


def letterbox_image(image: np.ndarray, box: Letterbox) -> np.ndarray:
    """An RGB photo in the frame: bilinear, white bars (a try-on model reads white as empty
    studio background, as in its datasets)."""
    return _place(resize_rgb(image, box.resized), box, 255)


def letterbox_labels(labels: np.ndarray, box: Letterbox) -> np.ndarray:
    """A label map in the frame: nearest (no new ids), background bars."""
    return _place(resize_labels(labels, box.resized), box, 0)


def letterbox_keypoints(keypoints: np.ndarray, box: Letterbox) -> np.ndarray:
    """Keypoints ``(N, 3)`` in the frame: x, y scaled and shifted; a missing point (0, 0)
    stays where the recipes look for it."""
    out = np.array(keypoints, dtype=np.float64)
    present = ~((out[:, 0] == 0) & (out[:, 1] == 0))
    out[present, 0] = out[present, 0] * box.scale + box.pad[0]
    out[present, 1] = out[present, 1] * box.scale + box.pad[1]
    return out


def unletterbox_mask(mask: np.ndarray, box: Letterbox, size_wh: tuple[int, int]) -> np.ndarray:
    """A frame-sized mask back on the photo: bars cropped, nearest resize."""
    left, top, right, bottom = box.pad
    inside = mask[top:mask.shape[0] - bottom, left:mask.shape[1] - right]
    return resize_labels(np.ascontiguousarray(inside), size_wh)


def person_labels(labels: np.ndarray, persons: np.ndarray, person: int) -> np.ndarray:
    """The person's own parse: other people are background, as in a one-person dataset."""
    return np.where(persons == person, labels, 0).astype(np.uint8)


def frame_masks(frame_labels: np.ndarray, frame_keypoints: np.ndarray) -> dict[str, np.ndarray]:
    """Each inpainting mask in the frame, as run_ootd.py makes it: computed at 384x512 (labels
    nearest, keypoints halved), then resized NEAREST to 768x1024."""
    small = resize_labels(frame_labels, OOTD_SIZE)
    points = np.array(frame_keypoints, dtype=np.float64)
    points[:, :2] *= OOTD_SIZE[1] / FRAME[1]  # a missing (0, 0) stays (0, 0)
    return {stem: resize_labels(inpaint_mask(small, points, *variant)[0], FRAME)
            for stem, variant in INPAINT_VARIANTS.items()}


def _one_size(image: np.ndarray, labels: np.ndarray, body25: np.ndarray, scale: float,
              masks: dict[str, np.ndarray], omit: Collection[str]) -> Iterator[tuple[str, np.ndarray]]:
    yield "parse_agnostic.png", parse_agnostic(labels, body25, scale)
    if "agnostic_vitonhd.jpg" not in omit:
        yield "agnostic_vitonhd.jpg", agnostic_vitonhd(image, labels, body25, scale)
    if "agnostic_hrviton.jpg" not in omit:
        yield "agnostic_hrviton.jpg", agnostic_hrviton(image, labels, body25)
    for stem, mask in masks.items():
        yield f"inpaint_mask_{stem}.png", mask
        yield f"inpaint_gray_{stem}.jpg", inpaint_gray(image, mask)


def iter_tryon_images(image: np.ndarray, labels: np.ndarray, body25: np.ndarray, box: Letterbox,
                      omit: Collection[str] = ()) -> Iterator[tuple[str, str, np.ndarray]]:
    """Every pack image as ``(size, file name, array)``, one at a time: at 40 megapixels
    each photo-sized RGB image is 120 MB, so the pack is encoded as it is made, not held.
    The agnostic images named in ``omit`` are not made (:func:`omitted_files`).

    ``labels`` are the person's own, ``body25`` in the photo's pixels. At the photo's size
    VITON-HD's constants are those of the 1024-high frame in photo pixels (scale 1/s);
    HR-VITON scales itself from the shoulders; the masks are the frame's, un-letterboxed.
    """
    size = (image.shape[1], image.shape[0])
    frame_image, frame_labels = letterbox_image(image, box), letterbox_labels(labels, box)
    frame_points = letterbox_keypoints(body25, box)
    masks = frame_masks(frame_labels, frame_points)
    photo_masks = {stem: unletterbox_mask(mask, box, size) for stem, mask in masks.items()}
    for name, array in _one_size(image, labels, body25, 1 / box.scale, photo_masks, omit):
        yield "photo", name, array
    for name, array in _one_size(frame_image, frame_labels, frame_points, 1.0, masks, omit):
        yield "768x1024", name, array


def _encode(name: str, array: np.ndarray) -> bytes:
    if name == "parse_agnostic.png":
        return encode_png(array, PALETTE)
    return encode_png(array) if name.endswith(".png") else encode_jpeg(array, JPEG_QUALITY)


@dataclass(frozen=True)
class TryOnPack:
    files: dict[str, bytes]  # "tryon/<size>/<file>" -> encoded bytes
    info: dict[str, Any]  # result.json "tryon": person and sizes
    omitted: dict[str, str] = field(default_factory=dict)  # "tryon/<size>/<file>" left out -> why


def make_tryon_pack(image: np.ndarray, labels: np.ndarray, persons: np.ndarray, person: int,
                    body25: np.ndarray) -> TryOnPack:
    """The pack for ``person`` (its id in persons.png) of an RGB photo with its CIHP
    ``labels``, person map and the person's BODY_25 keypoints, all at the photo's size;
    without the files this body cannot give (:func:`omitted_files`), which ``omitted`` names."""
    height, width = labels.shape
    box = letterbox((width, height))
    omit = omitted_files(body25)
    encoded = {(size, name): _encode(name, array) for size, name, array
               in iter_tryon_images(image, person_labels(labels, persons, person), body25, box, omit)}
    files = {f"tryon/{size}/{name}": encoded[size, name]
             for size in TRYON_SIZES for name in TRYON_FILES if name not in omit}
    info = {"person": person,
            "sizes": {"photo": {"width": width, "height": height},
                      "768x1024": {"width": FRAME[0], "height": FRAME[1], "scale": box.scale,
                                   "pad": list(box.pad)}}}
    return TryOnPack(files, info, {f"tryon/{size}/{name}": reason
                                   for size in TRYON_SIZES for name, reason in omit.items()})
