"""The Python client and the ``m2fp`` command line of m2fp-queue.

Light on purpose: it needs requests, click, tqdm, pydantic and (for S3 listing) minio,
never the service's own stack (no numpy, torch or Celery), so it installs on any
machine that reaches the API (``make client``).
"""
from m2fp_client.client import ApiError, Client, WaitTimedOut

__all__ = ["ApiError", "Client", "WaitTimedOut"]
