"""One benchmark configuration in a fresh process (``make bench`` starts one per row).

Process settings (malloc, MKL) only work when applied before torch loads, and peak
memory is only meaningful per process, so every row of the table is its own process.
It loads the engine, warms it up, times ``repeats`` calls per photo, and writes the
label maps it produced (inference size and photo size) for the parent to compare.

    python -m scripts.bench_engine '{"engine": "openvino", "threads": 2, "tuned": true, ...}'
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _outputs(result, width: int, height: int) -> dict:
    """What the parent compares: labels at the decision size and the person count."""
    import numpy as np

    return {f"{width}x{height}/labels": result.labels, f"{width}x{height}/persons": np.array(result.person_count)}


def main() -> None:
    config = json.loads(sys.argv[1])
    threads = config["threads"]
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(threads)
    from worker.process_tuning import apply_process_tuning

    tuning = apply_process_tuning(keep_freed=config["malloc"], mkl_avx2_on_amd=config["mkl"])

    import numpy as np
    import torch

    from scripts.imagegen import photo

    torch.set_num_threads(threads)
    model = Path(config["model"])
    started = time.perf_counter()
    if config["engine"] in ("torch", "stock"):
        from worker.torch_engine import TorchEngine

        engine = TorchEngine(model, max_side=1333)
    else:
        from worker.openvino_engine import OpenVINOEngine

        engine = OpenVINOEngine(model, Path(config["engine_dir"]), 1333, threads, config.get("precision", "fp32"))
    load_seconds = time.perf_counter() - started

    call = engine.parse_stock if config["engine"] == "stock" else engine.parse
    seconds, outputs = {}, {}
    if config.get("cycle"):  # photos of several shapes in turn: the cost of shape changes
        images = [photo(width, height, seed=width) for width, height in config["photos"]]
        for image in images:
            call(image)
        samples = []
        for _ in range(config["repeats"]):
            for image in images:
                begun = time.perf_counter()
                call(image)
                samples.append(time.perf_counter() - begun)
        width, height = config["photos"][0]
        seconds[f"{width}x{height}"] = statistics.median(samples)
        config["photos"] = config["photos"][:1]  # its labels, for the agreement column
    for width, height in config["photos"]:
        image = photo(width, height, seed=width)
        if f"{width}x{height}" in seconds:
            outputs.update(_outputs(call(image), width, height))
            continue
        call(image)  # warm-up: a new input shape compiles once (OpenVINO), allocations settle
        samples = []
        for _ in range(config["repeats"]):
            begun = time.perf_counter()
            result = call(image)
            samples.append(time.perf_counter() - begun)
        seconds[f"{width}x{height}"] = statistics.median(samples)
        if config["engine"] != "stock":
            outputs.update(_outputs(result, width, height))
    np.savez_compressed(config["out"], **outputs)
    print(json.dumps({"seconds": seconds, "load_seconds": load_seconds, "peak_rss_mib": peak_rss_mib(),
                      "tuning": tuning.describe()}))


if __name__ == "__main__":
    main()
