"""``make bench``: the engines on the full-size synthetic M2FP checkpoint, in one run.

Every row is a fresh process (process settings only act before torch loads, and peak
memory is per process) parsing the same photos of three shapes, each once cold (the
first of its shape in the process, as after a worker starts) and then warm: the stock
modelscope pipeline call as the M2FP demo runs it, the torch engine with and without
each process setting, and the OpenVINO engine (the default, the fixed-shape
compilations it replaced, 1 thread, and mixed precision and bf16 where the CPU has
them), plus two processes of one thread side by side. Each row gives seconds per photo
and the ratio to the stock call, and peak RSS; then label agreement with the torch
engine in fp32 (glibc and MKL defaults) in total and by that engine's top-1/top-2
margin, person counts and person maps. The stock call and the default engine are run
in back-to-back pairs too, for the headline ratio.
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
from worker.process_tuning import has_bf16

PHOTO = (768, 576)
# Three padded input shapes: 4:3 landscape (run at 853x640), 3:4 portrait, 16:9 (1138x640).
SHAPES = [PHOTO, (576, 768), (1024, 576)]
RESOLUTION_PHOTOS = [(768, 576), (1600, 1200), (3000, 2000)]
LARGE_PHOTO = (8000, 5000)
# Where the reference's top-1 and top-2 class probabilities lie this close, labels move first.
MARGIN_BUCKETS = [(0.0, 0.001), (0.001, 0.01), (0.01, 0.1), (0.1, 1.01)]


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


def rows() -> list[tuple[str, dict]]:
    """(label, child config) per table row: the stock call (speed reference) and the
    torch engine with glibc and MKL defaults (label reference) first."""
    defaults = {"malloc": False, "mkl": False}
    tuned = {"malloc": True, "mkl": True}
    table = [
        ("stock pipeline call (glibc, MKL defaults)", {"engine": "stock", "threads": 2, **defaults}),
        ("torch engine (glibc, MKL defaults)", {"engine": "torch", "threads": 2, "reference": True, **defaults}),
        ("torch engine + malloc keeps freed memory", {"engine": "torch", "threads": 2, "malloc": True, "mkl": False}),
        ("torch engine + MKL AVX2 on AMD", {"engine": "torch", "threads": 2, "malloc": False, "mkl": True}),
        ("torch engine + both (M2FP_ENGINE=torch)", {"engine": "torch", "threads": 2, **tuned}),
        ("OpenVINO fp32 (glibc, MKL defaults)", {"engine": "openvino", "threads": 2, **defaults}),
        ("**OpenVINO fp32 + both (default)**", {"engine": "openvino", "threads": 2, **tuned}),
        ("OpenVINO fp32, a fixed-shape compilation per new shape (before)",
         {"engine": "openvino", "threads": 2, "fixed_shapes": True, **tuned}),
        ("OpenVINO fp32, 1 thread", {"engine": "openvino", "threads": 1, **tuned}),
    ]
    if has_bf16():
        table += [("OpenVINO mixed (M2FP_PRECISION=mixed)", {"engine": "openvino", "threads": 2, "precision": "mixed",
                                                              **tuned}),
                  ("OpenVINO bf16 (M2FP_PRECISION=bf16)", {"engine": "openvino", "threads": 2, "precision": "bf16",
                                                            **tuned})]
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


class Runs:
    """Child processes of one benchmark run, over the same photos."""

    def __init__(self, model: Path, engine_dir: Path, repeats: int, work: Path) -> None:
        self.model, self.engine_dir, self.repeats, self.work = model, engine_dir, repeats, work
        self.count = 0

    def config(self, config: dict) -> dict:
        self.count += 1
        return {**config, "model": str(self.model), "engine_dir": str(self.engine_dir), "repeats": self.repeats,
                "photos": [list(shape) for shape in SHAPES], "out": str(self.work / f"run{self.count}.npz")}

    def one(self, label: str, config: dict) -> dict:
        config = self.config(config)
        result = child("scripts.bench_engine", config)
        result["outputs"] = dict(np.load(config["out"])) if config["engine"] != "stock" else {}
        print(f"{label}: " + ", ".join(f"{shape} {times['cold']:.2f}/{times['warm']:.2f} s cold/warm"
                                       for shape, times in result["seconds"].items())
              + f", peak RSS {result['peak_rss_mib']:.0f} MiB", flush=True)
        return result

    def side_by_side(self, label: str, config: dict, processes: int) -> list[dict]:
        """``processes`` children parsing the same photos at once, each with its own threads."""
        start_at = time.time() + 60  # all have loaded their engines by then
        configs = [self.config({**config, "start_at": start_at}) for _ in range(processes)]
        children = [subprocess.Popen([sys.executable, "-m", "scripts.bench_engine", json.dumps(c)], cwd=REPO,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in configs]
        results = []
        for process in children:
            out, err = process.communicate()
            if process.returncode != 0:
                raise SystemExit(f"scripts.bench_engine failed for {config}:\n{err[-3000:]}")
            results.append(json.loads(out.strip().splitlines()[-1]))
        print(f"{label}: " + "; ".join(", ".join(f"{shape} {t['cold']:.2f}/{t['warm']:.2f}"
                                                 for shape, t in r["seconds"].items()) for r in results), flush=True)
        return results


def speed_tables(runs: Runs, pairs: int) -> tuple[list[list[str]], list[list[str]], dict[str, dict], list[float]]:
    """Seconds per photo, cold and warm, per shape and row; the two-process rows; the
    rows' outputs by label; the default's warm speed-up over the stock call in each of
    ``pairs`` back-to-back pairs of the two at the first shape."""
    table_rows = rows()
    default = next(i for i, (label, _) in enumerate(table_rows) if "(default)" in label)
    results = [runs.one(label, config) for label, config in table_rows]
    key = f"{PHOTO[0]}x{PHOTO[1]}"
    paired = [(results[0]["seconds"][key]["warm"], results[default]["seconds"][key]["warm"])]
    for _ in range(pairs - 1):
        stock, ours = runs.one(*table_rows[0]), runs.one(*table_rows[default])
        paired.append((stock["seconds"][key]["warm"], ours["seconds"][key]["warm"]))
    stock = {shape: times["warm"] for shape, times in results[0]["seconds"].items()}

    def cells(seconds: dict[str, dict[str, float]], per_photo: float = 1.0) -> list[str]:
        out = []
        for shape in stock:
            cold, warm = seconds[shape]["cold"] * per_photo, seconds[shape]["warm"] * per_photo
            out.append(f"{warm:.2f} ({stock[shape] / warm:.2f}x) / {cold:.2f} ({stock[shape] / cold:.2f}x)")
        return out

    speed = [[label, *cells(result["seconds"]), f"{result['peak_rss_mib']:.0f}"]
             for (label, _), result in zip(table_rows, results)]
    side = []
    for label, config in [("OpenVINO fp32 (default)", table_rows[default][1]),
                          *([("OpenVINO mixed", {**table_rows[default][1], "precision": "mixed"})] if has_bf16() else [])]:
        pair = runs.side_by_side(f"2 processes x 1 thread, {label}", {**config, "threads": 1}, 2)
        merged = {shape: {kind: statistics.mean(r["seconds"][shape][kind] for r in pair) for kind in ("cold", "warm")}
                  for shape in stock}
        side.append([f"2 processes x 1 thread, {label}", *cells(merged, per_photo=0.5),
                     f"{max(r['peak_rss_mib'] for r in pair):.0f} each"])
    outputs = {label: result["outputs"] for (label, _), result in zip(table_rows, results) if result["outputs"]}
    return speed, side, outputs, [s / o for s, o in paired]


def agreement_table(outputs: dict[str, dict]) -> list[list[str]]:
    """Each OpenVINO row against the torch engine in fp32, over all shapes: labels in
    total and by the reference's top-1/top-2 margin, person counts, person maps."""
    reference = next(out for label, out in outputs.items() if label.startswith("torch engine (glibc"))
    shapes = [f"{w}x{h}" for w, h in SHAPES]
    margins = np.concatenate([reference[f"{shape}/margin"].ravel() for shape in shapes])
    ref_labels = np.concatenate([reference[f"{shape}/labels"].ravel() for shape in shapes])
    ref_ids = np.concatenate([reference[f"{shape}/person_ids"].ravel() for shape in shapes])
    table = [["(share of pixels)", "", *[f"{((margins >= lo) & (margins < hi)).mean():.1%}" for lo, hi in MARGIN_BUCKETS],
              "", ""]]
    for label, out in outputs.items():
        if out is reference:
            continue
        labels = np.concatenate([out[f"{shape}/labels"].ravel() for shape in shapes])
        same = labels == ref_labels
        buckets = []
        for lo, hi in MARGIN_BUCKETS:
            chosen = (margins >= lo) & (margins < hi)
            buckets.append(f"{same[chosen].mean():.3%}" if chosen.any() else "-")
        persons = sum(int(out[f"{s}/persons"]) == int(reference[f"{s}/persons"]) for s in shapes)
        ids = np.concatenate([out[f"{shape}/person_ids"].ravel() for shape in shapes])
        table.append([label, f"{same.mean():.4%}", *buckets, f"{persons} of {len(shapes)}", f"{(ids == ref_ids).mean():.4%}"])
    return table


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
    parser.add_argument("--repeats", type=int, default=2, help="warm runs per photo after its cold one")
    parser.add_argument("--pairs", type=int, default=2, help="back-to-back runs of the stock call and the default")
    parser.add_argument("--jobs", type=int, default=5)
    args = parser.parse_args()
    ensure_full_model(args.model)
    engine_dir = ensure_engine(args.model, args.cache_dir)
    with tempfile.TemporaryDirectory() as work:
        speed, side, outputs, speedups = speed_tables(Runs(args.model, engine_dir, args.repeats, Path(work)), args.pairs)
    agreement = agreement_table(outputs)
    resolution = child("scripts.bench_resolution", {"model": str(args.model), "engine_dir": str(engine_dir),
                                                     "photos": [list(p) for p in RESOLUTION_PHOTOS],
                                                     "large": list(LARGE_PHOTO)})
    queue = bench_queue(args.model, args.jobs)
    overhead = [total - inference for total, inference in queue]

    shapes = [f"{w}x{h}" for w, h in SHAPES]
    print(f"\nMachine: {machine()}\nModel: full-size synthetic M2FP (CIHP R101 architecture); photos of three "
          f"shapes ({', '.join(shapes)}, run at 853x640, 640x853, 1138x640), each parsed cold (the first of its "
          f"shape in a fresh process) and warm (median of {args.repeats} more); each row a fresh process, 2 "
          "threads unless said; the ratio is to the stock call's warm time on the same photo in this run\n")
    print(markdown(["engine", *[f"{shape}: warm / cold, s (vs stock)" for shape in shapes], "peak RSS, MiB"],
                   speed + side))
    print(f"\nTwo processes x 1 thread: seconds per photo of the pair (each process's time / 2). Default engine "
          f"vs stock call, warm at {shapes[0]}, in {len(speedups)} back-to-back pairs of fresh processes: "
          + ", ".join(f"{ratio:.2f}x" for ratio in speedups) + f"; median {statistics.median(speedups):.2f}x")
    print("\nLabel agreement with the torch engine in fp32 over the three photos, by the torch engine's "
          "top-1/top-2 class-probability margin, and persons\n")
    print(markdown(["engine", "labels", *[f"margin {lo:g}-{min(hi, 1):g}" for lo, hi in MARGIN_BUCKETS],
                    "same person count", "person map"], agreement))
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
