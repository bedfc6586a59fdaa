"""Hosts with their own addresses on one machine: Linux network namespaces joined by a
bridge (a switch in a namespace of its own), made and removed by the tests (root only).

Each :class:`Host` has one link to the backend switch (10.77.<n>.0/24); a host may also
have a front link to this process's namespace, which is how the tests reach the API.
Cutting a link (:meth:`Host.cut`) downs its switch port: the host's packets go nowhere
and its open TCP connections hang, as when a host's network fails, rather than being
refused.
"""
from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass, field
from typing import Optional


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@dataclass
class Host:
    name: str  # its namespace
    address: str  # on the backend switch
    port: str  # its switch port (the bridge side of its link)
    front_address: Optional[str] = None  # reachable from the tests' namespace
    front_link: Optional[str] = None

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def cut(self, switch: str) -> None:
        ip("-n", switch, "link", "set", self.port, "down")

    def restore(self, switch: str) -> None:
        ip("-n", switch, "link", "set", self.port, "up")


@dataclass
class Network:
    tag: str = field(default_factory=lambda: secrets.token_hex(2))
    subnet: str = "10.77.0"
    hosts: dict[str, Host] = field(default_factory=dict)
    _fronts: int = 0

    @property
    def switch(self) -> str:
        return f"m2fp-{self.tag}-sw"

    def __post_init__(self) -> None:
        ip("netns", "add", self.switch)
        ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        ip("-n", self.switch, "link", "set", "br0", "up")

    def add(self, role: str, front: bool = False) -> Host:
        """A host named ``role`` on the switch; with ``front``, also reachable from here."""
        index = len(self.hosts) + 1
        host = Host(name=f"m2fp-{self.tag}-{role}", address=f"{self.subnet}.{index}", port=f"p{index}-{self.tag}")
        ip("netns", "add", host.name)
        ip("-n", host.name, "link", "set", "lo", "up")
        ip("link", "add", host.port, "type", "veth", "peer", "name", "eth0", "netns", host.name)
        ip("link", "set", host.port, "netns", self.switch)
        ip("-n", self.switch, "link", "set", host.port, "master", "br0")
        ip("-n", self.switch, "link", "set", host.port, "up")
        ip("-n", host.name, "addr", "add", f"{host.address}/24", "dev", "eth0")
        ip("-n", host.name, "link", "set", "eth0", "up")
        if front:
            self._fronts += 1
            link = f"f{self._fronts}-{self.tag}"
            near, far = f"10.78.{self._fronts}.1", f"10.78.{self._fronts}.2"
            ip("link", "add", link, "type", "veth", "peer", "name", "front0", "netns", host.name)
            ip("addr", "add", f"{near}/30", "dev", link)
            ip("link", "set", link, "up")
            ip("-n", host.name, "addr", "add", f"{far}/30", "dev", "front0")
            ip("-n", host.name, "link", "set", "front0", "up")
            host.front_address, host.front_link = far, link
        self.hosts[role] = host
        return host

    def cut(self, role: str) -> None:
        self.hosts[role].cut(self.switch)

    def restore(self, role: str) -> None:
        self.hosts[role].restore(self.switch)

    def remove(self) -> None:
        for host in self.hosts.values():
            if host.front_link:
                subprocess.run(["ip", "link", "del", host.front_link], capture_output=True)
            subprocess.run(["ip", "netns", "del", host.name], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.switch], capture_output=True)
