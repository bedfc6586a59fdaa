"""The start-up self-check: passes on this stack, names the fix for each known break."""
import pytest

from worker import selfcheck


def test_the_installed_stack_passes():
    assert selfcheck.run_checks() == []


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
    real = selfcheck._version
    monkeypatch.setattr(selfcheck, "_version", lambda d: "1.13.1+cpu" if d == "torch" else real(d))
    assert selfcheck.check_versions() == []
