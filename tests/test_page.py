"""The web page at ``/``, in a real headless Chromium (Playwright) against the real
stack: gunicorn API, a Celery worker on the tiny synthetic model, Redis, the local store.

The browser is Debian's chromium at /usr/bin/chromium (``make test`` installs it with
apt when it is absent), else the one ``python -m playwright install chromium``
downloads. Chromium logs each 4xx/5xx answer to a fetch, and each refused connection, as
a console error "Failed to load resource"; the tests that provoke one expect exactly
those lines, and every test fails on any other console error or uncaught exception.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import redis
import requests
from PIL import Image

from scripts.imagegen import photo_jpeg
from scripts.stack import Stack

from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
# The flags a closed network needs: without the background ones Chromium keeps dialling Google.
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
JOB_TIMEOUT_MS = 180_000  # a job on the tiny model, on a loaded CI machine
KEY = "page-test-key"
PHOTO = (320, 240)
# A real photo of a person (tests/data/README.md): the pose model finds a body on it.
ASTRONAUT = Path(__file__).parent / "data" / "astronaut.jpg"
# OpenPose BODY_25's limbs, as the page is to draw them.
BODY_25_LIMBS = [(1, 8), (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (8, 9), (9, 10), (10, 11), (8, 12), (12, 13),
                 (13, 14), (1, 0), (0, 15), (15, 17), (0, 16), (16, 18), (14, 19), (19, 20), (14, 21), (11, 22),
                 (22, 23), (11, 24)]
SKELETON_DOT = (0xff, 0x2e, 0x93)  # the fill of a keypoint's dot (style.css)
expect.set_options(timeout=15_000)  # each step of the page, on a loaded machine


# ---- the browser and the stack ----------------------------------------------------------

@pytest.fixture(scope="module")
def browser() -> Browser:
    with sync_playwright() as playwright:
        if CHROMIUM.exists():
            launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        elif Path(playwright.chromium.executable_path).exists():  # python -m playwright install chromium
            launched = playwright.chromium.launch(args=CHROMIUM_ARGS)
        else:
            pytest.fail(f"no Chromium for the page test: {CHROMIUM} is missing. Fix: as root "
                        "`apt-get update && apt-get install -y chromium` (Debian; `make test` does this), or "
                        "`python -m playwright install chromium` on a machine with internet")
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def page_env(redis_server, tiny_model, tmp_path_factory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("page")
    env = {"REDIS_URL": redis_server.url.rsplit("/", 1)[0] + "/11", "M2FP_MODEL": str(tiny_model),
           "INFERENCE_MAX_SIDE": "320", "TORCH_THREADS": "1", "LOCAL_STORE_DIR": str(base / "store")}
    redis.Redis.from_url(env["REDIS_URL"]).flushdb()
    return env


@pytest.fixture(scope="module")
def stack(page_env, tmp_path_factory):
    """The API with no worker yet: the first test's job waits in the queue."""
    stack = Stack(env=page_env, log_dir=tmp_path_factory.mktemp("page-logs")).start_api()
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def worker(stack) -> Stack:
    """The stack's worker, started once; it serves every API of this module (same Redis)."""
    stack.start_worker("page")
    return stack


@pytest.fixture(scope="module")
def keyed_api(page_env, tmp_path_factory):
    """A second API on the same Redis and store, with keys and one submission a minute."""
    stack = Stack(env={**page_env, "API_KEYS": f"alice:{KEY}", "SUBMIT_RATE_PER_MINUTE": "1"},
                  log_dir=tmp_path_factory.mktemp("keyed-logs")).start_api()
    yield stack
    stack.stop()


@dataclass
class Tab:
    """One browser page of its own context, with what its console said."""

    page: Page
    base: str
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def open(self) -> "Tab":
        self.page.goto(self.base + "/")
        expect(self.page.locator("#drop")).to_be_visible()
        return self

    def upload(self, name: str, data: bytes, mime: str = "image/jpeg") -> Locator:
        self.page.set_input_files("#file", files=[{"name": name, "mimeType": mime, "buffer": data}])
        return self.card(name)

    def card(self, name: str) -> Locator:
        return self.page.locator(".card").filter(has=self.page.get_by_text(name, exact=True))

    def canvas(self, card: Locator) -> np.ndarray:
        """The explorer canvas as RGBA pixels (a lossless PNG of it)."""
        url = card.locator("canvas.explorer").evaluate("c => c.toDataURL('image/png')")
        return np.array(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGBA"))

    def fetch_failures(self, status: str) -> list[str]:
        """Console errors of fetches answered with ``status`` (or refused, ``net::...``)."""
        return [e for e in self.errors if e.startswith("Failed to load resource") and status in e]


@pytest.fixture()
def tabs(browser):
    contexts = []

    def new_tab(base: str, **context_options) -> Tab:
        context = browser.new_context(**context_options)
        contexts.append(context)
        tab = Tab(context.new_page(), base)
        tab.page.on("console", lambda message: tab.errors.append(message.text) if message.type == "error" else None)
        tab.page.on("pageerror", lambda error: tab.errors.append(f"uncaught: {error}"))
        tab.page.on("request", lambda request: tab.requests.append(request.url))
        return tab

    yield new_tab
    for context in contexts:
        context.close()


def job_json(api_url: str, job_id: str, key: str = "") -> dict:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = requests.get(f"{api_url}/v1/jobs/{job_id}", headers=headers, timeout=10)
    response.raise_for_status()
    return response.json()


def output(api_url: str, job_id: str, name: str) -> bytes:
    response = requests.get(f"{api_url}/v1/jobs/{job_id}/outputs/{name}", timeout=10)
    response.raise_for_status()
    return response.content


def wait_succeeded(card: Locator) -> None:
    expect(card).to_have_attribute("data-status", re.compile("succeeded|failed"), timeout=JOB_TIMEOUT_MS)
    expect(card).to_have_attribute("data-status", "succeeded", timeout=1)  # else the detail names the failure
    expect(card).to_have_attribute("data-ready", "true", timeout=60_000)


def images_render(card: Locator) -> list[int]:
    """naturalWidth of the photo, the colored map and the overlay, once all three loaded."""
    images = card.locator(".views img")
    expect(images).to_have_count(3)
    card.page.wait_for_function("els => els.every(i => i.complete && i.naturalWidth > 0)",
                                arg=images.element_handles())
    return images.evaluate_all("els => els.map(i => i.naturalWidth)")


# ---- the tests -------------------------------------------------------------------------

def test_a_photo_is_queued_parsed_and_explored(stack, tabs, request):
    assert not stack.workers, "this test's job must wait in the queue: no worker may run before it"
    tab = tabs(stack.api_url).open()
    card = tab.upload("first.jpg", photo_jpeg(*PHOTO, seed=1))

    # No worker yet: the job waits, first in its queue.
    expect(card).to_have_attribute("data-status", "queued")
    expect(card.locator(".detail")).to_contain_text("position 1, 0 jobs ahead")
    request.getfixturevalue("worker")
    wait_succeeded(card)
    assert card.get_attribute("data-history").split() in (
        ["submitting", "queued", "running", "succeeded"], ["submitting", "queued", "succeeded"])
    assert images_render(card) == [PHOTO[0]] * 3

    job = job_json(stack.api_url, card.get_attribute("data-job-id"))
    result = job["result"]
    stored = requests.get(f"{stack.api_url}/v1/jobs/{job['id']}/outputs/result.json", timeout=10).json()
    # The legend: exactly the classes of result.json, with their colors and shares.
    legend = card.locator(".legend li")
    assert [int(i) for i in legend.evaluate_all("els => els.map(e => e.dataset.classId)")] == [
        c["id"] for c in stored["classes"]]
    expect(legend.locator(".class-name")).to_have_text([c["name"] for c in stored["classes"]])
    swatches = legend.locator(".swatch").evaluate_all("els => els.map(e => getComputedStyle(e).backgroundColor)")
    assert swatches == [f"rgb({r}, {g}, {b})" for r, g, b in (c["color"] for c in stored["classes"])]
    # A download link for every output.
    links = card.locator(".downloads a")
    assert sorted(links.evaluate_all("els => els.map(e => e.dataset.output)")) == sorted(result["outputs"])

    labels = np.array(Image.open(io.BytesIO(output(stack.api_url, job["id"], "labels.png"))))
    shown = tab.canvas(card)
    assert shown.shape[:2] == labels.shape and (shown[..., 3] == 255).all()

    # Unticking a class hides exactly its pixels (labels.png read without any color change).
    part = max((c for c in stored["classes"] if c["id"] > 0), key=lambda c: c["pixel_fraction"])
    card.locator(f".legend li[data-class-id='{part['id']}'] input").uncheck()
    hidden = tab.canvas(card)
    assert ((hidden[..., 3] == 0) == (labels == part["id"])).all()
    card.locator(f".legend li[data-class-id='{part['id']}'] input").check()

    # Picking a person keeps that person's pixels and dims everyone and everything else.
    people = result["summary"].get("people")
    assert people, f"the job names no people (persons.png and summary.people): {result['summary']}"
    persons = np.array(Image.open(io.BytesIO(output(stack.api_url, job["id"], "persons.png"))))
    assert persons.shape == labels.shape
    expect(card.locator(".people li")).to_have_count(len(people))
    before = tab.canvas(card)
    card.locator(".people li[data-person-id='1'] button").click()
    expect(card).to_have_attribute("data-highlight", "1")
    after = tab.canvas(card)
    x, y, w, h = people[0]["bbox"]
    band = np.zeros(labels.shape, bool)  # the bbox outline drawn around the person
    band[max(0, y - 4):y + h + 4, max(0, x - 4):x + w + 4] = True
    band[y + 4:y + h - 4, x + 4:x + w - 4] = False
    mine, others = (persons == 1) & ~band, (persons != 1) & ~band
    assert mine.any() and others.any()
    assert (after[mine] == before[mine]).all()
    dimmed = np.abs(after[others][:, :3].astype(int) - before[others][:, :3] * 0.3)
    assert dimmed.max() <= 1.5, "pixels outside the person are not dimmed"

    # Nothing came from anywhere but the service itself.
    assert [u for u in tab.requests if not u.startswith((stack.api_url + "/", "blob:", "data:"))] == []
    assert tab.errors == []


def test_a_file_that_is_not_an_image_shows_why_in_words(stack, tabs):
    tab = tabs(stack.api_url).open()
    card = tab.upload("notes.txt", b"these are notes, not a photo", mime="text/plain")
    expect(card).to_have_attribute("data-status", "failed")
    expect(card.locator(".detail")).to_have_text(
        "Failed: not a decodable image (JPEG, PNG, WebP, BMP, TIFF or GIF expected)")
    assert len(tab.fetch_failures("status of 422")) == 1 and len(tab.errors) == 1, tab.errors


def test_with_keys_the_page_asks_for_one_shows_a_busy_service_and_keeps_the_key(keyed_api, worker, tabs):
    tab = tabs(keyed_api.api_url).open()
    card = tab.upload("keyed.jpg", photo_jpeg(*PHOTO, seed=2))
    expect(card).to_have_attribute("data-status", "needs_key")
    expect(tab.page.locator("#banner")).to_have_text("This service needs an API key: enter it above.")

    tab.page.fill("#api-key", KEY)
    tab.page.click("#key-form button")
    expect(card).not_to_have_attribute("data-status", re.compile("needs_key|submitting"))
    # The refused submission went again with the key, and took this key's one submission a
    # minute: the next one waits as the service asks (429 with Retry-After).
    busy = tab.upload("second.jpg", photo_jpeg(*PHOTO, seed=3))
    expect(busy).to_have_attribute("data-status", "waiting")
    expect(busy.locator(".detail")).to_contain_text("The service is busy:")
    expect(tab.page.locator("#banner")).to_contain_text(re.compile(r"busy: .* Trying again in \d+ s\."))

    wait_succeeded(card)  # its outputs came with the key too
    assert images_render(card) == [PHOTO[0]] * 3
    assert job_json(keyed_api.api_url, card.get_attribute("data-job-id"), KEY)["status"] == "succeeded"
    tab.page.reload()
    expect(tab.page.locator("#api-key")).to_have_value(KEY)
    expect(tab.page.locator("#key-state")).to_have_text("key saved in this browser")
    assert len(tab.fetch_failures("status of 401")) == 1, tab.errors
    assert len(tab.fetch_failures("status of 429")) == 1, tab.errors
    assert len(tab.errors) == 2, tab.errors


def test_an_unreachable_service_is_shown_and_the_page_carries_on_when_it_is_back(page_env, worker, tabs,
                                                                                   tmp_path):
    api = Stack(env=page_env, log_dir=tmp_path).start_api()
    port = int(api.api_url.rsplit(":", 1)[1])
    try:
        tab = tabs(api.api_url).open()
        api.api.stop(20)
        card = tab.upload("offline.jpg", photo_jpeg(*PHOTO, seed=4))
        expect(card).to_have_attribute("data-status", "waiting")
        expect(card.locator(".detail")).to_contain_text("Cannot reach the service at")
        expect(tab.page.locator("#banner")).to_contain_text("Cannot reach the service at")
        api.start_api(port)
        wait_succeeded(card)
        expect(tab.page.locator("#banner")).to_be_hidden()
    finally:
        api.stop()
    refused = tab.fetch_failures("net::ERR_CONNECTION_REFUSED")
    assert refused and len(refused) == len(tab.errors), tab.errors


def test_a_phone_width_screen_shows_a_finished_job_without_sideways_scrolling(worker, tabs):
    tab = tabs(worker.api_url, viewport={"width": 360, "height": 740}, device_scale_factor=2).open()
    card = tab.upload("a-photo-with-a-rather-long-file-name-from-a-phone-camera.jpg",
                      photo_jpeg(*PHOTO, seed=5))
    wait_succeeded(card)
    assert tab.page.evaluate("document.documentElement.scrollWidth") <= 360
    box = card.locator("canvas.explorer").bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 360
    assert tab.errors == []


DROP = """([target, files]) => {
  // What a browser fires when files are dragged in from the desktop and dropped on `target`.
  const data = new DataTransfer();
  for (const [name, b64] of files) {
    data.items.add(new File([Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))], name, {type: "image/jpeg"}));
  }
  const element = document.querySelector(target);
  const fire = (type) => !element.dispatchEvent(new DragEvent(type, {dataTransfer: data, bubbles: true,
                                                                    cancelable: true}));
  return [fire("dragenter"), fire("dragover"), fire("drop")];  // true: the page took it from the browser
}"""

DRAG_ACROSS_THE_BOX = """() => {
  // Into the box, over its text (the box's own dragleave comes after the text's dragenter), then out.
  const data = new DataTransfer();
  data.items.add(new File(["x"], "x.jpg", {type: "image/jpeg"}));
  const drop = document.querySelector("#drop"), text = document.querySelector("#drop strong");
  const fire = (element, type) => element.dispatchEvent(new DragEvent(type, {dataTransfer: data, bubbles: true,
                                                                              cancelable: true}));
  const lit = () => drop.classList.contains("over");
  fire(drop, "dragenter");
  const entered = lit();
  fire(text, "dragenter");
  fire(drop, "dragleave");
  const overText = lit();
  fire(text, "dragleave");
  return [entered, overText, lit()];
}"""


def test_photos_dropped_anywhere_on_the_page_are_sent_and_can_be_pinned_on_the_canvas(worker, tabs):
    tab = tabs(worker.api_url).open()
    # The box stays lit while the pointer crosses its children, and goes dark once it left.
    assert tab.page.evaluate(DRAG_ACROSS_THE_BOX) == [True, True, False]

    # The multipart fields each submission sends (Chromium does not show Playwright a body with a file).
    tab.page.evaluate("""() => {
      const send = window.fetch;
      window.sentFormats = [];
      window.fetch = (url, options = {}) => {
        if (options.body instanceof FormData) window.sentFormats.push(options.body.get("labels_format"));
        return send(url, options);
      };
    }""")
    # Two photos dropped on the footer, outside the box: the page keeps them from the
    # browser (which would open the photo in place of the page) and sends both.
    files = [[f"dropped-{seed}.jpg", base64.b64encode(photo_jpeg(*PHOTO, seed=seed)).decode()] for seed in (6, 7)]
    assert tab.page.evaluate(DROP, ["footer", files]) == [True, True, True]
    expect(tab.page.locator("#drop")).not_to_have_class(re.compile(r"\bover\b"))
    cards = [tab.card(name) for name, _ in files]
    for card in cards:
        wait_succeeded(card)
    # Both asked for labels.png in grayscale, which the explorer reads ids from.
    assert tab.page.evaluate("window.sentFormats") == ["grayscale", "grayscale"]

    # Names a screen reader can use: the canvas is an image, headings go h1 > h2 > h3,
    # and each Cancel button says which photo it cancels.
    card = cards[0]
    canvas = card.locator("canvas.explorer")
    expect(canvas).to_have_attribute("role", "img")
    expect(canvas).to_have_attribute("aria-label", re.compile("color"))
    levels = tab.page.locator("h1, h2, h3, h4, h5, h6").evaluate_all("els => els.map(e => Number(e.tagName[1]))")
    assert levels[0] == 1 and all(b - a <= 1 for a, b in zip(levels, levels[1:])), levels
    expect(card.locator(".cancel")).to_have_attribute("aria-label", "Cancel dropped-6.jpg")

    # A click on a person on the canvas keeps them picked out while the pointer moves on.
    job_id = card.get_attribute("data-job-id")
    persons = np.array(Image.open(io.BytesIO(output(worker.api_url, job_id, "persons.png"))))
    box = canvas.bounding_box()

    def at(mask: np.ndarray) -> dict:
        """The middle of a pixel of ``mask`` whose neighbours are in it too, in canvas coordinates."""
        inner = mask.copy()
        inner[1:-1, 1:-1] &= mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
        inner[[0, -1], :] = inner[:, [0, -1]] = False
        ys, xs = np.nonzero(inner)
        assert len(ys), "no such pixel away from an edge"
        y, x = ys[len(ys) // 2], xs[len(xs) // 2]
        return {"x": (x + 0.5) * box["width"] / persons.shape[1], "y": (y + 0.5) * box["height"] / persons.shape[0]}

    canvas.click(position=at(persons == 1))
    expect(card).to_have_attribute("data-highlight", "1")
    expect(card.locator(".people li[data-person-id='1'] button")).to_have_attribute("aria-pressed", "true")
    expect(canvas).to_have_attribute("aria-label", re.compile("person 1 picked out"))
    elsewhere = at(persons != 1)
    canvas.hover(position=elsewhere)
    expect(card).to_have_attribute("data-highlight", "1")
    # A click off them lets go (or picks out whoever is there).
    canvas.click(position=elsewhere)
    expect(card.locator(".people li[data-person-id='1'] button")).to_have_attribute("aria-pressed", "false")
    assert tab.errors == []


def test_the_page_says_what_is_true_and_announces_a_problem_once(stack, tabs):
    tab = tabs(stack.api_url).open()
    note = "([summary, hasMap]) => peopleNote(summary, hasMap)"
    # Persons found, but none owns a part pixel (a photo without parts): not "nobody".
    assert tab.page.evaluate(note, [{"persons": 2, "people": [], "no_person_detected": False}, True]) == (
        "2 persons detected, but none covers a body part found in the photo: nobody to outline.")
    assert tab.page.evaluate(note, [{"persons": 0, "people": [], "no_person_detected": True}, True]) == (
        "No person detected.")
    assert tab.page.evaluate(note, [{"persons": None, "people": None, "no_person_detected": None}, False]) == (
        "This model does not tell persons apart.")
    assert tab.page.evaluate(note, [{"persons": 1, "people": [{"id": 1}], "no_person_detected": False}, True]) == ""
    # A queued job with an ETA.
    assert tab.page.evaluate("job => describe(job)", {"status": "queued", "queue": {
        "position": 2, "ahead": 1, "eta_seconds": 3.2}}) == "Waiting in the queue: position 2, 1 job ahead, about 4 s."

    # The banner is an alert: a retry that has nothing new to say leaves it as it is.
    writes = tab.page.evaluate("""() => {
      const observer = new MutationObserver(() => {});
      observer.observe(document.querySelector("#banner"), {childList: true, attributes: true, characterData: true,
                                                           subtree: true});
      const error = new ApiError("busy", "The service is busy: too many jobs.", {status: 503, retryAfter: 5});
      const counts = [];
      for (const step of [() => showProblem(error, 5), () => showProblem(error, 5), () => showProblem(error, 8),
                          clearProblem, clearProblem]) {
        step();
        counts.push(observer.takeRecords().length > 0);
      }
      observer.disconnect();
      return counts;
    }""")
    assert writes == [True, False, True, True, False]
    expect(tab.page.locator("#banner")).to_be_hidden()
    assert tab.errors == []


def slug(name: str) -> str:
    """common.labels.class_slug, as an independent statement of the masks' file names."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def rgb(hex_color: str) -> str:
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"


def test_the_extra_outputs_are_asked_for_and_shown_skeleton_tryon_pack_garments_and_masks(worker, tabs):
    tab = tabs(worker.api_url).open()
    tab.page.evaluate("""() => {
      const send = window.fetch;
      window.sentChoices = [];
      window.fetch = (url, options = {}) => {
        if (options.body instanceof FormData) window.sentChoices.push([options.body.get("outputs"),
                                                                       options.body.get("person")]);
        return send(url, options);
      };
    }""")
    # The choices, by their labels; the person is asked for only with the try-on pack.
    person = tab.page.get_by_label("for person")
    expect(person).to_be_disabled()
    for label in ("body keypoints", "a mask per class", "garments and their colours", "try-on pack"):
        tab.page.get_by_label(label, exact=True).check()
    expect(person).to_be_enabled()
    person.fill("1")
    card = tab.upload("astronaut.jpg", ASTRONAUT.read_bytes())
    expect(card.locator(".asked")).to_have_text(
        "Also asked for: body keypoints, masks, garments, try-on pack for person 1.")
    wait_succeeded(card)
    assert tab.page.evaluate("window.sentChoices") == [["keypoints,masks,garments,tryon", "1"]]
    job = job_json(worker.api_url, card.get_attribute("data-job-id"))
    assert sorted(job["outputs"]) == ["garments", "keypoints", "masks", "tryon"] and job["person"] == 1
    outputs, summary = job["result"]["outputs"], job["result"]["summary"]

    # The skeleton: a line for each limb both of whose points keypoints.json has (fetched
    # here on its own), a dot on each point, laid exactly over the explorer's canvas.
    document = json.loads(output(worker.api_url, job["id"], "keypoints.json"))
    limbs, dots = set(), set()
    for body in document["people"]:
        flat = body["pose_keypoints_2d"]
        points = [(flat[i], flat[i + 1]) if flat[i + 2] > 0 else None for i in range(0, len(flat), 3)]
        limbs |= {(body["person_id"][0], *points[a], *points[b]) for a, b in BODY_25_LIMBS if points[a] and points[b]}
        dots |= {(body["person_id"][0], *point) for point in points if point}
    assert limbs, f"the pose model found no body on the astronaut: {summary['keypoints']}"
    skeleton = card.locator("svg.skeleton")
    expect(skeleton).to_be_visible()
    expect(skeleton).to_have_attribute("viewBox", f"0 0 {summary['width']} {summary['height']}")
    drawn_limbs = skeleton.locator("line").evaluate_all(
        "els => els.map(e => [e.parentNode.dataset.personId, ...['x1', 'y1', 'x2', 'y2'].map(a => e.getAttribute(a))])")
    drawn_dots = skeleton.locator("circle").evaluate_all(
        "els => els.map(e => [e.parentNode.dataset.personId, e.getAttribute('cx'), e.getAttribute('cy')])")
    assert len(drawn_limbs) == len(limbs) and {(int(i), *map(float, xy)) for i, *xy in drawn_limbs} == limbs
    assert len(drawn_dots) == len(dots) and {(int(i), *map(float, xy)) for i, *xy in drawn_dots} == dots
    assert skeleton.bounding_box() == card.locator("canvas.explorer").bounding_box()
    # On the screen, each dot is there in its color, at its point of the photo.
    stage = card.locator(".stage")
    box = stage.bounding_box()

    def pixels_at_dots() -> list[tuple[int, ...]]:
        shot = np.array(Image.open(io.BytesIO(stage.screenshot())).convert("RGB"))
        scale_x, scale_y = shot.shape[1] / summary["width"], shot.shape[0] / summary["height"]
        assert abs(shot.shape[1] - box["width"]) <= 1  # one screen pixel per CSS pixel
        return [tuple(shot[int(y * scale_y), int(x * scale_x)]) for _, x, y in dots]

    assert all(np.abs(np.array(pixel) - SKELETON_DOT).max() <= 8 for pixel in pixels_at_dots())
    expect(card.locator(".keypoints-note")).to_have_text(re.compile(r"^Skeleton of 1 body from the pose model"))
    card.get_by_label("Show skeleton").uncheck()
    expect(skeleton).to_be_hidden()
    assert not any(np.abs(np.array(pixel) - SKELETON_DOT).max() <= 8 for pixel in pixels_at_dots())
    card.get_by_label("Show skeleton").check()
    expect(skeleton).to_be_visible()

    # The try-on pack: what the job really made for person 1 on this parse (a body was
    # found, so the pack is there; no hip, so without its agnostic images, as the note
    # says), every file a thumbnail linking to it, by size.
    tryon = summary["tryon"]
    assert tryon["person"] == 1 and tryon["absent_reason"] is None and tryon["files"], tryon
    assert {name.split("/")[-1] for name in tryon["omitted"]} == {"agnostic_vitonhd.jpg", "agnostic_hrviton.jpg"}
    section = card.locator(".tryon")
    expect(section.locator("h3")).to_have_text("Try-on pack for person 1")
    expect(section.locator(".tryon-note")).to_have_text(
        re.compile(r"^Left out: agnostic_vitonhd\.jpg, agnostic_hrviton\.jpg\. the .*hips? (was|were) not found"))
    for size, width in (("photo", summary["width"]), ("768x1024", 768)):
        links = section.locator(f".tryon-size[data-size='{size}'] a")
        assert sorted(links.evaluate_all("els => els.map(e => e.dataset.output)")) == sorted(
            name for name in tryon["files"] if name.split("/")[1] == size)
        thumbs = links.locator("img")
        tab.page.wait_for_function("els => els.every(i => i.complete && i.naturalWidth > 0)",
                                   arg=thumbs.element_handles())
        assert set(thumbs.evaluate_all("els => els.map(i => i.naturalWidth)")) == {width}

    # Garments: in each person's entry, with a swatch of each dominant colour and its name.
    people = summary["people"]
    assert any(person["garments"] for person in people), people
    for entry in people:
        items = card.locator(f".people > li[data-person-id='{entry['id']}'] .garments > li")
        expect(items).to_have_count(len(entry["garments"]))
        for item, garment in zip(items.all(), entry["garments"]):
            expect(item.locator(".garment-name")).to_have_text(garment["name"])
            swatches = item.locator(".color-swatch")
            assert swatches.evaluate_all("els => els.map(e => getComputedStyle(e).backgroundColor)") == [
                rgb(color["hex"]) for color in garment["colors"]]
            labels = swatches.evaluate_all("els => els.map(e => [e.getAttribute('role'), e.getAttribute('aria-label'), e.title])")
            for (role, label, title), color in zip(labels, garment["colors"]):
                assert role == "img" and label == title
                assert re.fullmatch(rf"{color['name']}, (< )?[\d.]+ % of the {garment['name'].lower()}", label), label
            expect(item.locator(".color")).to_have_text([color["name"] for color in garment["colors"]])
            expect(item.locator("a")).to_have_attribute("data-output", garment["cutout"])

    # The masks, named by their classes, in the downloads.
    masks = sorted(name for name in outputs if name.startswith("masks/"))
    assert masks
    mask_links = card.locator(".downloads .masks a")
    assert sorted(mask_links.evaluate_all("els => els.map(e => e.dataset.output)")) == masks
    names = {f"masks/{slug(c['name'])}.png": c["name"] for c in summary["classes"]}
    assert sorted(mask_links.all_inner_texts()) == sorted(names[name] for name in masks)

    # Every output is offered once, and each link holds that output's bytes.
    offered = card.locator("a[data-output]").evaluate_all("""async els => Promise.all(els.map(async e => {
      const digest = await crypto.subtle.digest("SHA-256", await (await fetch(e.href)).arrayBuffer());
      return [e.dataset.output, [...new Uint8Array(digest)].map(b => b.toString(16).padStart(2, "0")).join("")];
    }))""")
    assert sorted(name for name, _ in offered) == sorted(outputs)
    for name, digest in offered:
        assert digest == hashlib.sha256(output(worker.api_url, job["id"], name)).hexdigest(), name

    levels = tab.page.locator("h1, h2, h3, h4, h5, h6").evaluate_all("els => els.map(e => Number(e.tagName[1]))")
    assert levels[0] == 1 and all(b - a <= 1 for a, b in zip(levels, levels[1:])), levels
    assert [u for u in tab.requests if not u.startswith((worker.api_url + "/", "blob:", "data:"))] == []
    assert tab.errors == []


def test_the_page_says_why_keypoints_or_the_tryon_pack_are_missing(stack, tabs):
    tab = tabs(stack.api_url).open()
    note = "([about, hasFile, bodies]) => keypointsNote(about, hasFile, bodies)"
    model = {"engine": "mediapipe", "model": "BlazePose pose_landmark_full", "version": "0.10.14"}
    assert tab.page.evaluate(note, [{"source": "model", "model": model, "people": [{"id": 1, "found": True},
                                     {"id": 2, "found": False}], "unmatched": 0,
                                     "reason": "no body found for person 2"}, True, 1]) == (
        "Skeleton of 1 body from the pose model (mediapipe BlazePose pose_landmark_full 0.10.14). "
        "Missing: no body found for person 2.")
    assert tab.page.evaluate(note, [{"source": "model", "model": model, "people": [], "unmatched": 0,
                                     "reason": "nobody was found in the photo"}, True, 0]) == (
        "No skeleton to draw from the pose model (mediapipe BlazePose pose_landmark_full 0.10.14). "
        "Missing: nobody was found in the photo.")
    assert tab.page.evaluate(note, [{"source": "submitted", "people": [{"id": 1, "found": True}], "unmatched": 2,
                                     "reason": None}, True, 3]) == (
        "Skeleton of 3 bodies from the keypoints sent with the photo. 2 submitted bodies fell on no person "
        "(drawn dashed).")
    assert tab.page.evaluate(note, [None, False, 0]) == ""

    # A try-on pack that was asked for and not made says why, in words, and links nothing.
    shown = tab.page.evaluate("""reason => {
      const el = document.querySelector("#card-template").content.firstElementChild.cloneNode(true);
      buildTryon({el, urls: {}, job: {id: "x", result: {summary: {tryon: {
        person: 2, files: [], sizes: null, absent_reason: reason}}}}});
      const section = el.querySelector(".tryon");
      return [section.hidden, section.querySelector("h3").textContent, section.querySelector(".tryon-note").textContent,
              section.querySelectorAll("a").length];
    }""", "no body keypoints for person 2: the recipes need its shoulders, elbows and wrists")
    assert shown == [False, "Try-on pack for person 2",
                     "Not made: no body keypoints for person 2: the recipes need its shoulders, elbows and wrists.", 0]

    # A pack made without some of its files names each once (not per size) with the reason.
    why = "the right hip was not found: the recipe draws the torso to both hips"
    left_out = tab.page.evaluate("""why => {
      const el = document.querySelector("#card-template").content.firstElementChild.cloneNode(true);
      const names = ["photo/agnostic_vitonhd.jpg", "photo/agnostic_hrviton.jpg", "768x1024/agnostic_vitonhd.jpg",
                     "768x1024/agnostic_hrviton.jpg"].map((name) => `tryon/${name}`);
      buildTryon({el, urls: {"tryon/photo/parse_agnostic.png": "data:,"}, job: {id: "x", result: {summary: {tryon: {
        person: 1, files: ["tryon/photo/parse_agnostic.png"], sizes: null, absent_reason: null,
        omitted: Object.fromEntries(names.map((name) => [name, why]))}}}}});
      const section = el.querySelector(".tryon");
      return [section.querySelector(".tryon-note").hidden, section.querySelector(".tryon-note").textContent,
              section.querySelectorAll("a").length];
    }""", why)
    assert left_out == [False, f"Left out: agnostic_vitonhd.jpg, agnostic_hrviton.jpg. {why}.", 1]
    assert tab.errors == []
