"""Bulk backfill: parse every image of a folder or an S3 prefix once, through the API.

    m2fp backfill SRC [--api-url http://127.0.0.1:8000] [options]
    make backfill SRC=<folder or s3://bucket/prefix> [API_URL=...] [BACKFILL_ARGS=...]

SRC is a local directory (files are uploaded) or ``s3://bucket/prefix`` in a bucket the
service reads (objects are submitted by reference: nothing is downloaded or re-uploaded;
the bucket must be S3_BUCKET or one of SOURCE_BUCKETS). S3 listing uses the same S3_*
variables as the service.

A SQLite state file remembers what was submitted and how it ended, committed after
every step: re-running the same command after Ctrl-C, a crash or a reboot submits
nothing twice and picks up where it stopped (and the service's content hash catches
the one request whose answer was lost mid-flight). At most --in-flight jobs wait at a
time, and the backfill backs off whenever the service answers 429/503. The report is
JSON Lines: one row per image, then a summary row.
"""
from __future__ import annotations

import hashlib
import json
import logging
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from tqdm import tqdm

from m2fp_contract.schema import MAX_BATCH, TERMINAL_STATUSES, BatchItemResult, ErrorDetail, JobView, SourceRef
from m2fp_client.backfill_state import UPLOAD_FAILED, State
from m2fp_client.client import ApiError, Client, Job
from m2fp_client.sources import Source, batches

log = logging.getLogger("backfill")
# Exit statuses (the CLI's usage and API errors exit 2).
ALL_SUCCEEDED, SOME_FAILED, INTERRUPTED = 0, 1, 130
MAX_BACKOFF = 30.0


class Busy(Exception):
    """The service asked us to slow down (429 queue_full, 503), or is not answering."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(retry_after)
        self.retry_after = retry_after


class Submitter:
    """Sends a batch of names and gets one answer per name, whatever the transport does."""

    UPLOAD_ATTEMPTS = 3

    def __init__(self, client: Client, source: Source) -> None:
        self.client, self.source = client, source
        self.failed_uploads: dict[str, int] = {}

    def submit(self, names: list[str]) -> list[BatchItemResult]:
        """One answer per name, in order. A batch the server refuses as too large (413,
        or an upload cut off mid-send while the API is up) is split until each file
        stands alone; a file still refused alone fails, and only that file."""
        try:
            return self._send(names)
        except ApiError as exc:
            if exc.unreachable:
                return self._cut_off(names, exc)
            if exc.status == 413:
                if len(names) > 1:
                    return self._split(names)
                return [BatchItemResult(ref=names[0], status=413, error=ErrorDetail(code=exc.code, message=exc.message))]
            if exc.transient:
                raise Busy(exc.retry_after or 2.0) from None
            raise

    def _send(self, names: list[str]) -> list[BatchItemResult]:
        if self.source.bucket:
            sources = [(n, SourceRef(bucket=self.source.bucket, key=n)) for n in names]
            return self.client.submit_batch(sources=sources).items
        return self.client.submit_batch(uploads=[(n, (self.source.root / n).read_bytes()) for n in names]).items

    def _cut_off(self, names: list[str], exc: ApiError) -> list[BatchItemResult]:
        """No answer: the API is down (wait for it), or it dropped an upload too large for
        a proxy or its limits (split the batch; retry a lone file a few times)."""
        if not (self.source.root and self.client.healthy()):
            log.warning("API unreachable (%s); backing off", exc.message)
            raise Busy(2.0) from None
        if len(names) > 1:
            return self._split(names)
        tries = self.failed_uploads[names[0]] = self.failed_uploads.get(names[0], 0) + 1
        if tries < self.UPLOAD_ATTEMPTS:
            raise Busy(2.0) from None
        return [BatchItemResult(ref=names[0], status=0, error=ErrorDetail(
            code=UPLOAD_FAILED, message=f"the API cut off the upload: {exc.message}"))]

    def _split(self, names: list[str]) -> list[BatchItemResult]:
        half = len(names) // 2
        return self.submit(names[:half]) + self.submit(names[half:])

    def poll(self, job_ids: list[str]) -> list[Job]:
        try:
            return self.client.jobs(job_ids)
        except ApiError as exc:
            if exc.transient:
                raise Busy(exc.retry_after or 2.0) from None
            raise


class Backfill:
    """Keeps at most ``in_flight`` jobs waiting, submitting and polling in steps."""

    def __init__(self, names: list[str], state: State, submitter: Submitter, source: Source,
                 in_flight: int, batch_size: int, poll_interval: float) -> None:
        self.names, self.state, self.submitter, self.source = names, state, submitter, source
        self.limit, self.batch_size, self.poll_interval = in_flight, batch_size, poll_interval
        self.backoff = 0.0
        self.finished = sum(1 for row in state.rows(names) if row["status"] in TERMINAL_STATUSES)

    def _record_submissions(self, batch: list[str], results: list[BatchItemResult]) -> int:
        """Store each item's job (or refusal); return how many are already finished.
        Answers come in the order of the batch (the refs the API echoes are the upload's
        file name as the multipart parser saw it, not always the path sent)."""
        finished = 0
        for name, result in zip(batch, results):
            if result.job is not None:
                self.state.record_job(name, result.job)
                finished += result.job.status.terminal  # the same content was parsed before
            else:  # refused at submission: this image's own fault (invalid, too large, ...)
                self.state.update(name, "failed", error=result.error)
                finished += 1
        self.state.commit()
        return finished

    def _record_polls(self, waiting: dict[str, list[str]], jobs: list[Job]) -> int:
        """Store the polled statuses; return how many images finished."""
        finished = 0
        for job in jobs:
            for name in waiting.get(job.id, []):
                if not isinstance(job, JobView):  # expired unseen: submit it again
                    self.state.reset(name)
                    continue
                finished += job.status.terminal
                self.state.record_job(name, job)
        self.state.commit()
        return finished

    def _advance(self, progress: tqdm, finished: int) -> None:
        self.finished += finished
        progress.update(finished)  # a no-op without a terminal: logs use self.finished

    def step(self, progress: tqdm) -> bool:
        """Submit up to the in-flight limit, poll what waits; False when all is done."""
        waiting = self.state.in_flight()
        todo = self.state.unsubmitted(self.names)
        if not waiting and not todo:
            return False
        progressed = False
        try:
            capacity = self.limit - len(waiting)
            for batch in batches(self.source, todo[:max(0, capacity)], self.batch_size):
                self._advance(progress, self._record_submissions(batch, self.submitter.submit(batch)))
                progressed = True
            waiting = self.state.in_flight()
            if waiting:
                done = self._record_polls(waiting, self.submitter.poll(list(waiting)))
                self._advance(progress, done)
                progressed = progressed or done > 0
            self.backoff = 0.0
        except Busy as busy:
            self.backoff = min(MAX_BACKOFF, max(busy.retry_after, self.backoff * 2 or 1.0))
            log.info("service busy; waiting %.0f s", self.backoff)
            time.sleep(self.backoff)
            return True
        if not progressed:
            time.sleep(self.poll_interval)
        return True


def write_report(path: Path, source: Source, rows: list[dict], elapsed: float) -> dict:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    summary = {"source": source.describe(), "images": len(rows), "jobs": len({r["job_id"] for r in rows if r["job_id"]}),
               "by_status": counts, "elapsed_seconds": round(elapsed, 1)}
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as report:
        for row in rows:
            report.write(json.dumps(row) + "\n")
        report.write(json.dumps({"summary": summary}) + "\n")
    return summary


def default_state_path(source: Source) -> Path:
    digest = hashlib.sha256(source.describe().encode()).hexdigest()[:12]
    return Path("var/backfill") / f"state-{digest}.sqlite"


@dataclass
class Options:
    in_flight: int = 32
    batch_size: int = 16
    poll_interval: float = 1.0
    state: Optional[Path] = None
    report: Optional[Path] = None


def run(client: Client, source: Source, names: list[str], options: Options) -> int:
    """The whole backfill of ``names`` (chosen from ``source``); the exit status (0, 1 or 130)."""
    state_path = options.state or default_state_path(source)
    report_path = options.report or state_path.with_name(state_path.stem.replace("state", "report") + ".jsonl")
    state = State(state_path)
    state.add(names)
    state.retry_cut_off_uploads()
    run = Backfill(names, state, Submitter(client, source), source, options.in_flight,
                   min(options.batch_size, MAX_BATCH), options.poll_interval)

    def interrupt(signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    started = time.monotonic()
    log.info("backfill of %d image(s) from %s, %d already finished; state %s", len(names),
             source.describe(), run.finished, state_path)
    with tqdm(total=len(names), initial=run.finished, unit="img", disable=None, dynamic_ncols=True) as progress:
        last_log = 0.0
        try:
            while run.step(progress):
                if progress.disable and time.monotonic() - last_log > 10:
                    last_log = time.monotonic()
                    log.info("%d/%d finished, %d in flight", run.finished, len(names), sum(
                        len(v) for v in state.in_flight().values()))
        except KeyboardInterrupt:
            state.commit()
            log.warning("interrupted: %d/%d finished; run the same command again to resume", run.finished, len(names))
            return INTERRUPTED
    rows = state.rows(names)
    summary = write_report(report_path, source, rows, time.monotonic() - started)
    log.info("done: %s; report %s", summary, report_path)
    return SOME_FAILED if any(row["status"] != "succeeded" for row in rows) else ALL_SUCCEEDED
