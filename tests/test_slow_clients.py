"""Slow clients against the real server (gunicorn with the API's worker, api/server.py).

Uploaders on raw sockets send their headers, are taken up by the server (it answers
their ``Expect: 100-continue``), then trickle a multipart body far slower than any
real upload. Each holds one thread while it lasts, so other requests are still
answered meanwhile; and it lasts only until its deadline (API_REQUEST_TIMEOUT, plus 1 s
per API_UPLOAD_MIN_RATE bytes), when it gets 408 request_timeout and its connection
is closed, however long it would go on trickling.
"""
from __future__ import annotations

import json
import socket
import time

import numpy as np
import pytest
import requests

from scripts.imagegen import encode, photo_jpeg
from scripts.processes import wait_until
from scripts.stack import Stack

BOUNDARY = "slow-client-boundary"


def multipart(image: bytes) -> bytes:
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + image + f"\r\n--{BOUNDARY}--\r\n".encode()


class Uploader:
    """One client posting ``body`` to /v1/jobs over a raw socket, at the pace it chooses."""

    def __init__(self, api_url: str, body: bytes) -> None:
        host, port = api_url.removeprefix("http://").rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        self.body = body
        self.sent = 0
        self.answer = b""

    def send_headers(self, expect_continue: bool = True) -> None:
        expect = "Expect: 100-continue\r\n" if expect_continue else ""
        self.sock.sendall((f"POST /v1/jobs HTTP/1.1\r\nHost: api\r\nContent-Length: {len(self.body)}\r\n"
                           f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n{expect}\r\n").encode())

    def wait_until_taken_up(self) -> None:
        """The server answers 100 Continue once one of its threads handles this request."""
        interim = self.sock.recv(1024)
        assert interim.startswith(b"HTTP/1.1 100 Continue"), interim

    def send(self, count: int) -> None:
        self.sock.sendall(self.body[self.sent:self.sent + count])
        self.sent += count

    def still_waiting(self) -> bool:
        """Connected, and not answered: the server still reads this request."""
        self.sock.setblocking(False)
        try:
            self.sock.recv(1, socket.MSG_PEEK)  # an answer, or b"" for a closed connection
            return False
        except BlockingIOError:
            return True
        finally:
            self.sock.setblocking(True)

    def trickle_until_cut_off(self, pause: float, bound: float = 120) -> bool:
        """One byte every ``pause`` seconds until the server answers or closes (True),
        or the body is sent or ``bound`` seconds pass (False)."""
        deadline = time.monotonic() + bound
        self.sock.settimeout(pause)
        while self.sent < len(self.body) and time.monotonic() < deadline:
            try:
                self.send(1)
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue  # no answer yet: the next byte
            except (BrokenPipeError, ConnectionResetError):
                return True
            self.answer += chunk
            return True
        return False

    def read_to_end(self) -> bytes:
        """The rest of the answer, until the server closes the connection."""
        self.sock.settimeout(30)
        while chunk := self.sock.recv(65536):
            self.answer += chunk
        return self.answer

    def close(self) -> None:
        self.sock.close()


def start_api(redis_url: str, tmp_path, **env: str) -> Stack:
    return Stack(env={"REDIS_URL": redis_url, "LOCAL_STORE_DIR": str(tmp_path / "store"), "API_WORKERS": "1",
                      "API_THREADS": "4", **env}, log_dir=tmp_path).start_api()


@pytest.fixture()
def patient_api(redis_url, tmp_path):
    """Four threads, and a deadline far beyond this test."""
    stack = start_api(redis_url, tmp_path, API_REQUEST_TIMEOUT="600")
    yield stack
    stack.stop()


@pytest.fixture()
def strict_api(redis_url, tmp_path):
    """A short deadline: 2 s, plus 1 s per KiB sent."""
    stack = start_api(redis_url, tmp_path, API_REQUEST_TIMEOUT="2", API_UPLOAD_MIN_RATE="1024")
    yield stack
    stack.stop()


def test_slow_uploaders_hold_a_thread_each_and_the_rest_of_the_api_answers(patient_api):
    job = patient_api.submit(photo_jpeg(64, 48, seed=1)).json()
    uploaders = [Uploader(patient_api.api_url, multipart(photo_jpeg(64, 48, seed=10 + i))) for i in range(3)]
    try:
        for uploader in uploaders:  # each in turn, so each is known to be in a thread of its own
            uploader.send_headers()
            uploader.wait_until_taken_up()
            uploader.send(100)  # part of the body, then nothing for now
        assert requests.get(f"{patient_api.api_url}/healthz", timeout=60).json() == {"status": "ok"}
        assert patient_api.job(job["id"])["status"] == "queued"
        assert all(uploader.still_waiting() for uploader in uploaders)  # answered while all three were held
    finally:
        for uploader in uploaders:
            uploader.close()


def test_a_trickling_uploader_is_cut_off_at_its_deadline(strict_api):
    # 1 byte every 0.1 s: the 2 s deadline grows by 0.01 s a second, the body would take hours.
    uploaders = [Uploader(strict_api.api_url, multipart(b"\xff" * 1_000_000)) for _ in range(3)]
    try:
        for uploader in uploaders:
            uploader.send_headers()
            uploader.wait_until_taken_up()
        assert all(uploader.trickle_until_cut_off(pause=0.1) for uploader in uploaders), strict_api.logs()
        for uploader in uploaders:
            answer = uploader.read_to_end()  # and then the server closes the connection
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408"), answer
            assert json.loads(body)["error"]["code"] == "request_timeout"
            assert uploader.sent < len(uploader.body)
    finally:
        for uploader in uploaders:
            uploader.close()
    wait_until(lambda: strict_api.api.log_text().count("did not arrive within") == 3, 30, "the API to log each cut")
    assert requests.get(f"{strict_api.api_url}/healthz", timeout=30).ok


def test_headers_trickled_past_the_deadline_are_closed_unanswered(strict_api):
    uploader = Uploader(strict_api.api_url, b"")
    try:
        uploader.sock.sendall(b"P")  # the connection has bytes: a thread takes it up
        uploader.body = b"OST /v1/jobs HTTP/1.1\r\nHost: api\r\n" + b"X-Padding: " + b"a" * 4000
        assert uploader.trickle_until_cut_off(pause=0.1)
        assert uploader.read_to_end() == b""
    finally:
        uploader.close()


def test_an_upload_at_least_as_fast_as_the_minimum_rate_completes_past_the_bare_deadline(strict_api):
    """1 KiB every 0.25 s (4 KiB/s, the minimum 1 KiB/s) for 12 KiB: at least 3 s, longer
    than the bare 2 s deadline, within 2 s plus 1 s per KiB received."""
    body = multipart(noise_png(64, 64))
    assert len(body) >= 12 * 1024
    uploader = Uploader(strict_api.api_url, body)
    try:
        uploader.send_headers(expect_continue=False)
        while uploader.sent < len(body):
            uploader.send(1024)
            time.sleep(0.25)
        answer = uploader.sock.recv(65536)
    finally:
        uploader.close()
    assert answer.startswith(b"HTTP/1.1 202"), answer


def noise_png(width: int, height: int) -> bytes:
    """A PNG that does not compress: about 3 bytes a pixel."""
    return encode(np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8), "PNG")
