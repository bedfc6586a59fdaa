"""``GET /metrics``: the API's Prometheus metrics (docs/deployment.md, "Metrics").

- Every request, by method, route and status: ``m2fp_api_request_duration_seconds``, a
  histogram whose ``_count`` is the request count. The route is the URL rule
  (``/v1/jobs/<job_id>``), never the path, so job ids never become label values; a
  method outside :data:`METHODS` is ``other``.
- Submissions by priority and outcome (``created``, ``deduplicated``, ``refused`` with
  the error code): ``m2fp_api_submissions_total``. They are read off the answer the
  client got (each item's status and code in a batch), so every refusal counts with
  its code, whichever layer refused it. A batch refused as a whole counts once.
- Jobs waiting per queue: ``m2fp_queue_depth``, read from Redis at scrape time.
- Jobs accepted before enough Redis replicas held them (behind Sentinel):
  ``m2fp_api_unreplicated_accepts_total``.

The registering blueprint observes every request of the app, not only its own.
gunicorn's workers each count their own requests; the scrape sums them from
prometheus-client's multiprocess files (:mod:`common.metrics`).
"""
from __future__ import annotations

import logging
import time
from typing import Any, Iterator, Optional

import redis
from flask import Blueprint, Response, current_app, g, request
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from common.metrics import scrape_registry
from common.queue import JobQueue
from m2fp_contract.schema import Priority
from api.openapi import MediaResponse, spec

log = logging.getLogger(__name__)
metrics = Blueprint("metrics", __name__)

REQUEST_SECONDS = Histogram(
    "m2fp_api_request_duration_seconds", "API requests by method, route (URL rule) and status, and their latency",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
SUBMISSIONS = Counter(
    "m2fp_api_submissions_total", "Photos submitted, by priority and outcome (created, deduplicated, refused)",
    ["priority", "outcome", "code"])
UNREPLICATED_ACCEPTS = Counter(
    "m2fp_api_unreplicated_accepts_total",
    "Jobs accepted before REDIS_WAIT_REPLICAS replicas confirmed them within REDIS_WAIT_MS (a failover could lose them)")
UNMATCHED_ROUTE = "<unmatched>"  # the route label of a request no URL rule matched (a 404)
# The method label: these as they are, any other (a client may send any token) as "other",
# so no request can add label values.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "other"
# The views whose answers are submissions, and the priority of each when the body gave none.
SUBMISSION_ROUTES = {"jobs.create_job": Priority.INTERACTIVE, "jobs.create_jobs": Priority.BACKFILL,
                     "demo.api_parse": Priority.INTERACTIVE, "demo.parse": Priority.INTERACTIVE}


class QueueDepth:
    """Jobs waiting in each queue, read from Redis when Prometheus scrapes."""

    def __init__(self, queue: JobQueue) -> None:
        self.queue = queue

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("m2fp_queue_depth", "Jobs waiting in each queue (read at scrape time)",
                                   labels=["queue", "priority"])
        try:
            for priority, name in self.queue.names.items():
                family.add_metric([name, priority.value], self.queue.depth(priority))
        except redis.RedisError as exc:  # the scrape still answers; the series go missing
            log.warning("queue depth unavailable for /metrics: %s", exc)
            return
        yield family


@metrics.before_app_request
def _start_clock() -> None:
    g.metrics_started = time.perf_counter()


@metrics.after_app_request
def _observe(response: Response) -> Response:
    started = g.pop("metrics_started", None)
    route = request.url_rule.rule if request.url_rule else UNMATCHED_ROUTE
    if started is not None:
        method = request.method if request.method in METHODS else OTHER_METHOD
        REQUEST_SECONDS.labels(method, route, str(response.status_code)).observe(
            time.perf_counter() - started)
    if request.endpoint in SUBMISSION_ROUTES and request.method == "POST":
        _count_submissions(response)
    return response


def _priority() -> str:
    """The submission's priority as validated, else its route's default (a body that did
    not validate has no priority of its own)."""
    context = getattr(request, "context", None)
    body = getattr(context, "json", None) or getattr(context, "form", None)
    priority: Optional[Priority] = getattr(body, "priority", None)
    return (priority or SUBMISSION_ROUTES[request.endpoint]).value


def _count_submissions(response: Response) -> None:
    priority = _priority()
    answer: Any = response.get_json(silent=True) if response.is_json else None
    items = answer.get("items") if response.status_code == 200 and isinstance(answer, dict) else None
    if not isinstance(items, list):  # one submission, or a batch refused as a whole
        status = response.status_code
        created = g.get("submission_created")  # set once accepted: a waited answer's 200 may be a new job
        if created is not None:
            status = 202 if created else 200
        items = [{"status": status, "error": (answer or {}).get("error") if isinstance(answer, dict) else None}]
    for item in items:
        status = item.get("status", 0)
        if status == 202:
            SUBMISSIONS.labels(priority, "created", "").inc()
        elif status == 200:
            SUBMISSIONS.labels(priority, "deduplicated", "").inc()
        else:
            SUBMISSIONS.labels(priority, "refused", (item.get("error") or {}).get("code", "unknown")).inc()


@metrics.get("/metrics")
@spec.validate(tags=["operations"], resp=MediaResponse(
    HTTP_200=(None, "Prometheus text format: requests, submissions, queue depth"),
    media={"200": {CONTENT_TYPE_PLAIN_0_0_4: {"schema": {"type": "string"}}}}))
def scrape():
    """Prometheus metrics of the API (all its processes) and the queues"""
    registry = scrape_registry(QueueDepth(current_app.extensions["m2fp"].queue))
    return Response(generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})
