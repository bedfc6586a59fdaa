"""Label-set profiles: complete tables, palettes, the rendered outputs in each profile,
and the submission option (its own job per label set, a 400 for an unknown one)."""
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.labels import CIHP_CLASSES
from common.profiles import ATR, LIP, PROFILES, SIMPLE
from common.jobs import OutputOptions
from m2fp_contract.schema import LabelProfile, LabelsFormat
from tests.test_instances import parsing, person
from worker.outputs import render


@pytest.mark.parametrize("profile", PROFILES.values(), ids=lambda p: p.name.value)
def test_every_cihp_class_maps_and_nothing_is_invented(profile):
    assert len(profile.from_cihp) == len(CIHP_CLASSES)
    assert all(0 <= target < len(profile.classes) for target in profile.from_cihp)
    assert profile.from_cihp[0] == 0  # background stays background
    produced = {profile.classes[target] for target in profile.from_cihp}
    assert not produced & set(profile.never)  # what CIHP cannot express never appears
    assert produced | set(profile.never) == set(profile.classes)  # and every other class can
    for name in profile.notes:
        assert name in CIHP_CLASSES or name in profile.classes
    palette = profile.palette
    assert palette.shape == (len(profile.classes), 3) and len({tuple(c) for c in palette}) == len(profile.classes)


def test_the_tables_say_what_the_datasets_say():
    assert len(LIP.classes) == 20 and LIP.classes[10] == "Jumpsuits" and LIP.from_cihp[10] == 0
    assert [LIP.from_cihp[i] for i in range(20) if i != 10] == [i for i in range(20) if i != 10]
    assert len(ATR.classes) == 18 and set(ATR.never) == {"Belt", "Bag"}
    assert ATR.classes[ATR.from_cihp[CIHP_CLASSES.index("Left-shoe")]] == "Left-shoe"
    assert ATR.classes[ATR.from_cihp[CIHP_CLASSES.index("Coat")]] == "Upper-clothes"
    assert SIMPLE.classes == ("Background", "Head", "Upper-body", "Lower-body", "Arms", "Legs", "Shoes")
    assert {SIMPLE.classes[SIMPLE.from_cihp[CIHP_CLASSES.index(n)]] for n in ("Hat", "Hair", "Face")} == {"Head"}


def test_outputs_in_a_profile_and_labels_png_in_palette_mode():
    labels = np.array([[0, 10, 2], [13, 18, 19]], np.uint8)  # torso skin, hair, face, shoes
    found = parsing(labels, [person(0.9, np.full(labels.shape, 3.0))])
    rendered = render(np.zeros((2, 3, 3), np.uint8), found, {},
                      OutputOptions(labels=LabelProfile.LIP, labels_format=LabelsFormat.PALETTE))
    png = Image.open(io.BytesIO(rendered.files["labels.png"]))
    assert png.mode == "P"
    values = np.asarray(png)
    assert values.tolist() == [[0, 0, 2], [13, 18, 19]]  # torso skin is not LIP's Jumpsuits (10)
    colored = np.asarray(Image.open(io.BytesIO(rendered.files["colored.png"])))
    assert (np.asarray(png.convert("RGB")) == LIP.palette[values]).all() and (colored == LIP.palette[values]).all()
    persons = np.asarray(Image.open(io.BytesIO(rendered.files["persons.png"])))
    assert ((persons > 0) == (values > 0)).all()  # consistent in the profile too
    summary = json.loads(rendered.files["result.json"])
    assert summary["labels"] == "lip" and [c["name"] for c in summary["legend"]] == list(LIP.classes)
    assert {c["id"] for c in summary["classes"]} == {0, 2, 13, 18, 19}
    simple = json.loads(render(np.zeros((2, 3, 3), np.uint8), found, {},
                               OutputOptions(labels=LabelProfile.SIMPLE)).files["result.json"])
    assert [(c["name"], c["pixel_fraction"]) for c in simple["classes"]] == [
        ("Background", round(1 / 6, 6)), ("Head", round(2 / 6, 6)), ("Upper-body", round(1 / 6, 6)),
        ("Shoes", round(2 / 6, 6))]
    assert simple["people"][0]["parts"] == [{"id": 1, "name": "Head", "pixel_fraction": 0.4},
                                            {"id": 2, "name": "Upper-body", "pixel_fraction": 0.2},
                                            {"id": 6, "name": "Shoes", "pixel_fraction": 0.4}]


def test_grayscale_stays_the_default():
    rendered = render(np.zeros((2, 3, 3), np.uint8), parsing(np.ones((2, 3), np.uint8), []), {})
    assert Image.open(io.BytesIO(rendered.files["labels.png"])).mode == "L"


@pytest.fixture()
def client(settings):
    from api.app import create_app

    return create_app(settings).test_client()


def test_a_label_set_is_its_own_job_and_an_unknown_one_is_a_400(client):
    from scripts.imagegen import photo_jpeg

    data = photo_jpeg(64, 48)

    def submit(**fields):
        return client.post("/v1/jobs", data={"image": (io.BytesIO(data), "a.jpg"), **fields},
                           content_type="multipart/form-data")

    default, atr, again = submit(), submit(labels="atr", labels_format="palette"), submit(labels="atr",
                                                                                         labels_format="palette")
    assert default.status_code == atr.status_code == 202 and again.status_code == 200
    assert default.json["id"] != atr.json["id"] == again.json["id"]
    assert (default.json["labels"], default.json["labels_format"]) == ("cihp", "grayscale")
    assert (atr.json["labels"], atr.json["labels_format"]) == ("atr", "palette")
    refused = submit(labels="pascal")
    assert refused.status_code == 400 and refused.json["error"]["code"] == "bad_request"
    assert "labels" in refused.json["error"]["message"]


def readme_tables() -> str:
    """The API page's mapping table and one line per profile, written from PROFILES: a
    starred cell is a CIHP class the profile has a note for."""
    others = [profile for profile in PROFILES.values() if profile.name is not LabelProfile.CIHP]
    lines = ["| CIHP (id) | " + " | ".join(f"`{p.name.value}` id" for p in others) + " |",
             "|" + "---|" * (len(others) + 1)]
    for cihp, name in enumerate(CIHP_CLASSES):
        cells = [f"{cihp} {name}"] + [f"{p.from_cihp[cihp]} {p.classes[p.from_cihp[cihp]]}"
                                      + (" *" if name in p.notes else "") for p in others]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for p in others:
        classes = ", ".join(f"{i} {c}" for i, c in enumerate(p.classes))
        notes = "; ".join(f"{name}: {why}" for name, why in p.notes.items())
        lines.append(f"- `{p.name.value}` ({len(p.classes)} classes: {classes}). "
                     f"Never produced: {', '.join(p.never) or 'none'}." + (f" * {notes}." if notes else ""))
    return "\n".join(lines) + "\n"


def test_the_docs_label_tables_match_the_code():
    page = (Path(__file__).resolve().parent.parent / "docs" / "api.md").read_text()
    tables = readme_tables()
    assert tables in page, "docs/api.md's label-set tables differ from common/profiles.py; they should read:\n" + tables
