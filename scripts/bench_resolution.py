"""Output resolution, measured in a fresh process (``make bench`` runs it).

For each photo size: the stock pipeline's own label map at the photo's size (the argmax
of the semantic map its model call computes there, from mask logits upsampled to the
photo) against our ``labels.png`` made two ways from the same model run at 640 px:
decided at the inference size and enlarged with nearest-neighbour (the old way), and
decided at the decision size (the photo's own, up to LABELS_MAX_PIXELS; the default),
for the torch and the OpenVINO engine. Then the cost of each way on a 40-megapixel photo.

    python -m scripts.bench_resolution '{"model": ..., "engine_dir": ..., "photos": [[768, 576], ...]}'
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path


def main() -> None:
    config = json.loads(sys.argv[1])
    from worker.process_tuning import apply_process_tuning

    apply_process_tuning(keep_freed=True, mkl_avx2_on_amd=True)
    import numpy as np

    from scripts.imagegen import photo
    from worker.openvino_engine import OpenVINOEngine
    from worker.torch_engine import TorchEngine

    model = Path(config["model"])
    reference_engine = TorchEngine(model, max_side=1333)
    fast_engine = OpenVINOEngine(model, Path(config["engine_dir"]), 1333, threads=2)
    bound = fast_engine.labels_max_pixels

    def labels(engine, image, max_pixels: int) -> np.ndarray:
        engine.labels_max_pixels = max_pixels
        return engine.parse(image).labels_at((image.shape[1], image.shape[0]))

    rows = []
    for width, height in config["photos"]:
        image = photo(width, height, seed=width + height)
        stock = reference_engine.stock_semantic(image).argmax(0)
        rows.append({
            "photo": f"{width}x{height}",
            "old": float((labels(reference_engine, image, 0) == stock).mean()),
            "torch": float((labels(reference_engine, image, bound) == stock).mean()),
            "openvino": float((labels(fast_engine, image, bound) == stock).mean()),
        })
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)

    big = photo(*config["large"], seed=1)
    costs = {}
    for name, max_pixels in (("old", 0), ("default", bound)):
        samples = []
        for _ in range(3):
            started = time.perf_counter()
            labels(fast_engine, big, max_pixels)
            samples.append(time.perf_counter() - started)
        costs[name] = statistics.median(samples)
    print(json.dumps({"rows": rows, "large": "{}x{}".format(*config["large"]), "bound": bound, "costs": costs}))


if __name__ == "__main__":
    main()
