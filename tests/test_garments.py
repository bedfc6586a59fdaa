"""Masks per class, garment cut-outs, the cloth mask and dominant colours, from hand-made
label maps, person maps and photos whose answers are known by construction."""
import io
import json

import numpy as np
import pytest
from PIL import Image

from common.labels import CIHP_CLASSES
from worker.garments import GARMENT_CLASSES, MIN_COLOR_PIXELS, class_masks, color_name, dominant_colors, garments

HAT, HAIR, UPPER, PANTS, SKIRT, FACE, LEFT_ARM, LEFT_SHOE = 1, 2, 5, 9, 12, 13, 14, 18


def decode(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def noisy(shape: tuple[int, int], rgb: tuple[int, int, int], seed: int) -> np.ndarray:
    """A patch of ``rgb`` with ±10 of noise per channel, so a copied pixel is told from a made-up one."""
    noise = np.random.default_rng(seed).integers(-10, 11, shape + (3,))
    return np.clip(np.array(rgb) + noise, 0, 255).astype(np.uint8)


def test_garment_classes_are_the_worn_cihp_classes():
    assert [CIHP_CLASSES[c] for c in GARMENT_CLASSES] == [
        "Hat", "Glove", "Sunglasses", "UpperClothes", "Dress", "Coat", "Socks", "Pants",
        "Scarf", "Skirt", "Left-shoe", "Right-shoe"]


def test_class_masks_are_each_present_class_exactly_as_8_bit_grayscale():
    labels = np.zeros((600, 7), np.uint8)  # taller than a row block, so blocks are joined
    labels[:3, :2] = HAIR
    labels[100:200, 3:] = UPPER
    labels[599, 6] = FACE  # only in the last block
    masks = class_masks(labels, CIHP_CLASSES)
    assert set(masks) == {"masks/hair.png", "masks/upperclothes.png", "masks/face.png"}
    for name, class_id in (("hair", HAIR), ("upperclothes", UPPER), ("face", FACE)):
        image = decode(masks[f"masks/{name}.png"])
        assert image.mode == "L" and image.size == (7, 600)
        assert np.array_equal(np.asarray(image), (labels == class_id).astype(np.uint8) * 255)


def test_class_masks_are_named_by_the_jobs_label_set():
    labels = np.array([[0, 1], [1, 0]], np.uint8)
    masks = class_masks(labels, ("Background", "Upper-body clothes"))
    assert list(masks) == ["masks/upper-body-clothes.png"]
    assert np.asarray(decode(masks["masks/upper-body-clothes.png"])).tolist() == [[0, 255], [255, 0]]


def scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Person 1: face, red shirt (an arm over its lower left corner, and a patch of
    person 2's shirt in its upper right corner), navy pants. Person 2: blue shirt, a
    shoe. Person 3: hair only. Nobody: a skirt, as on a product photo."""
    image = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    labels = np.zeros((40, 60), np.uint8)
    persons = np.zeros((40, 60), np.uint8)
    labels[1:6, 10:16], persons[1:6, 10:16] = FACE, 1
    labels[6:16, 8:21], persons[6:16, 8:21] = UPPER, 1
    image[6:16, 8:21] = noisy((10, 13), (200, 20, 30), 1)
    labels[10:16, 8:10] = LEFT_ARM
    persons[6:8, 18:21] = 2
    labels[16:30, 10:19], persons[16:30, 10:19] = PANTS, 1
    image[16:30, 10:19] = noisy((14, 9), (20, 30, 90), 2)
    labels[6:16, 21:31], persons[6:16, 21:31] = UPPER, 2
    image[6:8, 18:21] = image[6:16, 21:31] = (30, 60, 220)
    labels[30:32, 22:26], persons[30:32, 22:26] = LEFT_SHOE, 2
    labels[33:35, 40:42], persons[33:35, 40:42] = HAIR, 3
    labels[35:38, 50:56] = SKIRT
    return image, labels, persons


def test_each_persons_garment_is_cut_out_to_its_box_with_alpha_exactly_on_it():
    image, labels, persons = scene()
    result = garments(image, labels, persons, [1, 2, 3])
    assert set(result.files) == {"cloth_mask.png", "cutouts/person-1/upperclothes.png", "cutouts/person-1/pants.png",
                                 "cutouts/person-2/upperclothes.png", "cutouts/person-2/left-shoe.png"}
    boxes = {(1, UPPER): (8, 6, 13, 10), (1, PANTS): (10, 16, 9, 14),
             (2, UPPER): (18, 6, 13, 10), (2, LEFT_SHOE): (22, 30, 4, 2)}
    for (person, class_id), (x, y, w, h) in boxes.items():
        entry = next(g for g in result.by_person[person] if g["id"] == class_id)
        assert entry["bbox"] == [x, y, w, h]
        cutout = decode(result.files[entry["cutout"]])
        assert cutout.mode == "RGBA" and cutout.size == (w, h)
        rgba = np.asarray(cutout)
        on = (labels == class_id)[y:y + h, x:x + w] & (persons == person)[y:y + h, x:x + w]
        assert np.array_equal(rgba[..., 3], np.where(on, 255, 0))
        assert np.array_equal(rgba[..., :3], np.where(on[..., None], image[y:y + h, x:x + w], 0))
    shirt = np.asarray(decode(result.files["cutouts/person-1/upperclothes.png"]))
    assert (shirt[4:, :2] == 0).all()  # the arm over it
    assert (shirt[:2, 10:] == 0).all()  # person 2's shirt inside its box
    assert shirt[:, :, 3].sum() == 255 * (130 - 12 - 6)


def test_garments_of_a_person_are_listed_largest_first_with_shares_of_the_person():
    image, labels, persons = scene()
    people = garments(image, labels, persons, [1, 2, 3]).by_person
    assert set(people) == {1, 2, 3}
    person_1 = 30 + 112 + 12 + 126  # face, shirt, arm, pants
    assert [(g["id"], g["name"], g["pixel_fraction"]) for g in people[1]] == [
        (PANTS, "Pants", round(126 / person_1, 6)), (UPPER, "UpperClothes", round(112 / person_1, 6))]
    assert [(g["name"], g["cutout"]) for g in people[2]] == [
        ("UpperClothes", "cutouts/person-2/upperclothes.png"), ("Left-shoe", "cutouts/person-2/left-shoe.png")]
    assert people[2][0]["pixel_fraction"] == round(106 / 114, 6)
    assert people[3] == []  # hair is not a garment
    assert json.loads(json.dumps(people, allow_nan=False)) == {str(k): v for k, v in people.items()}


def test_garment_colours_are_named_from_the_photo():
    image, labels, persons = scene()
    people = garments(image, labels, persons, [1, 2, 3]).by_person
    colours = {(person, g["name"]): [(c["name"], c["share"]) for c in g["colors"]]
               for person in people for g in people[person]}
    assert colours[(1, "UpperClothes")] == [("red", 1.0)]
    assert colours[(1, "Pants")] == [("navy", 1.0)]
    assert colours[(2, "UpperClothes")] == [("blue", 1.0)]
    assert people[2][0]["colors"][0]["hex"] == "#1e3cdc"
    assert colours[(2, "Left-shoe")] == []  # 8 pixels: too few to tell a colour from the edge's blend


def test_cloth_mask_is_every_garment_pixel_whoever_wears_it():
    image, labels, persons = scene()
    mask = decode(garments(image, labels, persons, [1, 2, 3]).files["cloth_mask.png"])
    assert mask.mode == "L" and mask.size == (60, 40)
    mask = np.asarray(mask)
    assert np.array_equal(mask, np.where(np.isin(labels, GARMENT_CLASSES), 255, 0))
    assert mask[36, 52] == 255  # the skirt nobody wears
    assert mask[3, 12] == 0 and mask[12, 8] == 0 and mask[34, 41] == 0  # face, arm, hair
    assert mask.sum() == 255 * (112 + 126 + 106 + 8 + 18)


def test_a_garment_of_a_few_pixels_is_kept_without_colours():
    labels = np.zeros((5, 5), np.uint8)
    labels[2, 2] = HAT
    persons = (labels > 0).astype(np.uint8)
    result = garments(np.full((5, 5, 3), 200, np.uint8), labels, persons, [1])
    assert [(g["bbox"], g["pixel_fraction"], g["colors"]) for g in result.by_person[1]] == [([2, 2, 1, 1], 1.0, [])]
    assert MIN_COLOR_PIXELS > 1


def test_a_tall_photos_boxes_span_row_blocks():
    labels = np.zeros((700, 20), np.uint8)
    labels[250:520, 3:9] = PANTS
    persons = (labels > 0).astype(np.uint8)
    result = garments(np.zeros((700, 20, 3), np.uint8), labels, persons, [1])
    assert result.by_person[1][0]["bbox"] == [3, 250, 6, 270]
    assert decode(result.files["cutouts/person-1/pants.png"]).size == (6, 270)


def test_the_same_photo_gives_the_same_bytes_and_colours():
    image, labels, persons = scene()
    first, second = garments(image, labels, persons, [1, 2, 3]), garments(image, labels, persons, [1, 2, 3])
    assert first.files == second.files and first.by_person == second.by_person
    pixels = np.random.default_rng(5).integers(0, 256, (20000, 3), dtype=np.uint8)
    assert dominant_colors(pixels) == dominant_colors(pixels.copy())


def test_seventy_percent_red_and_thirty_percent_white():
    pixels = np.array([(255, 0, 0)] * 7000 + [(255, 255, 255)] * 3000, np.uint8)
    colours = dominant_colors(pixels)
    assert [c["name"] for c in colours] == ["red", "white"]
    assert [c["hex"] for c in colours] == ["#ff0000", "#ffffff"]
    assert colours[0]["share"] == pytest.approx(0.7, abs=0.01) and colours[1]["share"] == pytest.approx(0.3, abs=0.01)


def test_one_colour_is_one_colour():
    assert dominant_colors(np.full((500, 3), (20, 30, 90), np.uint8)) == [
        {"hex": "#141e5a", "share": 1.0, "name": "navy"}]
    assert dominant_colors(np.zeros((0, 3), np.uint8)) == []


@pytest.mark.parametrize("rgb, name", [((20, 30, 90), "navy"), ((200, 20, 30), "red"), ((128, 128, 128), "gray"),
                                       ((15, 15, 15), "black"), ((245, 245, 245), "white"), ((0, 128, 0), "green")])
def test_a_noisy_plain_colour_is_still_one_colour(rgb, name):
    for seed in range(5):
        colours = dominant_colors(noisy((60, 50), rgb, seed).reshape(-1, 3))
        assert [(c["name"], c["share"]) for c in colours] == [(name, 1.0)]


def test_two_shades_of_one_name_stay_two_colours():
    pixels = np.array([(135, 206, 235)] * 600 + [(21, 96, 189)] * 400, np.uint8)
    assert [(c["hex"], c["name"], c["share"]) for c in dominant_colors(pixels)] == [
        ("#87ceeb", "blue", 0.6), ("#1560bd", "blue", 0.4)]


def test_near_shades_merge_and_a_speck_is_dropped():
    shades = np.array([(255, 0, 0)] * 400 + [(245, 0, 0)] * 300 + [(255, 255, 255)] * 300, np.uint8)
    assert [(c["name"], c["share"]) for c in dominant_colors(shades)] == [("red", 0.7), ("white", 0.3)]
    speck = np.array([(255, 0, 0)] * 680 + [(255, 255, 255)] * 300 + [(0, 160, 0)] * 20, np.uint8)
    colours = dominant_colors(speck)
    assert [c["name"] for c in colours] == ["red", "white"]
    assert colours[0]["share"] == pytest.approx(680 / 980, abs=1e-4)
    assert sum(c["share"] for c in colours) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("rgb, name", [
    ((200, 20, 30), "red"), ((255, 0, 0), "red"), ((128, 0, 0), "maroon"), ((128, 0, 32), "maroon"),
    ((255, 192, 203), "pink"), ((255, 20, 147), "pink"), ((255, 165, 0), "orange"), ((255, 255, 0), "yellow"),
    ((128, 128, 0), "olive"), ((0, 128, 0), "green"), ((0, 128, 128), "teal"), ((0, 0, 255), "blue"),
    ((173, 216, 230), "blue"), ((20, 30, 90), "navy"), ((0, 0, 128), "navy"), ((128, 0, 128), "purple"),
    ((225, 205, 170), "beige"), ((210, 180, 140), "beige"), ((110, 70, 40), "brown"), ((139, 69, 19), "brown"),
    ((245, 245, 245), "white"), ((15, 15, 15), "black"), ((128, 128, 128), "gray"), ((60, 60, 60), "gray"),
    ((54, 69, 79), "gray"), ((211, 211, 211), "gray"),
])
def test_colour_names(rgb, name):
    assert color_name(rgb) == name
