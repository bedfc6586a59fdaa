"""Bulk backfill: parse every image of a folder or an S3 prefix once, through the API.

    python -m scripts.backfill SRC [--api-url http://127.0.0.1:8000] [options]
    make backfill SRC=<folder or s3://bucket/prefix> [API_URL=...] [BACKFILL_ARGS=...]

SRC is a local directory (files are uploaded) or ``s3://bucket/prefix`` in the
service's storage (objects are submitted by reference: nothing is downloaded or
re-uploaded; the bucket must be S3_BUCKET or one of SOURCE_BUCKETS). S3 listing uses
the same S3_* settings as the service.

A SQLite state file remembers what was submitted and how it ended, committed after
every step: re-running the same command after Ctrl-C, a crash or a reboot submits
nothing twice and picks up where it stopped (and the service's content hash catches
the one request whose answer was lost mid-flight). At most --in-flight jobs wait at a
time, and the script backs off whenever the service answers 429/503. The report is
JSON Lines: one row per image, then a summary row; the exit status is 1 when any
image failed.
"""
from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import logging
import signal
import sqlite3
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional

import requests
from tqdm import tqdm

from common.jobs import MAX_BATCH, TERMINAL_STATUSES

log = logging.getLogger("backfill")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
UPLOAD_FAILED = "upload_failed"  # cut off in transit: submitted again by the next run
MAX_BATCH_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class Source:
    """Where the images are: a local root, or an S3 bucket and prefix."""

    root: Optional[Path] = None
    bucket: Optional[str] = None
    prefix: str = ""

    @classmethod
    def parse(cls, text: str) -> "Source":
        if text.startswith("s3://"):
            bucket, _, prefix = text[len("s3://"):].partition("/")
            if not bucket:
                raise SystemExit(f"error: no bucket in {text!r}")
            return cls(bucket=bucket, prefix=prefix)
        root = Path(text).expanduser()
        if not root.is_dir():
            raise SystemExit(f"error: {text} is not a directory (or s3://bucket/prefix)")
        return cls(root=root.resolve())

    def describe(self) -> str:
        return str(self.root) if self.root else f"s3://{self.bucket}/{self.prefix}"

    def names(self) -> Iterator[str]:
        """Every file name under the source: paths relative to the root, or full keys."""
        if self.root:
            for path in sorted(self.root.rglob("*")):
                if path.is_file():
                    yield path.relative_to(self.root).as_posix()
        else:
            from common.settings import load_settings
            from common.storage import create_storage

            store = create_storage(load_settings())
            if not hasattr(store, "iter_keys"):
                raise SystemExit("error: an s3:// source needs the S3 settings (S3_ENDPOINT, keys) in the environment")
            for key, _size in store.iter_keys(self.prefix, bucket=self.bucket):
                yield key


def select(names: Iterable[str], include: list[str], exclude: list[str], limit: Optional[int]) -> list[str]:
    """Image files matching any --include and no --exclude glob, at most --limit."""
    chosen = []
    for name in names:
        if Path(name).suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if include and not any(fnmatch.fnmatch(name, pattern) for pattern in include):
            continue
        if any(fnmatch.fnmatch(name, pattern) for pattern in exclude):
            continue
        chosen.append(name)
        if limit is not None and len(chosen) >= limit:
            break
    return chosen


class State:
    """What happened to each image, in SQLite, committed after every change."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path)
        self.db.execute("""CREATE TABLE IF NOT EXISTS items (
            name TEXT PRIMARY KEY, job_id TEXT, status TEXT, error_code TEXT,
            error_message TEXT, outputs TEXT, updated REAL)""")
        self.db.commit()

    def add(self, names: list[str]) -> None:
        self.db.executemany("INSERT OR IGNORE INTO items (name) VALUES (?)", [(n,) for n in names])
        self.db.commit()

    def unsubmitted(self, names: list[str]) -> list[str]:
        open_names = {row[0] for row in self.db.execute("SELECT name FROM items WHERE status IS NULL")}
        return [n for n in names if n in open_names]

    def retry_cut_off_uploads(self) -> None:
        """Uploads cut off in transit on an earlier run are not the image's fault: try again."""
        self.db.execute("UPDATE items SET status = NULL, error_code = NULL, error_message = NULL "
                        "WHERE error_code = ? AND job_id IS NULL", (UPLOAD_FAILED,))
        self.db.commit()

    def in_flight(self) -> dict[str, list[str]]:
        """job id → the names waiting on it (identical files share one job)."""
        waiting: dict[str, list[str]] = {}
        terminal = sorted(TERMINAL_STATUSES)
        for name, job_id in self.db.execute(
                f"SELECT name, job_id FROM items WHERE job_id IS NOT NULL AND status NOT IN "
                f"({', '.join('?' * len(terminal))})", terminal):
            waiting.setdefault(job_id, []).append(name)
        return waiting

    def update(self, name: str, status: str, job_id: Optional[str] = None, error: Optional[dict] = None,
               outputs: Optional[dict] = None) -> None:
        self.db.execute(
            "UPDATE items SET status = ?, job_id = COALESCE(?, job_id), error_code = ?, error_message = ?, "
            "outputs = ?, updated = ? WHERE name = ?",
            (status, job_id, (error or {}).get("code"), (error or {}).get("message"),
             json.dumps(outputs) if outputs else None, time.time(), name))

    def record_job(self, name: str, job: dict) -> None:
        """Store what the API said of ``name``'s job (its status, outputs or error)."""
        self.update(name, job["status"], job_id=job["id"], outputs=(job.get("result") or {}).get("keys"),
                    error=job.get("error"))

    def reset(self, name: str) -> None:
        """Forget the job (it expired unseen): the image is submitted again."""
        self.db.execute("UPDATE items SET job_id = NULL, status = NULL WHERE name = ?", (name,))

    def commit(self) -> None:
        self.db.commit()

    def rows(self, names: list[str]) -> list[dict]:
        found = {row[0]: row for row in self.db.execute(
            "SELECT name, job_id, status, error_code, error_message, outputs FROM items")}
        rows = []
        for name in names:
            _, job_id, status, code, message, outputs = found.get(name, (name, None, None, None, None, None))
            rows.append({"name": name, "job_id": job_id, "status": status or "not_submitted",
                         "outputs": json.loads(outputs) if outputs else None,
                         "error": {"code": code, "message": message} if code else None})
        return rows


class Busy(Exception):
    """The service asked us to slow down (429 queue_full, or 503)."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(retry_after)
        self.retry_after = retry_after


class ApiClient:
    UPLOAD_ATTEMPTS = 3

    def __init__(self, base_url: str, timeout: float = 120) -> None:
        self.base = base_url.rstrip("/")
        self.http = requests.Session()
        self.timeout = timeout
        self.failed_uploads: dict[str, int] = {}

    def _checked(self, response: requests.Response) -> dict:
        if response.status_code in (429, 503):
            raise Busy(float(response.headers.get("Retry-After", "2")))
        if response.status_code >= 400:
            raise SystemExit(f"error: the API answered {response.status_code}: {response.text[:500]}")
        return response.json()

    def submit(self, source: Source, names: list[str]) -> list[dict]:
        """One answer per name, in order. A batch the server refuses as too large (413,
        or an upload cut off mid-send while the API is up) is split until each file
        stands alone; a file still refused alone fails, and only that file."""
        try:
            response = self._post_batch(source, names)
        except requests.ConnectionError as exc:
            if not (source.root and self._reachable()):
                log.warning("API unreachable (%s); backing off", exc)
                raise Busy(2.0) from None
            if len(names) > 1:
                return self._split(source, names)
            tries = self.failed_uploads[names[0]] = self.failed_uploads.get(names[0], 0) + 1
            if tries < self.UPLOAD_ATTEMPTS:
                raise Busy(2.0) from None
            return [{"status": 0, "error": {"code": UPLOAD_FAILED, "message": f"the API cut off the upload: {exc}"}}]
        if response.status_code == 413:
            if len(names) > 1:
                return self._split(source, names)
            try:
                error = response.json()["error"]
            except (ValueError, KeyError, TypeError):  # a proxy's own 413 page
                error = {"code": "payload_too_large", "message": response.text[:500]}
            return [{"status": 413, "error": error}]
        items = self._checked(response)["items"]
        if len(items) != len(names):
            raise SystemExit(f"error: the API answered {len(items)} items for a batch of {len(names)}")
        return items

    def _post_batch(self, source: Source, names: list[str]) -> requests.Response:
        if source.bucket:
            items = [{"source": {"bucket": source.bucket, "key": n}, "ref": n} for n in names]
            return self.http.post(f"{self.base}/v1/jobs/batch", json={"items": items}, timeout=self.timeout)
        files = [("image", (n, (source.root / n).read_bytes(), "application/octet-stream")) for n in names]
        return self.http.post(f"{self.base}/v1/jobs/batch", files=files, data={"priority": "backfill"},
                              timeout=self.timeout)

    def _split(self, source: Source, names: list[str]) -> list[dict]:
        half = len(names) // 2
        return self.submit(source, names[:half]) + self.submit(source, names[half:])

    def _reachable(self) -> bool:
        try:
            return self.http.get(f"{self.base}/healthz", timeout=5).ok
        except requests.RequestException:
            return False

    def poll(self, job_ids: list[str]) -> list[dict]:
        jobs: list[dict] = []
        for start in range(0, len(job_ids), MAX_BATCH):
            chunk = job_ids[start:start + MAX_BATCH]
            try:
                response = self.http.get(f"{self.base}/v1/jobs", params={"ids": ",".join(chunk)}, timeout=self.timeout)
            except requests.ConnectionError:
                raise Busy(2.0) from None
            jobs.extend(self._checked(response)["jobs"])
        return jobs


def batches(source: Source, names: list[str], size: int) -> Iterator[list[str]]:
    """Groups of at most ``size`` names, and (for uploads) at most 8 MiB per request."""
    batch: list[str] = []
    total = 0
    for name in names:
        weight = (source.root / name).stat().st_size if source.root else 0
        if batch and (len(batch) >= size or total + weight > MAX_BATCH_BYTES):
            yield batch
            batch, total = [], 0
        batch.append(name)
        total += weight
    if batch:
        yield batch


class Backfill:
    def __init__(self, source: Source, names: list[str], state: State, api: ApiClient,
                 in_flight: int, batch_size: int, poll_interval: float) -> None:
        self.source, self.names, self.state, self.api = source, names, state, api
        self.limit, self.batch_size, self.poll_interval = in_flight, batch_size, poll_interval
        self.backoff = 0.0
        self.finished = sum(1 for row in state.rows(names) if row["status"] in TERMINAL_STATUSES)

    def _record_submissions(self, batch: list[str], results: list[dict]) -> int:
        """Store each item's job (or refusal); return how many are already finished.
        Answers come in the order of the batch (the refs the API echoes are the upload's
        file name as the multipart parser saw it, not always the path sent)."""
        finished = 0
        for name, result in zip(batch, results):
            if "job" in result:
                self.state.record_job(name, result["job"])
                finished += result["job"]["status"] in TERMINAL_STATUSES  # the same content was parsed before
            else:  # refused at submission: this image's own fault (invalid, too large, ...)
                self.state.update(name, "failed", error=result["error"])
                finished += 1
        self.state.commit()
        return finished

    def _record_polls(self, waiting: dict[str, list[str]], jobs: list[dict]) -> int:
        """Store the polled statuses; return how many images finished."""
        finished = 0
        for job in jobs:
            for name in waiting.get(job["id"], []):
                if job["status"] == "not_found":
                    self.state.reset(name)
                    continue
                finished += job["status"] in TERMINAL_STATUSES
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
                self._advance(progress, self._record_submissions(batch, self.api.submit(self.source, batch)))
                progressed = True
            waiting = self.state.in_flight()
            if waiting:
                done = self._record_polls(waiting, self.api.poll(list(waiting)))
                self._advance(progress, done)
                progressed = progressed or done > 0
            self.backoff = 0.0
        except Busy as busy:
            self.backoff = min(30.0, max(busy.retry_after, self.backoff * 2 or 1.0))
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


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="a local directory, or s3://bucket/prefix")
    parser.add_argument("--api-url", default="http://127.0.0.1:8000")
    parser.add_argument("--in-flight", type=int, default=32, help="jobs waiting at most at a time (default 32)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per request (max 100)")
    parser.add_argument("--state", type=Path, help="state file (default var/backfill/state-<src hash>.sqlite)")
    parser.add_argument("--report", type=Path, help="JSON Lines report (default next to the state file)")
    parser.add_argument("--include", action="append", default=[], metavar="GLOB", help="only names matching")
    parser.add_argument("--exclude", action="append", default=[], metavar="GLOB", help="skip names matching")
    parser.add_argument("--limit", type=int, help="at most this many images")
    parser.add_argument("--dry-run", action="store_true", help="list what would be submitted, submit nothing")
    parser.add_argument("--poll-interval", type=float, default=1.0, help="seconds between polls when idle")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    source = Source.parse(args.src)
    names = select(source.names(), args.include, args.exclude, args.limit)
    if args.dry_run:
        for name in names:
            print(name)
        print(f"{len(names)} image(s) would be submitted from {source.describe()}", file=sys.stderr)
        return 0
    state_path = args.state or default_state_path(source)
    report_path = args.report or state_path.with_name(state_path.stem.replace("state", "report") + ".jsonl")
    state = State(state_path)
    state.add(names)
    state.retry_cut_off_uploads()
    api = ApiClient(args.api_url)
    run = Backfill(source, names, state, api, args.in_flight, min(args.batch_size, MAX_BATCH), args.poll_interval)

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
            return 130
    rows = state.rows(names)
    summary = write_report(report_path, source, rows, time.monotonic() - started)
    log.info("done: %s; report %s", summary, report_path)
    return 1 if any(row["status"] != "succeeded" for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
