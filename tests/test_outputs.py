"""Palette, compositing and the JSON summary."""
import io
import json

import numpy as np
from PIL import Image

from common.labels import CIHP_CLASSES, PALETTE, voc_colormap
from common.profiles import CIHP
from worker.engine import Parsing
from worker.outputs import blend, colorize, render, summarize


def test_palette_is_the_pascal_voc_colormap_used_for_cihp():
    assert len(CIHP_CLASSES) == 20 and PALETTE.shape == (20, 3)
    assert PALETTE[0].tolist() == [0, 0, 0]          # Background
    assert PALETTE[1].tolist() == [128, 0, 0]        # Hat
    assert PALETTE[2].tolist() == [0, 128, 0]        # Hair
    assert PALETTE[5].tolist() == [128, 0, 128]      # UpperClothes
    assert PALETTE[13].tolist() == [192, 0, 128]     # Face
    assert PALETTE[19].tolist() == [128, 192, 0]     # Right-shoe
    assert len({tuple(c) for c in PALETTE}) == 20    # one color per class
    assert (voc_colormap(256)[:20] == PALETTE).all()


def test_colorize_maps_each_class_to_its_color():
    labels = np.array([[0, 1], [13, 19]], np.uint8)
    colored = colorize(labels)
    assert colored.shape == (2, 2, 3)
    assert colored[1, 0].tolist() == PALETTE[13].tolist()


def test_overlay_keeps_background_pixels_and_blends_parts():
    image = np.full((2, 2, 3), 100, np.uint8)
    labels = np.array([[0, 1], [0, 1]], np.uint8)
    out = blend(image, colorize(labels), labels, alpha=0.5)
    assert out[0, 0].tolist() == [100, 100, 100]
    assert out[0, 1].tolist() == [114, 50, 50]  # halfway between 100 and (128, 0, 0)


def test_summary_fractions_scores_and_legend():
    labels = np.zeros((10, 10), np.uint8)
    labels[:5, :] = 2
    labels[9, 9] = 13
    summary = summarize(labels, {0: 0.9, 2: 0.8, 13: 0.55}, persons=2)
    by_name = {c["name"]: c for c in summary["classes"]}
    assert set(by_name) == {"Background", "Hair", "Face"}
    assert by_name["Hair"]["pixel_fraction"] == 0.5 and by_name["Face"]["pixel_fraction"] == 0.01
    assert by_name["Face"]["score"] == 0.55
    assert summary["persons"] == 2
    assert summary["legend"] == CIHP.legend() and len(summary["legend"]) == 20


def test_render_builds_all_outputs_at_the_original_size():
    image = np.zeros((30, 50, 3), np.uint8)
    labels = np.array([[0, 5], [9, 14]], np.uint8)  # what a model saw at a smaller size
    semantic = np.zeros((20, 2, 2), np.float32)
    semantic[labels, np.arange(2)[:, None], np.arange(2)[None, :]] = 0.9
    parsing = Parsing(semantic=semantic, persons=None, person_threshold=None, size=(2, 2))
    rendered = render(image, parsing, {"job_id": "x"})
    assert set(rendered.files) == {"colored.png", "labels.png", "persons.png", "overlay.jpg", "result.json"}
    colored = np.asarray(Image.open(io.BytesIO(rendered.files["colored.png"])))
    assert colored.shape == (30, 50, 3)
    label_png = Image.open(io.BytesIO(rendered.files["labels.png"]))
    assert label_png.mode == "L" and label_png.size == (50, 30)
    full = np.asarray(label_png)
    assert set(np.unique(full)) == {0, 5, 9, 14}
    assert full[0, 0] == 0 and full[0, -1] == 5 and full[-1, 0] == 9 and full[-1, -1] == 14
    assert Image.open(io.BytesIO(rendered.files["overlay.jpg"])).size == (50, 30)
    summary = json.loads(rendered.files["result.json"])
    assert summary["job_id"] == "x" and summary["persons"] is None
    # A model without instance output: nobody can say who is there, and the map stays empty.
    assert summary["people"] is None and summary["no_person_detected"] is None and summary["people_truncated"] is None
    assert not np.asarray(Image.open(io.BytesIO(rendered.files["persons.png"]))).any()
    assert {c["id"] for c in summary["classes"]} == {0, 5, 9, 14}
    assert all(c["score"] == 0.9 for c in summary["classes"])


def test_overlay_of_a_tall_photo_is_blended_the_same_in_every_row_block():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (600, 40, 3), dtype=np.uint8)
    labels = rng.integers(0, 20, (600, 40)).astype(np.uint8)
    colored = colorize(labels)
    expected = image.astype(np.float32)
    parts = labels > 0
    expected[parts] = 0.5 * expected[parts] + 0.5 * colored[parts]
    assert (blend(image, colored, labels) == np.clip(expected + 0.5, 0, 255).astype(np.uint8)).all()
