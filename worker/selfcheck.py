"""Start-up check of the inference stack, naming the fix for each known failure.

The pinned stack (torch 1.13.1, mmcv-full 1.7.1, modelscope 1.9.5) breaks in a few
well-known ways; each is detected from installed metadata first (no heavy import that
could crash), then by importing the M2FP model class. ``python -m worker.selfcheck``
prints the verdict; the worker runs the same check before loading the model.
"""
from __future__ import annotations

import importlib
import sys
from importlib import metadata
from typing import Optional

REQUIRED = {"torch": "1.13.1", "torchvision": "0.14.1", "mmcv-full": "1.7.1", "modelscope": "1.9.5",
            "mediapipe": "0.10.14"}
# mediapipe's metadata asks for opencv-contrib-python (a second cv2 that shadows the headless
# one), jax and sounddevice, none of which its pose model needs: it is installed on its own.
FIX_MEDIAPIPE = ("pip install -c requirements/constraints.txt -r requirements/worker.txt && pip install --no-deps "
                 "mediapipe==0.10.14 (its dependencies the pose model needs are in requirements/worker.txt)")
FIX_MMCV = ("pip uninstall -y mmcv mmcv-full && MMCV_WITH_OPS=1 pip install --no-build-isolation "
            "-c requirements/constraints.txt mmcv-full==1.7.1 (see docs/development.md, 'Install order')")


def _version(dist: str) -> Optional[str]:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _public(version: str) -> str:
    return version.split("+", 1)[0]


def check_versions() -> list[str]:
    """Problems visible from installed package metadata alone."""
    problems = []
    numpy = _version("numpy")
    if numpy is None:
        problems.append("numpy is not installed: pip install numpy==1.26.4")
    elif int(numpy.split(".")[0]) >= 2:
        problems.append(f"NumPy {numpy} is installed but torch 1.13.1 needs NumPy 1.x "
                        "('_ARRAY_API not found'): pip install numpy==1.26.4")
    for dist, wanted in REQUIRED.items():
        found = _version(dist)
        if dist == "mmcv-full" and found is None and _version("mmcv") is not None:
            problems.append(f"'mmcv' {_version('mmcv')} is installed instead of mmcv-full, and it has "
                            f"no compiled ops (mmcv._ext): {FIX_MMCV}")
        elif found is None:
            fix = {"mmcv-full": FIX_MMCV, "mediapipe": FIX_MEDIAPIPE}.get(dist, f"pip install {dist}=={wanted}")
            problems.append(f"{dist} is not installed: {fix}")
        elif _public(found) != wanted:
            if dist == "torchvision":
                fix = "torchvision 0.14.1 is the only release paired with torch 1.13.1: pip install torchvision==0.14.1"
            elif dist in ("mmcv-full", "mediapipe"):
                fix = FIX_MMCV if dist == "mmcv-full" else FIX_MEDIAPIPE
            else:
                fix = f"pip install {dist}=={wanted}"
            problems.append(f"{dist} {found} is installed, {wanted} is required: {fix}")
    if _version("mmcv") is not None and _version("mmcv-full") is not None:
        problems.append(f"both mmcv and mmcv-full are installed and overwrite each other: {FIX_MMCV}")
    if _version("opencv-contrib-python") is not None:
        problems.append("opencv-contrib-python is installed (mediapipe's metadata asks for it); it shadows "
                        "opencv-python-headless: pip uninstall -y opencv-contrib-python && pip install "
                        "--force-reinstall opencv-python-headless==4.8.1.78, and install mediapipe with --no-deps")
    if _version("opencv-python") is not None:
        problems.append("opencv-python is installed beside opencv-python-headless; it pulls NumPy 2 "
                        "and shadows cv2: pip uninstall -y opencv-python && pip install "
                        "--force-reinstall opencv-python-headless==4.8.1.78")
    return problems


def check_imports() -> list[str]:
    """Problems that only show on import: torch/torchvision ABI, mmcv._ext, the M2FP class."""
    try:
        import torch
        import torchvision  # noqa: F401
    except Exception as exc:
        return [f"torch/torchvision fail to import ({exc}): reinstall with "
                "pip install -c requirements/constraints.txt -r requirements/torch.txt"]
    del torch
    try:
        importlib.import_module("mmcv._ext")
    except Exception as exc:
        return [f"mmcv._ext missing ({exc}): install mmcv-full 1.7.1 built with ops: {FIX_MMCV}"]
    try:
        from modelscope.models.cv.image_human_parsing import M2FP  # noqa: F401
    except Exception as exc:
        text = str(exc)
        if "PyExtensionType" in text:
            return ["pyarrow>=15 breaks datasets 2.13 (pulled by modelscope): pip install pyarrow==14.0.2"]
        if "timm" in text:
            return ["modelscope's M2FP import chain needs timm: pip install timm==0.9.16"]
        return [f"modelscope cannot import the M2FP model ({type(exc).__name__}: {exc}); "
                "reinstall with pip install -c requirements/constraints.txt -r requirements/worker.txt"]
    try:
        from mediapipe.python.solutions import pose  # noqa: F401
    except Exception as exc:
        return [f"mediapipe's pose model cannot import ({type(exc).__name__}: {exc}): {FIX_MEDIAPIPE}"]
    return []


def run_checks() -> list[str]:
    """All problems found, metadata checks first; imports only when those pass."""
    return check_versions() or check_imports()


def main() -> int:
    problems = run_checks()
    if problems:
        print("inference stack self-check FAILED:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    print("inference stack self-check OK: " + ", ".join(f"{d} {_version(d)}" for d in REQUIRED))
    return 0


if __name__ == "__main__":
    sys.exit(main())
