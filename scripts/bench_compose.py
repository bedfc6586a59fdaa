"""``make bench-compose``: jobs per minute through 1, 2 and, where memory allows, 3 worker
containers of one CPU each (compose's ``cpus:`` limit), beside the same batch through as
many worker processes on the host (``make bench-scale``'s way), all in one run, full-size
synthetic M2FP on the default engine.

Each container configuration is the compose stack (``docker-compose.yml``, plus
compose/s3-moto.yml where MinIO cannot be pulled), the model coming in as a user's
would (``MODEL_DIR`` mounted read-only at /model-src, ``M2FP_MODEL`` naming its folder);
the engine cache lives in the stack's model-cache volume, built once by the first
replica. Every replica parses warm-up photos of the batch's shape first, then the batch is
submitted at once and timed from submission to the last job's end, as bench-scale does.
Two and three replicas run when the machine's memory holds that many workers at their
memory limit beside the rest of the stack; each row names what every worker replica's
own resource plan found in its cgroup (CPUs, memory, processes x threads), and says when
the replicas ask for more CPUs than the machine has (three replicas of one CPU on two cores measure the oversubscription,
not more capacity).
"""
from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path

from common.images import encode_jpeg
from m2fp_client.client import Client
from m2fp_contract.schema import JobStatus
from scripts import compose_env
from scripts.bench import ensure_engine, ensure_full_model, machine
from scripts.bench_scale import run as run_processes
from scripts.containers import ComposeStack, default_files, engine
from scripts.imagegen import photo
from scripts.processes import REPO, free_port, wait_until
from worker.resources import MIB, usable_cpus, usable_memory

# What the rest of the stack holds beside the workers (API, Redis, S3 store, webhook
# worker), with headroom: more than one replica runs only if this plus its workers fit.
STACK_MEMORY_MB = 2048
WORKER_MEMORY_MB = 4000  # each replica's limit, written into the stack's env file
RESOURCE_PLAN = re.compile(r"Resource plan: (\d+) usable CPU\(s\), ([\d.]+) GiB memory: "
                           r"(\d+) model process\(es\) x (\d+) thread")


def replica_counts() -> list[int]:
    """1 replica, and 2 and 3 as far as the machine's memory holds them beside the stack."""
    memory_mb = usable_memory() // MIB
    return [n for n in (1, 2, 3) if n == 1 or STACK_MEMORY_MB + n * WORKER_MEMORY_MB <= memory_mb]


def worker_limits(stack: ComposeStack) -> str:
    """What each worker replica found it may use, as its own resource plan read it from
    its cgroup and logged it at start (the limits enforced, not the ones asked for)."""
    seen = set()
    for name in stack.containers("worker", running=True):
        found = RESOURCE_PLAN.search(stack.logs(name))
        if not found:
            raise RuntimeError(f"{name} logged no resource plan")
        cpus, gib, processes, threads = found.groups()
        seen.add(f"{cpus} CPU, {gib} GiB: {processes} x {threads} thread")
    return "; ".join(sorted(seen))


def photos(count: int, width: int, height: int, first_seed: int) -> list[bytes]:
    """Distinct photos: the stack keeps its Redis between configurations, and a photo it
    has parsed already would be answered from its earlier job."""
    return [encode_jpeg(photo(width, height, seed=first_seed + i)) for i in range(count)]


def run_containers(stack: ComposeStack, client: Client, replicas: int, images: list[bytes],
                   warm: list[bytes]) -> tuple[float, str]:
    """Seconds for ``images`` through ``replicas`` worker containers, after warm-up, and
    the limits each replica ran under."""
    stack.up(workers=replicas)
    wait_until(lambda: all(re.search(r"worker process \d+ ready", stack.logs(name))
                           for name in stack.containers("worker", running=True))
               and len(stack.containers("worker", running=True)) == replicas, 1800, f"{replicas} replica(s) ready", 1)
    stack.wait_healthy(timeout=600)
    warmed = client.wait([client.submit(data).id for data in warm], poll_interval=0.2, timeout=1800)
    assert {job.status for job in warmed} == {JobStatus.SUCCEEDED}, warmed
    started = time.perf_counter()
    jobs = client.wait([client.submit(data).id for data in images], poll_interval=0.2, timeout=3600)
    seconds = time.perf_counter() - started
    assert {job.status for job in jobs} == {JobStatus.SUCCEEDED}, jobs
    return seconds, worker_limits(stack)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=REPO / "models" / "m2fp-synthetic-full")
    parser.add_argument("--jobs", type=int, default=12)
    parser.add_argument("--size", default="768x576")
    args = parser.parse_args()
    ensure_full_model(args.model)
    ensure_engine(args.model, REPO / "var" / "models")  # the processes' engine cache
    width, height = (int(v) for v in args.size.split("x"))
    images = photos(args.jobs, width, height, 0)
    counts = replica_counts()
    cpus = usable_cpus()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        env_file = Path(tmp) / ".env"
        compose_env.ensure_env_file(env_file)
        api_port, s3_port, console_port = free_port(), free_port(), free_port()
        with env_file.open("a") as env:
            env.write(f"API_PORT=127.0.0.1:{api_port}\nS3_PORT=127.0.0.1:{s3_port}\n"
                      f"S3_CONSOLE_PORT=127.0.0.1:{console_port}\nS3_PUBLIC_ENDPOINT=http://127.0.0.1:{s3_port}\n"
                      f"WORKER_CPUS=1\nWORKER_MEMORY={WORKER_MEMORY_MB}m\n"
                      f"MODEL_DIR={args.model.resolve().parent}\n"
                      f"M2FP_MODEL=/model-src/{args.model.name}\n")
        eng = engine()
        stack = ComposeStack(f"m2fpbench{api_port}", env_file, default_files(eng), eng)
        client = Client(f"http://127.0.0.1:{api_port}", timeout=60)
        try:
            for replicas in counts:
                seconds, limits = run_containers(stack, client, replicas,
                                                 photos(args.jobs, width, height, 1000 * replicas),
                                                 photos(2 * replicas, width, height, 1000 * replicas + 500))
                if replicas > cpus:
                    limits += f" ({replicas} replicas on {cpus} CPUs)"
                rows.append(("containers", replicas, limits, seconds))
                print(f"{replicas} worker container(s): {args.jobs} jobs in {seconds:.1f} s = "
                      f"{args.jobs / seconds * 60:.1f} jobs/min", flush=True)
        finally:
            stack.down(volumes=True)
    for processes in counts:
        seconds, _, _ = run_processes(args.model, "default", processes, 1, images)
        each = "1 thread, no limit" + (f" ({processes} processes on {cpus} CPUs)" if processes > cpus else "")
        rows.append(("processes", processes, each, seconds))
        print(f"{processes} worker process(es): {args.jobs} jobs in {seconds:.1f} s = "
              f"{args.jobs / seconds * 60:.1f} jobs/min", flush=True)

    print(f"\nMachine: {machine()}\nBatch: {args.jobs} distinct {args.size} JPEGs submitted at once, "
          f"model {args.model.name}, default engine\n")
    print("| run as | workers | each | seconds for the batch | jobs per minute | vs 1 of the same | "
          "containers vs processes |")
    print("|---|---|---|---|---|---|---|")
    by = {(kind, n): seconds for kind, n, _, seconds in rows}
    for kind, n, each, seconds in rows:
        # Throughput of the containers relative to the same number of processes.
        vs_processes = f"{by[('processes', n)] / seconds:.2f}x" if kind == "containers" else "reference"
        print(f"| {kind} | {n} | {each} | {seconds:.1f} | {args.jobs / seconds * 60:.1f} "
              f"| {by[(kind, 1)] / seconds:.2f}x | {vs_processes} |")


if __name__ == "__main__":
    main()
