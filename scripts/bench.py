"""``make bench``: the engines on the full-size synthetic M2FP checkpoint, in one run.

Every row is a fresh process (process settings only act before torch loads, and peak
memory is per process) parsing the same photo: the stock modelscope pipeline call as
the M2FP demo runs it, the torch engine with and without each process setting, and the
OpenVINO engine (fixed-shape and dynamic graph, 2 and 1 threads, bf16 where the CPU has
it). Each row gives seconds per photo, the speed-up over the stock call, label agreement
with the torch engine in fp32 (glibc and MKL defaults), the person count and peak RSS;
the stock call and the default engine are run in several back-to-back pairs, and the
headline speed-up is the median of the pairs' ratios.
Then output resolution against the stock pipeline's own full-size labels, and the queue
overhead through the real API, Redis and one worker. Synthetic weights run exactly the
official architecture's arithmetic, so the timings stand for the real model's.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common.images import encode_jpeg
from scripts.imagegen import photo
from scripts.processes import REPO
from scripts.stack import local_system
from worker.process_tuning import cpu_flags

PHOTO = (768, 576)
# Three padded input shapes (864x640, 640x864, 1152x640): more than the two kept compiled.
MIXED = [list(PHOTO), [576, 768], [1024, 576]]
RESOLUTION_PHOTOS = [(768, 576), (1600, 1200), (3000, 2000)]
LARGE_PHOTO = (8000, 5000)


def machine() -> str:
    info = dict(line.split(":", 1) for line in Path("/proc/cpuinfo").read_text().splitlines() if ":" in line)
    info = {key.strip(): value.strip() for key, value in info.items()}
    # A VM's model name may not name the generation (AMD EPYC: family 25 is Zen 3 and 4, 26 is
    # Zen 5, whose AVX-512 units are twice as wide): the family and model do.
    cpu = f"{info.get('model name', platform.processor())} (CPU family {info.get('cpu family', '?')}, " \
          f"model {info.get('model', '?')})"
    from importlib import metadata

    return (f"{cpu}, {len(os.sched_getaffinity(0))} cores usable, Python {platform.python_version()}, "
            f"torch {metadata.version('torch')}, OpenVINO {metadata.version('openvino')}")


def rows(model: Path, engine_dir: Path) -> list[tuple[str, dict]]:
    """(label, child config) per table row; the first two are the baseline and the reference."""
    defaults = {"malloc": False, "mkl": False}
    tuned = {"malloc": True, "mkl": True}
    table = [
        ("stock pipeline call (glibc, MKL defaults)", {"engine": "stock", "threads": 2, **defaults}),
        ("torch engine (glibc, MKL defaults)", {"engine": "torch", "threads": 2, **defaults}),
        ("torch engine + malloc keeps freed memory", {"engine": "torch", "threads": 2, "malloc": True, "mkl": False}),
        ("torch engine + MKL AVX2 on AMD", {"engine": "torch", "threads": 2, "malloc": False, "mkl": True}),
        ("torch engine + both (M2FP_ENGINE=torch)", {"engine": "torch", "threads": 2, **tuned}),
        ("OpenVINO fp32 (glibc, MKL defaults)", {"engine": "openvino", "threads": 2, **defaults}),
        ("**OpenVINO fp32, fixed shapes + both (default)**", {"engine": "openvino", "threads": 2, **tuned}),
        ("OpenVINO fp32, dynamic graph + both", {"engine": "openvino", "threads": 2, "static_shapes": 0, **tuned}),
        ("OpenVINO fp32, 1 thread + both", {"engine": "openvino", "threads": 1, **tuned}),
        ("OpenVINO fp32, fixed shapes, 3 photo shapes in turn", {"engine": "openvino", "threads": 2, "cycle": True,
                                                                  "photos": MIXED, **tuned}),
        ("OpenVINO fp32, dynamic graph, 3 photo shapes in turn", {"engine": "openvino", "threads": 2, "cycle": True,
                                                                   "photos": MIXED, "static_shapes": 0, **tuned}),
    ]
    if {"avx512_bf16", "amx_bf16"} & cpu_flags():
        table.append(("OpenVINO bf16 + both (M2FP_PRECISION=bf16)",
                      {"engine": "openvino", "threads": 2, "precision": "bf16", **tuned}))
    for _, config in table:
        config.update(model=str(model), engine_dir=str(engine_dir))
    return table


def child(module: str, config: dict) -> dict:
    """Run ``python -m module config`` and return the JSON it prints last."""
    done = subprocess.run([sys.executable, "-m", module, json.dumps(config)], cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{module} failed for {config}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def ensure_engine(model: Path, cache_dir: Path) -> Path:
    done = subprocess.run([sys.executable, "-m", "worker.engine_cache", "--model", str(model),
                           "--cache-dir", str(cache_dir)], cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"could not build the OpenVINO engine:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    what = f"built in {result['seconds']:.1f} s" if result["built"] else "reused"
    print(f"OpenVINO engine {what}: {result['path']}", flush=True)
    return Path(result["path"])


def bench_engines(model: Path, engine_dir: Path, repeats: int, pairs: int, work: Path
                  ) -> tuple[list[list[str]], list[float]]:
    """The engine table, and the speed-up of the default engine over the stock call in
    each of ``pairs`` back-to-back runs of the two (the first pair is the table's own
    rows). The stock call's time moves most with the VM's load (its page faults), so
    the headline ratio is the median over pairs run next to each other, and both rows
    give their median over the pairs."""
    key = f"{PHOTO[0]}x{PHOTO[1]}"
    table_rows = rows(model, engine_dir)
    default = next(i for i, (label, _) in enumerate(table_rows) if "(default)" in label)

    def measure(index: int) -> dict:
        label, config = table_rows[index]
        out = work / f"row{index}.npz"
        config.setdefault("photos", [list(PHOTO)])
        config.update(repeats=repeats, out=str(out))
        result = child("scripts.bench_engine", config)
        result["outputs"] = dict(np.load(out)) if config["engine"] != "stock" else {}
        print(f"{label}: {result['seconds'][key]:.2f} s/photo, peak RSS {result['peak_rss_mib']:.0f} MiB",
              flush=True)
        return result

    results = [measure(index) for index in range(len(table_rows))]
    paired = [(results[0]["seconds"][key], results[default]["seconds"][key])]
    for _ in range(pairs - 1):
        paired.append((measure(0)["seconds"][key], measure(default)["seconds"][key]))
    results[0]["seconds"][key] = statistics.median(stock for stock, _ in paired)
    results[default]["seconds"][key] = statistics.median(ours for _, ours in paired)
    stock = results[0]["seconds"][key]
    reference = results[1]["outputs"]
    table = []
    for (label, _), result in zip(table_rows, results):
        seconds = result["seconds"][key]
        outputs = result["outputs"]
        if outputs:
            agree = f"{(outputs[f'{key}/labels'] == reference[f'{key}/labels']).mean():.4%}"
            persons = f"{int(outputs[f'{key}/persons'])} ({int(reference[f'{key}/persons'])})"
        else:
            agree, persons = "(stock output format)", ""
        table.append([label, f"{seconds:.2f}", f"{stock / seconds:.2f}x", agree, persons,
                      f"{result['peak_rss_mib']:.0f}"])
    return table, [stock_seconds / ours for stock_seconds, ours in paired]


def bench_queue(model: Path, jobs: int) -> list[tuple[float, float]]:
    """Submit one job at a time through the default engine; (end-to-end s, inference s) per job."""
    with tempfile.TemporaryDirectory() as tmp, local_system(Path(tmp), M2FP_MODEL=str(model)) as stack:
        # One model process with all cores: the lowest latency for one job at a time.
        stack.start_worker("bench", WORKER_CONCURRENCY="1", TORCH_THREADS=str(len(os.sched_getaffinity(0))))
        warm = stack.submit(encode_jpeg(photo(*PHOTO, seed=999)))
        stack.wait_for(warm.json()["id"], timeout=900)
        results = []
        for seed in range(jobs):
            data = encode_jpeg(photo(*PHOTO, seed=seed))  # distinct: the same bytes would be deduplicated
            started = time.perf_counter()
            job_id = stack.submit(data).json()["id"]
            job = stack.wait_for(job_id, timeout=600)
            elapsed = time.perf_counter() - started
            assert job["status"] == "succeeded", job
            assert job["result"]["summary"]["model"]["engine"] == "openvino", job["result"]["summary"]["model"]
            results.append((elapsed, job["result"]["summary"]["inference_seconds"]))
        return results


def ensure_full_model(path: Path) -> None:
    if not (path / "pytorch_model.pt").exists():
        from worker.synthetic import write_model

        print(f"writing the full-size synthetic model to {path}")
        write_model(path, "full")


def markdown(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in body])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=REPO / "models" / "m2fp-synthetic-full")
    parser.add_argument("--cache-dir", type=Path, default=REPO / "var" / "models")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=3, help="back-to-back runs of the stock call and the default")
    parser.add_argument("--jobs", type=int, default=5)
    args = parser.parse_args()
    ensure_full_model(args.model)
    engine_dir = ensure_engine(args.model, args.cache_dir)
    with tempfile.TemporaryDirectory() as work:
        engines, speedups = bench_engines(args.model, engine_dir, args.repeats, args.pairs, Path(work))
    resolution = child("scripts.bench_resolution", {"model": str(args.model), "engine_dir": str(engine_dir),
                                                     "photos": [list(p) for p in RESOLUTION_PHOTOS],
                                                     "large": list(LARGE_PHOTO)})
    queue = bench_queue(args.model, args.jobs)
    overhead = [total - inference for total, inference in queue]

    print(f"\nMachine: {machine()}\nModel: full-size synthetic M2FP (CIHP R101 architecture); one "
          f"{PHOTO[0]}x{PHOTO[1]} photo (run at 853x640), median of {args.repeats} runs after one warm-up, "
          "each row a fresh process, 2 threads unless said\n")
    print(markdown(["engine", "s/photo", "vs stock", "label agreement with torch fp32", "persons (torch)",
                    "peak RSS, MiB"], engines))
    print(f"\nDefault engine vs stock call in {len(speedups)} back-to-back pairs of fresh processes: "
          + ", ".join(f"{ratio:.2f}x" for ratio in speedups) + f"; median {statistics.median(speedups):.2f}x "
          "(the two rows above give each one's median time over the pairs)")
    print("\nOutput resolution: agreement of labels.png with the stock pipeline's labels at the photo's size\n")
    print(markdown(["photo", "decided at 640 px, enlarged (old)", "torch engine, decided at the photo size",
                    "OpenVINO engine (labels.png)"],
                   [[r["photo"], f"{r['old']:.3%}", f"{r['torch']:.3%}", f"{r['openvino']:.3%}"]
                    for r in resolution["rows"]]))
    costs = resolution["costs"]
    print(f"\nA {resolution['large']} photo on the default engine (parse + labels at the photo's size): "
          f"{costs['old']:.2f} s deciding at 640 px, {costs['default']:.2f} s deciding at "
          f"{resolution['bound'] / 1e6:.1f} megapixels")
    print(f"\nQueue overhead, {len(queue)} jobs of {PHOTO[0]}x{PHOTO[1]} one at a time through API + Redis + "
          "1 worker on the default engine (client-observed latency, polling every 0.1 s, minus inference): "
          f"median {statistics.median(overhead):.2f} s, max {max(overhead):.2f} s; "
          f"median end-to-end {statistics.median(t for t, _ in queue):.2f} s")


if __name__ == "__main__":
    main()
