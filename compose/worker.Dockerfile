# syntax=docker/dockerfile:1
# A Celery worker holding M2FP: torch 1.13.1, mmcv-full 1.7.1 with its compiled CPU ops,
# modelscope 1.9.5, OpenVINO. Build with `make images` or `docker compose build`.
FROM python:3.10-slim

# Where the wheels come from. The defaults are production's: torch's CPU-only build from
# PyTorch's index (about 200 MB instead of PyPI's 3.4 GB CUDA build) and mmcv-full's
# prebuilt CPU ops from OpenMMLab's. WHEELHOUSE_ONLY=1 installs every wheel from
# compose/wheelhouse/ instead and reaches no index (`make wheelhouse`, then `make images`:
# the wheels of the host's own install, PyPI's torch and a locally compiled mmcv-full).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_LOCAL_VERSION=+cpu
ARG MMCV_FIND_LINKS=https://download.openmmlab.com/mmcv/dist/cpu/torch1.13/index.html
ARG WHEELHOUSE_ONLY=0

ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    MODEL_CACHE_DIR=/models MODELSCOPE_CACHE=/models/.modelscope
WORKDIR /app
COPY requirements/ requirements/
# One layer for the whole stack, in the order its traps need: torch before mmcv-full;
# mmcv-full with --no-deps (OpenMMLab's wheel asks for opencv-python, which would shadow
# the headless build); the rest pinned by the constraints and the lock; mediapipe (the
# pose model) with --no-deps too (it asks for opencv-contrib-python, jax and sounddevice).
RUN --mount=type=bind,source=compose/wheelhouse,target=/wheelhouse \
    set -eu; \
    if [ "$WHEELHOUSE_ONLY" = 1 ]; then export PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheelhouse; \
    else export PIP_EXTRA_INDEX_URL="$TORCH_INDEX_URL" PIP_FIND_LINKS="$MMCV_FIND_LINKS"; fi; \
    pip install -c requirements/constraints.txt \
        "torch==1.13.1$TORCH_LOCAL_VERSION" "torchvision==0.14.1$TORCH_LOCAL_VERSION" \
        numpy==1.26.4 opencv-python-headless==4.8.1.78; \
    pip install --no-deps mmcv-full==1.7.1; \
    pip install -c requirements/constraints.txt -c requirements/lock.txt \
        addict packaging pyyaml yapf -r requirements/worker.txt; \
    pip install --no-deps mediapipe==0.10.14; \
    find /usr/local/lib/python3.10 -name __pycache__ -prune -exec rm -rf {} +

COPY common/ common/
COPY m2fp_contract/ m2fp_contract/
COPY worker/ worker/
# The build fails here, naming the fix, when the stack is broken (a wrong OpenCV or NumPy,
# mmcv without its ops): better than a worker that dies at its first job.
# (Its modelscope index goes to /tmp and away: the image's /models stays empty.)
RUN MODELSCOPE_CACHE=/tmp/selfcheck python -m worker.selfcheck \
 && rm -rf /tmp/selfcheck && find /app -name __pycache__ -prune -exec rm -rf {} +
# The root filesystem may be mounted read-only (compose does): the writable places are
# /models (the model and engine cache) and /tmp, which is also HOME, where modelscope and
# OpenVINO write their small files.
RUN useradd --system --uid 10001 --no-create-home --home-dir /tmp app \
 && mkdir -p /models && chown app /models
ENV HOME=/tmp
USER app
VOLUME /models
# Its metrics endpoint (WORKER_METRICS_PORT), served by the main worker process.
EXPOSE 9808
# The same entry point as `make run` and the tests; scale with `docker compose up --scale worker=N`.
CMD ["celery", "-A", "worker.celery_app", "worker", "--loglevel", "INFO", "--hostname", "worker@%h"]
