"""The start-up self-check: passes the locked stack, names the fix for each known break."""
import importlib

import pytest

from scripts.processes import REPO
from worker import selfcheck



def locked_versions() -> dict[str, str]:
    """The versions requirements/lock.txt pins: what every install step is held to."""
    lines = (line.split("#", 1)[0].strip() for line in (REPO / "requirements" / "lock.txt").read_text().splitlines())
    return dict(line.split("==", 1) for line in lines if "==" in line)


def test_the_locked_stack_passes_and_pins_every_required_package(monkeypatch):
    locked = locked_versions()
    assert set(selfcheck.REQUIRED) <= set(locked)
    monkeypatch.setattr(selfcheck, "_version", locked.get)
    assert selfcheck.check_versions() == []  # a lock the check refuses would stop every worker at start


def test_a_stack_without_compiled_mmcv_ops_is_named_after_the_versions_pass(monkeypatch):
    real_import = importlib.import_module

    def without_ext(name, *args):
        if name == "mmcv._ext":
            raise ImportError("libtorch_cpu.so: undefined symbol")
        return real_import(name, *args)

    monkeypatch.setattr(selfcheck.importlib, "import_module", without_ext)
    assert selfcheck.check_imports() == [
        f"mmcv._ext missing (libtorch_cpu.so: undefined symbol): install mmcv-full 1.7.1 built with ops: "
        f"{selfcheck.FIX_MMCV}"]


def test_main_prints_each_problem_and_fails(monkeypatch, capsys):
    monkeypatch.setattr(selfcheck, "_version", lambda dist: {"numpy": "2.1.0", "opencv-python": "4.10.0.84"}.get(
        dist, selfcheck.REQUIRED.get(dist)))
    assert selfcheck.main() == 1
    printed = capsys.readouterr().err.splitlines()
    assert printed[0] == "inference stack self-check FAILED:" and len(printed) == 3
    assert "pip install numpy==1.26.4" in printed[1] and "pip uninstall -y opencv-python" in printed[2]


@pytest.mark.parametrize("installed, expected", [
    ({"numpy": "2.1.0"}, "pip install numpy==1.26.4"),
    ({"torchvision": "0.15.2"}, "torchvision 0.14.1 is the only release paired with torch 1.13.1"),
    ({"mmcv-full": None, "mmcv": "2.1.0"}, "installed instead of mmcv-full"),
    ({"mmcv": "1.7.1"}, "both mmcv and mmcv-full are installed"),
    ({"modelscope": "1.14.0"}, "pip install modelscope==1.9.5"),
    ({"opencv-python": "4.10.0.84"}, "pip uninstall -y opencv-python"),
])
def test_known_breaks_are_named_with_their_fix(monkeypatch, installed, expected):
    real = selfcheck._version
    monkeypatch.setattr(selfcheck, "_version", lambda dist: installed[dist] if dist in installed else real(dist))
    problems = selfcheck.check_versions()
    assert any(expected in p for p in problems), problems


def test_cpu_build_of_torch_counts_as_the_pinned_version(monkeypatch):
    locked = locked_versions()
    monkeypatch.setattr(selfcheck, "_version", lambda d: "1.13.1+cpu" if d == "torch" else locked.get(d))
    assert selfcheck.check_versions() == []
