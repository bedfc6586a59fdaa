"""Keypoints per person: crops, OpenPose's formats, submitted bodies given to persons, and
BlazePose's landmarks as OpenPose's points."""
from types import SimpleNamespace

import numpy as np
import pytest

from worker.pose import (BODY_25, COCO_18_FROM_BODY_25, MIN_CROP, assign_submitted, estimate_people, from_flat,
                         openpose_document, to_coco18)
from worker.mediapipe_pose import body_from_landmarks


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


# OpenPose's own index tables (doc/02_output.md, "Pose Output Format"), written out here so
# that the mapping is checked against them and not against worker.pose's copy.
OPENPOSE_BODY_25 = {"Nose": 0, "Neck": 1, "RShoulder": 2, "RElbow": 3, "RWrist": 4, "LShoulder": 5, "LElbow": 6,
                    "LWrist": 7, "MidHip": 8, "RHip": 9, "RKnee": 10, "RAnkle": 11, "LHip": 12, "LKnee": 13,
                    "LAnkle": 14, "REye": 15, "LEye": 16, "REar": 17, "LEar": 18, "LBigToe": 19, "LSmallToe": 20,
                    "LHeel": 21, "RBigToe": 22, "RSmallToe": 23, "RHeel": 24}
OPENPOSE_COCO_18 = {"Nose": 0, "Neck": 1, "RShoulder": 2, "RElbow": 3, "RWrist": 4, "LShoulder": 5, "LElbow": 6,
                    "LWrist": 7, "RHip": 8, "RKnee": 9, "RAnkle": 10, "LHip": 11, "LKnee": 12, "LAnkle": 13,
                    "REye": 14, "LEye": 15, "REar": 16, "LEar": 17}
# OpenPose point -> BlazePose landmark (TRYON.md: one to one, the big toe is the foot index);
# neck and mid-hip are midpoints, the small toes have no counterpart.
SAME_POINT = {"Nose": "NOSE", "REye": "RIGHT_EYE", "LEye": "LEFT_EYE", "REar": "RIGHT_EAR", "LEar": "LEFT_EAR",
              "RShoulder": "RIGHT_SHOULDER", "LShoulder": "LEFT_SHOULDER", "RElbow": "RIGHT_ELBOW",
              "LElbow": "LEFT_ELBOW", "RWrist": "RIGHT_WRIST", "LWrist": "LEFT_WRIST", "RHip": "RIGHT_HIP",
              "LHip": "LEFT_HIP", "RKnee": "RIGHT_KNEE", "LKnee": "LEFT_KNEE", "RAnkle": "RIGHT_ANKLE",
              "LAnkle": "LEFT_ANKLE", "RBigToe": "RIGHT_FOOT_INDEX", "LBigToe": "LEFT_FOOT_INDEX",
              "RHeel": "RIGHT_HEEL", "LHeel": "LEFT_HEEL"}
WIDTH, HEIGHT = 400, 360


def landmarks(**changes: dict) -> list[SimpleNamespace]:
    """BlazePose's 33 landmarks, each at its own place: landmark i at pixel ((i + 1) * 10,
    (i + 1) * 10) of a 400x360 image (x, y given as MediaPipe gives them: fractions of the
    width and height), visibility 0.9; ``changes`` by MediaPipe's landmark name."""
    from mediapipe.python.solutions.pose import PoseLandmark  # the model's own numbering

    marks = [SimpleNamespace(x=(i + 1) * 10 / WIDTH, y=(i + 1) * 10 / HEIGHT, visibility=0.9) for i in range(33)]
    for name, values in changes.items():
        vars(marks[PoseLandmark[name]]).update(values)
    return marks


def pixel(name: str) -> list[float]:
    from mediapipe.python.solutions.pose import PoseLandmark

    return [(PoseLandmark[name] + 1) * 10.0, (PoseLandmark[name] + 1) * 10.0]


def test_blazepose_landmarks_land_where_openpose_puts_each_point_in_body25_and_coco18():
    body = body_from_landmarks(landmarks(RIGHT_HIP={"visibility": 0.7}, LEFT_SHOULDER={"visibility": 0.6}),
                               WIDTH, HEIGHT)
    coco = to_coco18(body)
    for openpose, blazepose in SAME_POINT.items():
        assert body[OPENPOSE_BODY_25[openpose], :2].tolist() == pytest.approx(pixel(blazepose)), openpose
        if openpose in OPENPOSE_COCO_18:
            assert coco[OPENPOSE_COCO_18[openpose], :2].tolist() == pytest.approx(pixel(blazepose)), openpose
    assert body[OPENPOSE_BODY_25["LShoulder"], 2] == pytest.approx(0.6)  # the confidence is the visibility
    # neck and mid-hip: the midpoints, at the lower of the two confidences
    for point, (right, left), confidence in (("Neck", ("RIGHT_SHOULDER", "LEFT_SHOULDER"), 0.6),
                                             ("MidHip", ("RIGHT_HIP", "LEFT_HIP"), 0.7)):
        middle = [(a + b) / 2 for a, b in zip(pixel(right), pixel(left))]
        assert body[OPENPOSE_BODY_25[point]].tolist() == pytest.approx(middle + [confidence]), point
    assert coco[OPENPOSE_COCO_18["Neck"], :2].tolist() == pytest.approx(body[OPENPOSE_BODY_25["Neck"], :2].tolist())
    for toe in ("LSmallToe", "RSmallToe"):
        assert not body[OPENPOSE_BODY_25[toe]].any(), toe


def test_hidden_and_out_of_image_landmarks_are_absent_and_midpoints_are_made_from_the_points_kept():
    body = body_from_landmarks(landmarks(
        LEFT_EYE={"visibility": 0.19},  # under the 0.2 floor (docs/outputs.md): hidden
        RIGHT_EAR={"visibility": 0.2},  # at the floor: kept
        RIGHT_SHOULDER={"visibility": 0.05},  # hidden: so no neck either
        RIGHT_WRIST={"x": 1.0},  # x == width: one past the last pixel, outside
        LEFT_ANKLE={"y": 1.3},  # below the image
        RIGHT_HIP={"x": -0.02},  # left of it: so no mid-hip either
        LEFT_KNEE={"x": 0.0},  # on the first column: inside
    ), WIDTH, HEIGHT)
    absent = {"LEye", "RShoulder", "RWrist", "LAnkle", "RHip", "Neck", "MidHip", "LSmallToe", "RSmallToe"}
    for name, index in OPENPOSE_BODY_25.items():
        assert body[index].any() != (name in absent), name
    assert body[OPENPOSE_BODY_25["REar"]].tolist() == pytest.approx(pixel("RIGHT_EAR") + [0.2])
    assert body[OPENPOSE_BODY_25["LKnee"]].tolist() == pytest.approx([0.0, pixel("LEFT_KNEE")[1], 0.9])
    assert body[OPENPOSE_BODY_25["LShoulder"]].tolist() == pytest.approx(pixel("LEFT_SHOULDER") + [0.9])


def test_a_body_with_every_landmark_hidden_is_no_body():
    hidden = {name: {"visibility": 0.1} for name in SAME_POINT.values()}
    assert body_from_landmarks(landmarks(**hidden), WIDTH, HEIGHT) is None
