"""Parts that fail as real ones can, behind the production interfaces: a job store that
meets an id already taken, a file store whose writes fail half-way (a full disk, a
store that went away), an engine that fails on every input, and a job store whose
first failure write meets a Redis error."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import redis

from m2fp_contract.errors import StorageUnavailable
from common.job_store import JobStore
from common.storage import LocalStore


class TakenIdJobStore(JobStore):
    """Another job (made by ``make_other``) takes each id just before it is created."""

    def __init__(self, store: JobStore, make_other: Callable[[str], None]) -> None:
        super().__init__(store.client, store.ttl, store.prefix, store.on_event)
        self.make_other = make_other

    def create_for_content(self, job_id, *args, **kwargs):
        self.make_other(job_id)
        return super().create_for_content(job_id, *args, **kwargs)


class FailingWritesStore(LocalStore):
    """Writes the first bytes of each object, then fails as a lost store does."""

    def put(self, key: str, data: bytes, content_type: str) -> None:
        super().put(key, data[:16], content_type)
        raise StorageUnavailable("local store: no space left on device")


class ExplodingEngine:
    """An engine that fails on every image, as a model bug would."""

    def __init__(self, engine) -> None:
        self.description = engine.description

    def parse(self, image):
        raise RuntimeError("the model failed on this input")


class FailureWriteFailsOnce(JobStore):
    """The first ``fail`` meets a Redis error while ``marker`` exists (and removes it)."""

    def __init__(self, store: JobStore, marker: Path) -> None:
        super().__init__(store.client, store.ttl, store.prefix, store.on_event)
        self.marker = marker

    def fail(self, job_id, error):
        if self.marker.exists():
            self.marker.unlink()
            raise redis.ConnectionError("Redis went away while the failure was being recorded")
        return super().fail(job_id, error)


class CommitReplyLost(redis.Connection):
    """A connection that loses the reply to the first transaction it commits: Redis has
    applied the EXEC, then the connection drops before its answer arrives (a network
    blip, a proxy restart). redis-py's retry then runs the transaction again."""

    armed = True  # per subclass: make one with :func:`losing_the_first_commit_reply`
    _exec_sent = False

    def send_packed_command(self, command, check_health=True):
        chunks = command if isinstance(command, list) else [command]
        self._exec_sent = b"\r\nEXEC\r\n" in b"".join(bytes(chunk) for chunk in chunks)
        return super().send_packed_command(command, check_health)

    def read_response(self, *args, **kwargs):
        response = super().read_response(*args, **kwargs)
        if self._exec_sent and isinstance(response, list) and type(self).armed:
            type(self).armed = False
            self.disconnect()
            raise redis.ConnectionError("Connection closed by server (the reply to EXEC was lost)")
        return response


def losing_the_first_commit_reply(client: redis.Redis) -> redis.Redis:
    """``client`` (made by the production factory, before its first command) with
    connections that lose the reply to its first committed transaction."""
    client.connection_pool.connection_class = type("LosesOneCommitReply", (CommitReplyLost,), {"armed": True})
    return client
