"""Stores that fail as real ones can, behind the production interfaces, for the API's
rollback tests: a job store that meets an id already taken, a file store whose
writes fail half-way (a full disk, a store that went away)."""
from __future__ import annotations

from typing import Callable

from m2fp_contract.errors import StorageUnavailable
from common.jobs import JobStore
from common.storage import LocalStore


class TakenIdJobStore(JobStore):
    """Another job (made by ``make_other``) takes each id just before it is created."""

    def __init__(self, store: JobStore, make_other: Callable[[str], None]) -> None:
        super().__init__(store.client, store.ttl, store.prefix, store.on_event)
        self.make_other = make_other

    def create(self, job_id, *args, **kwargs):
        self.make_other(job_id)
        return super().create(job_id, *args, **kwargs)


class FailingWritesStore(LocalStore):
    """Writes the first bytes of each object, then fails as a lost store does."""

    def put(self, key: str, data: bytes, content_type: str) -> None:
        super().put(key, data[:16], content_type)
        raise StorageUnavailable("local store: no space left on device")
