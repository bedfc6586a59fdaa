# A Celery worker holding M2FP: torch 1.13.1+cpu, mmcv-full 1.7.1 (prebuilt CPU ops), modelscope 1.9.5.
FROM python:3.10-slim

ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MODEL_CACHE_DIR=/models MODELSCOPE_CACHE=/models/.modelscope
WORKDIR /app
COPY requirements/ requirements/
# 1. CPU-only torch from PyTorch's wheel index (~200 MB instead of the 3.4 GB CUDA build);
#    torch==1.13.1 in the constraints is satisfied by 1.13.1+cpu.
RUN pip install --no-cache-dir -c requirements/constraints.txt \
        --extra-index-url https://download.pytorch.org/whl/cpu \
        torch==1.13.1+cpu torchvision==0.14.1+cpu numpy==1.26.4 opencv-python-headless==4.8.1.78
# 2. mmcv-full with compiled CPU ops from OpenMMLab's prebuilt wheels. --no-deps: its
#    metadata asks for opencv-python, which would shadow the headless build.
RUN pip install --no-cache-dir --no-deps mmcv-full==1.7.1 \
        -f https://download.openmmlab.com/mmcv/dist/cpu/torch1.13/index.html \
 && pip install --no-cache-dir -c requirements/constraints.txt addict packaging pyyaml yapf
# 3. The rest of the worker (modelscope and its traps are pinned in the constraints).
RUN pip install --no-cache-dir -c requirements/constraints.txt -c requirements/lock.txt -r requirements/worker.txt

COPY common/ common/
COPY m2fp_contract/ m2fp_contract/
COPY worker/ worker/
RUN python -m worker.selfcheck
RUN useradd --system --uid 10001 app && mkdir -p /models && chown app /models
USER app
VOLUME /models
# Its metrics endpoint (WORKER_METRICS_PORT), served by the main worker process.
EXPOSE 9808
# The same entry point as `make run` and the tests; scale with `docker compose up --scale worker=N`.
CMD ["celery", "-A", "worker.celery_app", "worker", "--loglevel", "INFO", "--hostname", "worker@%h"]
