"""The checks that persons.png, labels.png and result.json agree, for every test that runs
a real job through a real worker (whichever engine it runs)."""
import io
import json

import numpy as np
import pytest
from PIL import Image


def check_who_is_who(labels_png: bytes, persons_png: bytes, result_json: bytes) -> dict:
    """Every part pixel belongs to exactly one person of result.json, background is
    background in both maps, and each person's id, box, share and parts are those of its
    pixels. Returns the summary."""
    labels = np.asarray(Image.open(io.BytesIO(labels_png)))
    persons = np.asarray(Image.open(io.BytesIO(persons_png)))
    summary = json.loads(result_json)
    assert persons.shape == labels.shape and persons.dtype == np.uint8
    assert ((persons > 0) == (labels > 0)).all()
    people = summary["people"]
    assert summary["no_person_detected"] is False and summary["people_truncated"] is False
    assert 1 <= len(people) <= summary["persons"]
    assert [p["id"] for p in people] == list(range(1, len(people) + 1)) == sorted(set(np.unique(persons)) - {0})
    for person in people:
        mine = persons == person["id"]
        ys, xs = np.nonzero(mine)
        assert person["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert person["pixel_fraction"] == pytest.approx(mine.mean(), abs=1e-6)
        assert {part["id"] for part in person["parts"]} == set(np.unique(labels[mine]).tolist())
    assert [p["pixel_fraction"] for p in people] == sorted((p["pixel_fraction"] for p in people), reverse=True)
    return summary
