"""Who is who, from hand-made model outputs: overlapping persons, part pixels outside
every mask, numbering by area, more persons than an 8-bit map holds, boxes and shares;
and the rendered persons.png against labels.png and the summary."""
import io
import json
import logging

import numpy as np
from PIL import Image

from common.labels import CIHP_CLASSES
from worker.engine import Parsing, Person
from worker.instances import MAX_PERSONS, describe_people, person_map
from worker.outputs import render


def person(score: float, logits) -> Person:
    return Person(score=score, mask_logits=np.asarray(logits, np.float32))


def test_each_part_pixel_goes_to_the_person_whose_mask_is_strongest_there():
    labels = np.array([[0, 2, 2, 13],
                       [5, 5, 5, 13]], np.uint8)
    left = person(0.9, [[5, 5, 1, -3],
                        [5, 5, -1, -3]])
    right = person(0.8, [[-5, -5, 2, 4],
                         [-5, -5, -2, 4]])
    result = person_map(labels, [left, right])
    # Overlap at (0, 2): right's logit is higher; (1, 2) is outside both masks: the less negative wins.
    assert result.ids.tolist() == [[0, 1, 2, 2],
                                   [1, 1, 1, 2]]
    assert result.scores == [0.9, 0.8]


def test_persons_are_numbered_by_area_and_one_owning_no_part_pixel_is_left_out():
    labels = np.array([[1, 1, 1, 0]], np.uint8)
    small = person(0.95, [[9, -9, -9, -9]])  # best score, one pixel
    large = person(0.7, [[-9, 9, 9, -9]])  # two pixels
    nowhere = person(0.6, [[-9, -9, -9, 9]])  # only over background
    result = person_map(labels, [small, large, nowhere])
    assert result.ids.tolist() == [[2, 1, 1, 0]]
    assert result.scores == [0.7, 0.95]


def test_at_the_photo_size_persons_are_numbered_by_their_area_there():
    from common.images import resize_labels
    from worker.instances import PersonMap

    decided = PersonMap(np.array([[1, 1, 2, 2, 2, 0]], np.uint8), [0.9, 0.8])
    for width in (4, 7, 9, 11):  # nearest scaling gives the two persons uneven shares
        full = decided.at((width, 1))
        areas = np.bincount(full.ids.ravel(), minlength=3)[1:]
        assert list(areas) == sorted(areas, reverse=True)
        before = resize_labels(decided.ids, (width, 1))
        for pixel in range(width):  # each pixel keeps its person, under a new number
            if before[0, pixel]:
                assert full.scores[full.ids[0, pixel] - 1] == decided.scores[before[0, pixel] - 1]


def test_nobody_found_leaves_an_empty_map():
    result = person_map(np.ones((3, 4), np.uint8), [])
    assert result.ids.shape == (3, 4) and not result.ids.any() and result.scores == []


def crowd(width: int) -> list[Person]:
    """``width`` persons on a one-row photo: person i is strongest on pixel i; scores fall with i."""
    people = []
    for index in range(width):
        logits = np.full((1, width), -9.0)
        logits[0, index] = 9
        people.append(person(1 - index / 1000, logits))
    return people


def test_more_persons_than_an_8_bit_map_holds_are_cut_to_the_best_with_a_warning(caplog):
    width = MAX_PERSONS + 10
    with caplog.at_level(logging.WARNING):
        result = person_map(np.ones((1, width), np.uint8), crowd(width))
    assert f"{width} persons found; persons.png keeps the {MAX_PERSONS} best-scoring" in caplog.text
    assert len(result.scores) == MAX_PERSONS and result.ids.max() == MAX_PERSONS and result.ids.dtype == np.uint8
    assert result.scores[0] == 1.0


def test_people_have_boxes_shares_and_parts():
    ids = np.array([[0, 1, 1, 0, 0],
                    [0, 1, 1, 2, 0],
                    [0, 0, 1, 2, 2]], np.uint8)
    labels = np.array([[0, 2, 13, 0, 0],
                       [0, 5, 5, 2, 0],
                       [0, 0, 9, 5, 5]], np.uint8)
    people = describe_people(ids, labels, [0.9, 0.5], CIHP_CLASSES)
    assert people == [
        {"id": 1, "score": 0.9, "bbox": [1, 0, 2, 3], "pixel_fraction": round(5 / 15, 6),
         "parts": [{"id": 2, "name": "Hair", "pixel_fraction": 0.2}, {"id": 5, "name": "UpperClothes", "pixel_fraction": 0.4},
                   {"id": 9, "name": "Pants", "pixel_fraction": 0.2}, {"id": 13, "name": "Face", "pixel_fraction": 0.2}]},
        {"id": 2, "score": 0.5, "bbox": [3, 1, 2, 2], "pixel_fraction": 0.2,
         "parts": [{"id": 2, "name": "Hair", "pixel_fraction": round(1 / 3, 6)},
                   {"id": 5, "name": "UpperClothes", "pixel_fraction": round(2 / 3, 6)}]},
    ]


def parsing(labels: np.ndarray, persons) -> Parsing:
    semantic = np.zeros((20, *labels.shape), np.float32)
    for class_id in range(20):
        semantic[class_id][labels == class_id] = 1
    return Parsing(semantic=semantic, persons=persons, person_threshold=0.5, size=labels.shape[::-1])


def test_persons_png_is_consistent_with_labels_png_and_the_summary_at_the_photo_size():
    labels = np.zeros((4, 6), np.uint8)
    labels[1:3, 1:3], labels[1:4, 4:6] = 5, 13
    logits = np.where(np.arange(6) < 3, 5.0, -5.0)[None].repeat(4, 0)
    rendered = render(np.zeros((8, 12, 3), np.uint8), parsing(labels, [person(0.9, logits), person(0.6, -logits)]),
                      {})
    persons = np.asarray(Image.open(io.BytesIO(rendered.files["persons.png"])))
    full = np.asarray(Image.open(io.BytesIO(rendered.files["labels.png"])))
    assert persons.shape == full.shape == (8, 12)
    assert ((persons > 0) == (full > 0)).all() and set(np.unique(persons)) == {0, 1, 2}
    summary = json.loads(rendered.files["result.json"])
    assert (summary["persons"], summary["no_person_detected"], summary["person_score_threshold"]) == (2, False, 0.5)
    assert [p["id"] for p in summary["people"]] == [1, 2]
    assert summary["people"][0]["parts"] == [{"id": 13, "name": "Face", "pixel_fraction": 1.0}]  # the larger one


def test_the_count_is_the_models_and_people_lists_those_who_own_a_pixel():
    labels = np.zeros((2, 2), np.uint8)
    labels[0, 0] = 5
    summary = json.loads(render(np.zeros((2, 2, 3), np.uint8), parsing(labels, [
        person(0.9, [[5, -5], [-5, -5]]), person(0.7, [[-9, 5], [5, 5]])]), {}).files["result.json"])
    assert (summary["persons"], summary["no_person_detected"], len(summary["people"])) == (2, False, 1)


def test_a_photo_without_anybody_is_a_success_that_says_so():
    labels = np.zeros((4, 4), np.uint8)
    summary = json.loads(render(np.zeros((4, 4, 3), np.uint8), parsing(labels, []), {}).files["result.json"])
    assert (summary["persons"], summary["people"], summary["no_person_detected"]) == (0, [], True)


def test_parts_with_nobody_found_leave_persons_png_empty_and_say_so():
    # The exception to "a part pixel belongs to exactly one person": the model found parts
    # but no person above its threshold, so there is nobody to give them to.
    labels = np.zeros((4, 4), np.uint8)
    labels[1:3, 1:3] = 5
    rendered = render(np.zeros((4, 4, 3), np.uint8), parsing(labels, []), {})
    persons = np.asarray(Image.open(io.BytesIO(rendered.files["persons.png"])))
    full = np.asarray(Image.open(io.BytesIO(rendered.files["labels.png"])))
    assert (full > 0).any() and not persons.any()
    summary = json.loads(rendered.files["result.json"])
    assert {c["id"] for c in summary["classes"]} == {0, 5}
    assert (summary["persons"], summary["people"], summary["no_person_detected"]) == (0, [], True)
    assert summary["people_truncated"] is False


def test_more_persons_than_persons_png_holds_are_flagged_in_the_summary():
    width = MAX_PERSONS + 5
    many = crowd(width)
    summary = json.loads(render(np.zeros((1, width, 3), np.uint8), parsing(np.ones((1, width), np.uint8), many),
                                {}).files["result.json"])
    assert summary["people_truncated"] is True
    assert summary["persons"] == width and len(summary["people"]) == MAX_PERSONS
    assert max(p["score"] for p in summary["people"]) == 1.0  # the best-scoring are the ones kept
    few = json.loads(render(np.zeros((1, width, 3), np.uint8), parsing(np.ones((1, width), np.uint8), many[:3]),
                            {}).files["result.json"])
    assert few["people_truncated"] is False
