"""The OpenVINO graph of a checkpoint: built once, cached in ``MODEL_CACHE_DIR``.

An entry is ``MODEL_CACHE_DIR/engines/<key>/`` holding an ``.xml`` + ``.bin`` graph per
part of the network (:data:`worker.network.PARTS`, fp32 weights), ``heads.json`` (the class layout the postprocess needs) and
``meta.json`` (hashes of those files, versions, build time). The key names the
checkpoint (SHA-256 of ``configuration.json`` and ``pytorch_model.pt``), the OpenVINO
version and the export code (a hash of :mod:`worker.network` and the export settings),
so a new checkpoint, runtime or export gets a new entry.

Building exports the network to ONNX with torch (35-70 s for the full-size model on two
cores), converts it to OpenVINO, checks the graph against eager torch on two photo
shapes, and only then renames the finished directory into place: concurrent workers
either wait on the entry's lock and reuse it, or never see a half-written entry. An
entry whose files do not match their recorded hashes is rebuilt.

The worker runs this in a child process at start-up (the build needs the whole torch
model in memory, which the worker's main process should not keep); ``make engine`` runs
it ahead of time::

    python -m worker.engine_cache [--model DIR] [--cache-dir DIR]
"""
from __future__ import annotations

import argparse
import dataclasses
import fcntl
import hashlib
import json
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional

from worker.model_source import MODEL_FILES

if TYPE_CHECKING:
    import numpy as np
    import torch

    from worker.postprocess import ModelHeads

ONNX_OPSET = 16  # GridSample is a native op from 16 on
# The network's parts (worker.network.PARTS), each an OpenVINO graph, and the class layout.
GRAPH_FILES = ("backbone.xml", "backbone.bin", "encoder.xml", "encoder.bin", "decoder.xml", "decoder.bin",
               "heads.xml", "heads.bin", "heads.json")
# Shapes the build checks the graph at: landscape and portrait photos at the model's scale.
CHECK_SHAPES = ((853, 640), (640, 1000))
MIN_AGREEMENT = 0.995


class EngineBuildError(RuntimeError):
    """The graph could not be built or did not match torch; the message says which."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def runtime_version() -> str:
    """The installed OpenVINO's version, read from its metadata (no import)."""
    try:
        return metadata.version("openvino")
    except metadata.PackageNotFoundError:
        raise EngineBuildError("OpenVINO is not installed: pip install -c requirements/constraints.txt "
                               "-r requirements/worker.txt (or set M2FP_ENGINE=torch)") from None


def checkpoint_hash(model_dir: Path) -> str:
    """SHA-256 over the model directory's files: what names a checkpoint in the cache key."""
    digest = hashlib.sha256()
    for name in MODEL_FILES:
        digest.update(_sha256(model_dir / name).encode())
    return digest.hexdigest()


def export_format() -> str:
    """Names the export code: the exportable network's source, the code that writes
    ``heads.json`` and prepares the graph's input, and the export settings. Any change
    to these gives new cache entries, with no version number to forget."""
    import inspect

    from worker.openvino_engine import heads_of, preprocess

    source = (Path(__file__).with_name("network.py").read_bytes() + inspect.getsource(heads_of).encode()
              + inspect.getsource(preprocess).encode() + f"opset={ONNX_OPSET}".encode())
    return hashlib.sha256(source).hexdigest()[:8]


def entry_dir(cache_dir: Path, model_dir: Path) -> Path:
    key = f"m2fp-{checkpoint_hash(model_dir)[:16]}-openvino-{runtime_version()}-export-{export_format()}"
    return Path(cache_dir).resolve() / "engines" / key


def is_complete(entry: Path) -> bool:
    """True if ``entry`` holds every file with the size and hash its meta.json recorded.

    A missing file or a malformed meta.json means corrupt (False); any other error
    reading it (permissions, I/O) is raised, so a good entry is never replaced for it."""
    try:
        recorded = json.loads((entry / "meta.json").read_text())["files"]
        return set(recorded) == set(GRAPH_FILES) and all(
            (entry / name).stat().st_size == info["bytes"] and _sha256(entry / name) == info["sha256"]
            for name, info in recorded.items())
    except (FileNotFoundError, NotADirectoryError, ValueError, KeyError, TypeError):
        return False
    except OSError as exc:
        raise EngineBuildError(f"cannot read the engine cache entry {entry} ({exc}); make MODEL_CACHE_DIR "
                               "readable and writable by the worker") from None


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock between processes (and containers sharing the volume)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclasses.dataclass(frozen=True)
class CacheEntry:
    """What :func:`ensure_entry` found or made, for the worker's start-up log."""

    path: Path
    built: bool  # False: an existing entry was reused
    seconds: float  # time spent here (building, or checking the existing entry)
    replaced_corrupt: bool = False


def ensure_entry(cache_dir: Path, model_dir: Path) -> CacheEntry:
    """The checkpoint's cache entry, built if missing or corrupt.

    A complete entry is used without taking the lock, so a cache built ahead of time
    (``make engine``) can be mounted read-only; the lock is only for building."""
    started = time.perf_counter()
    entry = entry_dir(cache_dir, model_dir)
    if is_complete(entry):
        return CacheEntry(entry, built=False, seconds=time.perf_counter() - started)
    with _locked(entry.with_name(entry.name + ".lock")):
        if is_complete(entry):
            return CacheEntry(entry, built=False, seconds=time.perf_counter() - started)
        # Holding the lock, no other build of this key runs: staging directories left
        # here were cut off (a killed build) and only take space.
        for leftover in entry.parent.glob(f".{entry.name}-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", dir=entry.parent))
        corrupt = entry.exists()
        try:
            build(model_dir, staging)
            staging.chmod(0o755)
            if corrupt:  # swapped only now: processes elsewhere may still be reading it
                entry.rename(staging.with_name(staging.name + "-corrupt"))
            staging.rename(entry)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            shutil.rmtree(staging.with_name(staging.name + "-corrupt"), ignore_errors=True)
    return CacheEntry(entry, built=True, seconds=time.perf_counter() - started, replaced_corrupt=corrupt)


def build(model_dir: Path, out: Path) -> None:
    """Export the checkpoint's network, part by part, into ``out`` and check the graphs
    against eager torch."""
    import openvino as ov
    import torch

    from worker.network import PARTS, ParsingNetwork
    from worker.openvino_engine import heads_of, preprocess
    from worker.torch_engine import TorchEngine

    engine = TorchEngine(model_dir, max_side=1333)
    network = ParsingNetwork(engine.model).eval()
    tensors = {"image": torch.from_numpy(preprocess(_sample_photo(*CHECK_SHAPES[0])))}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on Python values it records as constants
        for part, module in zip(PARTS, network.parts):
            inputs = tuple(tensors[name] for name in part.inputs)
            onnx_path = out / f"{part.name}.onnx"
            torch.onnx.export(module, inputs, str(onnx_path), opset_version=ONNX_OPSET,
                              input_names=list(part.inputs), output_names=list(part.outputs),
                              dynamic_axes={name: {2: f"{name}_height", 3: f"{name}_width"} for name in part.spatial})
            # fp16 weights are OpenVINO's default on disk; the engine computes in fp32, so keep them.
            ov.save_model(ov.convert_model(str(onnx_path)), str(out / f"{part.name}.xml"), compress_to_fp16=False)
            onnx_path.unlink()
            tensors.update(zip(part.outputs, module(*inputs)))
    heads = heads_of(engine.model)
    (out / "heads.json").write_text(json.dumps(dataclasses.asdict(heads)))
    check_graphs(network, out, heads)
    (out / "meta.json").write_text(json.dumps({
        "model_dir": str(model_dir),
        "checkpoint_sha256": checkpoint_hash(model_dir),
        "openvino": runtime_version(),
        "torch": torch.__version__,
        "export_format": export_format(),
        "files": {name: {"bytes": (out / name).stat().st_size, "sha256": _sha256(out / name)}
                  for name in GRAPH_FILES},
    }, indent=2))


def check_graphs(network: "torch.nn.Module", entry: Path, heads: "ModelHeads") -> None:
    """The exported graphs, run as the engine runs them in fp32, against eager torch at
    both check shapes: the same mask shapes and at least MIN_AGREEMENT of the labels."""
    import torch

    from worker.openvino_engine import CompiledNetwork, preprocess
    from worker.postprocess import parse_logits

    compiled = CompiledNetwork(entry, threads=2, precision="fp32")
    for width, height in CHECK_SHAPES:
        tensor = preprocess(_sample_photo(width, height))
        with torch.no_grad():
            expected = network(torch.from_numpy(tensor))
        got = tuple(torch.from_numpy(logits)[None] for logits in compiled.logits(tensor))
        if got[1].shape != expected[1].shape:
            raise EngineBuildError(f"the OpenVINO graph gives mask logits of shape {tuple(got[1].shape)} at "
                                   f"{width}x{height}, torch {tuple(expected[1].shape)}: the export is wrong "
                                   f"for this model. Use M2FP_ENGINE=torch and report it")
        labels = [parse_logits(c[0], m[0], (height, width), heads).semantic.argmax(0) for c, m in (expected, got)]
        agreement = float((labels[0] == labels[1]).mean())
        if agreement < MIN_AGREEMENT:
            raise EngineBuildError(f"the OpenVINO graph disagrees with torch at {width}x{height}: "
                                   f"{agreement:.3%} of label pixels equal, {MIN_AGREEMENT:.1%} required. "
                                   "Use M2FP_ENGINE=torch and report it")


def check_runtime(entry: Path) -> None:
    """Prove that OpenVINO loads in this environment, reads the entry's graphs and
    compiles them for this CPU, so that ``M2FP_ENGINE=auto`` falls back to torch at start
    rather than failing every job when the runtime cannot run here."""
    try:
        from worker.openvino_engine import CompiledNetwork

        CompiledNetwork(entry, threads=1, precision="fp32")
    except Exception as exc:  # ImportError, a broken shared library, an unreadable graph
        raise EngineBuildError(f"OpenVINO cannot load here ({type(exc).__name__}: {exc}); reinstall it with "
                               "pip install -c requirements/constraints.txt -r requirements/worker.txt") from None


def _sample_photo(width: int, height: int) -> "np.ndarray":
    """A deterministic photo-like input (smooth color fields plus noise) for the check."""
    import numpy as np

    rng = np.random.default_rng(width * 7919 + height)
    coarse = rng.integers(0, 256, (height // 64 + 2, width // 64 + 2, 3)).astype(np.float32)
    ys = np.linspace(0, coarse.shape[0] - 1.001, height)
    xs = np.linspace(0, coarse.shape[1] - 1.001, width)
    smooth = coarse[ys.astype(int)][:, xs.astype(int)]
    noisy = smooth + rng.normal(0, 8, smooth.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def main(argv: Optional[list[str]] = None) -> int:
    from common.settings import load_settings
    from worker.model_source import ModelUnavailable, resolve_model_dir

    settings = load_settings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="model directory (default: M2FP_MODEL, resolved as the worker does)")
    parser.add_argument("--cache-dir", type=Path, default=settings.model_cache_dir, help="default: MODEL_CACHE_DIR")
    args = parser.parse_args(argv)
    try:
        model_dir = args.model.resolve() if args.model else resolve_model_dir(settings)
        entry = ensure_entry(args.cache_dir, model_dir)
        check_runtime(entry.path)
    except (EngineBuildError, ModelUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # an export or conversion crash: the traceback above, one line here
        traceback.print_exc()
        print(f"error: the engine build failed ({type(exc).__name__}: {exc}); set M2FP_ENGINE=torch "
              "to run without it, and report the traceback", file=sys.stderr)
        return 1
    print(json.dumps({"path": str(entry.path), "built": entry.built, "seconds": round(entry.seconds, 1),
                      "replaced_corrupt": entry.replaced_corrupt}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
