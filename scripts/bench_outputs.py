"""Seconds each group of outputs adds per photo (keypoints, masks, garments, tryon), by
photo size, beside the standard outputs' render time measured in the same run; then the
peak memory of a real worker's model process with and without every group.

The photo is the real astronaut photo scaled to each size, its parse the hand-made one
(scripts/imagegen.py ``astronaut_parse``: the synthetic models' parse of a real photo is
noise, and the try-on recipes' cost depends on where the garment and arms are); the
keypoints come from the real pose model. What a group adds does not depend on the parsing
model: it runs after inference, on the photo and its maps. Each figure is the median of
three renders, in one process, one thread of this machine per render.

Where the pose model finds no hip on the scaled portrait (it ends near them), the timed
try-on pack leaves out its two agnostic images; the bench names those sizes under the
table.

The memory table runs the real worker (full-size synthetic model, default engine, one
model process) on the photo scaled to 8000x5000 (40 megapixels, the largest accepted):
once with the standard outputs, once with every group; there the parse is the model's,
and her body is sent with its hips (``astronaut_body``, a copy for each person), so the
whole pack is made, its agnostic images at 40 megapixels included: the worst case the
memory budget must hold.
"""
from __future__ import annotations

import io
import json
import re
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from common.images import resize_labels
from common.jobs import OutputGroup, OutputOptions
from common.labels import NUM_PARTS
from m2fp_contract.schema import MAX_KEYPOINT_PEOPLE, LabelProfile, LabelsFormat
import requests

from scripts.bench import ensure_engine, ensure_full_model, machine
from scripts.bench_scale import ENGINES, memory_mib
from scripts.imagegen import ASTRONAUT, astronaut_body, astronaut_parse
from scripts.processes import REPO
from scripts.stack import local_system
from worker.engine import Parsing, Person
from worker.mediapipe_pose import MediaPipePose
from worker.outputs import render

SIZES = [(512, 512), (1024, 1024), (2000, 3000), (8000, 5000)]
DECISION = (1000, 1000)  # the parse is decided at most at about this size and scaled, as LABELS_MAX_PIXELS does
RUNS = 3


def parsing_of(labels: np.ndarray) -> Parsing:
    """The hand-made parse as an engine returns it: per-class scores and one person."""
    semantic = np.full((NUM_PARTS, *labels.shape), 0.005, np.float32)
    for class_id in np.unique(labels):
        semantic[class_id][labels == class_id] = 0.9
    person = Person(score=0.95, mask_logits=np.where(labels > 0, 5.0, -5.0).astype(np.float32))
    return Parsing(semantic=semantic, persons=[person], person_threshold=0.5, size=labels.shape[::-1])


def seconds(image: np.ndarray, parsing: Parsing, groups: list[OutputGroup],
            pose: MediaPipePose) -> tuple[float, dict, dict]:
    """Median render seconds, the median seconds of each group over RUNS renders, and
    the files the try-on pack left out (with why)."""
    options = OutputOptions.of(LabelProfile.CIHP, LabelsFormat.GRAYSCALE, groups)
    totals, parts = [], []
    for _ in range(RUNS):
        began = time.perf_counter()
        rendered = render(image, parsing, {}, options, pose)
        totals.append(time.perf_counter() - began)
        parts.append(rendered.summary.get("output_seconds", {}))
    omitted = (rendered.summary.get("tryon") or {}).get("omitted", {})
    return (statistics.median(totals), {name: statistics.median(p[name] for p in parts) for name in parts[0]},
            omitted)


def peak_memory(model: Path, outputs: str) -> tuple[float, dict]:
    """A fresh model process's peak resident memory (MiB) after one 8000x5000 job asking for
    ``outputs``, and the job's ``output_seconds``."""
    buffer = io.BytesIO()
    Image.open(ASTRONAUT).convert("RGB").resize((8000, 5000)).save(buffer, "JPEG", quality=85)
    with tempfile.TemporaryDirectory() as tmp, local_system(Path(tmp), M2FP_MODEL=str(model)) as stack:
        worker = stack.start_worker("memory", WORKER_CONCURRENCY="1", TORCH_THREADS="2", **ENGINES["default"])
        fields = {"outputs": outputs}
        if "tryon" in outputs:
            # As many copies as a document may hold: one body goes to each person (best match
            # first), so person 1 of the model's noisy parse gets hers, whichever it is.
            body = {"pose_keypoints_2d": astronaut_body(8000, 5000)}
            fields["keypoints"] = json.dumps({"people": [body] * MAX_KEYPOINT_PEOPLE})
        answer = requests.post(f"{stack.api_url}/v1/jobs", files={"image": ("photo.jpg", buffer.getvalue())},
                               data=fields, timeout=120)
        job = stack.wait_for(answer.json()["id"], timeout=1800)
        assert job["status"] == "succeeded", job
        tryon = job["result"]["summary"].get("tryon")
        assert tryon is None or (tryon["files"] and not tryon["omitted"]), f"the pack is not whole: {tryon}"
        pid = int(re.findall(r"worker process (\d+) ready", worker.log_text())[0])
        return memory_mib(pid, "VmHWM"), job["result"]["summary"].get("output_seconds", {})


def main() -> None:
    pose = MediaPipePose()
    photo = Image.open(ASTRONAUT).convert("RGB")
    print(f"Machine: {machine()}")
    print("Photo: tests/data/astronaut.jpg scaled to each size, its hand-made parse, the real pose model; "
          f"median of {RUNS} renders\n")
    print("| photo | standard outputs, s | + keypoints, s | + masks, s | + garments, s | + tryon, s | "
          "all four / standard |")
    print("|---|---|---|---|---|---|---|")
    partial: dict[str, dict] = {}
    for width, height in SIZES:
        image = np.asarray(photo.resize((width, height), Image.BILINEAR))
        scale = min(1.0, (DECISION[0] * DECISION[1] / (width * height)) ** 0.5)
        decided = (max(1, int(width * scale)), max(1, int(height * scale)))
        parsing = parsing_of(resize_labels(astronaut_parse(), decided))
        standard, _, _ = seconds(image, parsing, [], pose)
        every, groups, omitted = seconds(image, parsing, list(OutputGroup), pose)
        if omitted:
            partial[f"{width}x{height}"] = omitted
        print(f"| {width}x{height} | {standard:.2f} | {groups['keypoints']:.2f} | {groups['masks']:.2f} | "
              f"{groups['garments']:.2f} | {groups['tryon']:.2f} | {every / standard:.1f}x |", flush=True)
    for size, omitted in partial.items():
        print(f"\nAt {size} the try-on pack timed leaves out {', '.join(sorted(omitted))}: "
              f"{next(iter(omitted.values()))}")
    model = REPO / "models" / "m2fp-synthetic-full"
    ensure_full_model(model)
    ensure_engine(model, REPO / "var" / "models")
    print("\n| 8000x5000, full-size model, default engine (every group: her body sent, hips included) "
          "| peak RSS of the model process, MiB | seconds per group |")
    print("|---|---|---|")
    for outputs in ("", ",".join(group.value for group in OutputGroup)):
        peak, took = peak_memory(model, outputs)
        print(f"| {outputs or 'standard outputs'} | {peak:.0f} | {took or '-'} |", flush=True)


if __name__ == "__main__":
    main()
