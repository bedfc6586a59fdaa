"""``make capacity``: what one job costs the shared parts (Redis, the API, the store),
counted over 100 jobs through a real system, for the capacity table in docs/operations.md.

Redis's own counters say it: ``CONFIG RESETSTAT`` before, then ``INFO commandstats``
(calls per command), ``INFO stats`` (bytes in and out), ``INFO cpu`` (the server's CPU
seconds) and ``INFO memory`` (what the jobs' records hold until JOB_TTL_SECONDS) after. The API's CPU seconds are its processes' own (``/proc``). Four phases,
each on fresh counters: jobs submitted and run with no client polling (the worker's log
says when each ended, so the waiting costs Redis nothing); one poll per job; jobs again
with ``WORKER_TASK_EVENTS`` on (Flower's feed); and the API's submit rate with 16 clients
and no worker. The per-job figures do not depend on the model's size, so the worker runs
the tiny synthetic model; the workers' own rate comes from ``make bench-scale``.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import psutil
import redis
import requests

from scripts.bench import machine
from scripts.imagegen import photo_jpeg
from scripts.processes import Process, RedisServer, wait_until
from scripts.stack import Stack


def redis_counters(client: redis.Redis) -> dict:
    stats, cpu, memory = client.info("stats"), client.info("cpu"), client.info("memory")
    commands = {name.removeprefix("cmdstat_"): value["calls"] for name, value in client.info("commandstats").items()}
    commands.pop("config", None)  # this script's own RESETSTAT
    commands.pop("info", None)
    return {"commands": commands, "calls": sum(commands.values()), "bytes_in": stats["total_net_input_bytes"],
            "bytes_out": stats["total_net_output_bytes"], "cpu": cpu["used_cpu_sys"] + cpu["used_cpu_user"],
            "memory": memory["used_memory"]}


def process_cpu(process: Process) -> float:
    """CPU seconds of ``process`` and every process it started."""
    root = psutil.Process(process.pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def measure(client: redis.Redis, api: Process, count: int, work: Callable[[], None]) -> dict:
    """Redis's and the API's cost of ``work`` per one of ``count``."""
    client.config_resetstat()  # resets the command and byte counters, not the CPU seconds
    before = redis_counters(client)
    api_before = process_cpu(api)
    started = time.perf_counter()
    work()
    seconds = time.perf_counter() - started
    after = redis_counters(client)
    return {
        "redis_commands": round(after["calls"] / count, 1),
        "by_command": {name: round(calls / count, 2) for name, calls in
                       sorted(after["commands"].items(), key=lambda item: -item[1])},
        "redis_bytes_in": round(after["bytes_in"] / count),
        "redis_bytes_out": round(after["bytes_out"] / count),
        "redis_cpu_ms": round(1000 * (after["cpu"] - before["cpu"]) / count, 3),
        "api_cpu_ms": round(1000 * (process_cpu(api) - api_before) / count, 2),
        "redis_memory_bytes": round((after["memory"] - before["memory"]) / count),  # held until records expire
        "seconds": round(seconds, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--size", default="640x480")
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))
    base = Path(tempfile.mkdtemp(prefix="m2fp-capacity-"))
    from worker.synthetic import write_model

    model = write_model(base / "m2fp-tiny", "tiny")
    server = RedisServer(base / "redis").start()
    client = redis.Redis.from_url(server.url)
    env = {"REDIS_URL": server.url, "LOCAL_STORE_DIR": str(base / "store"), "M2FP_MODEL": str(model),
           "TORCH_THREADS": "1", "BACKFILL_MAX_QUEUED": "100000"}
    stack = Stack(env=env, log_dir=base).start_api()
    seed = iter(range(1, 1_000_000))
    try:
        worker = stack.start_worker("capacity")

        def run_jobs(count: int, log_of: Process) -> list[str]:
            done_before = log_of.log_text().count(" succeeded in ")
            ids = [stack.submit(photo_jpeg(width, height, seed=next(seed))).json()["id"] for _ in range(count)]
            wait_until(lambda: log_of.log_text().count(" succeeded in ") >= done_before + 2 * count, 600,
                       f"{count} jobs", interval=0.2)  # Celery's line and ours, per job
            return ids

        run_jobs(5, worker)  # warm: the engine, the API's connections
        ids: list[str] = []
        jobs = measure(client, stack.api, args.jobs, lambda: ids.extend(run_jobs(args.jobs, worker)))
        polls = measure(client, stack.api, args.jobs,
                        lambda: [requests.get(f"{stack.api_url}/v1/jobs/{job_id}", timeout=10) for job_id in ids])
        sizes = [sum(f.stat().st_size for f in (base / "store" / "jobs" / job_id).rglob("*") if f.is_file())
                 for job_id in ids]
        objects = [sum(1 for f in (base / "store" / "jobs" / job_id).rglob("*") if f.is_file()) for job_id in ids]
        worker.stop()

        events_worker = stack.start_worker("events", WORKER_TASK_EVENTS="true")
        run_jobs(3, events_worker)
        events = measure(client, stack.api, args.jobs // 2, lambda: run_jobs(args.jobs // 2, events_worker))
        events_worker.stop()

        def burst() -> None:
            with ThreadPoolExecutor(16) as pool:
                answers = list(pool.map(lambda data: stack.submit(data).status_code,
                                        [photo_jpeg(width, height, seed=next(seed)) for _ in range(4 * args.jobs)]))
            assert set(answers) == {202}, answers

        submits = measure(client, stack.api, 4 * args.jobs, burst)
        submits["per_second"] = round(4 * args.jobs / submits["seconds"], 1)
    finally:
        stack.stop()
        server.stop()
    print(json.dumps({
        "machine": machine(), "photo": args.size, "jobs": args.jobs,
        "per_job_without_polls": jobs, "per_poll": polls, "per_job_with_task_events": events,
        "submit_burst_16_clients": submits,
        "store_objects_per_job": sum(objects) / len(objects), "store_bytes_per_job": round(sum(sizes) / len(sizes)),
    }, indent=1))


if __name__ == "__main__":
    main()
