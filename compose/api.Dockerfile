# syntax=docker/dockerfile:1
# The HTTP API (Flask under gunicorn) and, from the same image, the webhook delivery
# worker (compose's `webhooks` service). No torch in this image.
FROM python:3.10-slim

# WHEELHOUSE_ONLY=1 installs from compose/wheelhouse/ and reaches no index (`make images`);
# the default installs from PyPI.
ARG WHEELHOUSE_ONLY=0
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY requirements/ requirements/
RUN --mount=type=bind,source=compose/wheelhouse,target=/wheelhouse \
    set -eu; \
    if [ "$WHEELHOUSE_ONLY" = 1 ]; then export PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheelhouse; fi; \
    pip install -c requirements/constraints.txt -c requirements/lock.txt -r requirements/api.txt; \
    find /usr/local/lib/python3.10 -name __pycache__ -prune -exec rm -rf {} +

# The API enqueues through common/queue.py (the queue contract); it never imports worker/.
COPY common/ common/
COPY m2fp_contract/ m2fp_contract/
COPY api/ api/
COPY delivery/ delivery/
# HOME in /tmp: the root filesystem may be mounted read-only (compose does).
RUN useradd --system --uid 10001 --no-create-home --home-dir /tmp app
ENV HOME=/tmp
USER app
EXPOSE 8000
# Workers, threads and timeouts come from the settings (api/gunicorn_conf.py).
CMD ["gunicorn", "api.wsgi:app", "--config", "python:api.gunicorn_conf", "--bind", "0.0.0.0:8000"]
