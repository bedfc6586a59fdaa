"""Try-on outputs, the demo's routes and ``Prefer: wait`` through real processes: the
gunicorn API, Redis, a real S3 endpoint and a Celery worker with the real pose model, on
a real photo (tests/data/astronaut.jpg) whose parse is a hand-made label map (the
synthetic model's parse of a real photo is noise: tests/harness/scripted_engine.py), and on
a drawn photo of two people with theirs (tests/harness/scenes.py)."""
import base64
import io
import json
import os

import cv2
import numpy as np
import pytest
import requests
from PIL import Image

from common.labels import CIHP_CLASSES, PALETTE, class_slug
from m2fp_contract.schema import MAX_KEYPOINT_PEOPLE
from scripts.imagegen import (ASTRONAUT, FACE, HAIR, L_SHOULDER, LEFT_ARM, R_SHOULDER, RIGHT_ARM, TORSO_SKIN,
                              UPPER_CLOTHES, astronaut_parse)
from scripts.stack import Stack, local_system
from tests.conftest import S3_KEYS
from tests.harness import HARNESS_APP, SCRIPTED_PARSE_VARIABLE
from tests.harness.scenes import two_people

UPPER = UPPER_CLOTHES
TWO_PEOPLE = two_people()  # 640x480: a large person 1 on the left, a smaller person 2 on the right


@pytest.fixture(scope="module")
def stack(redis_server, tiny_model, s3_endpoint, tmp_path_factory):
    from common.storage import S3Store

    base = tmp_path_factory.mktemp("tryon")
    Image.fromarray(astronaut_parse()).save(base / "labels.png")
    two = TWO_PEOPLE.write_parse(base, "two-people")
    S3Store(s3_endpoint, S3_KEYS["access_key"], S3_KEYS["secret_key"], "m2fp-tryon").ensure_bucket()
    env = {"REDIS_URL": redis_server.url.rsplit("/", 1)[0] + "/5", "M2FP_MODEL": str(tiny_model),
           "INFERENCE_MAX_SIDE": "320", "TORCH_THREADS": "1", "S3_ENDPOINT": s3_endpoint,
           "S3_ACCESS_KEY": S3_KEYS["access_key"], "S3_SECRET_KEY": S3_KEYS["secret_key"], "S3_BUCKET": "m2fp-tryon",
           SCRIPTED_PARSE_VARIABLE: os.pathsep.join([str(base / "labels.png"), str(two)])}
    running = Stack(env=env, log_dir=base, worker_app=HARNESS_APP).start_api()
    running.start_worker("w1")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def idle(tmp_path_factory):
    """An API with keys and no worker: nothing it accepts ever ends."""
    with local_system(tmp_path_factory.mktemp("idle"), API_KEYS="alice:alice-key-0123456789",
                      SYNC_WAIT_SECONDS="1") as running:
        yield running


def openpose(*people: list) -> str:
    """OpenPose's JSON of these people's flat point lists, as the form field's text."""
    return json.dumps({"people": [{"pose_keypoints_2d": points} for points in people]})


def fetch(url: str) -> bytes:
    response = requests.get(url, timeout=30)
    assert response.status_code == 200, (url, response.text[:300])
    return response.content


def picture(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


@pytest.fixture(scope="module")
def tryon_job(stack) -> dict:
    """The photo asked for every group, answered finished in the same request (Prefer: wait)."""
    answer = requests.post(f"{stack.api_url}/v1/jobs", files={"image": ("astronaut.jpg", ASTRONAUT.read_bytes())},
                           data={"outputs": "tryon,garments,masks"}, headers={"Prefer": "wait=60"}, timeout=90)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Preference-Applied"] == "wait=30"  # capped at SYNC_WAIT_SECONDS
    return answer.json()


def submitted(stack, **request) -> dict:
    """POST /v1/jobs, then the job once it has ended, polled (not waited for in the request:
    Prefer: wait has its own tests, and a slow CI must not turn into a 202 here)."""
    answer = requests.post(f"{stack.api_url}/v1/jobs", timeout=60, **request)
    assert answer.status_code == 202, answer.text
    return stack.wait_for(answer.json()["id"])


def test_prefer_wait_answers_the_finished_job_in_the_same_response(tryon_job):
    assert tryon_job["status"] == "succeeded" and tryon_job["outputs"] == ["keypoints", "masks", "garments", "tryon"]
    assert tryon_job["deduplicated"] is False


def test_the_inpaint_masks_cover_the_suit_and_spare_the_face_and_the_hands(tryon_job):
    outputs = tryon_job["result"]["outputs"]
    labels = astronaut_parse()
    body = json.loads(fetch(outputs["keypoints.json"]))["people"]
    assert [person["person_id"] for person in body] == [[1]]  # her body, found by the real pose model
    points = np.asarray(body[0]["pose_keypoints_2d"]).reshape(25, 3)
    # her shoulders where the photo has them (the arms below, holding the helmet, the model
    # places less surely, and may deem hidden: then they are absent, 0, 0, 0)
    assert np.abs(points[[2, 5], :2] - [R_SHOULDER, L_SHOULDER]).max() < 40 and (points[2:8, 2] >= 0.2).all()
    assert all(point[2] >= 0.2 or not point.any() for point in points)  # a hidden point is absent

    # The recipe decides at 384x512 (here 0.75 of the photo's scale) and its last step fills
    # the mask's simplified outline, which may take a pixel's rim of what it protects:
    # faces and hands are checked from 4 photo pixels inside their edges.
    inside = np.ones((9, 9), np.uint8)
    face = cv2.erode((labels == FACE).astype(np.uint8), inside) > 0
    hands = cv2.erode(((labels == LEFT_ARM) | (labels == RIGHT_ARM)).astype(np.uint8), inside) > 0
    for name in ("inpaint_mask_upper.png", "inpaint_mask_upper_hd.png", "inpaint_mask_dresses.png"):
        mask = picture(fetch(outputs[f"tryon/photo/{name}"]))
        assert mask.shape == labels.shape and set(np.unique(mask)) <= {0, 255}, name
        assert (mask[labels == UPPER] == 255).all(), f"{name} leaves part of the suit"
        assert (mask[face] == 0).all(), f"{name} covers the face"
        assert (mask[hands] == 0).all(), f"{name} covers a hand"
    lower = picture(fetch(outputs["tryon/photo/inpaint_mask_lower.png"]))
    assert (lower[labels == UPPER] == 0).all()  # a lower-body mask protects the upper clothes

    gray = picture(fetch(outputs["tryon/photo/inpaint_gray_upper.jpg"]))
    photo = np.asarray(Image.open(ASTRONAUT).convert("RGB")).astype(int)
    covered = picture(fetch(outputs["tryon/photo/inpaint_mask_upper.png"])) == 255
    assert np.abs(gray[covered].astype(int) - 127).mean() < 4  # gray where masked (JPEG)
    assert np.abs(gray[labels == FACE].astype(int) - photo[labels == FACE]).mean() < 4  # the photo elsewhere


def test_the_parse_agnostic_map_keeps_her_face_and_removes_her_suit(tryon_job):
    outputs = tryon_job["result"]["outputs"]
    agnostic = Image.open(io.BytesIO(fetch(outputs["tryon/photo/parse_agnostic.png"])))
    assert agnostic.mode == "P"  # an index PNG: values are CIHP ids
    values = np.asarray(agnostic)
    labels = astronaut_parse()
    assert (values[labels == FACE] == FACE).all() and (values[labels == HAIR] == HAIR).all()
    assert not np.isin(values, [UPPER, TORSO_SKIN]).any()
    framed = Image.open(io.BytesIO(fetch(outputs["tryon/768x1024/parse_agnostic.png"])))
    assert framed.size == (768, 1024)
    sizes = tryon_job["result"]["summary"]["tryon"]["sizes"]
    assert sizes["768x1024"]["pad"] == [0, 128, 0, 128] and sizes["768x1024"]["scale"] == 1.5
    # the padding is background; her face lands where the letterbox puts it
    framed_values = np.asarray(framed)
    assert (framed_values[:128] == 0).all() and (framed_values[-128:] == 0).all()
    assert framed_values[128 + int(128 * 1.5), int(225 * 1.5)] == FACE


def test_garments_have_their_cutout_and_colours_and_every_mask_is_its_class(tryon_job):
    outputs, summary = tryon_job["result"]["outputs"], tryon_job["result"]["summary"]
    labels = astronaut_parse()
    garments = summary["people"][0]["garments"]
    assert [garment["name"] for garment in garments] == ["UpperClothes"]
    suit = garments[0]
    cutout = picture(fetch(outputs[suit["cutout"]]))
    x, y, w, h = suit["bbox"]
    assert cutout.shape == (h, w, 4) and np.array_equal(cutout[..., 3] == 255, labels[y:y + h, x:x + w] == UPPER)
    assert suit["colors"] and abs(sum(color["share"] for color in suit["colors"]) - 1) < 0.01
    assert np.array_equal(picture(fetch(outputs["cloth_mask.png"])) == 255, labels == UPPER)
    for class_id in set(np.unique(labels)) - {0}:
        mask = picture(fetch(outputs[f"masks/{class_slug(CIHP_CLASSES[class_id])}.png"]))
        assert np.array_equal(mask == 255, labels == class_id)


def test_the_demos_routes_answer_as_the_demo_did(stack):
    photo = ASTRONAUT.read_bytes()
    colored = requests.post(f"{stack.api_url}/api/parse", files={"file": ("a.jpg", photo)}, timeout=60)
    assert colored.status_code == 200 and colored.headers["Content-Type"] == "image/png"
    labels = astronaut_parse()
    assert np.array_equal(picture(colored.content), PALETTE[labels])

    answer = requests.post(f"{stack.api_url}/parse", files={"image": ("a.jpg", photo)}, timeout=60)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "success" and body["num_persons"] == 1
    assert np.array_equal(picture(base64.b64decode(body["colored_mask_base64"])), PALETTE[labels])
    assert [part["label"] for part in body["results"]] == [CIHP_CLASSES[c] for c in sorted(set(np.unique(labels)) - {0})]
    for part in body["results"]:
        mask = picture(base64.b64decode(part["mask_base64"]))
        assert np.array_equal(mask == 255, labels == CIHP_CLASSES.index(part["label"])) and 0 < part["confidence"] <= 1
    job = requests.get(f"{stack.api_url}/v1/jobs/{body['job_id']}", timeout=10).json()
    assert job["status"] == "succeeded" and job["outputs"] == ["masks"]


def test_person_2s_pack_is_made_of_person_2_not_of_the_largest(stack):
    scene = TWO_PEOPLE
    job = submitted(stack, files={"image": ("two.png", scene.photo)},
                    data={"outputs": "tryon", "person": "2", "keypoints": json.dumps(scene.keypoints())})
    assert job["status"] == "succeeded", job
    assert job["person"] == 2
    outputs, summary = job["result"]["outputs"], job["result"]["summary"]
    persons = picture(fetch(outputs["persons.png"]))
    assert np.array_equal(persons, scene.persons)  # numbered by area: the large one is 1, as drawn
    assert summary["tryon"]["person"] == 2 and summary["tryon"]["omitted"] == {}
    found = json.loads(fetch(outputs["keypoints.json"]))["people"]
    body = {person["person_id"][0]: person["pose_keypoints_2d"] for person in found}
    assert body[2] == pytest.approx(scene.bodies[2], abs=0.01)  # the body submitted on person 2 is person 2's

    mine, other = persons == 2, persons == 1
    parse = picture(fetch(outputs["tryon/photo/parse_agnostic.png"]))
    assert not parse[~mine].any()  # only person 2's labels, the others background
    assert (parse[mine & (scene.labels == FACE)] == FACE).all() and not (parse == UPPER).any()
    # The masks are decided at 384x512 (0.6 of this photo's scale): the top is checked from 4 px
    # inside its edges, where it meets the pants an upper-body mask protects (docs/tryon.md).
    top = cv2.erode((mine & (scene.labels == UPPER)).astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    for name in ("inpaint_mask_upper.png", "inpaint_mask_upper_hd.png", "inpaint_mask_dresses.png"):
        mask = picture(fetch(outputs[f"tryon/photo/{name}"]))
        assert (mask[top] == 255).all(), f"{name} leaves part of person 2's top"
        assert not mask[:, :330].any(), f"{name} reaches person 1"  # person 1 ends at x = 260
    for name in ("agnostic_vitonhd.jpg", "agnostic_hrviton.jpg"):
        agnostic = picture(fetch(outputs[f"tryon/photo/{name}"])).astype(int)
        photo = np.asarray(Image.open(io.BytesIO(scene.photo)).convert("RGB")).astype(int)
        assert np.abs(agnostic[other] - photo[other]).mean() < 4, f"{name} grays person 1"  # JPEG only
        assert np.abs(agnostic[mine & (scene.labels == UPPER)] - 128).mean() < 4, f"{name} keeps person 2's top"


def test_a_try_on_pack_for_a_person_the_photo_lacks_ends_the_job_with_its_code(stack):
    job = submitted(stack, files={"image": ("a.jpg", ASTRONAUT.read_bytes())}, data={"outputs": "tryon", "person": "2"})
    assert job["status"] == "failed", job
    assert job["error"]["code"] == "person_not_found" and "has 1" in job["error"]["message"]


@pytest.mark.parametrize("fields, code", [
    ({"outputs": "tryon,poses"}, "unknown_output"),
    ({"outputs": "tryon", "keypoints": '{"people": [{"pose_keypoints_2d": [1, 2]}]}'}, "invalid_keypoints"),
    ({"outputs": "tryon", "keypoints": json.dumps({"people": [{"pose_keypoints_2d": [900, 10, 0.9] * 18}]})},
     "invalid_keypoints"),  # outside the 512x512 photo
    ({"outputs": "tryon", "keypoints": json.dumps({"people": [{"pose_keypoints_2d": [10, 10, 1.5] * 25}]})},
     "invalid_keypoints"),  # a confidence above 1
    ({"outputs": "tryon", "keypoints": "not json"}, "invalid_keypoints"),
    ({"outputs": "tryon", "keypoints": "[" * 50000}, "invalid_keypoints"),  # deeper than the JSON parser goes
    ({"outputs": "tryon", "keypoints": '{"people": [{"pose_keypoints_2d": [1' + "0" * 400 + ', 1, 1]}]}'},
     "invalid_keypoints"),  # a number too large for a float
    ({"outputs": "tryon", "keypoints": openpose([10, 10, 0.9] * 17 + [-1, 10, 0.9])}, "invalid_keypoints"),  # x < 0
    ({"outputs": "tryon", "keypoints": openpose([10, -0.5, 0.9] * 25)}, "invalid_keypoints"),  # y < 0
    ({"outputs": "tryon", "keypoints": openpose([10, 10, 0.9] * 18, [10, 10, 0.9] * 25)},
     "invalid_keypoints"),  # COCO-18 and BODY_25 in one document
    ({"outputs": "tryon", "keypoints": openpose()}, "invalid_keypoints"),  # nobody
    ({"outputs": "tryon", "keypoints": openpose(*[[10, 10, 0.9] * 18] * (MAX_KEYPOINT_PEOPLE + 1))},
     "invalid_keypoints"),  # more people than the contract's 64
    ({"outputs": "masks", "keypoints": openpose([10, 10, 0.9] * 18)}, "invalid_keypoints"),  # asked of no output
    ({"keypoints": openpose([10, 10, 0.9] * 18)}, "invalid_keypoints"),  # no outputs asked at all
    ({"outputs": "masks", "person": "1"}, "bad_request"),  # person without the pack it chooses
    ({"outputs": "tryon", "person": "0"}, "bad_request"),
])
def test_bad_output_requests_are_refused_with_their_code(stack, fields, code):
    answer = requests.post(f"{stack.api_url}/v1/jobs", files={"image": ("a.jpg", ASTRONAUT.read_bytes())},
                           data=fields, timeout=30)
    assert answer.status_code == 400 and answer.json()["error"]["code"] == code, answer.text


@pytest.mark.parametrize("points, accepted", [
    ([512, 512, 0.9] * 18, True),  # on the photo's right and bottom edges: x == width, y == height
    ([0, 0, 0.9] + [0, 300, 0.9] * 17, True),  # on its left and top edges
    ([512.01, 10, 0.9] * 18, False),  # past the right edge
    ([10, 512.01, 0.9] * 18, False),  # past the bottom edge
])
def test_submitted_points_may_lie_anywhere_on_the_photo_edges_included(stack, points, accepted):
    # OpenPose's coordinates are positions, not pixel indices: the 512x512 photo spans
    # [0, 512] x [0, 512] (docs/outputs.md), 0 and 512 alike.
    request = {"files": {"image": ("a.jpg", ASTRONAUT.read_bytes())},
               "data": {"outputs": "keypoints", "keypoints": openpose(points)}}
    if not accepted:
        answer = requests.post(f"{stack.api_url}/v1/jobs", timeout=60, **request)
        assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid_keypoints", answer.text
        assert "512x512" in answer.json()["error"]["message"]
        return
    job = submitted(stack, **request)
    assert job["status"] == "succeeded", job  # and the worker used them
    assert job["result"]["summary"]["keypoints"]["source"] == "submitted"


def test_as_many_people_as_the_contract_allows_are_accepted(stack):
    many = [[10 + i, 300, 0.9] * 18 for i in range(MAX_KEYPOINT_PEOPLE)]
    job = submitted(stack, files={"image": ("a.jpg", ASTRONAUT.read_bytes())},
                    data={"outputs": "keypoints", "keypoints": openpose(*many)})
    assert job["status"] == "succeeded", job
    summary = job["result"]["summary"]["keypoints"]  # every body sent is either on a person or counted
    assert summary["source"] == "submitted"
    assert sum(person["found"] for person in summary["people"]) + summary["unmatched"] == MAX_KEYPOINT_PEOPLE


@pytest.fixture(scope="module")
def stored_photo(stack) -> str:
    """The photo as an object in the service's bucket, for JSON submissions by reference."""
    from common.storage import S3Store

    S3Store(stack.env["S3_ENDPOINT"], S3_KEYS["access_key"], S3_KEYS["secret_key"], stack.env["S3_BUCKET"]).put(
        "photos/astronaut.jpg", ASTRONAUT.read_bytes(), "image/jpeg")
    return f"s3://{stack.env['S3_BUCKET']}/photos/astronaut.jpg"


@pytest.mark.parametrize("body", [
    {"outputs": ["tryon"], "keypoints": {"people": [{"pose_keypoints_2d": [1, 2]}]}},  # wrong length
    {"outputs": ["tryon"], "keypoints": {"people": [{"pose_keypoints_2d": [-3, 2, 0.9] * 18}]}},  # negative
    {"outputs": ["tryon"], "keypoints": {"people": []}},  # nobody
    {"outputs": ["tryon"], "keypoints": {"persons": [{"pose_keypoints_2d": [3, 2, 0.9] * 18}]}},  # not OpenPose's key
    {"outputs": ["tryon"], "keypoints": [{"pose_keypoints_2d": [3, 2, 0.9] * 18}]},  # a list, not the document
    {"outputs": ["tryon"], "keypoints": {"people": [{"pose_keypoints_2d": [900, 2, 0.9] * 18}]}},  # off the photo
    {"outputs": ["masks"], "keypoints": {"people": [{"pose_keypoints_2d": [3, 2, 0.9] * 18}]}},  # asked of nothing
], ids=["length", "negative", "nobody", "key", "list", "outside", "unused"])
def test_keypoints_as_an_object_in_a_json_body_are_checked_like_the_form_text(stack, stored_photo, body):
    answer = requests.post(f"{stack.api_url}/v1/jobs", json={"source": stored_photo, **body}, timeout=30)
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid_keypoints", answer.text


def test_keypoints_as_an_object_in_a_json_body_are_used(stack, stored_photo):
    # The contract's keypoints field is OpenPose's document: an object in JSON, its text in a form.
    points = {"people": [{"pose_keypoints_2d": [300.0, 300.0, 0.9] * 18}]}
    job = submitted(stack, json={"source": stored_photo, "outputs": ["keypoints"], "keypoints": points})
    assert job["status"] == "succeeded", job
    assert job["result"]["summary"]["keypoints"]["source"] == "submitted"
    coco = json.loads(fetch(job["result"]["outputs"]["keypoints_coco18.json"]))["people"]
    assert [person["pose_keypoints_2d"] for person in coco] == [points["people"][0]["pose_keypoints_2d"]]


def test_keypoints_belong_to_one_photo_so_a_batch_refuses_them(stack):
    points = json.dumps({"people": [{"pose_keypoints_2d": [10, 10, 0.9] * 18}]})
    answer = requests.post(f"{stack.api_url}/v1/jobs/batch", files=[("image", ("a.jpg", ASTRONAUT.read_bytes()))],
                           data={"outputs": "tryon", "keypoints": points}, timeout=30)
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid_keypoints", answer.text


def test_a_job_not_done_in_time_is_answered_202_with_its_link_to_poll(idle):
    headers = {"Authorization": "Bearer alice-key-0123456789"}
    photo = ASTRONAUT.read_bytes()
    for path, field in (("/api/parse", "file"), ("/parse", "image")):
        answer = requests.post(f"{idle.api_url}{path}", files={field: ("a.jpg", photo)}, headers=headers, timeout=30)
        assert answer.status_code == 202, answer.text
        assert answer.headers["Location"] == f"/v1/jobs/{answer.json()['id']}"
        assert answer.json()["status"] == "queued"
    answer = requests.post(f"{idle.api_url}/v1/jobs", files={"image": ("b.jpg", photo + b"\0")}, headers={
        **headers, "Prefer": "respond-async, wait=5"}, timeout=30)
    assert answer.status_code == 202 and answer.headers["Preference-Applied"] == "wait=1"


def test_the_demos_routes_need_a_key_like_every_route(idle):
    for path, field in (("/api/parse", "file"), ("/parse", "image")):
        answer = requests.post(f"{idle.api_url}{path}", files={field: ("a.jpg", ASTRONAUT.read_bytes())}, timeout=30)
        assert answer.status_code == 401 and answer.json()["error"]["code"] == "unauthorized"
        missing = requests.post(f"{idle.api_url}{path}", data={"other": "x"}, timeout=30,
                                headers={"Authorization": "Bearer alice-key-0123456789"})
        assert missing.status_code == 400 and missing.json()["error"]["code"] == "missing_image"
        assert f"'{field}'" in missing.json()["error"]["message"]
