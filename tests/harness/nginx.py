"""A real nginx (Debian's package) on 127.0.0.1 in front of a live API, for the proxy
tests: started by the test with its own configuration and files under a temporary
directory, never as the system's service.

It stands for a TLS-terminating proxy that serves the API under a path prefix: it
tells the API the client used https on port 443 (``X-Forwarded-Proto``/``-Port``), the
host the client named, and the prefix it strips (``X-Forwarded-Prefix``), replacing
whatever the client sent in those headers. It serves the prefix both with its trailing
slash (``/m2fp/`` is the service's ``/``) and without (``/m2fp`` is too).
"""
from __future__ import annotations

import shutil
import socket
from pathlib import Path
from typing import Optional

import pytest

from scripts.processes import Process, free_port, wait_until

_CONFIG = """\
worker_processes 1;
pid {base}/nginx.pid;
error_log {base}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {base}/access.log;
    client_body_temp_path {base}/client_body;
    proxy_temp_path {base}/proxy;
    fastcgi_temp_path {base}/fastcgi;
    uwsgi_temp_path {base}/uwsgi;
    scgi_temp_path {base}/scgi;
    # Bodies and answers in memory: nginx's worker (nobody, when the tests run as root)
    # need not reach temporary files under the tests' private directory.
    client_body_buffer_size 4m;
    client_max_body_size 16m;
    proxy_buffering off;
    server {{
        listen 127.0.0.1:{port};
        location {prefix}/ {{
            proxy_pass http://127.0.0.1:{upstream}/;
{forwarded}
        }}
        # The prefix itself, without its slash, is the service's root too (as a proxy that
        # strips a prefix serves it), not nginx's redirect to the prefix with a slash.
        location = {prefix} {{
            proxy_pass http://127.0.0.1:{upstream}/;
{forwarded}
        }}
    }}
}}
"""
_FORWARDED = """\
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto https;
            proxy_set_header X-Forwarded-Host $host;
            proxy_set_header X-Forwarded-Port 443;
            proxy_set_header X-Forwarded-Prefix {prefix};"""


def nginx_executable() -> str:
    """Debian's nginx: on PATH, or in /usr/sbin (not on a user's PATH)."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if not found:
        pytest.fail("no nginx for the proxy tests. Fix: as root `apt-get update && apt-get install -y nginx` "
                    "(Debian; `make test` does this)")
    return found


class Nginx:
    def __init__(self, base: Path, upstream_port: int, prefix: str = "/m2fp") -> None:
        self.base = Path(base)
        self.port = free_port()
        self.prefix = prefix
        self.base.mkdir(parents=True, exist_ok=True)
        self.config = self.base / "nginx.conf"
        self.config.write_text(_CONFIG.format(base=self.base, port=self.port, upstream=upstream_port,
                                              prefix=prefix, forwarded=_FORWARDED.format(prefix=prefix)))
        self.process: Optional[Process] = None

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{self.prefix}{path}"

    def start(self) -> "Nginx":
        # -e: the start-up messages go to this directory too, not to /var/log/nginx.
        self.process = Process("nginx", [nginx_executable(), "-p", str(self.base), "-c", str(self.config),
                                         "-e", str(self.base / "error.log"), "-g", "daemon off;"],
                               log_path=self.base / "nginx.out")

        def listening() -> bool:
            if not self.process.alive():
                raise RuntimeError(f"nginx exited:\n{self.process.log_text()}\n{self.log_text()}")
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", self.port)) == 0

        wait_until(listening, 20, f"nginx on port {self.port}")
        return self

    def log_text(self) -> str:
        log = self.base / "error.log"
        return log.read_text(errors="replace") if log.exists() else ""

    def stop(self) -> None:
        if self.process:
            self.process.stop(10)
