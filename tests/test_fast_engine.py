"""The fast engine against the reference: same network, same labels, same persons; its
cache built once per checkpoint, reused, rebuilt when corrupt, safe under concurrency."""
import json
import shutil
import subprocess
import sys
from importlib import metadata
from unittest.mock import ANY

import numpy as np
import pytest
import torch

from scripts.imagegen import photo
from scripts.processes import REPO
from worker.engine import Parsing, decision_size, model_input
from worker.engine_loading import effective_precision
from worker.engine_cache import CacheEntry, ensure_entry, entry_dir, is_complete
from worker.instances import person_map
from worker.network import ParsingNetwork
from worker.openvino_engine import OpenVINOEngine, heads_of, preprocess
from worker.postprocess import parse_logits
from worker.process_tuning import has_bf16

# (width, height): landscape, portrait, wider than the long-side bound, tiny, square.
SHAPES = [(320, 240), (150, 400), (900, 200), (97, 61), (256, 256)]


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float((a == b).mean())


@pytest.mark.parametrize("width, height", SHAPES[:3])
def test_the_exportable_network_computes_what_the_model_computes(tiny_engine, width, height):
    """ParsingNetwork + our postprocess in eager torch = modelscope's forward + postprocess."""
    image = photo(width, height, seed=width)
    reference = tiny_engine.parse(image)
    resized, size = model_input(image, tiny_engine.max_side)
    with torch.no_grad():
        class_logits, mask_logits = ParsingNetwork(tiny_engine.model).eval()(torch.from_numpy(preprocess(resized)))
    ours = parse_logits(class_logits[0], mask_logits[0], (size[1], size[0]), heads_of(tiny_engine.model),
                        output_size=(height, width))
    assert np.abs(ours.semantic - reference.semantic).max() < 1e-4
    assert ours.person_scores == pytest.approx([p.score for p in reference.persons], abs=1e-5)


@pytest.mark.parametrize("width, height", SHAPES)
def test_fast_engine_agrees_with_torch_on_labels_and_persons(tiny_engine, fast_engine, width, height):
    image = photo(width, height, seed=height)
    reference, fast = tiny_engine.parse(image), fast_engine.parse(image)
    assert fast.size == reference.size
    assert agreement(fast.labels, reference.labels) >= 0.995
    assert agreement(fast.labels_at((width, height)), reference.labels_at((width, height))) >= 0.995
    assert fast.person_count == reference.person_count >= 1
    assert [p.score for p in fast.persons] == pytest.approx([p.score for p in reference.persons], abs=1e-3)
    for ours, theirs in zip(fast.persons, reference.persons):
        assert agreement(ours.mask_logits > 0, theirs.mask_logits > 0) >= 0.995
    # ... and on who is who: the person map each one's instances give.
    fast_people, reference_people = person_map(fast.labels, fast.persons), person_map(reference.labels, reference.persons)
    assert len(fast_people.scores) == len(reference_people.scores)
    assert agreement(fast_people.ids, reference_people.ids) >= 0.995


def test_every_input_size_runs_on_the_graphs_compiled_at_start(tiny_model, tiny_engine_dir, tiny_engine):
    """No compilation inside a job: the graphs a process compiles when it loads take any
    height and width, and photos of five shapes parse on them, labels as torch's."""
    engine = OpenVINOEngine(tiny_model, tiny_engine_dir, max_side=320, threads=1)
    compiled = [stage.compiled for stage in engine.network.stages]
    for stage in engine.network.stages:
        for port in stage.compiled.inputs:
            assert port.get_partial_shape()[2].is_dynamic and port.get_partial_shape()[3].is_dynamic
    for width, height in SHAPES:
        image = photo(width, height, seed=5)
        assert agreement(engine.parse(image).labels, tiny_engine.parse(image).labels) >= 0.995
    assert [stage.compiled for stage in engine.network.stages] == compiled


def test_fp32_runs_every_part_in_fp32_as_one_graph(fast_engine):
    assert fast_engine.description["precision"] == "fp32" and "precision_note" not in fast_engine.description
    ran = fast_engine.network.runtime_precisions()
    assert list(ran) == ["backbone+encoder+decoder+heads"]
    assert ran["backbone+encoder+decoder+heads"]["f32"] > 0 and not {"bf16", "f16"} & set(ran["backbone+encoder+decoder+heads"])


@pytest.mark.parametrize("precision, bf16_parts, min_agreement", [
    ("mixed", {"backbone", "decoder"}, 0.97),  # measured 98.2-98.9 % on the tiny model's random weights
    ("bf16", {"backbone+encoder+decoder+heads"}, 0.95),  # measured 97.1-98.6 %
])
def test_reduced_precision_runs_what_it_says_per_node_and_keeps_most_labels(tiny_model, tiny_engine_dir, tiny_engine,
                                                                          precision, bf16_parts, min_agreement):
    engine = OpenVINOEngine(tiny_model, tiny_engine_dir, max_side=320, threads=1, precision=precision)
    ran = engine.network.runtime_precisions()
    assert set(ran) == {stage.name for stage in engine.network.stages}
    if not has_bf16():  # OpenVINO runs f32 here, and the summary says so
        assert engine.description["precision"] == "fp32" and "does not run" in engine.description["precision_note"]
        assert all(set(counts) <= {"f32", "i8", "u8", "i32"} for counts in ran.values())
        return
    assert engine.description["precision"] == precision
    for name, counts in ran.items():
        if name in bf16_parts:  # the arithmetic in bf16 (a graph's tail after its last matrix product stays f32)
            assert counts["bf16"] > 4 * counts["f32"], (name, counts)
        else:  # the deformable-attention encoder and the prediction heads: nothing in bf16
            assert "bf16" not in counts and counts["f32"] > 0, (name, counts)
    for width, height in SHAPES:
        image = photo(width, height, seed=height)
        reference, reduced = tiny_engine.parse(image), engine.parse(image)
        assert agreement(reduced.labels, reference.labels) >= min_agreement
        assert reduced.person_count == reference.person_count
        ours, theirs = person_map(reduced.labels, reduced.persons), person_map(reference.labels, reference.persons)
        assert agreement(ours.ids, theirs.ids) >= 0.99


@pytest.mark.parametrize("requested, cpu_has_bf16, expected", [
    ("fp32", False, "fp32"), ("fp32", True, "fp32"), ("mixed", True, "mixed"), ("bf16", True, "bf16"),
    ("mixed", False, "fp32"), ("bf16", False, "fp32"),
])
def test_a_cpu_without_bf16_runs_fp32_and_every_job_summary_says_why(tiny_model, tiny_engine_dir, requested,
                                                                     cpu_has_bf16, expected):
    precision, note = effective_precision(requested, cpu_has_bf16)
    assert precision == expected
    assert (note is None) == (precision == requested)
    if note:
        assert f"M2FP_PRECISION={requested}" in note and "neither avx512_bf16 nor AMX" in note
        engine = OpenVINOEngine(tiny_model, tiny_engine_dir, max_side=320, threads=1, precision=precision,
                                precision_note=note)
        assert engine.description["precision"] == "fp32" and engine.description["precision_note"] == note


def test_cache_entry_is_reused_on_the_second_start(tiny_model, engine_cache, tiny_engine_dir):
    graph = tiny_engine_dir / "backbone.bin"
    stamp = graph.stat().st_mtime_ns
    again = ensure_entry(engine_cache, tiny_model)
    assert not again.built and again.path == tiny_engine_dir and graph.stat().st_mtime_ns == stamp


def test_a_complete_entry_is_used_without_the_lock(tiny_model, tiny_engine_dir, tmp_path):
    """Only a build takes the lock (opening its file for writing), so a cache built ahead
    of time can be mounted read-only."""
    entry = tmp_path / "engines" / tiny_engine_dir.name
    shutil.copytree(tiny_engine_dir, entry)
    assert ensure_entry(tmp_path, tiny_model) == CacheEntry(entry, built=False, seconds=ANY)
    assert sorted(p.name for p in entry.parent.iterdir()) == [entry.name]


def test_cache_key_names_checkpoint_runtime_and_export_format(tiny_model, tiny_engine_dir):
    name = tiny_engine_dir.name
    meta = json.loads((tiny_engine_dir / "meta.json").read_text())
    assert name == f"m2fp-{meta['checkpoint_sha256'][:16]}-openvino-{meta['openvino']}-export-{meta['export_format']}"
    assert meta["openvino"] == metadata.version("openvino") and len(meta["export_format"]) == 8


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_a_corrupt_cache_entry_is_rebuilt_not_fatal(tiny_model, tiny_engine_dir, tmp_path, damage):
    entry = tmp_path / "engines" / tiny_engine_dir.name
    shutil.copytree(tiny_engine_dir, entry)
    weights = entry / "backbone.bin"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "flip":
        data = bytearray(weights.read_bytes())
        data[len(data) // 2] ^= 0xFF
        weights.write_bytes(bytes(data))
    else:
        (entry / "heads.xml").unlink()
    assert not is_complete(entry)
    killed_build = entry.with_name(f".{entry.name}-killed")  # what a build cut off by SIGKILL leaves
    killed_build.mkdir()
    (killed_build / "model.onnx").write_bytes(b"partial")
    rebuilt = ensure_entry(tmp_path, tiny_model)
    assert rebuilt.built and rebuilt.replaced_corrupt and is_complete(rebuilt.path)
    assert sorted(p.name for p in entry.parent.iterdir()) == [entry.name, entry.name + ".lock"]
    engine = OpenVINOEngine(tiny_model, rebuilt.path, max_side=320, threads=1)
    assert engine.parse(photo(64, 48)).person_count >= 1


def test_concurrent_builds_make_one_entry_and_no_leftovers(tiny_model, tmp_path):
    command = [sys.executable, "-m", "worker.engine_cache", "--model", str(tiny_model), "--cache-dir", str(tmp_path)]
    children = [subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(2)]
    results = []
    try:
        for child in children:
            out, err = child.communicate(timeout=300)
            assert child.returncode == 0, err[-2000:]
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for child in children:
            child.kill()
    assert sorted(r["built"] for r in results) == [False, True]
    assert results[0]["path"] == results[1]["path"] and is_complete(entry_dir(tmp_path, tiny_model))
    leftovers = [p.name for p in (tmp_path / "engines").iterdir() if p.name.startswith(".")]
    assert leftovers == []


@pytest.mark.parametrize("width, height", [(97, 61), (320, 240), (500, 375)])
def test_labels_are_decided_at_the_photo_size_as_the_stock_pipeline_does(tiny_engine, fast_engine, width, height):
    image = photo(width, height, seed=11)
    stock = tiny_engine.stock_semantic(image).argmax(0)
    assert stock.shape == (height, width)
    assert (tiny_engine.parse(image).labels_at((width, height)) == stock).all()
    assert agreement(fast_engine.parse(image).labels_at((width, height)), stock) >= 0.995


def test_photos_above_the_bound_are_decided_at_the_bound_then_scaled(tiny_model, tiny_engine_dir):
    engine = OpenVINOEngine(tiny_model, tiny_engine_dir, max_side=320, threads=1, labels_max_pixels=120_000)
    parsing = engine.parse(photo(800, 600))
    assert parsing.decision_size == (400, 300) and parsing.size == (320, 240)
    assert parsing.labels_at((800, 600)).shape == (600, 800)
    assert all(p.mask_logits.shape == (300, 400) for p in parsing.persons)


@pytest.mark.parametrize("photo_size, inference, bound, expected", [
    ((768, 576), (853, 640), 2_000_000, (768, 576)),      # small photos: their own size, even below 640
    ((1600, 1200), (853, 640), 2_000_000, (1600, 1200)),  # up to the bound
    ((4000, 3000), (853, 640), 2_000_000, (1632, 1224)),  # above: the largest size within it
    ((4000, 3000), (853, 640), 100, (853, 640)),          # never below the inference size
])
def test_decision_size(photo_size, inference, bound, expected):
    assert decision_size(photo_size, inference, bound) == expected


def test_class_scores_are_the_mean_confidence_over_each_class_pixels():
    semantic = np.random.default_rng(0).random((20, 6, 7)).astype(np.float32)
    parsing = Parsing(semantic=semantic, persons=[], person_threshold=0.5, size=(7, 6))
    scores = parsing.class_scores
    assert set(scores) == set(np.unique(semantic.argmax(0)).tolist())
    for class_id, score in scores.items():
        assert score == pytest.approx(semantic.max(0)[parsing.labels == class_id].mean())
