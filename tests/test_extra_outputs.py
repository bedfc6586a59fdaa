"""The groups of outputs a submission asks for, through the job runner: real Redis, real
local store, the tiny model and the real pose model (MediaPipe) in-process, on the one
real photo of a person in the suite (tests/data/astronaut.jpg)."""
import dataclasses
import hashlib
import io
import json
from typing import Optional

import jsonschema
import numpy as np
import pytest
from PIL import Image

from common.jobs import InputInfo, JobStatus, OutputGroup, OutputOptions, Priority, input_key, new_job_id, output_key
from common.labels import CIHP_CLASSES, class_slug
from common.services import Services
from m2fp_contract.schema import (TRYON_FILES, TRYON_SIZES, KeypointsDocument, LabelProfile, LabelsFormat,
                                  ResultDocument, output_media_type)
from scripts.imagegen import ASTRONAUT, photo_jpeg
from tests.test_job_runner import GROUP_FIELDS, closed
from worker.engine import Parsing, ParsingEngine
from worker.job_runner import run_job
from worker.mediapipe_pose import MediaPipePose
from worker.pose import BODY_25

EVERY_GROUP = list(OutputGroup)


@dataclasses.dataclass
class WorkerServices(Services):
    engine: Optional[ParsingEngine] = None


@pytest.fixture(scope="module")
def pose():
    return MediaPipePose()


@pytest.fixture()
def ctx(settings, tiny_engine):
    return dataclasses.replace(WorkerServices.create(settings), engine=tiny_engine)


def queue(ctx, data: bytes, output: OutputOptions) -> str:
    job_id = new_job_id()
    ctx.storage.put(input_key(job_id), data, "application/octet-stream")
    width, height = Image.open(io.BytesIO(data)).size
    info = InputInfo(width=width, height=height, format="JPEG", bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    ctx.jobs.create(job_id, info, Priority.INTERACTIVE, output=output)
    return job_id


def options(*groups: OutputGroup, **more) -> OutputOptions:
    return OutputOptions.of(LabelProfile.CIHP, LabelsFormat.GRAYSCALE, list(groups), **more)


def read(ctx, job_id: str, name: str) -> bytes:
    return ctx.storage.get(output_key(job_id, name))


def image(ctx, job_id: str, name: str) -> Image.Image:
    return Image.open(io.BytesIO(read(ctx, job_id, name)))


def pixels_of_person_1(ctx, data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The columns and rows of person 1's pixels, as the tiny model parses ``data``: where
    submitted keypoints must fall to be person 1's."""
    probe = queue(ctx, data, options())
    run_job(ctx, ctx.engine, probe)
    ys, xs = np.nonzero(np.asarray(image(ctx, probe, "persons.png")) == 1)
    return xs, ys


def pack_names(*files: str) -> set[str]:
    """The try-on pack's output names of ``files`` at both sizes."""
    return {f"tryon/{size}/{name}" for size in TRYON_SIZES for name in files}


class NobodyEngine:
    """The tiny model's parse with its persons taken away: a photo in which nobody is found."""

    def __init__(self, engine: ParsingEngine) -> None:
        self.engine, self.description = engine, engine.description

    def parse(self, photo: np.ndarray) -> Parsing:
        return dataclasses.replace(self.engine.parse(photo), persons=[])


def test_a_job_asking_for_every_group_has_each_output_and_the_contract_declares_all_of_it(ctx, pose):
    job_id = queue(ctx, ASTRONAUT.read_bytes(), options(*EVERY_GROUP))
    job = run_job(ctx, ctx.engine, job_id, pose=pose)
    assert job.status is JobStatus.SUCCEEDED, job.error
    document = json.loads(read(ctx, job_id, "result.json"))
    jsonschema.validate(document, closed(ResultDocument.model_json_schema()))
    assert set(GROUP_FIELDS) <= set(document)
    assert document["outputs_requested"] == [group.value for group in OutputGroup]
    assert set(document["output_seconds"]) == {group.value for group in OutputGroup}
    outputs = job.result.outputs
    assert all(output_media_type(name) for name in outputs)

    # masks: one per class present, exactly that class's pixels of labels.png
    labels = np.asarray(image(ctx, job_id, "labels.png"))
    present = {found["id"] for found in document["classes"]} - {0}
    assert {name for name in outputs if name.startswith("masks/")} == {
        f"masks/{class_slug(CIHP_CLASSES[c])}.png" for c in present}
    for class_id in present:
        mask = np.asarray(image(ctx, job_id, f"masks/{class_slug(CIHP_CLASSES[class_id])}.png"))
        assert np.array_equal(mask == 255, labels == class_id) and set(np.unique(mask)) <= {0, 255}

    # keypoints: OpenPose JSON of the persons of persons.png, BODY_25 and COCO-18 alike
    persons = np.asarray(image(ctx, job_id, "persons.png"))
    body25 = KeypointsDocument.model_validate_json(read(ctx, job_id, "keypoints.json"))
    coco18 = KeypointsDocument.model_validate_json(read(ctx, job_id, "keypoints_coco18.json"))
    found = [p["id"] for p in document["keypoints"]["people"] if p["found"]]
    assert [p.person_id[0] for p in body25.people] == found == [p.person_id[0] for p in coco18.people]
    assert set(found) <= set(np.unique(persons)) - {0}
    assert all(len(p.pose_keypoints_2d) == 75 for p in body25.people)
    assert all(len(p.pose_keypoints_2d) == 54 for p in coco18.people)
    assert document["keypoints"]["source"] == "model" and document["keypoints"]["model"]["engine"] == "mediapipe"

    # garments: each garment of each person has its cut-out, whose opaque pixels are that
    # garment's pixels of that person
    people = {person["id"]: person for person in document["people"]}
    for person in people.values():
        for garment in person["garments"]:
            cutout = np.asarray(image(ctx, job_id, garment["cutout"]))
            x, y, w, h = garment["bbox"]
            expected = (labels[y:y + h, x:x + w] == garment["id"]) & (persons[y:y + h, x:x + w] == person["id"])
            assert cutout.shape == (h, w, 4) and np.array_equal(cutout[..., 3] == 255, expected)
    cloth = np.asarray(image(ctx, job_id, "cloth_mask.png"))
    assert set(np.unique(cloth)) <= {0, 255}

    # try-on: the largest person's pack at both sizes (the tiny model finds one person on
    # the photo, and the pose model her body), without the agnostic images: the portrait
    # ends near her waist and the pose model finds no hip there (a body with both hips is
    # test_contract's seed job, and the rule's cases are tests/test_tryon.py's)
    tryon = document["tryon"]
    assert tryon["person"] == 1 and found == [1] and tryon["absent_reason"] is None
    hips = np.asarray(body25.people[0].pose_keypoints_2d).reshape(25, 3)[[9, 12], :2]
    assert (hips == 0).all(axis=1).any(), hips  # the recipes' test of a missing point: x and y both 0
    agnostic = pack_names("agnostic_vitonhd.jpg", "agnostic_hrviton.jpg")
    assert set(tryon["omitted"]) == agnostic and all("hip" in why for why in tryon["omitted"].values())
    assert set(tryon["files"]) == pack_names(*TRYON_FILES) - agnostic
    assert set(tryon["files"]) <= set(outputs)
    assert image(ctx, job_id, "tryon/768x1024/parse_agnostic.png").size == (768, 1024)
    assert image(ctx, job_id, "tryon/768x1024/parse_agnostic.png").mode == "P"
    assert image(ctx, job_id, "tryon/photo/inpaint_mask_upper.png").size == (512, 512)
    assert tryon["sizes"]["768x1024"] == {"width": 768, "height": 1024, "scale": 1.5, "pad": [0, 128, 0, 128]}


def test_the_pose_model_finds_the_astronauts_body_where_it_is(pose):
    photo = np.asarray(Image.open(ASTRONAUT).convert("RGB"))
    body = pose.estimate(photo)
    nose, neck = body[BODY_25.index("Nose")], body[BODY_25.index("Neck")]
    right, left = body[BODY_25.index("RShoulder")], body[BODY_25.index("LShoulder")]
    # Her face is in the upper middle of the photo, her shoulders below it, her right
    # shoulder on the photo's left; the neck is the shoulders' midpoint, as OpenPose's.
    assert 150 < nose[0] < 300 and 60 < nose[1] < 200 and nose[2] > 0.5
    assert right[0] < nose[0] < left[0] and right[1] > nose[1] and left[1] > nose[1]
    assert np.allclose(neck[:2], (right[:2] + left[:2]) / 2)


def test_a_photo_with_no_body_to_find_succeeds_without_the_pack_and_says_why(ctx, pose):
    job_id = queue(ctx, photo_jpeg(200, 300), options(OutputGroup.TRYON))
    job = run_job(ctx, ctx.engine, job_id, pose=pose)
    document = json.loads(read(ctx, job_id, "result.json"))
    assert job.status is JobStatus.SUCCEEDED and document["persons"] >= 1
    assert document["keypoints"]["people"] == [{"id": p["id"], "found": False} for p in document["people"]]
    assert "no body found for person 1" in document["keypoints"]["reason"]
    assert document["tryon"]["files"] == [] and "person 1" in document["tryon"]["absent_reason"]
    assert json.loads(read(ctx, job_id, "keypoints.json")) == {"version": 1.3, "people": []}
    assert not any(name.startswith("tryon/") for name in job.result.outputs)


def test_a_try_on_pack_for_a_person_the_photo_lacks_fails_the_job_saying_how_many_there_are(ctx, pose):
    job_id = queue(ctx, photo_jpeg(200, 300), options(OutputGroup.TRYON, person=200))
    job = run_job(ctx, ctx.engine, job_id, pose=pose)
    assert job.status is JobStatus.FAILED and job.error.code == "person_not_found"
    assert "person 200" in job.error.message and "the photo has" in job.error.message


def test_a_try_on_pack_of_a_photo_with_nobody_fails_the_job(ctx, pose):
    job_id = queue(ctx, photo_jpeg(200, 300), options(OutputGroup.TRYON))
    job = run_job(ctx, NobodyEngine(ctx.engine), job_id, pose=pose)
    assert job.status is JobStatus.FAILED and job.error.code == "no_person"


def test_submitted_keypoints_are_used_instead_of_the_models_and_given_to_the_person_they_fall_on(ctx):
    data = photo_jpeg(240, 320)
    xs, ys = pixels_of_person_1(ctx, data)
    inside = [float(xs[len(xs) // 2]), float(ys[len(ys) // 2]), 0.9]  # a pixel of person 1
    body = inside * 18  # COCO-18, every point on person 1
    stray = [239.0, 0.0, 0.5] + [0.0] * 51  # one point, on nobody (a corner)
    job_id = queue(ctx, data, options(OutputGroup.KEYPOINTS, keypoints=[body, stray]))
    job = run_job(ctx, ctx.engine, job_id)  # no pose engine: submitted points need none
    assert job.status is JobStatus.SUCCEEDED, job.error
    document = json.loads(read(ctx, job_id, "result.json"))
    assert document["keypoints"]["source"] == "submitted" and "model" not in document["keypoints"]
    coco = json.loads(read(ctx, job_id, "keypoints_coco18.json"))["people"]
    assert [p["person_id"] for p in coco][0] == [1]
    assert coco[0]["pose_keypoints_2d"] == pytest.approx(body, abs=0.01)
    body25 = json.loads(read(ctx, job_id, "keypoints.json"))["people"][0]["pose_keypoints_2d"]
    assert body25[8 * 3:8 * 3 + 3] == pytest.approx(inside, abs=0.01)  # mid-hip: the hips' midpoint
    assert body25[19 * 3:] == [0.0] * 18  # COCO-18 has no feet


def test_a_body_without_both_shoulders_gets_no_pack_and_the_reason(ctx):
    data = photo_jpeg(240, 320, seed=3)
    xs, ys = pixels_of_person_1(ctx, data)
    body = [0.0] * 75
    body[0:3] = [float(xs[0]), float(ys[0]), 0.9]  # a nose, and nothing else: no shoulders
    job_id = queue(ctx, data, options(OutputGroup.TRYON, keypoints=[body]))
    job = run_job(ctx, ctx.engine, job_id)
    document = json.loads(read(ctx, job_id, "result.json"))
    assert job.status is JobStatus.SUCCEEDED and document["keypoints"]["people"][0] == {"id": 1, "found": True}
    assert document["tryon"]["files"] == [] and "shoulders" in document["tryon"]["absent_reason"]
    assert not any(name.startswith("tryon/") for name in job.result.outputs)


def test_a_body_without_hips_gets_the_pack_without_the_agnostic_images_and_the_reason(ctx):
    # A half-body photo's body: neck, shoulders, elbows and wrists, no hips. Both agnostic
    # images draw the torso to the hips (they would gray a wedge to the photo's corner), so
    # they are left out, as the whole pack is without both shoulders; the rest is made.
    data = photo_jpeg(240, 320, seed=3)
    xs, ys = pixels_of_person_1(ctx, data)
    body = [0.0] * 75
    for point, at in zip(range(1, 8), np.linspace(0, len(xs) - 1, 7).astype(int)):  # 1 neck .. 7 left wrist
        body[point * 3:point * 3 + 3] = [float(xs[at]), float(ys[at]), 0.9]
    job_id = queue(ctx, data, options(OutputGroup.TRYON, keypoints=[body]))
    job = run_job(ctx, ctx.engine, job_id)
    assert job.status is JobStatus.SUCCEEDED, job.error
    document = json.loads(read(ctx, job_id, "result.json"))
    jsonschema.validate(document, closed(ResultDocument.model_json_schema()))
    agnostic, every = pack_names("agnostic_vitonhd.jpg", "agnostic_hrviton.jpg"), pack_names(*TRYON_FILES)
    tryon = document["tryon"]
    assert tryon["absent_reason"] is None and set(tryon["files"]) == every - agnostic
    assert set(tryon["omitted"]) == agnostic
    assert all("right hip and left hip were not found" in reason for reason in tryon["omitted"].values())
    assert {name for name in job.result.outputs if name.startswith("tryon/")} == every - agnostic
