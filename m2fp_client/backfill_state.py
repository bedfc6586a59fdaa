"""The backfill's memory: what happened to each image, in SQLite, committed after every
step, so a re-run after Ctrl-C, a crash or a reboot submits nothing twice.

The file format (one ``items`` row per image) is what earlier versions wrote: a run
started by an older release resumes under this one.
"""
from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Optional

from m2fp_contract.schema import TERMINAL_STATUSES, ErrorDetail, JobView

UPLOAD_FAILED = "upload_failed"  # cut off in transit: submitted again by the next run


class State:
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

    def update(self, name: str, status: str, job_id: Optional[str] = None, error: Optional[ErrorDetail] = None,
               outputs: Optional[dict[str, str]] = None) -> None:
        self.db.execute(
            "UPDATE items SET status = ?, job_id = COALESCE(?, job_id), error_code = ?, error_message = ?, "
            "outputs = ?, updated = ? WHERE name = ?",
            (status, job_id, error.code if error else None, error.message if error else None,
             json.dumps(outputs) if outputs else None, time.time(), name))

    def record_job(self, name: str, job: JobView) -> None:
        """Store what the API said of ``name``'s job (its status, outputs or error)."""
        self.update(name, job.status.value, job_id=job.id, outputs=job.result.keys if job.result else None,
                    error=job.error)

    def reset(self, name: str) -> None:
        """Forget the job (it expired unseen): the image is submitted again."""
        self.db.execute("UPDATE items SET job_id = NULL, status = NULL WHERE name = ?", (name,))

    def commit(self) -> None:
        self.db.commit()

    def rows(self, names: list[str]) -> list[dict]:
        """One report row per name, in order: ``name``, ``job_id``, ``status``, ``outputs``, ``error``."""
        found = {row[0]: row for row in self.db.execute(
            "SELECT name, job_id, status, error_code, error_message, outputs FROM items")}
        rows = []
        for name in names:
            _, job_id, status, code, message, outputs = found.get(name, (name, None, None, None, None, None))
            rows.append({"name": name, "job_id": job_id, "status": status or "not_submitted",
                         "outputs": json.loads(outputs) if outputs else None,
                         "error": {"code": code, "message": message} if code else None})
        return rows
