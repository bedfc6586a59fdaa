"""Output resolution, measured in a fresh process (``make bench`` runs it).

For each photo size: the stock pipeline's own label map at the photo's size (the argmax
of the semantic map its model call computes there, from mask logits upsampled to the
photo) against our ``labels.png`` made two ways from the same model run at 640 px:
nearest-neighbour scaling of the decided labels (the old way) and bilinear class
probabilities (worker/resolution.py), for the torch and the OpenVINO engine. Then the
cost of each way on a 40-megapixel photo.

    python -m scripts.bench_resolution '{"model": ..., "engine_dir": ..., "photos": [[768, 576], ...]}'
"""
from __future__ import annotations

import json
import sys
import time
import tracemalloc
from pathlib import Path


def main() -> None:
    config = json.loads(sys.argv[1])
    from worker.process_tuning import apply_process_tuning

    apply_process_tuning(keep_freed=True, mkl_avx2_on_amd=True)
    import numpy as np

    from common.images import resize_labels
    from scripts.imagegen import photo
    from worker.openvino_engine import OpenVINOEngine
    from worker.torch_engine import TorchEngine

    model = Path(config["model"])
    reference_engine = TorchEngine(model, max_side=1333)
    fast_engine = OpenVINOEngine(model, Path(config["engine_dir"]), 1333, threads=2)
    rows = []
    for width, height in config["photos"]:
        image = photo(width, height, seed=width + height)
        stock = reference_engine.stock_semantic(image).argmax(0)
        reference, fast = reference_engine.parse(image), fast_engine.parse(image)
        rows.append({
            "photo": f"{width}x{height}",
            "nearest": float((resize_labels(reference.labels, (width, height)) == stock).mean()),
            "bilinear": float((reference.labels_at((width, height)) == stock).mean()),
            "openvino_bilinear": float((fast.labels_at((width, height)) == stock).mean()),
        })
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)

    big = config["large"]
    parsing = fast_engine.parse(photo(*big, seed=1))
    costs = {}
    for name, upsample in (("nearest", lambda: resize_labels(parsing.labels, tuple(big))),
                           ("bilinear", lambda: parsing.labels_at(tuple(big)))):
        tracemalloc.start()
        started = time.perf_counter()
        upsample()
        costs[name] = {"seconds": time.perf_counter() - started, "peak_mib": tracemalloc.get_traced_memory()[1] / 2**20}
        tracemalloc.stop()
    print(json.dumps({"rows": rows, "large": f"{big[0]}x{big[1]}", "costs": costs}))


if __name__ == "__main__":
    main()
