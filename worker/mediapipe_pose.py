"""The pose engine: MediaPipe's BlazePose (``pose_landmark_full``), a trained model that
ships inside its PyPI wheel and runs on the CPU offline.

Chosen because it installs from PyPI with its weights (nothing to download at run time,
unlike OpenPose, MMPose or ONNX model zoos), runs in tens of milliseconds per person on
one core, and is Apache-2.0 licensed. It finds one body per call, which is what the
worker asks of it: one crop per person M2FP found (:func:`worker.pose.estimate_people`).

BlazePose's 33 landmarks become OpenPose's BODY_25: the neck is the shoulders' midpoint
and the mid-hip the hips', as OpenPose defines them; its foot index is the big toe and
its heel the heel; OpenPose's small toes have no BlazePose counterpart and stay absent.
Each point's confidence is BlazePose's visibility; points it deems hidden (below
:data:`MIN_VISIBILITY`) or places outside the image are absent, as OpenPose would have them.
"""
from __future__ import annotations

import logging
import threading
import warnings
from typing import Optional, Protocol, Sequence

import numpy as np

from worker.pose import BODY_25, midpoint

log = logging.getLogger(__name__)

MODEL_COMPLEXITY = 1  # pose_landmark_full.tflite, the landmark model the wheel ships
# BlazePose places all 33 landmarks, hidden ones included, each with the likelihood that
# it is visible; OpenPose writes only what it saw (down to a confidence of about 0.05).
# Below this a point is absent, (0, 0, 0), so a recipe never draws an arm at a blind
# guess. Not MediaPipe's drawing threshold (0.5): BlazePose rates real but unusual limbs
# low (the astronaut's gloved wrists on her helmet: 0.37 and 0.47), its blind guesses
# far lower (her knees below the frame: 0.02 to 0.06).
MIN_VISIBILITY = 0.2
# BODY_25 index -> BlazePose landmark index (OpenPose's R/L are the person's own, as BlazePose's).
_FROM_BLAZEPOSE = {0: 0, 2: 12, 3: 14, 4: 16, 5: 11, 6: 13, 7: 15, 9: 24, 10: 26, 11: 28, 12: 23, 13: 25,
                   14: 27, 15: 5, 16: 2, 17: 8, 18: 7, 19: 31, 21: 29, 22: 32, 24: 30}


class MediaPipePose:
    """One BlazePose graph per model process, kept for its lifetime (loading it takes a
    fraction of a second; a job may ask it about several persons)."""

    def __init__(self) -> None:
        import mediapipe  # imported here: only the worker needs it, and it is large
        from mediapipe.python.solutions.pose import Pose

        # protobuf 4 warns at every call about an API mediapipe 0.10.14 still uses; nothing to act on.
        warnings.filterwarnings("ignore", message=r"SymbolDatabase\.GetPrototype\(\) is deprecated")
        self._pose = Pose(static_image_mode=True, model_complexity=MODEL_COMPLEXITY, enable_segmentation=False)
        self._lock = threading.Lock()  # one graph: one image at a time
        self.description = {"engine": "mediapipe", "model": "BlazePose pose_landmark_full",
                            "version": mediapipe.__version__, "licence": "Apache-2.0"}

    def estimate(self, image: np.ndarray) -> Optional[np.ndarray]:
        height, width = image.shape[:2]
        with self._lock:
            found = self._pose.process(image)
        if found.pose_landmarks is None:
            return None
        return body_from_landmarks(found.pose_landmarks.landmark, width, height)


class Landmark(Protocol):
    """One of BlazePose's 33 landmarks as MediaPipe gives it (``NormalizedLandmark``):
    x and y as fractions of the image's width and height, and the likelihood it is visible."""

    x: float
    y: float
    visibility: float


def body_from_landmarks(marks: Sequence[Landmark], width: int, height: int) -> Optional[np.ndarray]:
    """BlazePose's 33 landmarks of a ``width`` x ``height`` image as OpenPose BODY_25 points
    in its pixels, or None when none is kept. Apart from the model so that the mapping, the
    visibility floor, the image bound and the midpoints can be checked on landmarks made by
    hand, without running the model."""
    body = np.zeros((len(BODY_25), 3), np.float32)
    for openpose, blazepose in _FROM_BLAZEPOSE.items():
        mark = marks[blazepose]
        x, y = mark.x * width, mark.y * height
        if mark.visibility >= MIN_VISIBILITY and 0 <= x < width and 0 <= y < height:
            body[openpose] = (x, y, min(mark.visibility, 1.0))
    body[1] = midpoint(body, 2, 5)  # from the points kept: no neck from a dropped shoulder
    body[8] = midpoint(body, 9, 12)
    return body if body.any() else None
