# The HTTP API: Flask under gunicorn. No torch in this image.
FROM python:3.10-slim

ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY requirements/ requirements/
RUN pip install --no-cache-dir -c requirements/constraints.txt -c requirements/lock.txt -r requirements/api.txt

# The API enqueues through common/queue.py (the queue contract); it never imports worker/.
COPY common/ common/
COPY m2fp_contract/ m2fp_contract/
COPY api/ api/
# The webhook delivery worker (compose's `webhooks` service) runs from this image too.
COPY delivery/ delivery/
RUN useradd --system --uid 10001 app
USER app
EXPOSE 8000
# Workers, threads and timeouts come from the settings (api/gunicorn_conf.py).
CMD ["gunicorn", "api.wsgi:app", "--config", "python:api.gunicorn_conf", "--bind", "0.0.0.0:8000"]
