"""``make bench-scale``: jobs per minute through 1 and 2 worker processes (and more
where there are more cores), the same batch each time, full-size synthetic M2FP, on
the default engine, the torch engine and the torch engine without the process settings
(the worker as it was before the fast engine) in the same run; then the peak memory of
one model process by photo size on the first two.

Each configuration is a fresh system (Redis, API, one Celery worker with
WORKER_CONCURRENCY model processes of TORCH_THREADS threads each); the batch is
submitted at once and timed from submission to the last job's end. Memory is read
from /proc after the batch: each model process's peak resident set (the figure to
size a container by: processes x peak + the main process). The memory table runs one
job per fresh worker: a 768x576 photo, the widest shape the model runs at (2666x1280,
run at 1333x640) and a 40-megapixel photo (8000x5000, decoded and rendered full size).
"""
from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path

import requests

from common.images import encode_jpeg
from scripts.bench import ensure_engine, ensure_full_model, machine
from scripts.imagegen import photo
from scripts.processes import REPO, wait_until
from scripts.stack import local_system
from worker.process_tuning import has_bf16
from worker.resources import usable_cpus


def configurations(cpus: int) -> list[tuple[int, int]]:
    """(processes, threads each): one process with all threads, one per core, and 1 x 1."""
    configs = [(1, 1), (1, cpus), (cpus, 1)]
    if cpus >= 4:
        configs.append((cpus // 2, 2))
    return sorted(set(configs))


def memory_mib(pid: int, field: str) -> float:
    """A memory figure of a live process from /proc (VmHWM: peak resident set; VmRSS: now)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


# Table name: the worker's environment. "untuned torch" is the worker before the fast
# engine and the process settings: the baseline "jobs per minute up by" is measured on.
ENGINES = {"default": {"M2FP_ENGINE": "auto"},
           "torch": {"M2FP_ENGINE": "torch"},
           "untuned torch": {"M2FP_ENGINE": "torch", "MALLOC_KEEP_FREED": "false", "MKL_AVX2_ON_AMD": "false"}}
# The memory table also measures mixed precision (separately compiled parts), where the CPU runs it.
MEMORY_ENGINES = {"default": ENGINES["default"], **({"mixed": {"M2FP_ENGINE": "auto", "M2FP_PRECISION": "mixed"}}
                                                     if has_bf16() else {}), "torch": ENGINES["torch"]}


def run(model: Path, engine: str, processes: int, threads: int, images: list[bytes]) -> tuple[float, float, float]:
    """Seconds to parse ``images`` with this worker configuration, the largest peak
    resident memory of its model processes, and the main worker process's memory (MiB)."""
    with tempfile.TemporaryDirectory() as tmp, \
            local_system(Path(tmp), M2FP_MODEL=str(model), TORCH_THREADS=str(threads)) as stack:
        worker = stack.start_worker("scale", WORKER_CONCURRENCY=str(processes), **ENGINES[engine])
        wait_until(lambda: len(re.findall(r"worker process \d+ ready", worker.log_text())) == processes,
                   300, f"{processes} model processes to load")
        warm = [stack.submit(encode_jpeg(photo(320, 240, seed=900 + i))).json()["id"] for i in range(processes)]
        for job_id in warm:
            stack.wait_for(job_id, timeout=600)
        started = time.perf_counter()
        files = [("image", (f"{i}.jpg", data, "image/jpeg")) for i, data in enumerate(images)]
        items = requests.post(f"{stack.api_url}/v1/jobs/batch", files=files, timeout=120).json()["items"]
        for item in items:
            assert stack.wait_for(item["job"]["id"], timeout=1800)["status"] == "succeeded"
        seconds = time.perf_counter() - started
        pool = [int(pid) for pid in re.findall(r"worker process (\d+) ready", worker.log_text())]
        return seconds, max(memory_mib(pid, "VmHWM") for pid in pool), memory_mib(worker.pid, "VmRSS")


MEMORY_PHOTOS = [(768, 576), (2666, 1280), (8000, 5000)]


def peak_memory(model: Path, engine: str, width: int, height: int) -> float:
    """Peak resident memory (MiB) of a fresh model process that parsed one photo of this size."""
    with tempfile.TemporaryDirectory() as tmp, local_system(Path(tmp), M2FP_MODEL=str(model)) as stack:
        worker = stack.start_worker("memory", WORKER_CONCURRENCY="1", TORCH_THREADS="2", **MEMORY_ENGINES[engine])
        job_id = stack.submit(encode_jpeg(photo(width, height, seed=5), quality=85)).json()["id"]
        assert stack.wait_for(job_id, timeout=900)["status"] == "succeeded"
        pid = int(re.findall(r"worker process (\d+) ready", worker.log_text())[0])
        return memory_mib(pid, "VmHWM")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=REPO / "models" / "m2fp-synthetic-full")
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--size", default="768x576")
    parser.add_argument("--memory-only", action="store_true", help="only the peak memory by photo size")
    args = parser.parse_args()
    ensure_full_model(args.model)
    ensure_engine(args.model, REPO / "var" / "models")  # the cache the workers below use
    width, height = (int(v) for v in args.size.split("x"))
    images = [encode_jpeg(photo(width, height, seed=i)) for i in range(args.jobs)]  # distinct: no dedupe
    cpus = usable_cpus()
    rows = []
    for processes, threads in [] if args.memory_only else configurations(cpus):
        row = [processes, threads]
        for engine in ENGINES:
            seconds, model_process_mib, main_mib = run(args.model, engine, processes, threads, images)
            row.append((seconds, model_process_mib, main_mib))
            print(f"{engine} engine, {processes} process(es) x {threads} thread(s): {args.jobs} jobs in "
                  f"{seconds:.1f} s = {args.jobs / seconds * 60:.1f} jobs/min; peak memory per model process "
                  f"{model_process_mib:.0f} MiB, main worker process {main_mib:.0f} MiB", flush=True)
        rows.append(row)
    print(f"\nMachine: {machine()}")
    if rows:
        print(f"Batch: {args.jobs} distinct {args.size} JPEGs submitted at once, model {args.model.name}\n")
        print_throughput(rows, args.jobs)
    print("\n| photo | " + " | ".join(f"peak RSS, {engine} engine, MiB" for engine in MEMORY_ENGINES) + " |")
    print("|---|" + "---|" * len(MEMORY_ENGINES))
    for width, height in MEMORY_PHOTOS:
        peaks = [f"{peak_memory(args.model, engine, width, height):.0f}" for engine in MEMORY_ENGINES]
        print(f"| {width}x{height} | " + " | ".join(peaks) + " |", flush=True)


def print_throughput(rows: list, jobs: int) -> None:
    print("| worker processes | threads each | engine | seconds for the batch | jobs per minute | vs torch "
          "| vs untuned torch | peak RSS per model process, MiB | main process RSS, MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for processes, threads, *results in rows:
        torch_seconds = results[list(ENGINES).index("torch")][0]
        untuned_seconds = results[list(ENGINES).index("untuned torch")][0]
        for engine, (seconds, model_process_mib, main_mib) in zip(ENGINES, results):
            print(f"| {processes} | {threads} | {engine} | {seconds:.1f} | {jobs / seconds * 60:.1f} "
                  f"| {torch_seconds / seconds:.2f}x | {untuned_seconds / seconds:.2f}x | {model_process_mib:.0f} "
                  f"| {main_mib:.0f} |")


if __name__ == "__main__":
    main()
