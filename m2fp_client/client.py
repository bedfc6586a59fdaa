"""A Python client of the m2fp-queue HTTP API, typed by the API's own contract.

Every answer is read into the models of ``m2fp_contract.schema`` (the module the API renders
its bodies from), so a field the API renames fails here, loudly, instead of turning
into a ``KeyError`` deep in a caller. Those models ignore fields they do not know, so a
newer server never breaks an older client.

Every failure (an error answer, an unreachable or silent server) is one exception type,
:class:`ApiError`, carrying the API's stable ``code`` for callers to branch on.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence, Union
from urllib.parse import urlparse

import requests
from pydantic import ValidationError

from m2fp_contract.schema import (MAX_BATCH, BatchResponse, ErrorResponse, JobsResponse, JobView, LabelProfile,
                                  LabelsFormat, MissingJob, OutputGroup, Priority, SourceRef, output_media_type,
                                  WebhookEvent, WebhookSecret)

DEFAULT_API_URL = "http://127.0.0.1:8000"
# Codes of failures the client detects itself (the API's own codes are in m2fp_contract.errors).
UNREACHABLE = "api_unreachable"
TIMEOUT = "api_timeout"
# The least time a poll gets, even at a wait's deadline: a wait ends at most this much late.
LAST_POLL_SECONDS = 5.0
BAD_ANSWER = "bad_answer"

Image = Union[str, Path, bytes]
Job = Union[JobView, MissingJob]


class ApiError(Exception):
    """The API refused a request, or could not be reached.

    ``code`` is the API's error code (``invalid_image``, ``queue_full``, ...) or one of
    the client's own (``api_unreachable``, ``api_timeout``, ``bad_answer``); ``status``
    is the HTTP status (``None`` when no answer came); ``retry_after`` is the server's
    ``Retry-After`` in seconds, when it sent one.
    """

    def __init__(self, code: str, message: str, status: Optional[int] = None,
                 retry_after: Optional[float] = None) -> None:
        super().__init__(f"{code}: {message}" if status is None else f"{status} {code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.retry_after = retry_after

    @property
    def unreachable(self) -> bool:
        return self.code == UNREACHABLE

    @property
    def transient(self) -> bool:
        """Asking again later may succeed (the service is busy, down or restarting)."""
        return self.status in (429, 502, 503, 504) or self.code in (UNREACHABLE, TIMEOUT)


class WaitTimedOut(Exception):
    """:meth:`Client.wait` reached its deadline before every job ended.

    ``waiting`` are the ids that had not ended; ``jobs`` the last answer for each job
    (in the order asked; a job never answered, while the service was unreachable
    throughout, is absent). The jobs are not canceled: poll them later."""

    def __init__(self, waiting: Sequence[str], jobs: list[Job]) -> None:
        super().__init__(f"{len(waiting)} job(s) had not ended by the deadline: {', '.join(waiting)}")
        self.waiting = list(waiting)
        self.jobs = jobs


def _error_from(response: requests.Response) -> ApiError:
    """The API's ``{"error": {code, message}}``; a proxy's own page gets a code from its status."""
    retry_after = _seconds(response.headers.get("Retry-After"))
    try:
        detail = ErrorResponse.model_validate(response.json()).error
        return ApiError(detail.code, detail.message, response.status_code, retry_after)
    except (ValueError, ValidationError):  # not JSON, or not the API's error shape
        code = {413: "payload_too_large", 404: "not_found"}.get(response.status_code, f"http_{response.status_code}")
        return ApiError(code, response.text[:500].strip() or response.reason, response.status_code, retry_after)


def _seconds(value: Optional[str]) -> Optional[float]:
    try:
        return float(value) if value is not None else None
    except ValueError:  # an HTTP date: rare, and a default back-off serves as well
        return None


def _image_bytes(image: Image) -> tuple[str, bytes]:
    if isinstance(image, bytes):
        return "image", image
    path = Path(image)
    return path.name, path.read_bytes()


class Client:
    """The API at ``base_url`` (default ``$M2FP_API_URL``, else ``http://127.0.0.1:8000``),
    sending ``Authorization: Bearer $M2FP_API_KEY`` when a key is set."""

    def __init__(self, base_url: Optional[str] = None, api_key: Optional[str] = None,
                 timeout: float = 120.0) -> None:
        self.base_url = (base_url or os.environ.get("M2FP_API_URL") or DEFAULT_API_URL).rstrip("/")
        self.timeout = timeout
        self.http = requests.Session()
        key = api_key if api_key is not None else os.environ.get("M2FP_API_KEY")
        self._auth = {"Authorization": f"Bearer {key}"} if key else {}

    # ---- transport ----------------------------------------------------------------

    def _request(self, method: str, url: str, timeout: Optional[float] = None, **kwargs) -> requests.Response:
        """One request, given up after ``timeout`` (default: the client's); any failure as
        an ApiError. The key goes only to the API itself: an output link may be a
        presigned bucket URL, which must carry no other credential."""
        url = self.base_url + url if url.startswith("/") else url
        headers = self._auth if self._same_origin(url) else {}
        timeout = self.timeout if timeout is None else timeout
        try:
            response = self.http.request(method, url, headers=headers, timeout=timeout, **kwargs)
        except requests.ConnectionError as exc:
            raise ApiError(UNREACHABLE, f"cannot reach {url}: {_reason(exc)}") from exc
        except requests.Timeout as exc:
            raise ApiError(TIMEOUT, f"no answer from {url} within {timeout:.3g} s") from exc
        if response.status_code >= 400:
            raise _error_from(response)
        return response

    def _same_origin(self, url: str) -> bool:
        ours, theirs = urlparse(self.base_url), urlparse(url)
        return (ours.scheme, ours.netloc) == (theirs.scheme, theirs.netloc)

    def _read(self, response: requests.Response, model):
        try:
            return model.model_validate(response.json())
        except (ValueError, ValidationError) as exc:
            raise ApiError(BAD_ANSWER, f"{response.url} answered what the contract does not describe: {exc}",
                           response.status_code) from exc

    # ---- the API ------------------------------------------------------------------

    def healthy(self) -> bool:
        """The API process answers (``GET /healthz``)."""
        try:
            return self._request("GET", "/healthz").ok
        except ApiError:
            return False

    def submit(self, image: Image, priority: Priority = Priority.INTERACTIVE, webhook: Optional[str] = None,
               webhook_events: Sequence[WebhookEvent] = (), labels: LabelProfile = LabelProfile.CIHP,
               labels_format: LabelsFormat = LabelsFormat.GRAYSCALE, outputs: Sequence[OutputGroup] = (),
               person: Optional[int] = None, keypoints: Union[None, str, dict] = None) -> JobView:
        """Upload one image (a path or its bytes); the job, new or (same content) existing.
        ``webhook``: an URL told of the job's ``webhook_events`` (default: its end);
        ``labels``: the label set of its outputs, ``labels_format`` that of labels.png;
        ``outputs``: more groups of outputs (keypoints, masks, garments, tryon), ``person``
        whose try-on pack, ``keypoints`` your own OpenPose JSON (text or its object)."""
        name, data = _image_bytes(image)
        fields = {"priority": Priority(priority).value, **_webhook(webhook, webhook_events),
                  "labels": LabelProfile(labels).value, "labels_format": LabelsFormat(labels_format).value}
        if outputs:
            fields["outputs"] = ",".join(getattr(group, "value", group) for group in outputs)  # the API checks them
        if person is not None:
            fields["person"] = str(person)
        if keypoints is not None:
            fields["keypoints"] = keypoints if isinstance(keypoints, str) else json.dumps(keypoints)
        response = self._request("POST", "/v1/jobs", files={"image": (name, data, "application/octet-stream")},
                                 data=fields)
        return self._read(response, JobView)

    def submit_source(self, source: Union[str, SourceRef], priority: Priority = Priority.INTERACTIVE,
                      webhook: Optional[str] = None, webhook_events: Sequence[WebhookEvent] = ()) -> JobView:
        """Submit an object already in a bucket the service reads; nothing is uploaded."""
        ref = source if isinstance(source, SourceRef) else SourceRef.from_uri(source)
        response = self._request("POST", "/v1/jobs", json={"source": ref.uri(), "priority": Priority(priority).value,
                                                          **_webhook(webhook, webhook_events)})
        return self._read(response, JobView)

    def submit_batch(self, uploads: Sequence[tuple[str, bytes]] = (), sources: Sequence[tuple[str, SourceRef]] = (),
                     priority: Priority = Priority.BACKFILL, webhook: Optional[str] = None,
                     webhook_events: Sequence[WebhookEvent] = ()) -> BatchResponse:
        """Up to MAX_BATCH images in one request: ``(ref, bytes)`` uploads or ``(ref,
        SourceRef)`` references (one kind per call). One answer per item, in order; an
        item the API refuses carries its own error, the others still count."""
        if bool(uploads) == bool(sources):
            raise ValueError("pass uploads or sources, one of the two")
        if len(uploads) + len(sources) > MAX_BATCH:
            raise ValueError(f"at most {MAX_BATCH} items per batch")
        fields = {"priority": Priority(priority).value, **_webhook(webhook, webhook_events)}
        if sources:
            items = [{"source": ref.uri(), "ref": name} for name, ref in sources]
            response = self._request("POST", "/v1/jobs/batch", json={"items": items, **fields})
        else:
            files = [("image", (name, data, "application/octet-stream")) for name, data in uploads]
            response = self._request("POST", "/v1/jobs/batch", files=files, data=fields)
        answer = self._read(response, BatchResponse)
        if len(answer.items) != len(uploads) + len(sources):
            raise ApiError(BAD_ANSWER, f"{len(answer.items)} answers for a batch of {len(uploads) + len(sources)}",
                           response.status_code)
        return answer

    def job(self, job_id: str) -> JobView:
        """One job; ApiError ``not_found`` for an unknown or expired id."""
        return self._read(self._request("GET", f"/v1/jobs/{job_id}"), JobView)

    def cancel(self, job_id: str) -> JobView:
        """Withdraw a job: ``canceled`` at once if it was queued, else still ``running`` with
        ``cancel_requested`` until its worker stops it; ApiError ``not_cancelable`` once it
        ended, ``not_found`` for an unknown id."""
        return self._read(self._request("POST", f"/v1/jobs/{job_id}/cancel"), JobView)

    def webhook_secret(self) -> WebhookSecret:
        """The secret that signs this key's tenant's webhooks (verify deliveries with it)."""
        return self._read(self._request("GET", "/v1/webhooks/secret"), WebhookSecret)

    def jobs(self, job_ids: Sequence[str], deadline: Optional[float] = None) -> list[Job]:
        """Any number of jobs, in order, MAX_BATCH per request; unknown ids as MissingJob.
        ``deadline`` (a ``time.monotonic()`` value) cuts each request's timeout to the time
        left, but to no less than LAST_POLL_SECONDS: the poll at the deadline still gets its
        answer from a working API."""
        found: list[Job] = []
        for start in range(0, len(job_ids), MAX_BATCH):
            chunk = job_ids[start:start + MAX_BATCH]
            timeout = None
            if deadline is not None:
                timeout = min(self.timeout, max(LAST_POLL_SECONDS, deadline - time.monotonic()))
            response = self._request("GET", "/v1/jobs", timeout=timeout, params={"ids": ",".join(chunk)})
            found.extend(self._read(response, JobsResponse).jobs)
        return found

    def wait(self, job_ids: Sequence[str], poll_interval: float = 1.0,
             on_finished: Optional[Callable[[Job], None]] = None, timeout: Optional[float] = None) -> list[Job]:
        """Poll until every job is succeeded, failed or gone; the last answers, in order.

        ``on_finished`` is called once per job as it ends (for a progress display).
        While the service is busy or restarting, polling backs off and goes on, but
        never past ``timeout`` seconds (``None``: no deadline): then
        :class:`WaitTimedOut` says which jobs had not ended. A queue with no worker
        would otherwise keep a script waiting for ever; the jobs themselves go on.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        last: dict[str, Job] = {}
        waiting = list(dict.fromkeys(job_ids))
        while waiting:
            try:
                answers = self.jobs(waiting, deadline)  # a hung API cannot hold it past the deadline
            except ApiError as exc:
                if not exc.transient:
                    raise
                self._pause(max(poll_interval, exc.retry_after or 2.0), deadline, job_ids, waiting, last)
                continue
            for job in answers:
                last[job.id] = job
                if _finished(job) and on_finished:
                    on_finished(job)
            waiting = [job.id for job in answers if not _finished(job)]
            if waiting:
                self._pause(poll_interval, deadline, job_ids, waiting, last)
        return [last[job_id] for job_id in job_ids]

    @staticmethod
    def _pause(seconds: float, deadline: Optional[float], job_ids: Sequence[str], waiting: list[str],
               last: dict[str, Job]) -> None:
        """Sleep before the next poll (the last one at the deadline), or raise
        WaitTimedOut once the deadline has passed."""
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimedOut(waiting, [last[job_id] for job_id in job_ids if job_id in last])
            seconds = min(seconds, remaining)
        time.sleep(seconds)

    def download(self, job: JobView, out_dir: Union[str, Path],
                 names: Optional[Iterable[str]] = None) -> dict[str, Path]:
        """Write a succeeded job's outputs (all, or ``names``) into ``out_dir`` (created),
        ``masks/``, ``cutouts/`` and ``tryon/`` as folders; name -> path.

        Each file is written under a temporary name and renamed, so a cut-off download
        never leaves a file that looks complete. Only names the contract defines are
        written, so no answer can place a file outside ``out_dir``."""
        if job.result is None:
            raise ValueError(f"job {job.id} is {job.status.value}: it has no outputs")
        target = Path(out_dir)
        target.mkdir(parents=True, exist_ok=True)
        written: dict[str, Path] = {}
        for name in job.result.outputs if names is None else names:
            url = job.result.outputs.get(name)
            if url is None or output_media_type(name) is None:
                continue
            path = target / name
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f".{path.name}.partial")
            partial.write_bytes(self._request("GET", url).content)
            partial.replace(path)
            written[name] = path
        return written


def _webhook(url: Optional[str], events: Sequence[WebhookEvent]) -> dict:
    """The webhook fields of a submission (the same in JSON and in a form: events comma-separated)."""
    if url is None:
        return {}
    return {"webhook": url, **({"webhook_events": ",".join(WebhookEvent(e).value for e in events)} if events else {})}


def _finished(job: Job) -> bool:
    return isinstance(job, MissingJob) or job.status.terminal


def _reason(exc: requests.ConnectionError) -> str:
    """The innermost cause ("Connection refused"), not urllib3's nested wrapper text."""
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "No route to host",
                   "Temporary failure in name resolution", "timed out"):
        if marker in text:
            return marker.lower()
    return text[:300]
