"""Which engine a real worker runs: M2FP_ENGINE=auto|openvino|torch, and the fallback
when the OpenVINO runtime cannot load (a broken install, simulated by an `openvino`
package earlier on the path that fails to import, as a missing shared library does) or
loads but cannot compile for this CPU (the real package, wrapped so compiling fails)."""
import re

import pytest
import requests

from scripts.imagegen import photo_jpeg
from scripts.processes import REPO
from scripts.stack import local_system
from tests.who_is_who import check_who_is_who
from worker.process_tuning import has_bf16

BROKEN = "raise ImportError('libopenvino.so.2610: cannot open shared object file (simulated)')\n"


def shadowing_openvino(base, source: str) -> str:
    """A PYTHONPATH whose first entry holds an ``openvino`` package with this source."""
    package = base / "openvino"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(source)
    return f"{base}:{REPO}"


@pytest.fixture()
def broken_openvino(tmp_path) -> str:
    return shadowing_openvino(tmp_path / "broken", BROKEN)


# Imports the installed openvino in its own place, with compiling made to fail.
UNCOMPILABLE = """
import os, sys
shim_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != shim_root]
del sys.modules[__name__]
import openvino as real


class Core(real.Core):
    def compile_model(self, *args, **kwargs):
        raise RuntimeError("the CPU plugin cannot compile this graph here (simulated)")


real.Core = Core
"""


@pytest.fixture()
def uncompilable_openvino(tmp_path) -> str:
    return shadowing_openvino(tmp_path / "uncompilable", UNCOMPILABLE)


def run_one_job(tmp_path, tiny_model, **worker_env) -> tuple[dict, str, dict[str, bytes]]:
    """The job, the worker's log, and the job's outputs by name (while the stack runs)."""
    with local_system(tmp_path, M2FP_MODEL=str(tiny_model), INFERENCE_MAX_SIDE="64", TORCH_THREADS="1") as stack:
        worker = stack.start_worker("w", **worker_env)
        job = stack.wait_for(stack.submit(photo_jpeg(80, 60)).json()["id"])
        outputs = {name: requests.get(url, timeout=30).content
                   for name, url in ((job.get("result") or {}).get("outputs") or {}).items()}
        return job, worker.log_text(), outputs


def test_default_engine_is_openvino_and_the_log_says_what_ran(tmp_path, tiny_model):
    job, log, _ = run_one_job(tmp_path, tiny_model)
    assert job["status"] == "succeeded", job
    assert job["result"]["summary"]["model"]["engine"] == "openvino"
    assert job["result"]["summary"]["model"]["precision"] == "fp32"
    assert "OpenVINO engine reused from" in log  # the session's cache (MODEL_CACHE_DIR)
    assert re.search(r"worker process \d+ ready: openvino engine \(fp32\)", log), log[-3000:]
    assert "process tuning: malloc:" in log


def test_mixed_precision_on_request_and_the_summary_says_what_ran(tmp_path, tiny_model):
    job, log, _ = run_one_job(tmp_path, tiny_model, M2FP_PRECISION="mixed")
    assert job["status"] == "succeeded", job
    model = job["result"]["summary"]["model"]
    if has_bf16():
        assert model["precision"] == "mixed" and "precision_note" not in model
        assert re.search(r"OpenVINO graphs compiled for every input size, mixed: backbone \{'bf16'", log), log[-3000:]
    else:  # the CPU cannot: fp32, and why
        assert model["precision"] == "fp32" and "neither avx512_bf16 nor AMX" in model["precision_note"]


def test_auto_falls_back_to_torch_with_one_warning(tmp_path, tiny_model, broken_openvino):
    job, log, _ = run_one_job(tmp_path, tiny_model, PYTHONPATH=broken_openvino)
    assert job["status"] == "succeeded", job
    assert job["result"]["summary"]["model"]["engine"] == "torch"
    warnings = [line for line in log.splitlines() if "OpenVINO engine unavailable" in line]
    assert len(warnings) == 1 and "WARNING" in warnings[0] and "simulated" in warnings[0], log[-3000:]
    assert re.search(r"worker process \d+ ready: torch engine", log)


def test_auto_falls_back_at_start_when_openvino_loads_but_cannot_compile(tmp_path, tiny_model,
                                                                         uncompilable_openvino):
    job, log, _ = run_one_job(tmp_path, tiny_model, PYTHONPATH=uncompilable_openvino)
    assert job["status"] == "succeeded", job
    assert job["result"]["summary"]["model"]["engine"] == "torch"
    warnings = [line for line in log.splitlines() if "OpenVINO engine unavailable" in line]
    assert len(warnings) == 1 and "cannot compile this graph here (simulated)" in warnings[0], log[-3000:]


def test_torch_engine_on_request_without_a_warning(tmp_path, tiny_model, broken_openvino):
    job, log, outputs = run_one_job(tmp_path, tiny_model, PYTHONPATH=broken_openvino, M2FP_ENGINE="torch")
    assert job["result"]["summary"]["model"]["engine"] == "torch"
    assert "OpenVINO" not in log
    # Who is who from the torch engine's own instances, as the end-to-end test checks the default engine's.
    summary = check_who_is_who(outputs["labels.png"], outputs["persons.png"], outputs["result.json"])
    assert summary["model"]["engine"] == "torch" and job["result"]["summary"]["people"] == summary["people"]


def test_openvino_on_request_refuses_to_start_without_it(tmp_path, tiny_model, broken_openvino):
    with local_system(tmp_path, M2FP_MODEL=str(tiny_model)) as stack:
        worker = stack.start_worker("w", PYTHONPATH=broken_openvino, M2FP_ENGINE="openvino")
        assert worker.popen.wait(timeout=120) != 0
        log = worker.log_text()
    assert "the OpenVINO engine is unavailable" in log and "simulated" in log
    assert "M2FP_ENGINE=torch" in log and "ready" not in log
