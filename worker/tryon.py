"""The try-on projects' preprocessing, rule for rule, on arrays, so a client feeds a try-on
model what its own dataset code would have made: VITON-HD/HR-VITON's clothing-agnostic parse
and gray person, OOTDiffusion's inpainting masks (IDM-VTON's are the same code). Each
function keeps its source's constants and drawing primitives (PIL ImageDraw, OpenCV), so at
the recipe's size the pixels are its pixels. Sources: shadow2496/VITON-HD@02afa4b,
sangyun884/HR-VITON@2715bdd, levihsu/OOTDiffusion@13ef0fa.

Label maps are CIHP ids; keypoints OpenPose BODY_25 ``(25, 3)`` in the label map's pixels,
a missing point (0, 0). The recipes move keypoints in place; we work on copies.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
from PIL import Image, ImageDraw

GRAY = "gray"  # PIL's 'gray', (128, 128, 128): the VITON-HD/HR-VITON fill
# VITON-HD's 13-channel fold (datasets.py __getitem__ ``labels``): the model's loader applies
# it to our 20-id parse_agnostic.png; here to document what the model sees.
FOLD_13: dict[str, list[int]] = {
    "background": [0, 10], "hair": [1, 2], "face": [4, 13], "upper": [5, 6, 7], "bottom": [9, 12],
    "left_arm": [14], "right_arm": [15], "left_leg": [16], "right_leg": [17], "left_shoe": [18],
    "right_shoe": [19], "socks": [8], "noise": [3, 11],
}
SHOULDERS = (2, 5)  # BODY_25 RShoulder, LShoulder: every recipe draws from both
HIPS = (9, 12)  # BODY_25 RHip, LHip: both agnostic images' torso (ellipses, lines, polygon) is drawn to them
HEAD = (4, 13)  # sunglasses, face: pasted back by both agnostic images (hair is not)
LOWER = (9, 12, 16, 17, 18, 19)  # pants, skirt, legs, shoes: pasted back too


def _points(keypoints: np.ndarray) -> np.ndarray:
    """A float64 ``(N, 2)`` copy of x, y: the recipes read OpenPose JSON as float64, drop the
    confidence, and move hips in place, which must not reach the caller's array."""
    return np.array(keypoints, dtype=np.float64)[:, :2]


def _missing(pose: np.ndarray, i: int) -> bool:
    """VITON-HD/HR-VITON's test: a point is missing when it is exactly (0.0, 0.0)."""
    return pose[i, 0] == 0.0 and pose[i, 1] == 0.0


def missing_joints(body25: np.ndarray, joints: Sequence[int]) -> list[int]:
    """Those of ``joints`` the recipes take for missing (x and y exactly 0, whatever the
    confidence). Where a recipe draws such a point without testing it first (the shoulders in
    the agnostic images and the inpaint masks, the hips in both agnostic images' torso), it
    draws it at (0, 0), the photo's top-left corner: the pack checks these before it runs a
    recipe."""
    pose = _points(body25)
    return [joint for joint in joints if _missing(pose, joint)]


def _width(pixels: float) -> int:
    """A line width for PIL, which draws whole pixels; a scaled constant is rounded."""
    return max(1, int(round(pixels)))


def _ellipse(draw: ImageDraw.ImageDraw, point: np.ndarray, rx: float, ry: float, fill: str) -> None:
    """The recipes' ``ellipse((x-rx, y-ry, x+rx, y+ry), fill, fill)``."""
    x, y = point
    draw.ellipse((x - rx, y - ry, x + rx, y + ry), fill, fill)


def _line(draw: ImageDraw.ImageDraw, pose: np.ndarray, ids: tuple[int, ...], fill: str, width: float) -> None:
    draw.line([tuple(pose[i]) for i in ids], fill, width=_width(width))


def parse_agnostic(labels: np.ndarray, body25: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """The label map with the garment and its arm corridor removed (set to 0), CIHP ids kept.

    Follows VITON-HD datasets.py ``VITONDataset.get_parse_agnostic`` (= HR-VITON
    get_parse_agnostic.py ``get_im_parse_agnostic``): r = 10 in a 1024-high frame; ``scale``
    multiplies every pixel constant for another frame height (1.0 at 768x1024).
    """
    pose = _points(body25)
    r = 10 * scale
    height, width = labels.shape
    out = labels.copy()
    for arm, chain in ((14, (2, 5, 6, 7)), (15, (5, 2, 3, 4))):
        canvas = Image.new("L", (width, height), "black")
        draw = ImageDraw.Draw(canvas)
        prev = chain[0]
        for i in chain[1:]:
            if _missing(pose, prev) or _missing(pose, i):
                continue  # the recipe does not advance prev: the next joint bridges the gap
            _line(draw, pose, (prev, i), "white", r * 10)
            radius = r * 4 if i == chain[-1] else r * 15
            _ellipse(draw, pose[i], radius, radius, "white")
            prev = i
        out[(np.asarray(canvas) > 0) & (labels == arm)] = 0
    out[np.isin(labels, (5, 6, 7, 10))] = 0  # upper clothes, dress, coat, neck
    return out


def _normalise_hips(pose: np.ndarray) -> float:
    """Both recipes' hip step: slide hips 9 and 12 about their midpoint until they are as far
    apart as the shoulders; returns the shoulder width. Hips at one point (both missing) would
    divide by zero there (NaN corners), so they are left where they are."""
    length_a = np.linalg.norm(pose[5] - pose[2])
    length_b = np.linalg.norm(pose[12] - pose[9])
    if length_b > 0:
        point = (pose[9] + pose[12]) / 2
        pose[9] = point + (pose[9] - point) / length_b * length_a
        pose[12] = point + (pose[12] - point) / length_b * length_a
    return float(length_a)


def _torso(draw: ImageDraw.ImageDraw, pose: np.ndarray, r: float) -> None:
    """The torso shapes, the same in both recipes."""
    for i in (9, 12):
        _ellipse(draw, pose[i], r * 3, r * 6, GRAY)
    _line(draw, pose, (2, 9), GRAY, r * 6)
    _line(draw, pose, (5, 12), GRAY, r * 6)
    _line(draw, pose, (9, 12), GRAY, r * 12)
    draw.polygon([tuple(pose[i]) for i in (2, 5, 12, 9)], GRAY, GRAY)


def _limbs(draw: ImageDraw.ImageDraw, pose: np.ndarray, r: float) -> None:
    """Upper arms and forearms with a disc at each elbow and wrist, the same in both recipes."""
    for i in (3, 4, 6, 7):
        if _missing(pose, i - 1) or _missing(pose, i):
            continue
        _line(draw, pose, (i - 1, i), GRAY, r * 10)
        _ellipse(draw, pose[i], r * 5, r * 5, GRAY)


def agnostic_vitonhd(image: np.ndarray, labels: np.ndarray, body25: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """The gray clothing-agnostic person, VITON-HD datasets.py ``get_img_agnostic``: r = 20 in a
    1024-high frame (``scale`` as in :func:`parse_agnostic`), arms, torso and a neck square in
    gray, then face/sunglasses and the lower body pasted back from the photo."""
    pose = _points(body25)
    r = 20 * scale
    _normalise_hips(pose)
    drawn = Image.fromarray(np.array(image, dtype=np.uint8))
    draw = ImageDraw.Draw(drawn)
    _line(draw, pose, (2, 5), GRAY, r * 10)
    for i in (2, 5):
        _ellipse(draw, pose[i], r * 5, r * 5, GRAY)
    _limbs(draw, pose, r)
    _torso(draw, pose, r)
    x, y = pose[1]
    draw.rectangle((x - r * 7, y - r * 7, x + r * 7, y + r * 7), GRAY, GRAY)
    keep = np.isin(labels, HEAD + LOWER)  # the recipe's agnostic.paste(img, None, mask)
    return np.where(keep[:, :, None], image, np.asarray(drawn))


def _arm_outside(pose: np.ndarray, r: int, size: tuple[int, int], chain: tuple[int, int, int]) -> np.ndarray:
    """HR-VITON's arm-restore canvas: True outside the arm's bone band (shoulder ellipse,
    segments, elbow disc, and a 4r disc at the last joint reached, the wrist when present)."""
    canvas = Image.new("L", size, "white")
    draw = ImageDraw.Draw(canvas)
    last = pose[chain[0]]
    _ellipse(draw, last, r * 5, r * 6, "black")
    for i in chain[1:]:
        if _missing(pose, i - 1) or _missing(pose, i):
            continue
        _line(draw, pose, (i - 1, i), "black", r * 10)
        last = pose[i]
        if i != chain[-1]:
            _ellipse(draw, last, r * 5, r * 5, "black")
    _ellipse(draw, last, r * 4, r * 4, "black")
    return np.asarray(canvas) > 0


def agnostic_hrviton(image: np.ndarray, labels: np.ndarray, body25: np.ndarray) -> np.ndarray:
    """The gray clothing-agnostic person, HR-VITON cp_dataset.py ``CPDataset.get_agnostic`` (the
    agnostic-v3.2 images): r = int(shoulder width / 16) + 1, so it adapts to any size by
    itself; arm pixels outside the bone band (hands) come back, then head and lower body."""
    pose = _points(body25)
    r = int(_normalise_hips(pose) / 16) + 1
    drawn = Image.fromarray(np.array(image, dtype=np.uint8))
    draw = ImageDraw.Draw(drawn)
    _torso(draw, pose, r)
    x, y = pose[1]
    draw.rectangle((x - r * 5, y - r * 9, x + r * 5, y), GRAY, GRAY)
    _line(draw, pose, (2, 5), GRAY, r * 12)
    for i in (2, 5):
        _ellipse(draw, pose[i], r * 5, r * 6, GRAY)
    _limbs(draw, pose, r)
    keep = np.isin(labels, HEAD + LOWER)
    for arm, chain in ((14, (5, 6, 7)), (15, (2, 3, 4))):
        keep |= _arm_outside(pose, r, drawn.size, chain) & (labels == arm)
    return np.where(keep[:, :, None], image, np.asarray(drawn))


# CIHP id -> OOTDiffusion's label_map (ATR ids): coat is upper clothes, socks are leg (both
# legs act alike in get_mask_location), torso skin is the neck 18 its parsing step adds,
# a glove is its arm (placeholder 14, side set by _glove_arms).
_CIHP_TO_ATR = np.array([0, 1, 2, 14, 3, 4, 7, 4, 12, 6, 18, 17, 5, 11, 14, 15, 12, 13, 9, 10], np.uint8)


def _glove_arms(labels: np.ndarray, gloves: np.ndarray) -> np.ndarray | int:
    """Each glove pixel's arm: the one whose pixels' mean column is nearer (ATR has no glove;
    its hands are arm pixels, which get_mask_location keeps as hands)."""
    centres = {arm: np.nonzero(labels == arm)[1].mean() for arm in (14, 15) if (labels == arm).any()}
    if len(centres) < 2:
        return next(iter(centres), 14)
    columns = np.nonzero(gloves)[1]
    return np.where(np.abs(columns - centres[14]) <= np.abs(columns - centres[15]), 14, 15)


def ootd_parse(labels_cihp: np.ndarray) -> np.ndarray:
    """CIHP ids -> the ATR ids of OOTDiffusion run/utils_ootd.py ``label_map`` plus neck 18
    (its parsing_api.py ``onnx_inference`` marks the neck; CIHP's torso skin stands in).
    CIHP has no bag (16) or belt (8), so they never appear."""
    atr = _CIHP_TO_ATR[labels_cihp]
    gloves = labels_cihp == 3
    if gloves.any():
        atr[gloves] = _glove_arms(labels_cihp, gloves)
    return atr


# category -> (garment labels to inpaint, labels added to the kept set), get_mask_location
_CATEGORIES = {"upper_body": ((4, 7), (5, 6)), "dresses": ((7, 4, 5, 6), ()),
               "lower_body": ((6, 12, 13, 5), (4, 14, 15))}
_ARM_WIDTH = {"hd": 60, "dc": 45}
_KERNEL = np.ones((5, 5), np.uint16)


def _isin(parse: np.ndarray, ids: tuple[int, ...]) -> np.ndarray:
    return np.isin(parse, ids).astype(np.float32)


def _drawn_arm(pose: np.ndarray, joints: tuple[int, int, int], line_width: int, arm: np.ndarray,
               wrist_first: bool) -> np.ndarray:
    """One arm as get_mask_location draws it: with no wrist (x, y <= 1) the parse's arm;
    else shoulder-elbow-wrist, the wrist pushed to 1.2x the forearm, as a curve-jointed
    polyline (cast to uint16, as the recipe does) and an arc filling a disc at the shoulder."""
    shoulder, elbow, wrist = (pose[i] for i in joints)
    if wrist[0] <= 1. and wrist[1] <= 1.:
        return arm
    canvas = Image.new("L", arm.shape[::-1])
    draw = ImageDraw.Draw(canvas)
    wrist = elbow + 1.2 * (wrist - elbow)
    chain = (wrist, elbow, shoulder) if wrist_first else (shoulder, elbow, wrist)
    draw.line(np.concatenate(chain).astype(np.uint16).tolist(), "white", line_width, "curve")
    half = line_width // 2
    box = [shoulder[0] - half, shoulder[1] - half, shoulder[0] + half, shoulder[1] + half]
    draw.arc(box, 0, 360, "white", half)
    return np.asarray(canvas)


def _hole_fill(img: np.ndarray) -> np.ndarray:
    """utils_ootd.py ``hole_fill``: fill the holes, what background the border cannot reach."""
    img = np.pad(img[1:-1, 1:-1], pad_width=1, mode="constant", constant_values=0)
    original = img.copy()
    cv2.floodFill(img, np.zeros((img.shape[0] + 2, img.shape[1] + 2), np.uint8), (0, 0), 255)
    return cv2.bitwise_or(original, cv2.bitwise_not(img))


def _largest_region(mask: np.ndarray) -> np.ndarray:
    """utils_ootd.py ``refine_mask``: only the largest contour, filled."""
    contours, _ = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_TC89_L1)
    out = np.zeros_like(mask)
    if contours:
        areas = [abs(cv2.contourArea(contour, True)) for contour in contours]
        cv2.drawContours(out, contours, areas.index(max(areas)), color=255, thickness=-1)
    return out


def inpaint_mask(labels_cihp: np.ndarray, keypoints: np.ndarray, category: str,
                 model_type: str) -> tuple[np.ndarray, np.ndarray]:
    """OOTDiffusion run/utils_ootd.py ``get_mask_location`` at the label map's own size:
    ``(mask 0/255, gray 0/127)``. OOTD runs it at 384x512, where our ``keypoints`` (COCO-18 or
    BODY_25 in the label map's pixels; only 2-7 are read, the same joints in both) are the
    recipe's. As in the recipe, arm widths scale by height/512 and the kernels do not."""
    if model_type not in _ARM_WIDTH or category not in _CATEGORIES:
        raise ValueError(f"model_type must be hd or dc and category one of {sorted(_CATEGORIES)}")
    parse = ootd_parse(labels_cihp)
    pose = _points(keypoints)
    head = _isin(parse, (1, 3, 11))
    fixed = _isin(parse, (9, 10, 1, 3, 16))
    changeable = _isin(parse, (0,))
    arms_left, arms_right = _isin(parse, (14,)), _isin(parse, (15,))
    garment, kept = _CATEGORIES[category]
    parse_mask = _isin(parse, garment)
    fixed += _isin(parse, kept)
    changeable += np.logical_and(parse, np.logical_not(fixed))
    upper = category != "lower_body"
    if upper:
        line_width = int(_ARM_WIDTH[model_type] / 512 * parse.shape[0])
        drawn_right = _drawn_arm(pose, (2, 3, 4), line_width, arms_right, wrist_first=False)
        drawn_left = _drawn_arm(pose, (5, 6, 7), line_width, arms_left, wrist_first=True)
        fixed += (np.logical_and(np.logical_not(drawn_left), arms_left)
                  + np.logical_and(np.logical_not(drawn_right), arms_right))
    fixed = np.logical_or(fixed, head)
    parse_mask = cv2.dilate(parse_mask, _KERNEL, iterations=5)
    if upper:
        neck = cv2.dilate(_isin(parse, (18,)), _KERNEL, iterations=1)
        parse_mask = np.logical_or(parse_mask, np.logical_and(neck, np.logical_not(head)))
        arms = np.logical_or(drawn_left, drawn_right).astype(np.float32)
        parse_mask = np.logical_or(parse_mask, cv2.dilate(arms, _KERNEL, iterations=4))
    keep = np.logical_or(np.logical_and(changeable, np.logical_not(parse_mask)), fixed)
    mask = _largest_region(_hole_fill(np.where(keep, 0, 255).astype(np.uint8)))
    return mask, (mask // 255 * 127).astype(np.uint8)


def inpaint_gray(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """run_ootd.py's masked person: ``Image.composite(mask_gray, model_img, mask)``, gray 127
    where the mask is 255, the photo elsewhere."""
    gray = Image.fromarray((mask // 255 * 127).astype(np.uint8))
    return np.asarray(Image.composite(gray, Image.fromarray(image), Image.fromarray(mask)))
