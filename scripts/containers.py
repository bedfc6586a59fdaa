"""The compose stack as containers: which engine runs them, the images, the stack up and
down, and its health.

One module for ``make images``, ``make compose-up``/``compose-down``, the container tests
and ``make bench-compose``, so all of them build and start the stack the same way. Docker
(with its compose plugin) is used where its engine answers; otherwise Podman with
podman-compose, which reads the same ``docker-compose.yml``. Two gaps of Podman 4.3
without systemd are closed here rather than in the file: it never runs health checks by
itself (:meth:`ComposeStack.wait_healthy` runs them), and it starts a container only when
its whole ``depends_on`` chain is running, which a finished one-shot service
(``createbucket``) never is, so the stack starts with ``--no-deps`` and every service
waits for what it needs itself (Celery retries the broker, the API's ``/readyz`` reports
what is missing, ``createbucket`` retries the store).

    python -m scripts.containers images       # build m2fp-queue/api and m2fp-queue/worker
    python -m scripts.containers up [--workers N]
    python -m scripts.containers down [--volumes]
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

REPO = Path(__file__).resolve().parent.parent
API_IMAGE = "m2fp-queue/api:latest"
WORKER_IMAGE = "m2fp-queue/worker:latest"
DOCKERFILES = {API_IMAGE: "compose/api.Dockerfile", WORKER_IMAGE: "compose/worker.Dockerfile"}
WHEELHOUSE = REPO / "compose" / "wheelhouse"
# Podman settings for hosts where the defaults cannot start a container (the file says why).
PODMAN_FALLBACK_CONF = REPO / "compose" / "podman" / "containers.conf"
# The S3 store when MinIO's image is not in local storage and cannot be pulled.
MINIO_IMAGE = "minio/minio:RELEASE.2024-06-13T22-53-53Z"
S3_MOTO_FILE = REPO / "compose" / "s3-moto.yml"
PROBE_IMAGE = "docker.io/library/debian:bookworm-slim"


class ContainerError(RuntimeError):
    """A container command failed; the message names the command and what it printed."""


def _run(command: Sequence[str], env: Optional[dict] = None, timeout: float = 600, check: bool = True,
         cwd: Path = REPO) -> subprocess.CompletedProcess:
    done = subprocess.run(list(command), cwd=cwd, env=env, text=True, capture_output=True, timeout=timeout)
    if check and done.returncode != 0:
        raise ContainerError(f"{' '.join(command)} exited {done.returncode}:\n{done.stdout[-2000:]}{done.stderr[-4000:]}")
    return done


@dataclass(frozen=True)
class Engine:
    """The container engine's command and the environment it needs."""

    name: str  # "docker" or "podman"
    env: dict = field(hash=False, compare=False)

    def run(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        return _run([self.name, *args], env=self.env, timeout=timeout, check=check)

    def compose_command(self) -> list[str]:
        if self.name == "docker":
            return ["docker", "compose"]
        found = shutil.which("podman-compose") or str(Path(sys.executable).with_name("podman-compose"))
        return [found]

    def image_exists(self, image: str) -> bool:
        return self.run("image", "inspect", image, check=False).returncode == 0

    def image_size(self, image: str) -> int:
        return int(self.run("image", "inspect", "--format", "{{.Size}}", image).stdout.strip())


@functools.lru_cache(maxsize=1)
def engine() -> Engine:
    """Docker when its engine answers, else Podman (with the fallback settings where the
    host needs them: the first container start says so)."""
    env = dict(os.environ)
    if shutil.which("docker") and _run(["docker", "info"], check=False, timeout=30).returncode == 0:
        return Engine("docker", env)
    if not shutil.which("podman"):
        raise ContainerError("no container engine: install Docker, or Podman with 'make podman' "
                             "(Debian: apt-get install -y podman runc)")
    if "CONTAINERS_CONF" not in env and Engine("podman", env).image_exists(PROBE_IMAGE):
        probe = _run(["podman", "run", "--rm", PROBE_IMAGE, "true"], env=env, check=False, timeout=60)
        if probe.returncode != 0 and ("rlimit" in probe.stderr.lower() or "cgroup" in probe.stderr.lower()):
            env["CONTAINERS_CONF"] = str(PODMAN_FALLBACK_CONF)
    elif "CONTAINERS_CONF" not in env and not Path("/run/systemd/system").exists():
        env["CONTAINERS_CONF"] = str(PODMAN_FALLBACK_CONF)  # no probe image yet: judge by systemd
    return Engine("podman", env)


def build_images(images: Sequence[str] = (API_IMAGE, WORKER_IMAGE), wheelhouse: bool = True) -> dict[str, dict]:
    """Build the images from the same Dockerfiles ``docker compose build`` uses; with
    ``wheelhouse``, every wheel comes from compose/wheelhouse/ (``make wheelhouse``) and
    the build reaches no index. Returns each image's build seconds and size."""
    eng, report = engine(), {}
    for image in images:
        args = ["build", "-f", DOCKERFILES[image], "-t", image]
        if wheelhouse:
            args += ["--build-arg", "WHEELHOUSE_ONLY=1"]
            if image == WORKER_IMAGE:  # the wheelhouse holds PyPI's torch 1.13.1, not 1.13.1+cpu
                args += ["--build-arg", "TORCH_LOCAL_VERSION="]
        started = time.monotonic()
        eng.run(*args, ".", timeout=3600)
        report[image] = {"seconds": round(time.monotonic() - started, 1), "bytes": eng.image_size(image)}
        print(f"built {image} in {report[image]['seconds']:.0f} s, {report[image]['bytes'] / 1e9:.2f} GB",
              flush=True)
    # The images these builds replaced, now untagged: a changed package layer is GBs.
    eng.run("image", "prune", "--force", check=False)
    return report


@dataclass
class ComposeStack:
    """One compose project: ``docker-compose.yml`` plus override ``files``, with its
    variables from ``env_file`` (the secrets ``make compose-env`` writes, and the rest)."""

    project: str
    env_file: Path
    files: Sequence[Path] = ()
    engine: Engine = field(default_factory=engine)

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        command = [*self.engine.compose_command(), "--env-file", str(self.env_file), "-p", self.project,
                   "-f", str(REPO / "docker-compose.yml")]
        for extra in self.files:
            command += ["-f", str(extra)]
        return _run([*command, *args], env=self.engine.env, timeout=timeout, check=check)

    def up(self, workers: int = 1, services: Sequence[str] = ()) -> None:
        args = ["up", "-d", "--no-build", "--scale", f"worker={workers}"]
        if self.engine.name == "podman":
            args.append("--no-deps")
        self.compose(*args, *services)

    def down(self, volumes: bool = False, services: Sequence[str] = ()) -> None:
        """Stop and remove the project's containers (of ``services``), each after its stop
        grace period; ``volumes`` also removes the volumes (Redis's data, the model cache)."""
        self.compose("down", *(["--volumes"] if volumes else []), *services, timeout=900, check=False)
        # podman-compose 1.6 leaves a scaled replica behind at times: remove what remains.
        for name in [name for service in (services or [None]) for name in self.containers(service)]:
            self.engine.run("rm", "-f", name, check=False)
        if volumes and not services:
            for volume in self.engine.run("volume", "ls", "-q", "--filter",
                                          f"label=com.docker.compose.project={self.project}").stdout.split():
                self.engine.run("volume", "rm", "-f", volume, check=False)

    def containers(self, service: Optional[str] = None, running: bool = False) -> list[str]:
        """The project's container names (of one service), oldest first."""
        args = ["ps", "--format", "{{.Names}}", "--filter", f"label=com.docker.compose.project={self.project}"]
        if not running:
            args.append("-a")
        if service:
            args += ["--filter", f"label=com.docker.compose.service={service}"]
        return sorted(self.engine.run(*args).stdout.split())

    def health(self, container: str) -> Optional[str]:
        """``healthy``, ``unhealthy`` or ``starting``; None for a container without a check
        (or a one-shot service that has ended). Under Podman without systemd the check
        runs only when asked: this runs it once."""
        info = json.loads(self.engine.run("inspect", container).stdout)[0]
        if not (info["Config"].get("Healthcheck") or {}).get("Test"):
            return None
        if not info["State"].get("Running"):
            return "unhealthy"
        if self.engine.name == "podman":
            ran = self.engine.run("healthcheck", "run", container, check=False, timeout=120)
            return "healthy" if ran.returncode == 0 else "unhealthy"
        return info["State"]["Health"]["Status"]

    def wait_healthy(self, timeout: float = 600, services: Sequence[str] = ()) -> None:
        """Until every running container with a health check (of ``services``) is healthy."""
        deadline = time.monotonic() + timeout
        pending = [name for service in (services or [None]) for name in self.containers(service)]
        while pending:
            pending = [name for name in pending if self.health(name) not in (None, "healthy")]
            if pending and time.monotonic() > deadline:
                logs = "\n".join(f"--- {name}\n{self.logs(name)[-3000:]}" for name in pending)
                raise ContainerError(f"not healthy after {timeout:.0f} s: {', '.join(pending)}\n{logs}")
            if pending:
                time.sleep(1)

    def logs(self, container: str) -> str:
        done = self.engine.run("logs", container, check=False)
        return done.stdout + done.stderr


def default_files(eng: Engine) -> list[Path]:
    """compose/s3-moto.yml where MinIO's image is neither local nor pullable."""
    if eng.image_exists(MINIO_IMAGE) or eng.run("pull", MINIO_IMAGE, check=False, timeout=300).returncode == 0:
        return []
    print(f"{MINIO_IMAGE} cannot be pulled: moto's S3 server stands in ({S3_MOTO_FILE.relative_to(REPO)})",
          file=sys.stderr)
    return [S3_MOTO_FILE]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    images = sub.add_parser("images", help="build the API and worker images")
    images.add_argument("--no-wheelhouse", action="store_true", help="install from the package indexes")
    for name in ("up", "down"):
        command = sub.add_parser(name)
        command.add_argument("--project", default=os.environ.get("COMPOSE_PROJECT_NAME", "m2fp-queue"))
        command.add_argument("--env-file", type=Path, default=REPO / ".env")
        command.add_argument("-f", "--file", type=Path, action="append", default=None,
                             help="extra compose file (default: compose/s3-moto.yml when MinIO cannot be pulled)")
    sub.choices["up"].add_argument("--workers", type=int, default=int(os.environ.get("WORKERS", "1")))
    sub.choices["down"].add_argument("--volumes", action="store_true", help="also remove the volumes")
    args = parser.parse_args(argv)
    try:
        if args.command == "images":
            build_images(wheelhouse=not args.no_wheelhouse)
            return 0
        if not args.env_file.exists():
            print(f"error: {args.env_file} is missing: run 'make compose-env' first", file=sys.stderr)
            return 2
        eng = engine()
        stack = ComposeStack(args.project, args.env_file, args.file if args.file is not None else default_files(eng), eng)
        if args.command == "down":
            stack.down(volumes=args.volumes)
            return 0
        for image in (API_IMAGE, WORKER_IMAGE):
            if not eng.image_exists(image):
                print(f"error: image {image} is missing: run 'make images' first", file=sys.stderr)
                return 2
        stack.up(workers=args.workers)
        stack.wait_healthy()
        print(f"up: {', '.join(stack.containers(running=True))} (healthy)")
        return 0
    except ContainerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
