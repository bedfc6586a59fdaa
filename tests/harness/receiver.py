"""A webhook receiver on 127.0.0.1 for the tests: a real HTTP server in a thread that
records every delivery and answers with scripted statuses (then 200), or fails the
first attempts of each delivery (by its webhook-id) with 500, optionally
holding each request open until the test releases it (a slow receiver)."""
from __future__ import annotations

import ssl
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterable, Optional

from scripts.processes import wait_until


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int


class Receiver:
    def __init__(self, answers: Iterable[int] = (), fail_first: int = 0, hold: bool = False,
                 tls: Optional[ssl.SSLContext] = None) -> None:
        self.answers = list(answers)
        self.fail_first = fail_first
        self.deliveries: list[Received] = []
        self.arrived = threading.Event()  # a request came in (set before a held one is answered)
        self.release = threading.Event()
        if not hold:
            self.release.set()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.arrived.set()
                receiver.release.wait()
                with receiver._lock:
                    seen = sum(r.headers.get("webhook-id") == self.headers.get("webhook-id")
                               for r in receiver.deliveries)
                    status = receiver.answers.pop(0) if receiver.answers else 500 if seen < receiver.fail_first else 200
                    receiver.deliveries.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()},
                                                        body, status))
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *_args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str = "/hook", host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    def __enter__(self) -> "Receiver":
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def received(self, predicate: Callable[[Received], bool] = lambda _: True) -> list[Received]:
        with self._lock:
            return [delivery for delivery in self.deliveries if predicate(delivery)]

    def wait_for(self, predicate: Callable[[Received], bool], what: str, timeout: float = 120) -> Received:
        wait_until(lambda: bool(self.received(predicate)), timeout, what, interval=0.05)
        return self.received(predicate)[0]
