"""Keypoints per person: crops, OpenPose's formats, submitted bodies given to persons."""
import numpy as np
import pytest

from worker.pose import (BODY_25, COCO_18_FROM_BODY_25, MIN_CROP, assign_submitted, estimate_people, from_flat,
                         openpose_document, to_coco18)


class CornerEngine:
    """A pose engine that finds, in any crop, a nose 5 px from its top-left corner and a
    right ankle 1000 px away (outside any crop here); it records the crops it was given."""

    description = {"engine": "corner"}

    def __init__(self) -> None:
        self.crops: list[tuple[int, int]] = []

    def estimate(self, image: np.ndarray):
        self.crops.append(image.shape[:2])
        body = np.zeros((25, 3), np.float32)
        body[BODY_25.index("Nose")] = (5, 5, 0.9)
        body[BODY_25.index("RAnkle")] = (1000, 1000, 0.8)
        return body


def test_each_person_is_cropped_with_a_margin_and_its_points_come_back_in_the_photos_pixels():
    engine = CornerEngine()
    photo = np.zeros((400, 600, 3), np.uint8)
    bodies = estimate_people(engine, photo, {1: [100, 100, 200, 100], 2: [0, 0, 50, 60]})
    # person 1: 15 % of 200 and of 100 on each side; person 2 at the photo's edge, cut there
    assert engine.crops == [(131, 261), (70, 58)]
    assert bodies[1][BODY_25.index("Nose")] == pytest.approx([70 + 5, 85 + 5, 0.9])  # the crop's corner: (70, 85)
    assert bodies[2][BODY_25.index("Nose")] == pytest.approx([5, 5, 0.9])
    assert not bodies[1][BODY_25.index("RAnkle")].any()  # placed outside the crop: absent, as OpenPose would have it


def test_a_person_too_small_to_have_a_body_is_not_asked_about():
    engine = CornerEngine()
    bodies = estimate_people(engine, np.zeros((400, 600, 3), np.uint8), {1: [10, 10, 8, MIN_CROP]})
    assert bodies == {1: None} and engine.crops == []


def test_coco18_and_body25_convert_both_ways_with_the_mid_hip_from_the_hips():
    coco = np.arange(54, dtype=np.float32) + 1
    body = from_flat(coco.tolist())
    assert body.shape == (25, 3)
    assert np.array_equal(to_coco18(body).ravel(), coco)
    right_hip, left_hip = coco.reshape(18, 3)[8], coco.reshape(18, 3)[11]
    assert body[BODY_25.index("MidHip")].tolist() == [(right_hip[0] + left_hip[0]) / 2, (right_hip[1] + left_hip[1]) / 2,
                                                      min(right_hip[2], left_hip[2])]
    assert not body[19:].any()  # COCO-18 has no feet
    assert [BODY_25[i] for i in COCO_18_FROM_BODY_25][8:11] == ["RHip", "RKnee", "RAnkle"]


def test_submitted_bodies_go_to_the_person_their_points_fall_on_one_each():
    persons = np.zeros((100, 200), np.uint8)
    persons[:, :100], persons[:, 100:] = 1, 2
    boxes = {1: [0, 0, 100, 100], 2: [100, 0, 100, 100]}

    def body_at(x: float) -> np.ndarray:
        body = np.zeros((25, 3), np.float32)
        body[:5] = (x, 50, 0.9)
        return body

    on_two, on_one, also_on_one = body_at(150), body_at(30), body_at(60)
    assigned, rest = assign_submitted([on_two, on_one, also_on_one], persons, boxes)
    assert assigned[2] is on_two and assigned[1] is on_one  # the first of two bodies on one person wins
    assert len(rest) == 1 and rest[0] is also_on_one
    document = openpose_document({1: assigned[1], 2: assigned[2]}, rest)
    assert [p["person_id"] for p in document["people"]] == [[1], [2], [-1]]
    assert len(openpose_document({1: on_one}, [], coco18=True)["people"][0]["pose_keypoints_2d"]) == 54
