"""The HTTP contract: every request and response body of the API, as pydantic models.

One module, imported by the API (to validate requests, render responses and generate
the OpenAPI document) and by the Python client (to read responses), and by nothing
that needs the model: it depends on pydantic and the standard library only, so the
light client environment can install it without numpy, torch or Celery.
"""
from __future__ import annotations

import json
import math
import re
from enum import Enum
from typing import Any, ClassVar, Literal, Optional, Union
from urllib.parse import urlparse

from pydantic import (BaseModel, ConfigDict, Field, GetCoreSchemaHandler, GetJsonSchemaHandler,
                      field_validator, model_serializer, model_validator)
from pydantic_core import PydanticCustomError, core_schema

from m2fp_contract.errors import ErrorCode

# Items per batch submission, and job ids per poll.
MAX_BATCH = 100
# Every output a job can have, with its media type.
OUTPUTS: dict[str, str] = {
    "colored.png": "image/png",
    "labels.png": "image/png",
    "persons.png": "image/png",
    "overlay.jpg": "image/jpeg",
    "result.json": "application/json",
}
JOB_ID_PATTERN = r"^[A-Za-z0-9_-]{22}$"


class OutputGroup(str, Enum):
    """Outputs a submission asks for by name (``outputs``), beyond the five every job has
    (docs/outputs.md). ``tryon`` brings ``keypoints`` with it: its recipes need them."""

    KEYPOINTS = "keypoints"
    MASKS = "masks"
    GARMENTS = "garments"
    TRYON = "tryon"


_MEDIA_BY_SUFFIX = {".png": "image/png", ".jpg": "image/jpeg", ".json": "application/json"}
# The try-on pack, at the photo's size and at the 768x1024 the try-on models expect.
TRYON_SIZES = ("photo", "768x1024")
TRYON_FILES = ("parse_agnostic.png", "agnostic_vitonhd.jpg", "agnostic_hrviton.jpg",
               "inpaint_mask_upper.png", "inpaint_mask_upper_hd.png", "inpaint_mask_lower.png",
               "inpaint_mask_dresses.png", "inpaint_gray_upper.jpg", "inpaint_gray_upper_hd.jpg",
               "inpaint_gray_lower.jpg", "inpaint_gray_dresses.jpg")
# The outputs of each group: exact names, or patterns for the per-class and per-person ones
# (a class's slug: lower case, "-" between words; a person's id as in persons.png).
GROUP_OUTPUTS: dict[OutputGroup, tuple[str, ...]] = {
    OutputGroup.KEYPOINTS: ("keypoints.json", "keypoints_coco18.json"),
    OutputGroup.MASKS: (r"masks/[a-z0-9-]{1,40}\.png",),
    OutputGroup.GARMENTS: ("cloth_mask.png", r"cutouts/person-(?:[1-9][0-9]?|1[0-9][0-9]|2[0-4][0-9]|25[0-5])"
                                             r"/[a-z0-9-]{1,40}\.png"),
    OutputGroup.TRYON: tuple(f"tryon/{size}/{re.escape(name)}" for size in TRYON_SIZES for name in TRYON_FILES),
}
_GROUP_NAME = re.compile("|".join(f"(?:{pattern})" for patterns in GROUP_OUTPUTS.values() for pattern in patterns))


def output_media_type(name: str) -> Optional[str]:
    """The media type of the output ``name``, or None when no job can have such an output
    (so a name can never reach outside a job's own files)."""
    if name in OUTPUTS:
        return OUTPUTS[name]
    if _GROUP_NAME.fullmatch(name):
        return _MEDIA_BY_SUFFIX[name[name.rindex("."):]]
    return None


class JobStatus(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED)


TERMINAL_STATUSES = frozenset(status.value for status in JobStatus if status.terminal)


class WebhookEvent(str, Enum):
    """A job change a webhook can be told of: the job reached this status."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


# Without ``webhook_events``: the job ended, whichever way.
DEFAULT_WEBHOOK_EVENTS = (WebhookEvent.SUCCEEDED, WebhookEvent.FAILED, WebhookEvent.CANCELED)
MAX_WEBHOOK_URL = 2048


class LabelProfile(str, Enum):
    """The label ids of ``labels.png``, ``colored.png`` and the legend (docs/api.md, "Label sets")."""

    CIHP = "cihp"
    LIP = "lip"
    ATR = "atr"
    SIMPLE = "simple"


class LabelsFormat(str, Enum):
    """``labels.png`` as 8-bit grayscale, or 8-bit palette mode (the same values, and the
    profile's colors for viewers: what SCHP and the datasets ship)."""

    GRAYSCALE = "grayscale"
    PALETTE = "palette"


class Priority(str, Enum):
    """``interactive`` jobs are always taken before ``backfill`` jobs."""

    INTERACTIVE = "interactive"
    BACKFILL = "backfill"


class _Request(BaseModel):
    """Request bodies. Unknown fields are ignored, as they always were (clients written
    against a newer server's fields keep working)."""

    model_config = ConfigDict(extra="ignore")


class _Response(BaseModel):
    """Response bodies: a client ignores fields it does not know yet, so a newer server
    (cancel, webhooks, per-person outputs add fields) never breaks an older client.
    Fields named in ``_omit_when_none`` are left out of the wire form, not sent as null."""

    model_config = ConfigDict(extra="ignore")
    _omit_when_none: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _omit_unset_parts(self, handler):  # no return annotation: keeps the model's own schema
        data = handler(self)
        for name in self._omit_when_none:
            if data.get(name, "") is None:
                del data[name]
        return data


class ErrorDetail(_Response):
    """Why something failed: ``code`` is stable (clients branch on it), ``message`` is for people."""

    code: str = Field(description="A stable error code; see the ErrorCode schema for every value.")
    message: str


class ErrorResponse(_Response):
    """The body of every 4xx and 5xx answer."""

    error: ErrorDetail


class SourceRef(_Request):
    """An object in a bucket the service reads (submission by reference)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bucket: str = Field(min_length=1, max_length=255)
    key: str = Field(min_length=1, max_length=1024)

    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @classmethod
    def from_uri(cls, value: str) -> "SourceRef":
        parsed = urlparse(value)
        return cls(bucket=parsed.netloc, key=parsed.path.lstrip("/"))


def _source(value: Any) -> Any:
    """``"s3://bucket/key"`` or ``{"bucket": ..., "key": ...}``: both name one object."""
    if isinstance(value, SourceRef):
        return value
    if isinstance(value, str) and value.startswith("s3://"):
        parsed = urlparse(value)
        value = {"bucket": parsed.netloc, "key": parsed.path.lstrip("/")}
    if not (isinstance(value, dict) and isinstance(value.get("bucket"), str) and isinstance(value.get("key"), str)):
        raise PydanticCustomError(ErrorCode.INVALID_SOURCE.value,
                                  'a source is "s3://bucket/key" or {"bucket": ..., "key": ...}')
    if not value["bucket"] or not value["key"] or len(value["key"]) > 1024:
        raise PydanticCustomError(ErrorCode.INVALID_SOURCE.value, "a source needs a bucket and a key")
    return SourceRef(bucket=value["bucket"], key=value["key"])


def _default_if_blank(value: Any, model: type[BaseModel]) -> Any:
    """An empty form field means "not given" (HTML forms send empty strings)."""
    return model.model_fields["priority"].default if value in ("", None) else value


def _events(value: Any) -> Any:
    """A list, one comma-separated string, or (in a form) repeated fields of either."""
    if value in ("", None, [""]):
        return None
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(item, str) for item in items):
        return value  # not strings: let the list[WebhookEvent] type say why
    return [part.strip() for item in items for part in item.split(",") if part.strip()]


# People per submitted keypoints document, and the points per person each format has.
MAX_KEYPOINT_PEOPLE = 64
KEYPOINT_FORMATS = {18: "COCO-18", 25: "BODY_25"}


def _keypoint_error(message: str) -> PydanticCustomError:
    return PydanticCustomError(ErrorCode.INVALID_KEYPOINTS.value, message)


def _openpose_people(value: Any) -> Any:
    """OpenPose's JSON (``{"people": [{"pose_keypoints_2d": [x, y, c, ...]}]}``, as an
    object, or as text in a form field) -> each person's flat list of numbers.

    Checked here: the shape (18 or 25 points of three numbers, one format per document,
    1 to MAX_KEYPOINT_PEOPLE people), finite non-negative coordinates, confidences from 0
    to 1. Whether the points lie on the photo is checked once the photo's size is known
    (``api/submission.py``): x from 0 to its width, y from 0 to its height, edges included,
    since OpenPose's coordinates are positions on the image (sub-pixel, as a pose model's
    fractions times the size give them), not pixel indices: a point on the right edge is
    x = width, as one on the left edge is x = 0."""
    if value in ("", None):
        return None
    if isinstance(value, (str, bytes)):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested past the parser's depth
            raise _keypoint_error("keypoints: not JSON; send OpenPose's JSON: "
                                  '{"people": [{"pose_keypoints_2d": [x, y, c, ...]}]}') from None
    people = value.get("people") if isinstance(value, dict) else None
    if not isinstance(people, list) or not 1 <= len(people) <= MAX_KEYPOINT_PEOPLE:
        raise _keypoint_error(f'keypoints: expected {{"people": [...]}} with 1 to {MAX_KEYPOINT_PEOPLE} people')
    flat: list[list[float]] = []
    for index, person in enumerate(people):
        points = person.get("pose_keypoints_2d") if isinstance(person, dict) else None
        if not isinstance(points, list) or len(points) not in (3 * n for n in KEYPOINT_FORMATS):
            raise _keypoint_error(f"keypoints: people[{index}].pose_keypoints_2d must hold 54 (COCO-18) or 75 "
                                  "(BODY_25) numbers: x, y, confidence per point")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) < 1e9 and math.isfinite(v)
                   for v in points):  # abs() first: an integer of 400 digits overflows isfinite
            raise _keypoint_error(f"keypoints: people[{index}].pose_keypoints_2d holds something not a finite number")
        if any(v < 0 for v in points) or any(c > 1 for c in points[2::3]):
            raise _keypoint_error(f"keypoints: people[{index}]: coordinates must be >= 0 and confidences 0 to 1")
        flat.append([float(v) for v in points])
    if len({len(points) for points in flat}) > 1:
        raise _keypoint_error("keypoints: every person needs the same format (all COCO-18 or all BODY_25)")
    return flat


def _not_in_a_batch(value: Any) -> Any:
    """Keypoints belong to one photo: a batch's photos would all get the first's."""
    if value is not None:
        raise _keypoint_error("keypoints: they belong to one photo; submit that photo alone (POST /v1/jobs)")
    return value


def _output_groups(value: Any) -> Any:
    """A list of group names, or one comma-separated string (a form field), each known."""
    items = _events(value)
    if items is None:
        return []
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        return items  # let the list type say why
    known = {group.value for group in OutputGroup}
    unknown = [item for item in items if item not in known]
    if unknown:
        raise PydanticCustomError(ErrorCode.UNKNOWN_OUTPUT.value,
                                  f"outputs: unknown {', '.join(map(repr, unknown))}; ask for any of "
                                  f"{', '.join(sorted(known))}")
    return items


class _OutputFields(BaseModel):
    """How the job's outputs are expressed, and which it has beyond the standard five."""

    labels: LabelProfile = Field(LabelProfile.CIHP, description="the label set: cihp (the model's 20 classes), "
                                 "lip, atr or simple; see docs/api.md")
    labels_format: LabelsFormat = Field(LabelsFormat.GRAYSCALE, description="labels.png as grayscale, or palette "
                                        "mode (same values, with the profile's colors)")

    outputs: list[OutputGroup] = Field(default_factory=list, description=(
        "more outputs, by group (a list, or comma-separated): keypoints (OpenPose JSON), masks (one binary "
        "mask per class), garments (cut-outs, cloth mask, colours), tryon (the try-on pack; brings keypoints); "
        "see docs/outputs.md and docs/tryon.md"))
    person: Optional[int] = Field(None, ge=1, le=255, description=(
        "the person the try-on pack is for, by its id in persons.png (1 = the largest, the default)"))
    keypoints: Optional[list[list[float]]] = Field(None, description=(
        'your own OpenPose JSON ({"people": [{"pose_keypoints_2d": [x, y, c, ...]}]}, COCO-18 or BODY_25, 1 to '
        f"{MAX_KEYPOINT_PEOPLE} people, in the photo's pixels: 0 <= x <= width, 0 <= y <= height, confidences 0 to 1; "
        "an object in a JSON body, its text in a form) instead of the pose model's: used for keypoints and tryon"),
        json_schema_extra={"type": ["object", "string", "null"]})

    _blank_labels = field_validator("labels", "labels_format", mode="before")(
        lambda cls, value, info: cls.model_fields[info.field_name].default if value in ("", None) else value)
    _known_outputs = field_validator("outputs", mode="before")(lambda cls, value: _output_groups(value))
    _blank_person = field_validator("person", mode="before")(lambda cls, value: None if value == "" else value)
    _openpose = field_validator("keypoints", mode="before")(lambda cls, value: _openpose_people(value))

    @model_validator(mode="after")
    def _needs_what_uses_it(self):
        if self.person is not None and OutputGroup.TRYON not in self.outputs:
            raise PydanticCustomError(ErrorCode.BAD_REQUEST.value, 'person: it chooses whose try-on pack is made; '
                                      'ask for the pack too (outputs: ["tryon"])')
        if self.keypoints is not None and not {OutputGroup.KEYPOINTS, OutputGroup.TRYON} & set(self.outputs):
            raise _keypoint_error('keypoints: they are used for the keypoints and tryon outputs; ask for one '
                                  '(outputs: ["tryon"])')
        return self


class _WebhookFields(BaseModel):
    """Where to tell the submitter that the job changed (docs/webhooks.md)."""

    webhook: Optional[str] = Field(None, max_length=MAX_WEBHOOK_URL, description=(
        "an https URL that receives a signed POST of the job's JSON at each event; http and private "
        "addresses only for hosts the operator allows (WEBHOOK_ALLOW_HOSTS)"))
    webhook_events: Optional[list[WebhookEvent]] = Field(None, min_length=1, description=(
        "the statuses to be told of (a list, or comma-separated); default: succeeded, failed, canceled"))

    _blank_webhook = field_validator("webhook", mode="before")(lambda cls, value: None if value == "" else value)
    _split_events = field_validator("webhook_events", mode="before")(lambda cls, value: _events(value))


class UploadedFile:
    """A file part of a multipart body (the server hands over werkzeug's FileStorage)."""

    @classmethod
    def __get_pydantic_core_schema__(cls, _source: Any, _handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(cls._check)

    @classmethod
    def __get_pydantic_json_schema__(cls, _schema: Any, _handler: GetJsonSchemaHandler) -> dict[str, Any]:
        return {"type": "string", "format": "binary", "contentMediaType": "application/octet-stream"}

    @staticmethod
    def _check(value: Any) -> Any:
        if isinstance(value, (str, bytes)) or not hasattr(value, "stream"):
            raise PydanticCustomError(ErrorCode.MISSING_IMAGE.value, "send the image as a file part")
        return value


# ---- requests -------------------------------------------------------------------

class SubmitJson(_Request, _OutputFields, _WebhookFields):
    """Submit an object already in a readable bucket; the worker reads it in place."""

    source: Union[str, SourceRef] = Field(
        description='"s3://bucket/key" or {"bucket": ..., "key": ...}, in S3_BUCKET or SOURCE_BUCKETS')
    priority: Priority = Priority.INTERACTIVE

    _check_source = field_validator("source", mode="before")(lambda cls, value: _source(value))
    _blank_priority = field_validator("priority", mode="before")(lambda cls, value: _default_if_blank(value, cls))


class SubmitForm(_OutputFields, _WebhookFields):
    """Upload one image (multipart/form-data)."""

    model_config = ConfigDict(extra="ignore", arbitrary_types_allowed=True)

    image: UploadedFile = Field(description="JPEG, PNG, WebP, BMP, TIFF or GIF, at most MAX_UPLOAD_BYTES")
    priority: Priority = Priority.INTERACTIVE

    _first_file = field_validator("image", mode="before")(
        lambda cls, value: value[0] if isinstance(value, list) and value else value)
    _blank_priority = field_validator("priority", mode="before")(lambda cls, value: _default_if_blank(value, cls))


class BatchItem(_Request):
    source: Union[str, SourceRef] = Field(description='"s3://bucket/key" or {"bucket": ..., "key": ...}')
    ref: Optional[str] = Field(None, max_length=1024, description="echoed back in this item's answer")

    _check_source = field_validator("source", mode="before")(lambda cls, value: _source(value))


class BatchJson(_Request, _OutputFields, _WebhookFields):
    """Many references in one request (default priority ``backfill``); a ``webhook`` serves
    each item's job."""

    # Each item is checked on its own (a bad item fails alone, in its answer), so the
    # request only needs objects here; the OpenAPI document shows them as BatchItem.
    items: list[dict[str, Any]] = Field(max_length=MAX_BATCH)
    priority: Priority = Priority.BACKFILL

    _one_photos_keypoints = field_validator("keypoints", mode="after")(lambda cls, value: _not_in_a_batch(value))

    _blank_priority = field_validator("priority", mode="before")(lambda cls, value: _default_if_blank(value, cls))


class BatchForm(_OutputFields, _WebhookFields):
    """Many uploads in one request: repeat the ``image`` field (default priority ``backfill``)."""

    model_config = ConfigDict(extra="ignore", arbitrary_types_allowed=True)

    image: list[UploadedFile] = Field(min_length=1, max_length=MAX_BATCH, description=f"at most {MAX_BATCH} "
                                      "files; each file's name is echoed back as its item's ref")
    priority: Priority = Priority.BACKFILL

    _one_photos_keypoints = field_validator("keypoints", mode="after")(lambda cls, value: _not_in_a_batch(value))

    _one_file_is_a_list = field_validator("image", mode="before")(
        lambda cls, value: value if isinstance(value, list) else [value])
    _blank_priority = field_validator("priority", mode="before")(lambda cls, value: _default_if_blank(value, cls))


class DemoFileForm(BaseModel):
    """The M2FP demo's ``POST /api/parse``: one photo in the field ``file``."""

    model_config = ConfigDict(extra="ignore", arbitrary_types_allowed=True)

    file: UploadedFile = Field(description="JPEG, PNG, WebP, BMP, TIFF or GIF, at most MAX_UPLOAD_BYTES")

    _first_file = field_validator("file", mode="before")(
        lambda cls, value: value[0] if isinstance(value, list) and value else value)


class DemoImageForm(BaseModel):
    """The M2FP demo's ``POST /parse``: one photo in the field ``image``."""

    model_config = ConfigDict(extra="ignore", arbitrary_types_allowed=True)

    image: UploadedFile = Field(description="JPEG, PNG, WebP, BMP, TIFF or GIF, at most MAX_UPLOAD_BYTES")

    _first_file = field_validator("image", mode="before")(
        lambda cls, value: value[0] if isinstance(value, list) and value else value)


# ``Prefer: wait=N`` (RFC 7240, as Replicate's API takes it): N, 1 to 6 digits, quoted or not,
# as one preference among others. The API reads the header with it (api/waiting.py).
PREFER_WAIT_PATTERN = r'(?:^|[,;\s])wait\s*=\s*"?(\d{1,6})"?'


class SubmitHeaders(_Request):
    """The request headers ``POST /v1/jobs`` reads besides the API key. Declared here, with
    the bodies, so that the OpenAPI document publishes them from the contract (a header is
    as much a part of a request as its fields)."""

    prefer: Optional[str] = Field(None, alias="Prefer", description=(
        "RFC 7240 preferences. `wait=N`: wait up to N seconds (at most the service's SYNC_WAIT_SECONDS) for the "
        "job to end, then answer 200 with the ended job, or 202 with the job as it stands; "
        "`Preference-Applied: wait=<seconds>` says the wait honoured, and is absent when no waiting slot was free. "
        "`respond-async` (without `wait`): answer at once, as without the header. Other preferences are ignored."),
        examples=["wait=30", "respond-async, wait=5", "respond-async"])


class JobsQuery(_Request):
    ids: str = Field(description=f"1 to {MAX_BATCH} comma-separated job ids")


# ---- responses ------------------------------------------------------------------

class InputView(_Response):
    width: int
    height: int
    format: str
    bytes: int
    sha256: str
    source: Optional[str] = Field(None, description="the s3:// reference, for jobs submitted by reference")

    _omit_when_none = ("source",)


class ResultView(_Response):
    outputs: dict[str, str] = Field(description="output name -> download URL (presigned, or the API's own route)")
    keys: dict[str, str] = Field(description="output name -> its key in the store")
    summary: dict[str, Any] = Field(description="what was found, in the job's label set (`labels`): classes "
                                    "with pixel shares and scores; `persons` (the count), `people` (id as in "
                                    "persons.png, score, bbox [x, y, w, h], pixel_fraction, parts), "
                                    "`no_person_detected`, `person_score_threshold`, `people_truncated` (more "
                                    "than 255 persons: the best-scoring 255 kept); model, inference size and time")


Color = list[int]  # [r, g, b], 0-255


class LegendEntry(_Response):
    """One class of the job's label set, found or not: its id in labels.png and its color in colored.png."""

    id: int = Field(ge=0)
    name: str
    color: Color = Field(min_length=3, max_length=3)


class ClassFound(LegendEntry):
    """A class present in the photo."""

    pixel_fraction: float = Field(ge=0, le=1, description="its share of the photo's pixels")
    score: Optional[float] = Field(description="the model's mean confidence in it; null when the model gave none")


class PersonPart(_Response):
    id: int = Field(ge=0, description="the class id, in the job's label set")
    name: str
    pixel_fraction: float = Field(ge=0, le=1, description="its share of this person's pixels")


class ColorFound(_Response):
    """One of a garment's dominant colours (a cluster of its pixels in CIELAB)."""

    hex: str = Field(pattern=r"^#[0-9a-f]{6}$", description="the cluster's centre, sRGB")
    share: float = Field(ge=0, le=1, description="its share of the garment's pixels")
    name: str = Field(description="a plain colour name (red, navy, beige, ...)")


class GarmentFound(_Response):
    """One garment of a person (outputs ``garments``), in CIHP's classes."""

    id: int = Field(ge=0, description="the CIHP class id")
    name: str
    pixel_fraction: float = Field(ge=0, le=1, description="its share of this person's pixels")
    bbox: list[int] = Field(min_length=4, max_length=4, description="[x, y, w, h] in the photo's pixels")
    cutout: str = Field(description="the output holding its RGBA cut-out")
    colors: list[ColorFound] = Field(description="its dominant colours, largest share first")


class PersonFound(_Response):
    """One person: ``id`` is its value in persons.png (1-255; 0 is nobody)."""

    id: int = Field(ge=1, le=255)
    score: float
    bbox: list[int] = Field(min_length=4, max_length=4, description="[x, y, w, h] in the photo's pixels")
    pixel_fraction: float = Field(ge=0, le=1, description="its share of the photo's pixels")
    parts: list[PersonPart] = Field(description="its parts, largest first")
    garments: Optional[list[GarmentFound]] = Field(None, description="with outputs garments: its garments, "
                                                   "largest first, with their colours")

    _omit_when_none = ("garments",)


class KeypointsPerson(_Response):
    id: int = Field(ge=1, le=255, description="the person's id in persons.png")
    found: bool = Field(description="whether it has a body in keypoints.json")


class KeypointsSummary(_Response):
    """Where the keypoints came from, and whose are missing and why."""

    source: Literal["model", "submitted"]
    model: Optional[dict[str, str]] = Field(None, description="the pose model, when it found them")
    people: list[KeypointsPerson]
    unmatched: int = Field(ge=0, description="submitted bodies that fell on no person (person_id -1)")
    reason: Optional[str] = Field(description="why a person has no body, when one has none")

    _omit_when_none = ("model",)


class TryOnSize(_Response):
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    scale: Optional[float] = Field(None, description="768x1024: the photo's scale into the frame")
    pad: Optional[list[int]] = Field(None, min_length=4, max_length=4, description="768x1024: white (photo) or "
                                     "background (maps) padding [left, top, right, bottom], in the frame's pixels")

    _omit_when_none = ("scale", "pad")


class TryOnSummary(_Response):
    """The try-on pack (outputs ``tryon``): whose, which files, at which sizes."""

    person: int = Field(ge=1, le=255)
    files: list[str] = Field(description="the pack's outputs; empty when it could not be made")
    sizes: Optional[dict[str, TryOnSize]] = Field(description="photo and 768x1024")
    omitted: dict[str, str] = Field(default_factory=dict, description=(
        "outputs of the pack left out of a pack that was made, each with why: both agnostic images (at both sizes) "
        "when a hip was not found, since their torso is drawn to the hips (docs/tryon.md)"))
    absent_reason: Optional[str] = Field(description="why the pack is missing (the person's body, or one of its "
                                         "shoulders, was not found)")


class ResultDocument(_Response):
    """The body of the output ``result.json``: what the worker found, in the job's label set.
    Nullable person fields are null when the model has no instance output (nobody can then
    say whether a person is there)."""

    job_id: str
    width: int = Field(gt=0, description="the photo's width, as are the maps'")
    height: int = Field(gt=0)
    labels: LabelProfile
    persons: Optional[int] = Field(ge=0, description="how many persons were found")
    classes: list[ClassFound]
    legend: list[LegendEntry] = Field(description="every class of the label set, in id order")
    people: Optional[list[PersonFound]] = Field(description="each person, best first")
    no_person_detected: Optional[bool]
    person_score_threshold: Optional[float] = Field(description="the score a person needed to be kept")
    people_truncated: Optional[bool] = Field(description="more than 255 persons: the best-scoring 255 kept")
    model: dict[str, str] = Field(description="the engine that ran: engine, precision, model and (OpenVINO) "
                                  "runtime")
    inference_size: list[int] = Field(min_length=2, max_length=2, description="[w, h] the model ran at")
    inference_seconds: float = Field(ge=0)
    outputs_requested: Optional[list[OutputGroup]] = Field(None, description="the groups asked for beyond the "
                                                           "standard outputs")
    output_seconds: Optional[dict[str, float]] = Field(None, description="seconds each asked group took")
    keypoints: Optional[KeypointsSummary] = Field(None, description="with outputs keypoints or tryon")
    tryon: Optional[TryOnSummary] = Field(None, description="with outputs tryon")

    _omit_when_none = ("outputs_requested", "output_seconds", "keypoints", "tryon")


class OpenPosePersonOut(_Response):
    """One body, as OpenPose writes it (its face, hand and 3-D lists stay empty)."""

    person_id: list[int] = Field(min_length=1, max_length=1, description="its id in persons.png; -1 for a submitted "
                                 "body that fell on no person")
    pose_keypoints_2d: list[float] = Field(description="x, y, confidence per point, in the photo's pixels; a point "
                                           "not found is 0, 0, 0")
    face_keypoints_2d: list[float]
    hand_left_keypoints_2d: list[float]
    hand_right_keypoints_2d: list[float]
    pose_keypoints_3d: list[float]
    face_keypoints_3d: list[float]
    hand_left_keypoints_3d: list[float]
    hand_right_keypoints_3d: list[float]


class KeypointsDocument(_Response):
    """``keypoints.json`` (BODY_25, 25 points) and ``keypoints_coco18.json`` (COCO-18, 18
    points): OpenPose's own JSON, one entry per person whose body was found."""

    version: float
    people: list[OpenPosePersonOut]


# The body model of each JSON output (the others are image files of their media type).
OUTPUT_MODELS: dict[str, type[BaseModel]] = {"result.json": ResultDocument, "keypoints.json": KeypointsDocument,
                                             "keypoints_coco18.json": KeypointsDocument}


class QueuePlace(_Response):
    """Where a queued job stands."""

    position: int = Field(description="its place in its own queue, 1 = next")
    ahead: int = Field(description="jobs a worker takes before it (a backfill job waits for every interactive one)")
    eta_seconds: Optional[float] = Field(description="estimated seconds until a worker starts it, from the workers' "
                                         "recent per-job times and the model processes serving; null until known")


class WebhookView(_Response):
    """The job's webhook and the delivery of its latest event."""

    url: str
    events: list[WebhookEvent]
    event: Optional[WebhookEvent] = Field(description="the latest event sent (null until one happened)")
    delivery_id: Optional[str] = Field(description="that delivery's `webhook-id` header, the same on every attempt")
    delivered: bool = Field(description="the receiver answered that delivery with a 2xx")
    attempts: int = Field(description="attempts at that delivery so far")
    last_status: Optional[int] = Field(description="HTTP status of the latest attempt; null when none answered")
    last_error: Optional[str] = Field(description="why the latest attempt failed")
    next_attempt_at: Optional[str] = Field(description="when it is tried again; null once delivered or given up")


class WebhookSecret(_Response):
    """The secret that signs this tenant's webhooks (Standard Webhooks, ``whsec_`` + base64)."""

    tenant: str
    secret: str


class JobLinks(_Response):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    self_: str = Field(alias="self")


class JobView(_Response):
    """A job as clients see it. ``result`` only once succeeded, ``error`` only once failed,
    ``last_error`` only while it waits out a transient fault."""

    id: str
    status: JobStatus
    created_at: str
    updated_at: str
    started_at: Optional[str]
    finished_at: Optional[str]
    attempts: int
    priority: Priority
    labels: LabelProfile = LabelProfile.CIHP
    labels_format: LabelsFormat = LabelsFormat.GRAYSCALE
    outputs: list[OutputGroup] = Field(default_factory=list, description="the groups of outputs asked for beyond "
                                       "the standard five")
    person: Optional[int] = Field(None, description="whose try-on pack was asked for (persons.png id)")
    worker: Optional[str]
    input: InputView
    links: JobLinks
    result: Optional[ResultView] = None
    error: Optional[ErrorDetail] = None
    last_error: Optional[ErrorDetail] = None
    deduplicated: Optional[bool] = Field(None, description="on submission answers: true when this content "
                                         "already had a job, which is returned instead of a new one")
    cancel_requested: Optional[bool] = Field(None, description="true while a running job's cancel waits for its "
                                             "next safe point; it then ends `canceled`")
    queue: Optional[QueuePlace] = Field(None, description="while the job waits in its queue: its place and ETA")
    webhook: Optional[WebhookView] = Field(None, description="when the submission named a webhook")

    _omit_when_none = ("result", "error", "last_error", "deduplicated", "cancel_requested", "queue", "webhook",
                       "person")

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


class DemoPart(_Response):
    label: str = Field(description="the CIHP class name, as the demo names it")
    confidence: Optional[float] = Field(description="the model's mean confidence over its pixels")
    mask_base64: str = Field(description="a PNG, white (255) where the part is, black elsewhere, base64")


class DemoParseResult(_Response):
    """The M2FP demo's answer to ``POST /parse``, field for field, plus the job's id."""

    status: Literal["success"]
    num_persons: int = Field(ge=0)
    results: list[DemoPart] = Field(description="each part found (background left out), by class id")
    colored_mask_base64: str = Field(description="colored.png, base64")
    job_id: str = Field(description="the job behind this answer: GET /v1/jobs/<id> has all its outputs")


class MissingJob(_Response):
    id: str
    status: Literal["not_found"] = "not_found"


class JobsResponse(_Response):
    jobs: list[Union[JobView, MissingJob]]


class BatchItemResult(_Response):
    """One item of a batch: ``job`` (status 200 or 202) or ``error`` (its own 4xx)."""

    ref: Optional[str]
    status: int
    job: Optional[JobView] = None
    error: Optional[ErrorDetail] = None

    _omit_when_none = ("job", "error")


class BatchResponse(_Response):
    items: list[BatchItemResult]


class Health(_Response):
    status: Literal["ok"]


class Readiness(_Response):
    status: Literal["ready", "not_ready"]
    checks: dict[str, str]
