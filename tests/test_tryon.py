"""The try-on recipes (worker.tryon) and pack (worker.tryon_pack), checked pixel by pixel
against the upstream rules on hand-made label maps and poses whose results follow from the
rules by hand: line half-widths, disc radii, which labels are pasted back, which joints a
missing point cuts out (VITON-HD datasets.py, HR-VITON cp_dataset.py, OOTDiffusion
run/utils_ootd.py and run/run_ootd.py)."""
import io

import cv2
import numpy as np
import pytest
from PIL import Image

from common.labels import PALETTE
from m2fp_contract.schema import TRYON_FILES, TRYON_SIZES
from worker.tryon import (FOLD_13, agnostic_hrviton, agnostic_vitonhd, inpaint_gray, inpaint_mask, ootd_parse,
                          parse_agnostic)
from worker.tryon_pack import (letterbox, letterbox_image, letterbox_keypoints, letterbox_labels, make_tryon_pack,
                               person_labels, iter_tryon_images, unletterbox_mask)

GRAY = [128, 128, 128]


def tryon_images(image, labels, body25, box) -> dict[str, dict[str, np.ndarray]]:
    """Every pack image by size, then file name, before encoding."""
    images: dict[str, dict[str, np.ndarray]] = {"photo": {}, "768x1024": {}}
    for size, name, array in iter_tryon_images(image, labels, body25, box):
        images[size][name] = array
    return images


def pose(**points: tuple[float, float]) -> np.ndarray:
    """BODY_25 (25, 3) with the named points (p1 = neck, p2 = RShoulder ...), others missing."""
    out = np.zeros((25, 3), np.float32)
    for name, (x, y) in points.items():
        out[int(name[1:])] = (x, y, 0.9)
    return out


# 768x1024: shoulders 200 apart, upper arms and forearms vertical (x = 284 and 484), so a
# pixel's distance to a segment is its column offset.
ARMS = dict(p1=(384, 250), p2=(284, 260), p5=(484, 260), p3=(284, 560), p6=(484, 560),
            p4=(284, 800), p7=(484, 800), p9=(334, 600), p12=(434, 600))


def photo(height: int = 1024, width: int = 768) -> np.ndarray:
    """Noise in 0..100, so no pixel is 127 or 128 gray by chance."""
    return np.random.default_rng(7).integers(0, 101, (height, width, 3), dtype=np.uint8)


def labelled(points: dict[tuple[int, int], int], shape=(1024, 768)) -> np.ndarray:
    labels = np.zeros(shape, np.uint8)
    for (x, y), label in points.items():
        labels[y, x] = label
    return labels


# --- parse agnostic (VITON-HD get_parse_agnostic, r = 10) -------------------------------

def test_parse_agnostic_erases_garments_and_neck_everywhere_and_keeps_other_labels():
    labels = np.zeros((1024, 768), np.uint8)
    for i, label in enumerate((5, 6, 7, 10, 13, 9, 2, 16)):
        labels[20:60, 20 + 80 * i:80 + 80 * i] = label  # far from every drawn shape
    body = pose(**ARMS)
    out = parse_agnostic(labels, body)
    assert out.dtype == np.uint8 and out.shape == labels.shape
    assert not np.isin(out, (5, 6, 7, 10)).any()
    for label in (13, 9, 2, 16):
        assert (out[labels == label] == label).all()
    assert set(np.unique(out)) <= set(np.unique(labels))
    assert (body == pose(**ARMS)).all()  # the caller's keypoints are not moved


def test_parse_agnostic_arm_corridor_is_100_px_lines_150_px_joint_discs_and_40_px_at_the_wrist():
    probes = {(524, 410): 14, (544, 410): 14,  # 40 / 60 px off the 5-6 segment, >150 px from both joints
              (700, 950): 14,  # far from every shape
              (144, 560): 15, (124, 560): 15,  # 140 / 160 px left of the right elbow
              (284, 830): 15, (284, 860): 15}  # 30 / 60 px below the right wrist (last joint: 40 px)
    out = parse_agnostic(labelled(probes), pose(**ARMS))
    erased = {xy for xy in probes if out[xy[1], xy[0]] == 0}
    assert erased == {(524, 410), (144, 560), (284, 830)}


def test_parse_agnostic_erases_only_that_arms_label():
    # (144, 560) is in the right arm's elbow disc only: as left arm (14) it stays.
    out = parse_agnostic(labelled({(144, 560): 14}), pose(**ARMS))
    assert out[560, 144] == 14


def test_parse_agnostic_missing_elbow_draws_no_segment_to_it_and_bridges_to_the_wrist():
    body = pose(**{**ARMS, "p7": (484, 1000)})
    body[6] = 0
    probes = {(290, 156): 14,  # on the way from the left shoulder to (0, 0)
              (524, 630): 14}  # 40 px off the shoulder-wrist bridge, >150 px from both ends
    out = parse_agnostic(labelled(probes), body)
    assert out[156, 290] == 14 and out[630, 524] == 0


def test_parse_agnostic_missing_first_joint_cuts_out_the_whole_arm():
    body = pose(**ARMS)
    body[2] = 0  # the left arm's chain starts at the right shoulder: prev never advances
    out = parse_agnostic(labelled({(524, 410): 14, (484, 560): 14}), body)
    assert out[410, 524] == 14 and out[560, 484] == 14


def test_parse_agnostic_scales_every_constant():
    half = pose(**{name: (x / 2, y / 2) for name, (x, y) in ARMS.items()})
    probes = {(262, 205): 14, (272, 205): 14,  # 20 / 30 px off the 5-6 segment (25 px half-width)
              (72, 280): 15, (62, 280): 15}  # 70 / 80 px from the right elbow (75 px disc)
    out = parse_agnostic(labelled(probes, (512, 384)), half, scale=0.5)
    assert {xy for xy in probes if out[xy[1], xy[0]] == 0} == {(262, 205), (72, 280)}


def test_fold_13_covers_each_cihp_id_once():
    ids = sorted(i for group in FOLD_13.values() for i in group)
    assert ids == list(range(20)) and len(FOLD_13) == 13 and FOLD_13["background"] == [0, 10]


# --- VITON-HD get_img_agnostic (r = 20) ---------------------------------------------------

def test_vitonhd_agnostic_grays_the_garment_area_and_pastes_back_face_and_lower_body_only():
    labels = np.zeros((1024, 768), np.uint8)
    labels[150:240, 354:414] = 13  # face, inside the neck square
    labels[150:160, 364:404] = 4  # sunglasses
    labels[120:140, 300:460] = 2  # hair, inside the neck square: not pasted back
    labels[280:460, 300:470] = 5  # upper clothes
    labels[620:700, 300:470] = 9  # pants, over the hip line
    labels[700:720, 300:470] = 12  # skirt
    labels[650:700, 480:560] = 14  # left arm on the forearm line: not pasted back
    image = photo()
    out = agnostic_vitonhd(image, labels, pose(**ARMS))
    restored = np.isin(labels, (4, 13, 9, 12))
    assert (out[restored] == image[restored]).all()
    for label in (2, 5, 14):
        assert (out[labels == label] == GRAY).all()
    assert out[300, 384].tolist() == GRAY  # on the shoulder line
    assert (out[950:, :100] == image[950:, :100]).all()  # untouched away from the body


def test_vitonhd_agnostic_moves_hips_to_shoulder_width_on_a_copy():
    body = pose(p1=(384, 250), p2=(284, 260), p5=(484, 260), p9=(184, 600), p12=(584, 600))
    before = body.copy()
    image = photo()
    out = agnostic_vitonhd(image, np.zeros((1024, 768), np.uint8), body)
    # hips 400 apart become 200 apart: (284, 600) and (484, 600), ellipse half-width 60
    assert out[600, 200].tolist() == image[600, 200].tolist()
    assert out[600, 230].tolist() == GRAY
    assert (body == before).all()


def test_vitonhd_agnostic_torso_polygon_fills_between_shoulders_and_hips():
    body = pose(p1=(384, 250), p2=(184, 260), p5=(584, 260), p9=(184, 800), p12=(584, 800))
    out = agnostic_vitonhd(photo(), np.zeros((1024, 768), np.uint8), body)
    assert out[520, 384].tolist() == GRAY  # 160 px from every line and ellipse


def test_vitonhd_agnostic_draws_no_limb_to_a_missing_elbow():
    body = pose(**ARMS)
    image, labels = photo(), np.zeros((1024, 768), np.uint8)
    assert agnostic_vitonhd(image, labels, body)[800, 484].tolist() == GRAY
    body[6] = 0  # neither 5-6 nor 6-7 is drawn, nor the wrist disc
    assert agnostic_vitonhd(image, labels, body)[800, 484].tolist() == image[800, 484].tolist()


# --- HR-VITON get_agnostic (r from the shoulders) ------------------------------------------

def test_hrviton_r_is_a_sixteenth_of_the_shoulder_width_plus_one():
    # |5 - 2| = 200: r = int(12.5) + 1 = 13, neck rectangle x 384 +- 65, y 250 - 117 .. 250
    image = photo()
    out = agnostic_hrviton(image, np.zeros((1024, 768), np.uint8), pose(**ARMS))
    assert out[136, 444].tolist() == GRAY
    assert out[130, 444].tolist() == image[130, 444].tolist()
    assert out[136, 452].tolist() == image[136, 452].tolist()
    assert out[255, 384].tolist() == GRAY


def test_hrviton_neck_rectangle_lies_above_the_neck_point_only():
    image = photo()
    out = agnostic_hrviton(image, np.zeros((1024, 768), np.uint8), pose(**{**ARMS, "p1": (384, 100)}))
    assert out[60, 384].tolist() == GRAY
    assert out[150, 384].tolist() == image[150, 384].tolist()  # 50 px below, above the shoulder line


def test_hrviton_restores_arm_pixels_outside_the_bone_band_and_head_and_lower_body():
    labels = np.zeros((1024, 768), np.uint8)
    labels[858, 280:289] = 15  # 58 px below the right wrist: gray disc 65, restore disc 52
    labels[700, 270:300] = 15  # on the forearm: stays gray
    labels[150:240, 354:414] = 13
    labels[620:700, 300:470] = 9
    image = photo()
    out = agnostic_hrviton(image, labels, pose(**ARMS))
    for label in (13, 9):
        assert (out[labels == label] == image[labels == label]).all()
    assert (out[858, 280:289] == image[858, 280:289]).all()
    assert out[858, 484].tolist() == GRAY  # the same spot by the left wrist, background
    assert (out[700, 270:300] == GRAY).all()


# --- a half-body photo: no hips -------------------------------------------------------------

@pytest.mark.parametrize("recipe", [agnostic_vitonhd, agnostic_hrviton], ids=["vitonhd", "hrviton"])
def test_both_agnostic_images_draw_a_missing_hip_at_the_photos_corner(recipe):
    # Both recipes draw the torso to 9 and 12 untested: hip ellipses centred on (0, 0) and
    # the polygon 2-5-12-9 becomes the triangle shoulders-corner. What the pack must not ship.
    body = pose(**{name: xy for name, xy in ARMS.items() if name not in ("p9", "p12")})
    image = photo()
    out = recipe(image, np.zeros((1024, 768), np.uint8), body)
    assert out[3, 3].tolist() == GRAY  # inside the hip ellipses at the corner (r*3 by r*6, r >= 13)
    assert out[130, 142].tolist() == GRAY  # halfway from the right shoulder to the corner, on line 2-9
    assert (out[950:, 700:] == image[950:, 700:]).all()  # the body's real lower half stays the photo


@pytest.mark.parametrize("gone", [(9, 12), (9,), (12,)], ids=["both-hips", "right-hip", "left-hip"])
def test_pack_without_a_hip_leaves_out_both_agnostic_images_and_says_why(gone):
    image, labels, persons = two_people()
    body = pose(**PHOTO_ARMS)
    body[list(gone)] = 0
    pack = make_tryon_pack(image, labels, persons, 1, body)
    agnostic = {f"tryon/{s}/{f}" for s in TRYON_SIZES for f in ("agnostic_vitonhd.jpg", "agnostic_hrviton.jpg")}
    assert set(pack.files) == {f"tryon/{s}/{f}" for s in TRYON_SIZES for f in TRYON_FILES} - agnostic
    assert set(pack.omitted) == agnostic
    named = {9: "right hip", 12: "left hip"}
    for reason in pack.omitted.values():
        assert all(named[joint] in reason for joint in gone) and "corner" in reason
        assert not any(named[joint] in reason for joint in {9, 12} - set(gone))
    # The files that read no hip are made as ever: the top masked, the face kept, nothing at the corner.
    upper = np.asarray(Image.open(io.BytesIO(pack.files["tryon/photo/inpaint_mask_upper.png"])))
    assert (upper[250:550, 440:560] == 255).all() and not upper[:100, :100].any()
    parse = np.asarray(Image.open(io.BytesIO(pack.files["tryon/photo/parse_agnostic.png"])))
    assert (parse[100:180, 460:540] == 13).all() and not np.isin(parse, (5,)).any()


def test_pack_with_both_hips_omits_nothing():
    image, labels, persons = two_people()
    assert make_tryon_pack(image, labels, persons, 1, pose(**PHOTO_ARMS)).omitted == {}


# --- OOTDiffusion get_mask_location (384x512) ---------------------------------------------

HANDS = dict(p2=(120, 130), p3=(120, 230), p4=(120, 300), p5=(264, 130), p6=(264, 230), p7=(264, 300))


def ootd_scene() -> np.ndarray:
    """A CIHP person at 384x512 standing under HANDS: arms at x 106-129 / 255-278 down to
    y 315, hands below (the extended wrist reaches y 314), a stray top far away."""
    labels = np.zeros((512, 384), np.uint8)
    for (y0, y1, x0, x1), label in {
        (20, 40, 162, 222): 2, (40, 100, 162, 222): 13, (100, 120, 182, 202): 10,
        (120, 330, 130, 255): 5, (125, 316, 106, 130): 15, (125, 316, 255, 279): 14,
        (316, 346, 110, 130): 15, (316, 346, 255, 275): 14, (330, 430, 135, 250): 9,
        (430, 490, 140, 190): 16, (430, 490, 194, 244): 17, (490, 505, 140, 190): 18,
        (490, 505, 194, 244): 19, (470, 490, 10, 30): 5,
    }.items():
        labels[y0:y1, x0:x1] = label
    return labels


def inner(region: np.ndarray, margin: int = 2) -> np.ndarray:
    """``region`` less a ``margin``-px rim: refine_mask refills the largest contour's
    TC89-simplified polygon, whose edges may cut one boundary pixel of a kept region."""
    size = 2 * margin + 1
    return cv2.erode(region.astype(np.uint8), np.ones((size, size), np.uint8)).astype(bool)


def test_ootd_parse_maps_cihp_to_atr_with_torso_skin_as_neck():
    cihp = np.arange(20, dtype=np.uint8)[None].repeat(2, 0)
    expected = [0, 1, 2, None, 3, 4, 7, 4, 12, 6, 18, 17, 5, 11, 14, 15, 12, 13, 9, 10]
    got = ootd_parse(cihp)[0].tolist()
    assert [g for g, e in zip(got, expected) if e is not None] == [e for e in expected if e is not None]


def test_ootd_parse_gives_each_glove_the_nearer_arm():
    cihp = np.zeros((10, 100), np.uint8)
    cihp[:, 10:20], cihp[:, 80:90] = 15, 14
    cihp[0, 5], cihp[0, 95] = 3, 3
    atr = ootd_parse(cihp)
    assert atr[0, 5] == 15 and atr[0, 95] == 14
    cihp[cihp == 14] = 0
    assert (ootd_parse(cihp)[0, [5, 95]] == 15).all()  # one arm: both gloves are its hand


@pytest.mark.parametrize("model_type", ["dc", "hd"])
def test_upper_body_mask_covers_the_top_and_spares_face_hands_and_pants(model_type):
    labels = ootd_scene()
    mask, gray = inpaint_mask(labels, pose(**HANDS), "upper_body", model_type)
    assert mask.shape == labels.shape and mask.dtype == np.uint8
    assert set(np.unique(mask)) == {0, 255} and (gray == np.where(mask == 255, 127, 0)).all()
    assert (mask[120:330, 130:255] == 255).all() and (mask[100:120, 182:202] == 255).all()  # top, neck
    assert not mask[inner(labels == 13)].any() and not mask[inner(labels == 9)].any()
    hands = np.zeros(labels.shape, bool)
    hands[316:346, 110:130] = hands[316:346, 255:275] = True  # arm pixels past the extended wrist
    assert not mask[inner(hands)].any()
    assert (mask[304:312, 112:128] == 255).all()  # forearm drawn 1.2x past the elbow: to y 314, not 300
    assert (mask[460:500, :45] == 0).all()  # the stray top is not the largest region


def test_hd_arms_are_wider_than_dc():
    # 34 px outside the right upper arm: dc reaches 22 + 8 (4 dilations), hd 30 + 8
    masks = {t: inpaint_mask(ootd_scene(), pose(**HANDS), "upper_body", t)[0] for t in ("dc", "hd")}
    assert masks["dc"][180, 86] == 0 and masks["hd"][180, 86] == 255
    assert (masks["hd"] >= masks["dc"]).all()


def test_lower_body_mask_covers_pants_and_legs_and_spares_top_arms_and_shoes():
    labels = ootd_scene()
    mask, _ = inpaint_mask(labels, pose(**HANDS), "lower_body", "dc")
    assert (mask[np.isin(labels, (9, 16, 17))] == 255).all()
    assert not mask[inner(np.isin(labels, (5, 13, 14, 15, 18, 19)))].any()


def test_dresses_mask_covers_the_dress():
    labels = ootd_scene()
    labels[np.isin(labels, (5, 9))] = 6
    labels[470:490, 10:30] = 0
    mask, _ = inpaint_mask(labels, pose(**HANDS), "dresses", "dc")
    assert (mask[labels == 6] == 255).all()
    assert not mask[inner(np.isin(labels, (13, 18, 19)))].any()


def test_a_missing_wrist_uses_the_parsed_arm_so_no_hand_is_kept():
    body = pose(**HANDS)
    body[4] = 0
    mask, _ = inpaint_mask(ootd_scene(), body, "upper_body", "dc")
    assert (mask[320:346, 110:130] == 255).all() and not mask[322:344, 257:273].any()


def test_inpaint_gray_is_127_under_the_mask_and_the_photo_elsewhere():
    image = photo(512, 384)
    mask, _ = inpaint_mask(ootd_scene(), pose(**HANDS), "upper_body", "dc")
    out = inpaint_gray(image, mask)
    assert (out[mask == 255] == 127).all() and (out[mask == 0] == image[mask == 0]).all()


def test_unknown_category_or_model_type_is_refused():
    with pytest.raises(ValueError):
        inpaint_mask(ootd_scene(), pose(**HANDS), "shoes", "dc")
    with pytest.raises(ValueError):
        inpaint_mask(ootd_scene(), pose(**HANDS), "upper_body", "xl")


# --- the pack ------------------------------------------------------------------------------

@pytest.mark.parametrize("size, scale, pad, resized", [
    ((1000, 1000), 0.768, (0, 128, 0, 128), (768, 768)),
    ((600, 800), 1.28, (0, 0, 0, 0), (768, 1024)),
    ((700, 1000), 1.024, (25, 0, 26, 0), (717, 1024)),
])
def test_letterbox_numbers(size, scale, pad, resized):
    box = letterbox(size)
    assert box.scale == pytest.approx(scale) and box.pad == pad and box.resized == resized


def test_letterbox_pads_photo_white_and_labels_background_and_maps_keypoints():
    box = letterbox((1000, 1000))
    image = letterbox_image(np.zeros((1000, 1000, 3), np.uint8), box)
    labels = letterbox_labels(np.full((1000, 1000), 5, np.uint8), box)
    assert image.shape == (1024, 768, 3) and (image[:128] == 255).all() and (image[128:896] == 0).all()
    assert (labels[896:] == 0).all() and (labels[128:896] == 5).all()
    points = letterbox_keypoints(pose(p2=(100, 200), p5=(1000, 0)), box)
    assert points[2].tolist() == pytest.approx([76.8, 281.6, 0.9])
    assert points[5].tolist() == pytest.approx([768, 128, 0.9]) and (points[3] == 0).all()


@pytest.mark.parametrize("size", [(768, 768), (384, 384), (600, 800)])
def test_unletterbox_inverts_letterbox_for_masks(size):
    mask = np.zeros(size[::-1], np.uint8)
    mask[size[1] // 4:size[1] // 2, size[0] // 3:] = 255
    box = letterbox(size)
    assert (unletterbox_mask(letterbox_labels(mask, box), box, size) == mask).all()


PHOTO_ARMS = dict(p1=(500, 190), p2=(400, 200), p5=(600, 200), p3=(400, 700), p6=(600, 700),
                  p4=(400, 900), p7=(600, 900), p9=(450, 650), p12=(550, 650))


def two_people() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 1000x1000 photo: person 1 with a top, arms and pants; person 2 in a corner."""
    labels, persons = np.zeros((1000, 1000), np.uint8), np.zeros((1000, 1000), np.uint8)
    labels[100:180, 460:540] = 13
    labels[200:600, 420:580] = 5
    labels[200:880, 380:420], labels[200:880, 580:620] = 15, 14
    labels[440:460, 640:700] = 14  # 40-100 px off the 5-6 segment
    labels[600:900, 430:570] = 9
    persons[labels > 0] = 1
    labels[800:950, 50:150], labels[100:200, 50:150] = 9, 13
    persons[800:950, 50:150] = persons[100:200, 50:150] = 2
    return photo(1000, 1000), labels, persons


def test_pack_has_every_file_at_both_sizes_in_the_right_format():
    image, labels, persons = two_people()
    pack = make_tryon_pack(image, labels, persons, 1, pose(**PHOTO_ARMS))
    assert set(pack.files) == {f"tryon/{s}/{f}" for s in TRYON_SIZES for f in TRYON_FILES}
    for name, data in pack.files.items():
        decoded = Image.open(io.BytesIO(data))
        assert decoded.size == ((768, 1024) if "/768x1024/" in name else (1000, 1000))
        if name.endswith("parse_agnostic.png"):
            assert decoded.mode == "P" and decoded.getpalette()[:60] == PALETTE.ravel().tolist()
            assert set(np.unique(np.asarray(decoded))) <= set(range(20))
        elif name.endswith(".png"):
            assert decoded.mode == "L" and set(np.unique(np.asarray(decoded))) <= {0, 255}
        else:
            assert decoded.format == "JPEG" and decoded.mode == "RGB"
    assert pack.info == {"person": 1, "sizes": {
        "photo": {"width": 1000, "height": 1000},
        "768x1024": {"width": 768, "height": 1024, "scale": pytest.approx(0.768), "pad": [0, 128, 0, 128]}}}


def test_pack_parse_agnostic_holds_only_the_person_and_scales_to_the_photo():
    image, labels, persons = two_people()
    pack = make_tryon_pack(image, labels, persons, 1, pose(**PHOTO_ARMS))
    parse = np.asarray(Image.open(io.BytesIO(pack.files["tryon/photo/parse_agnostic.png"])))
    assert not parse[800:950, 50:150].any() and not parse[100:200, 50:150].any()  # person 2
    assert (parse[100:180, 460:540] == 13).all() and not np.isin(parse, (5,)).any()
    # 1/s = 1.302: the 5-6 corridor is 130 px wide here, so 60 px off is erased, 80 px is not
    assert parse[450, 660] == 0 and parse[450, 680] == 14
    frame = np.asarray(Image.open(io.BytesIO(pack.files["tryon/768x1024/parse_agnostic.png"])))
    assert not frame[:128].any() and not frame[896:].any()
    assert (frame[128 + 110:128 + 130, 360:410] == 13).all()  # face at 100-180 -> 204.8-266


def test_pack_masks_are_run_ootd_upsampled_and_unletterboxed():
    image, labels, persons = two_people()
    box = letterbox((1000, 1000))
    images = tryon_images(image, person_labels(labels, persons, 1), pose(**PHOTO_ARMS), box)
    for stem in ("upper", "upper_hd", "lower", "dresses"):
        frame = images["768x1024"][f"inpaint_mask_{stem}.png"]
        assert frame.shape == (1024, 768) and frame.any()
        blocks = frame.reshape(512, 2, 384, 2)
        assert (blocks == blocks[:, :1, :, :1]).all()  # NEAREST from 384x512
        assert (images["photo"][f"inpaint_mask_{stem}.png"] == unletterbox_mask(frame, box, (1000, 1000))).all()
        for size, picture in (("photo", image), ("768x1024", letterbox_image(image, box))):
            mask, gray = images[size][f"inpaint_mask_{stem}.png"], images[size][f"inpaint_gray_{stem}.jpg"]
            assert (gray[mask == 255] == 127).all() and (gray[mask == 0] == picture[mask == 0]).all()
    upper = images["photo"]["inpaint_mask_upper.png"]
    # the face, less the rim a 384x512 pixel becomes here (2.6 px)
    assert (upper[250:550, 440:560] == 255).all() and not upper[106:174, 466:534].any()
