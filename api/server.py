"""The API's gunicorn worker: gunicorn's threaded worker, with a deadline for receiving
each request.

gunicorn's ``gthread`` worker hands a connection to a thread as soon as its first bytes
arrive and then reads the request with blocking socket calls that have no timeout, so
a client that stalls or trickles its headers or body holds that thread for as long as
it likes (its ``timeout`` setting only watches the worker's main loop, which goes on
beating meanwhile). Here every read of a request waits at most until the request's
deadline: API_REQUEST_TIMEOUT seconds from its first byte, plus one second for every
API_UPLOAD_MIN_RATE bytes received, so an upload at least that fast always completes
and a slow one is cut off. A request whose headers miss the deadline is closed
unanswered; one whose body misses it (read by the app) gets ``408 request_timeout``
(``api.errors``), and its connection is closed, never kept alive.
"""
from __future__ import annotations

import socket
import time
from typing import Any

from gunicorn.http.errors import NoMoreData
from gunicorn.http.unreader import SocketUnreader
from gunicorn.workers import gthread

from common.settings import load_settings


class RequestTimedOut(NoMoreData):
    """The client did not send its request before its deadline.

    A :class:`NoMoreData` so that gunicorn closes the connection quietly when it happens
    while gunicorn itself reads (headers, or the rest of a body the app did not read),
    as it does for a client that went away.
    """

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def __str__(self) -> str:
        return f"the request did not arrive within {self.seconds:.0f} s"


class DeadlineUnreader(SocketUnreader):
    """gunicorn's reader of a connection's bytes, each read bounded by the request's deadline."""

    def __init__(self, sock: socket.socket, timeout: float, min_rate: int) -> None:
        super().__init__(sock)
        self.timeout = timeout
        self.min_rate = min_rate
        self.restart()

    def restart(self) -> None:
        """A new request on this connection: a new deadline."""
        self.started = time.monotonic()
        self.received = 0
        self.expired = False

    def allowed(self) -> float:
        """Seconds this request may take, by what it has sent so far."""
        return self.timeout + self.received / self.min_rate

    def chunk(self) -> bytes:
        remaining = self.started + self.allowed() - time.monotonic()
        if remaining <= 0:
            self.expired = True
            raise RequestTimedOut(self.allowed())
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(self.mxchunk)
        except socket.timeout:
            self.expired = True
            raise RequestTimedOut(self.allowed()) from None
        finally:
            self.sock.settimeout(None)  # as gunicorn had it: the answer is written without a deadline
        self.received += len(data)
        return data


class ThreadWorker(gthread.ThreadWorker):
    """gunicorn's ``gthread`` worker whose connections read through :class:`DeadlineUnreader`."""

    def init_process(self) -> None:
        settings = load_settings()
        self.request_timeout = settings.api_request_timeout
        self.upload_min_rate = settings.api_upload_min_rate
        super().init_process()

    def handle(self, conn: Any) -> tuple[bool, Any]:
        # gunicorn makes the parser (with an empty reader) when the connection first has
        # bytes, just before its first request is handled: the reader is swapped then,
        # before it has buffered anything.
        if not isinstance(conn.parser.unreader, DeadlineUnreader):
            conn.parser.unreader = DeadlineUnreader(conn.sock, self.request_timeout, self.upload_min_rate)
        reader: DeadlineUnreader = conn.parser.unreader
        reader.restart()
        keepalive, conn = super().handle(conn)
        if reader.expired:
            self.log.info("closed the connection of %s: its request did not arrive within %.0f s "
                          "(API_REQUEST_TIMEOUT, API_UPLOAD_MIN_RATE)", _peer(conn.client), reader.allowed())
            return False, conn
        return keepalive, conn


def _peer(client: Any) -> str:
    return f"{client[0]}:{client[1]}" if isinstance(client, tuple) and len(client) >= 2 else str(client)
