"""``make bench``: seconds per image on the full-size synthetic M2FP checkpoint.

(a) the stock modelscope pipeline call, (b) the worker's own inference path (and the
same plus building the four outputs), on the same images; then (c) the queue overhead:
jobs through the real API, Redis and one worker, end-to-end latency minus inference.
Prints a Markdown table with the machine it ran on. Synthetic weights run exactly the
official architecture's arithmetic, so the timings stand for the real model's.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path


from common.images import encode_jpeg
from scripts.imagegen import photo
from scripts.processes import REPO
from scripts.stack import local_system

SIZES = [(512, 384), (768, 576), (1024, 768)]


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    import torch

    return (f"{cpu}, {len(os.sched_getaffinity(0))} cores usable, Python {platform.python_version()}, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads)")


def timed(fn, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def bench_inference(model: Path, repeats: int) -> list[tuple[str, float, float, float]]:
    from worker.engine import M2FPEngine
    from worker.outputs import render

    started = time.perf_counter()
    engine = M2FPEngine(model, max_side=1333)
    print(f"model load: {time.perf_counter() - started:.1f} s")
    engine.parse(photo(320, 240))  # warm-up: first-call allocations
    rows = []
    for width, height in SIZES:
        image = photo(width, height, seed=width)

        def worker_path():
            parsed = engine.parse(image)
            render(image, parsed.labels, parsed.class_scores, parsed.persons, {})

        stock = timed(lambda: engine.parse_stock(image), repeats)
        ours = timed(lambda: engine.parse(image), repeats)
        with_outputs = timed(worker_path, repeats)
        rows.append((f"{width}x{height}", stock, ours, with_outputs))
        print(f"{width}x{height}: stock {stock:.2f} s, worker parse {ours:.2f} s, parse+outputs {with_outputs:.2f} s")
    return rows


def bench_queue(model: Path, jobs: int) -> list[tuple[float, float]]:
    """Submit one job at a time; return (end-to-end seconds, inference seconds) per job."""
    with tempfile.TemporaryDirectory() as tmp, local_system(Path(tmp), M2FP_MODEL=str(model)) as stack:
        # One model process with all cores: the lowest latency for one job at a time,
        # and the same threads as the in-process timings above.
        stack.start_worker("bench", WORKER_CONCURRENCY="1", TORCH_THREADS=str(len(os.sched_getaffinity(0))))
        warm = stack.submit(encode_jpeg(photo(320, 240)))
        stack.wait_for(warm.json()["id"], timeout=600)
        results = []
        for seed in range(jobs):
            data = encode_jpeg(photo(768, 576, seed=seed))  # distinct: the same bytes would be deduplicated
            started = time.perf_counter()
            job_id = stack.submit(data).json()["id"]
            job = stack.wait_for(job_id, timeout=600)
            elapsed = time.perf_counter() - started
            assert job["status"] == "succeeded", job
            results.append((elapsed, job["result"]["summary"]["inference_seconds"]))
        return results


def ensure_full_model(path: Path) -> None:
    if not (path / "pytorch_model.pt").exists():
        from worker.synthetic import write_model

        print(f"writing the full-size synthetic model to {path}")
        write_model(path, "full")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=REPO / "models" / "m2fp-synthetic-full")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=5)
    args = parser.parse_args()
    ensure_full_model(args.model)
    rows = bench_inference(args.model, args.repeats)
    queue = bench_queue(args.model, args.jobs)
    overhead = [total - inference for total, inference in queue]

    print(f"\nMachine: {machine()}\nModel: full-size synthetic M2FP (CIHP R101 architecture), "
          f"median of {args.repeats} runs\n")
    print("| input | stock pipeline call, s/image | worker parse, s/image | worker parse + 4 outputs, s/image |")
    print("|---|---|---|---|")
    for size, stock, ours, with_outputs in rows:
        print(f"| {size} | {stock:.2f} | {ours:.2f} | {with_outputs:.2f} |")
    print(f"\nQueue overhead, {len(queue)} jobs of 768x576 one at a time through API + Redis + 1 worker "
          f"(client-observed latency, polling every 0.1 s, minus inference):")
    print(f"median {statistics.median(overhead):.2f} s, max {max(overhead):.2f} s; "
          f"median end-to-end {statistics.median(t for t, _ in queue):.2f} s")


if __name__ == "__main__":
    main()
