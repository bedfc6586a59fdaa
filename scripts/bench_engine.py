"""One benchmark configuration in a fresh process (``make bench`` starts one per row).

Process settings (malloc, MKL) only work when applied before torch loads, and peak
memory is only meaningful per process, so every row of the table is its own process.
It loads the engine and parses each photo once cold (the first photo of its shape in
this process, as after a worker starts) and ``repeats`` times warm, and writes what
the parent compares (labels, person count, person map; the semantic map's top-1/top-2
margin for the reference row) to ``out``.

    python -m scripts.bench_engine '{"engine": "openvino", "threads": 2, "malloc": true, ...}'

``"fixed_shapes": true`` runs the OpenVINO engine as it was before every graph was
compiled for any size: one fixed-shape compilation per input shape, made inside the
first parse of that shape. It is only here, to measure what that cost.
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class FixedShapeNetwork:
    """The joined fp32 graph compiled for each input shape the first time it is seen."""

    def __init__(self, entry: Path, threads: int) -> None:
        import openvino as ov

        from worker.network import PARTS
        from worker.openvino_engine import compile_config, joined

        self.core = ov.Core()
        self.graph = joined(self.core, entry, PARTS)
        self.config = compile_config(threads, "f32")
        self.requests: dict[tuple[int, ...], Any] = {}

    def logits(self, tensor):
        import numpy as np

        if tensor.shape not in self.requests:
            graph = self.graph.clone()
            graph.reshape({0: list(tensor.shape)})
            self.requests[tensor.shape] = self.core.compile_model(graph, "CPU", self.config).create_infer_request()
        result = self.requests[tensor.shape].infer({0: tensor})
        return np.array(result[0][0]), np.array(result[1][0])


def _outputs(result, width: int, height: int, reference: bool) -> dict:
    """What the parent compares, per photo."""
    import numpy as np

    from worker.instances import person_map

    key = f"{width}x{height}"
    outputs = {f"{key}/labels": result.labels, f"{key}/persons": np.array(result.person_count),
               f"{key}/person_ids": person_map(result.labels, result.persons).ids}
    if reference:
        top = np.sort(result.semantic, axis=0)[-2:]
        outputs[f"{key}/margin"] = (top[1] - top[0]).astype(np.float32)
    return outputs


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
        if config.get("fixed_shapes"):
            engine.network = FixedShapeNetwork(Path(config["engine_dir"]), threads)
    load_seconds = time.perf_counter() - started
    if "start_at" in config:  # processes measured side by side begin together
        time.sleep(max(0.0, config["start_at"] - time.time()))

    call = engine.parse_stock if config["engine"] == "stock" else engine.parse
    seconds, outputs = {}, {}
    for width, height in config["photos"]:
        image = photo(width, height, seed=width + height)
        begun = time.perf_counter()
        result = call(image)
        cold = time.perf_counter() - begun
        samples = []
        for _ in range(config["repeats"]):
            begun = time.perf_counter()
            call(image)
            samples.append(time.perf_counter() - begun)
        seconds[f"{width}x{height}"] = {"cold": cold, "warm": statistics.median(samples) if samples else cold}
        if config["engine"] != "stock":
            outputs.update(_outputs(result, width, height, reference=config.get("reference", False)))
    np.savez_compressed(config["out"], **outputs)
    print(json.dumps({"seconds": seconds, "load_seconds": load_seconds, "peak_rss_mib": peak_rss_mib(),
                      "tuning": tuning.describe(), "precision": getattr(engine, "description", {}).get("precision")}))


if __name__ == "__main__":
    main()
