"""The ``masks`` and ``garments`` output groups: one binary mask per class, and each
person's garments cut out of the photo with their dominant colours.

Everything here works at the photo's size, up to 40 megapixels, so whole-photo work is
uint8 or bool and row blocks; float arithmetic only ever sees a garment's colour sample.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from common.images import encode_png
from common.labels import CIHP_CLASSES, class_slug

# CIHP ids of what a person wears, rather than is: Hat, Glove, Sunglasses, UpperClothes,
# Dress, Coat, Socks, Pants, Scarf, Skirt, Left-shoe, Right-shoe.
GARMENT_CLASSES: tuple[int, ...] = (1, 3, 4, 5, 6, 7, 8, 9, 11, 12, 18, 19)

_BLOCK_ROWS = 256  # rows scanned at a time: a block's int64 temporaries stay at a few MB
MIN_COLOR_PIXELS = 64  # a smaller garment is mostly edge, where the photo blends it with its neighbours
SAMPLE_PIXELS = 4000  # colours are clustered on at most about this many pixels of a garment
# Cluster centres closer than this (CIE76) are one colour: ±10 of noise per channel splits a
# plain navy's pixels into clusters 6 to 15 apart, which merging closest first closes up.
MERGE_DELTA_E = 12.0
MIN_SHARE = 0.05  # a colour on less of the garment is a print detail, a shadow or an edge


def _histogram(values: np.ndarray, where: np.ndarray | None = None) -> np.ndarray:
    """How many pixels of a uint8 map (only ``where``, if given) have each value, counted by
    row blocks: bincount copies its input to int64, 320 MB for a whole 40-megapixel map."""
    counts = np.zeros(256, np.int64)
    for top in range(0, values.shape[0], _BLOCK_ROWS):
        block = values[top:top + _BLOCK_ROWS]
        counts += np.bincount(block.ravel() if where is None else block[where[top:top + _BLOCK_ROWS]], minlength=256)
    return counts


def class_masks(labels: np.ndarray, class_names: tuple[str, ...]) -> dict[str, bytes]:
    """``masks/<slug>.png`` for each class of ``labels`` but background: 255 where the
    class is, 0 elsewhere, 8-bit grayscale at the labels' size. One mask is in memory at
    a time, made 0/255 by cv2.compare directly, with no bool map on the way."""
    present = [int(class_id) for class_id in np.flatnonzero(_histogram(labels)) if class_id != 0]
    return {f"masks/{class_slug(class_names[class_id])}.png": encode_png(cv2.compare(labels, class_id, cv2.CMP_EQ))
            for class_id in present}


@dataclass
class Garments:
    files: dict[str, bytes]  # output name → encoded bytes: cut-outs and cloth_mask.png
    by_person: dict[int, list[dict[str, Any]]]  # person id → its garments, largest first


def _boxes(persons: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which rows and which columns each person id occupies, ``(256, H)`` and ``(256, W)``,
    in one pass of row blocks rather than one whole-photo comparison per person."""
    height, width = persons.shape
    rows = np.zeros((256, height), bool)
    cols = np.zeros((256, width), bool)
    for top in range(0, height, _BLOCK_ROWS):
        block = persons[top:top + _BLOCK_ROWS]
        rows[block, np.arange(top, top + block.shape[0])[:, None]] = True
        cols[block, np.arange(width)] = True
    return rows, cols


def _span(present: np.ndarray) -> slice:
    where = np.flatnonzero(present)
    return slice(int(where[0]), int(where[-1]) + 1)


def _person_garments(image: np.ndarray, labels: np.ndarray, persons: np.ndarray, person: int,
                     rows: slice, cols: slice) -> tuple[list[dict[str, Any]], dict[str, bytes]]:
    """One person's garments (within the person's box ``rows``, ``cols``) and cut-outs.
    A cut-out's RGB is 0 where its alpha is, so nothing the garment hides is shipped."""
    own = persons[rows, cols] == person
    parts = labels[rows, cols]
    counts = _histogram(parts, own)
    area = int(counts.sum())
    found, files = [], {}
    for class_id in sorted((c for c in GARMENT_CLASSES if counts[c]), key=lambda c: -counts[c]):
        garment = own & (parts == class_id)
        box = (_span(garment.any(axis=1)), _span(garment.any(axis=0)))
        inside = garment[box]
        rgba = np.zeros(inside.shape + (4,), np.uint8)
        rgba[inside, :3] = image[rows, cols][box][inside]
        rgba[..., 3] = inside.view(np.uint8) * 255
        name = f"cutouts/person-{person}/{class_slug(CIHP_CLASSES[class_id])}.png"
        files[name] = encode_png(rgba)
        found.append({
            "id": class_id,
            "name": CIHP_CLASSES[class_id],
            "pixel_fraction": round(int(counts[class_id]) / area, 6),
            "bbox": [cols.start + box[1].start, rows.start + box[0].start, inside.shape[1], inside.shape[0]],
            "cutout": name,
            "colors": dominant_colors(rgba[inside, :3]) if counts[class_id] >= MIN_COLOR_PIXELS else [],
        })
    return found, files


def garments(image: np.ndarray, labels: np.ndarray, persons: np.ndarray, person_ids: list[int]) -> Garments:
    """Each person's garments (CIHP ids in ``labels``, person ids in ``persons``, both at
    the photo's size) cut out of ``image``, and ``cloth_mask.png`` of every garment pixel.

    Every garment is kept however small, since its share and box are exact; its colours
    are left empty below :data:`MIN_COLOR_PIXELS`. The cloth mask also takes garment
    pixels that belong to nobody, so a product photo with no person found still gets one.
    A person with no garment, or no pixel, has an empty list."""
    garment_lut = np.zeros(256, np.uint8)
    garment_lut[list(GARMENT_CLASSES)] = 255
    files = {"cloth_mask.png": encode_png(garment_lut[labels])}
    by_person: dict[int, list[dict[str, Any]]] = {}
    rows, cols = _boxes(persons)
    for person in person_ids:
        by_person[person] = []
        if rows[person].any():
            by_person[person], cut = _person_garments(image, labels, persons, person,
                                                      _span(rows[person]), _span(cols[person]))
            files |= cut
    return Garments(files=files, by_person=by_person)


def _to_lab(rgb: np.ndarray) -> np.ndarray:
    """``(N, 3)`` uint8 sRGB → CIELAB in real units (L* 0..100), via float so nothing is
    quantised as OpenCV's 8-bit Lab would."""
    lab = cv2.cvtColor(rgb.reshape(-1, 1, 3).astype(np.float32) / 255, cv2.COLOR_RGB2Lab)
    return lab.reshape(-1, 3).astype(np.float64)


def _to_rgb(lab: np.ndarray) -> tuple[int, int, int]:
    rgb = cv2.cvtColor(lab.reshape(1, 1, 3).astype(np.float32), cv2.COLOR_Lab2RGB).reshape(3)
    return tuple(int(v) for v in np.clip(np.rint(rgb * 255), 0, 255))


def _kmeans(points: np.ndarray, weights: np.ndarray, k: int, iterations: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Weighted k-means with no randomness, so the same garment always gets the same
    colours: seeds are picked greedily by weight × squared distance to the seeds so far
    (k-means++ without the dice), then Lloyd iterations. Returns centres and weights."""
    centres = [points[np.argmax(weights)]]
    for _ in range(1, k):
        nearest = np.min([((points - c) ** 2).sum(axis=1) for c in centres], axis=0)
        centres.append(points[np.argmax(weights * nearest)])
    centres = np.array(centres)
    assign = None
    for _ in range(iterations):
        new = ((points[:, None, :] - centres[None]) ** 2).sum(axis=2).argmin(axis=1)
        if assign is not None and np.array_equal(new, assign):
            break
        assign = new
        for cluster in range(k):
            member = assign == cluster
            if member.any():
                centres[cluster] = np.average(points[member], axis=0, weights=weights[member])
    return centres, np.bincount(assign, weights=weights, minlength=k)


def _merge(clusters: list[list[Any]]) -> list[list[Any]]:
    """Merge the closest two ``[centre, weight]`` clusters into their weighted mean while
    any two are within :data:`MERGE_DELTA_E`: closest first, so a noisy colour whose
    k-means split into a chain of clusters closes up into one."""
    while len(clusters) > 1:
        distance, i, j = min((float(np.linalg.norm(a[0] - b[0])), i, j) for i, a in enumerate(clusters)
                             for j, b in enumerate(clusters[i + 1:], start=i + 1))
        if distance >= MERGE_DELTA_E:
            break
        (a, wa), (b, wb) = clusters[i], clusters.pop(j)
        clusters[i] = [(a * wa + b * wb) / (wa + wb), wa + wb]
    return clusters


def dominant_colors(pixels: np.ndarray, k: int = 3) -> list[dict[str, Any]]:
    """Up to ``k`` colours of a garment's ``(N, 3)`` uint8 RGB pixels, by share, most first.

    Clusters CIELAB (where distance is what the eye sees) of an evenly strided sample of
    at most about :data:`SAMPLE_PIXELS`, deterministically. Centres within
    :data:`MERGE_DELTA_E` are merged; colours under :data:`MIN_SHARE` are dropped (shading,
    edges) and the shares of the rest renormalised, so they sum to 1 up to rounding. Two
    shades of one name (a light and a dark blue) stay two colours, each with its hex."""
    if len(pixels) == 0:
        return []
    sample = pixels[::-(-len(pixels) // SAMPLE_PIXELS)]
    colours, counts = np.unique(sample, axis=0, return_counts=True)
    centres, weights = _kmeans(_to_lab(colours), counts.astype(np.float64), min(k, len(colours)))
    clusters = _merge([[centre, weight] for centre, weight in zip(centres, weights) if weight > 0])
    kept = [(centre, weight) for centre, weight in clusters if weight / len(sample) >= MIN_SHARE]
    total = sum(weight for _, weight in kept)
    result = []
    for centre, weight in sorted(kept, key=lambda item: -item[1]):
        rgb = _to_rgb(centre)
        result.append({"hex": "#%02x%02x%02x" % rgb, "share": round(float(weight / total), 4), "name": color_name(rgb)})
    return result


def color_name(rgb: tuple[int, int, int]) -> str:
    """A plain name for an sRGB colour, by rules on CIELAB lightness, chroma and hue angle
    rather than the nearest of a few swatches: nearest-swatch puts pale blue nearer beige
    than blue, while hue bands keep a hue's name through its light and dark shades, and
    lightness splits a band where English does (red / maroon / pink, blue / navy, orange /
    brown / beige, yellow / olive). Colours of little chroma are black, gray or white."""
    lightness, a, b = _to_lab(np.array([rgb], np.uint8))[0]
    chroma, hue = float(np.hypot(a, b)), float(np.degrees(np.arctan2(b, a)) % 360)
    if chroma < 10:
        return "black" if lightness < 25 else "white" if lightness > 85 else "gray"
    if hue < 15 or hue >= 345:
        return "maroon" if lightness < 35 else "pink"
    if hue < 45:
        return "maroon" if lightness < 35 else "pink" if lightness >= 65 else "red"
    if hue < 80:
        return "brown" if lightness < 55 else "beige" if chroma < 35 else "orange"
    if hue < 110:
        if lightness < 60:
            return "brown" if hue < 90 else "olive"
        return "beige" if chroma < 35 else "yellow"
    if hue < 180:
        return "olive" if hue < 125 and lightness < 50 else "green"
    if hue < 220:
        return "teal"
    if hue < 310:
        return "navy" if lightness < 30 else "blue"
    return "purple"
