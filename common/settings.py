"""All configuration, read once from environment variables into one typed object.

Every process (API, worker, scripts) calls :func:`load_settings` at start-up and passes
the result down; nothing else reads ``os.environ`` for configuration, so tests build a
``Settings(...)`` of their own instead of patching globals.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Literal, Optional

from kombu.utils.url import maybe_sanitize_url
from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.images import DEFAULT_LABELS_MAX_PIXELS, ImageLimits

DEFAULT_MODEL = "damo/cv_resnet101_image-multiple-human-parsing"
DEFAULT_MODEL_REVISION = "v1.0.1"
# Default MODEL_PROCESS_MEMORY_MB per engine: the full-size model's peak with the widest
# input and a 40-megapixel photo (``make bench-scale``), with some headroom. Mixed precision
# compiles four graphs separately, each with its own working memory.
PROCESS_MEMORY_MB = {"openvino": 3400, "openvino-mixed": 3900, "torch": 6000}


class Settings(BaseSettings):
    """Service settings; each field maps to the upper-case environment variable."""

    # hide_input_in_errors: a refused setting's error would otherwise quote the whole input,
    # secrets included, into the start-up log.
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore", env_ignore_empty=True,
                                      hide_input_in_errors=True)

    # Queue and job records
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Redis behind Sentinel (docs/high-availability.md): when REDIS_SENTINELS is set, every
    # client of the service (Celery's transport, the job store, the API) asks these sentinels
    # for the current master of REDIS_MASTER_NAME, and REDIS_URL is not used.
    redis_sentinels: str = Field("", description=(
        "Sentinels as a comma-separated host:port list (e.g. `sentinel-0:26379,sentinel-1:26379`); set, it "
        "replaces REDIS_URL and a failover moves every client to the new master."))
    redis_master_name: str = Field("m2fp", description="The name the sentinels monitor the master under.")
    redis_password: Optional[str] = Field(None, repr=False, description=(
        "Password of the master and its replicas (their requirepass) when REDIS_SENTINELS is set."))
    redis_sentinel_password: Optional[str] = Field(None, repr=False, description=(
        "Password of the sentinels themselves (their requirepass), if they have one."))
    redis_db: int = Field(0, ge=0, description="Database number when REDIS_SENTINELS is set.")
    redis_wait_replicas: Optional[int] = Field(None, ge=0, description=(
        "Replicas that must hold a new job before the API answers 202 (Redis WAIT): a failover then cannot "
        "lose an accepted job. Default 1 with REDIS_SENTINELS, else 0. When fewer confirm within "
        "REDIS_WAIT_MS the job is still accepted and the API logs a warning and counts it."))
    redis_wait_ms: int = Field(500, gt=0, le=1500, description=(
        "How long the API waits for those replicas; at most 1500, because the API's Redis calls time out "
        "after 2 s and a longer WAIT would answer 503 for a job already accepted."))
    queue_name: str = "m2fp.interactive"
    # Bulk work (the backfill script) goes to its own queue; workers always take an
    # interactive job first, so a backlog never starves a waiting user.
    backfill_queue_name: str = "m2fp.backfill"
    # Above this many waiting backfill jobs the API answers 429 queue_full to backfill
    # submissions, so a bulk client cannot flood Redis.
    backfill_max_queued: int = Field(500, gt=0)
    job_ttl_seconds: int = Field(7 * 24 * 3600, gt=0)
    task_soft_time_limit: int = Field(240, gt=0)
    task_time_limit: int = Field(300, gt=0)
    # Seconds before an unacknowledged job (its worker died) is handed to another
    # worker. Must exceed RETRY_BACKOFF_MAX plus twice TASK_TIME_LIMIT (_check_limits),
    # or a slow or retried job would run twice at once.
    visibility_timeout: int = Field(3600, gt=0)
    # Seconds between sweeps that hand such jobs on once their timeout has passed.
    unacked_restore_interval: int = Field(10, gt=0)
    max_attempts: int = Field(3, gt=0)
    retry_backoff_max: int = Field(300, gt=0)

    # Stranded jobs (worker/sweeper.py).
    worker_heartbeat_seconds: float = Field(10, gt=0, description=(
        "How often every model process tells Redis it is alive and which job it runs."))
    stranded_after_seconds: float = Field(60, gt=0, description=(
        "A model process not heard from this long is gone: the job it ran is queued again (or fails "
        "worker_lost once lost MAX_ATTEMPTS times). A job queued this long with no message in Redis gets one. "
        "At least 3 x WORKER_HEARTBEAT_SECONDS."))
    sweep_interval_seconds: float = Field(30, gt=0, description=(
        "How often the stranded-job sweep runs: every model worker takes part, and locks in Redis let one "
        "sweep start per interval across the fleet, never while another still runs."))
    worker_stall_seconds: float = Field(60, gt=0, description=(
        "A model worker that has taken no job this long while jobs wait in its queues and it has free "
        "processes has stopped consuming (a known Celery/kombu reconnect bug): it shuts down, to be "
        "started again by its restart policy (worker/consumption_guard.py)."))

    # Storage: a local directory unless an S3 endpoint is given
    storage_backend: Optional[Literal["local", "s3"]] = None
    local_store_dir: Path = Path("var/store")
    s3_endpoint: Optional[str] = None
    s3_public_endpoint: Optional[str] = None
    s3_access_key: Optional[str] = None
    s3_secret_key: Optional[str] = Field(None, repr=False)
    s3_bucket: str = "m2fp"
    s3_region: str = "us-east-1"
    s3_secure: bool = False
    presign_seconds: int = Field(3600, gt=0)
    # Buckets (besides S3_BUCKET) whose images may be submitted by reference, as a
    # comma-separated list; references into any other bucket are refused.
    source_buckets: str = ""

    # Callers: with no key configured the API runs open (one warning at start). See
    # api/auth.py for the formats: API_KEYS "tenant:key,...", API_KEYS_FILE one hashed key
    # per line. Submissions per minute per key (0: unlimited), unless its line says rate=N.
    api_keys: str = Field("", repr=False)
    api_keys_file: Optional[Path] = None
    submit_rate_per_minute: int = Field(0, ge=0)

    # Webhooks (docs/webhooks.md). Each tenant's signing secret is derived from this key;
    # without it, submissions that name a webhook are refused (webhooks_disabled).
    webhook_signing_key: str = Field("", repr=False)
    # Hosts (names, IPs or CIDR networks, comma-separated) a webhook may reach over plain
    # http and at private addresses; any other receiver must be https at a public address.
    webhook_allow_hosts: str = ""
    # Deliveries run on their own queue, in the light delivery worker (delivery/celery_app.py).
    webhook_queue_name: str = "m2fp.webhooks"
    webhook_timeout_seconds: float = Field(10, gt=0)
    # An event is retried with exponential backoff (first wait, doubling, capped at this or
    # half VISIBILITY_TIMEOUT, whichever is less) until
    # this long after it happened, then given up.
    webhook_retry_seconds: int = Field(24 * 3600, gt=0)
    webhook_backoff_first: float = Field(5, gt=0)
    webhook_backoff_max: int = Field(1800, gt=0)
    # A delivery whose message never reached a delivery worker (lost when the process that
    # sent it died, or Redis blinked) is sent again after this many seconds.
    webhook_resend_after: float = Field(300, gt=0)
    # Deliveries in flight per delivery worker (threads: they mostly wait on receivers).
    webhook_concurrency: int = Field(16, gt=0)
    # CA bundle for receivers behind a private CA (default: the certifi bundle).
    webhook_ca_file: Optional[Path] = None

    # Input limits, checked by the API before a job exists
    max_upload_bytes: int = Field(20 * 1024 * 1024, gt=0)
    max_pixels: int = Field(40_000_000, gt=0)
    max_side: int = Field(10_000, gt=0)

    # Inference
    m2fp_model: str = DEFAULT_MODEL
    m2fp_revision: str = DEFAULT_MODEL_REVISION
    model_cache_dir: Path = Path("var/models")
    inference_max_side: int = Field(1333, ge=64)
    # Model-holding processes per worker, and intra-op threads in each; derived from
    # the CPUs this process may use (affinity, cgroup quota) unless set.
    worker_concurrency: Optional[int] = Field(None, gt=0)
    torch_threads: Optional[int] = Field(None, gt=0)
    # The engine: "auto" runs the OpenVINO graph (built once per checkpoint into
    # MODEL_CACHE_DIR) and falls back to torch with a warning when OpenVINO cannot load;
    # "torch" is modelscope's own model, the reference; "openvino" refuses to fall back.
    m2fp_engine: Literal["auto", "openvino", "torch"] = "auto"
    # "mixed" runs the backbone and the transformer decoder in bf16 on CPUs with avx512_bf16
    # or AMX, the deformable-attention encoder and the prediction heads in fp32; "bf16" runs
    # everything in bf16. Both are faster and move labels (docs/performance.md); fp32 is exact.
    m2fp_precision: Literal["fp32", "mixed", "bf16"] = "fp32"
    # Photos up to this many pixels get labels decided at their own size, as the stock
    # pipeline does; larger ones at the largest size within it, then scaled (docs/api.md, "Outputs").
    labels_max_pixels: int = Field(DEFAULT_LABELS_MAX_PIXELS, gt=0)
    # Process settings applied before torch loads (worker/process_tuning.py).
    malloc_keep_freed: bool = True
    mkl_avx2_on_amd: bool = True
    # Peak memory one model process may reach, by default the engine's measured worst case
    # (docs/deployment.md, "Memory"); the derived concurrency fits the memory limit with it.
    model_process_memory_mb: Optional[int] = Field(None, gt=0)

    worker_task_events: bool = Field(False, description=(
        "Workers send Celery's task events (sent, started, succeeded, ...) for Flower's task views "
        "(docs/operations.md, where their cost in Redis commands per job is measured). Off: Flower shows the "
        "workers and their state only."))
    worker_liveness_dir: Optional[Path] = Field(None, description=(
        "Where each worker keeps the file its event loop touches every 5 s, which `python -m "
        "common.worker_probe worker|webhooks` reads as its liveness (default: the temporary directory)."))

    # Metrics (docs/deployment.md). prometheus-client's multiprocess directory: give the API
    # and each worker their own; unset, each server makes a temporary one at every start.
    prometheus_multiproc_dir: Optional[Path] = None
    # Port of a worker's /metrics, served by its main process for all its model
    # processes; 0: no endpoint (the tests' workers, several to a machine, use 0).
    worker_metrics_port: int = Field(9808, ge=0, le=65535)

    # The API's HTTP server (api/gunicorn_conf.py, api/server.py) and its request limits.
    api_workers: int = Field(2, gt=0, description=(
        "gunicorn worker processes of the API. Each serves API_THREADS requests at once; a request that "
        "waits (a slow upload, a batch reading the store) holds one thread, never a whole process."))
    api_threads: int = Field(8, gt=0, description=(
        "Threads per API worker process: requests served at once by each (gunicorn's gthread worker)."))
    api_timeout: int = Field(30, gt=0, description=(
        "Seconds an API worker process may stop answering gunicorn's master before the master kills and "
        "replaces it (a hung process). It does not limit a request: a long batch runs to its end."))
    api_request_timeout: float = Field(30, gt=0, description=(
        "Seconds a client has to send a request (headers and body), plus 1 s for every "
        "API_UPLOAD_MIN_RATE bytes it has sent: a client that stalls or trickles its upload gets "
        "408 request_timeout and its connection is closed, so it cannot hold a thread."))
    api_upload_min_rate: int = Field(16 * 1024, gt=0, description=(
        "Bytes per second of upload that extend API_REQUEST_TIMEOUT (1 s per this many bytes): a large "
        "upload at least this fast always completes, whatever its size."))
    sync_wait_seconds: float = Field(30, ge=0, le=600, description=(
        "The longest a request may wait for its job to finish: `Prefer: wait=N` on POST /v1/jobs (N is capped "
        "at this) and the demo's synchronous routes POST /api/parse and POST /parse (which wait this long). "
        "A job not finished by then is answered 202 with its link, to be polled. Each waiting request holds "
        "one of the API_THREADS threads, and at most half of them wait at once (the others answer at once, "
        "so a burst of waiting clients cannot starve polls and uploads); 0: never wait. Keep it below the read "
        "timeout of any proxy in front (nginx's proxy_read_timeout is 60 s by default)."))
    trusted_proxies: int = Field(0, ge=0, description=(
        "Reverse proxies in front of the API whose X-Forwarded-For, -Proto, -Host, -Port and -Prefix "
        "headers are believed (the number of hops that set them, usually 1): links in answers and webhook "
        "bodies then use the scheme, host and path the client used. 0: forwarded headers are ignored, since "
        "without a proxy that sets them any client could make the API print links to a host of its choosing."))
    max_batch_bytes: int = Field(256 * 1024 * 1024, gt=0, description=(
        "Largest body of a multipart batch (POST /v1/jobs/batch with up to 100 `image` files), all files "
        "together; each file is still held to MAX_UPLOAD_BYTES, and other requests to one image's size."))
    batch_read_concurrency: int = Field(8, gt=0, description=(
        "Items of one batch accepted at once (each reads its object from the store or its upload, decodes "
        "and records it); the answers keep the request's order."))

    @model_validator(mode="after")
    def _check(self) -> "Settings":
        if self.storage_backend is None:
            self.storage_backend = "s3" if self.s3_endpoint else "local"
        if self.model_process_memory_mb is None:
            # auto budgets for OpenVINO; a fallback to torch says so in its warning.
            self.model_process_memory_mb = PROCESS_MEMORY_MB[
                "torch" if self.m2fp_engine == "torch" else
                "openvino-mixed" if self.m2fp_precision == "mixed" else "openvino"]
        if self.storage_backend == "s3" and not (
            self.s3_endpoint and self.s3_access_key and self.s3_secret_key
        ):
            raise ValueError(
                "STORAGE_BACKEND=s3 needs S3_ENDPOINT, S3_ACCESS_KEY and S3_SECRET_KEY"
            )
        if self.task_soft_time_limit >= self.task_time_limit:
            raise ValueError(
                f"TASK_SOFT_TIME_LIMIT ({self.task_soft_time_limit}) must be below TASK_TIME_LIMIT "
                f"({self.task_time_limit}), or a slow job's model process is killed (and reloads the model) before "
                "the job can stop cleanly: lower TASK_SOFT_TIME_LIMIT or raise TASK_TIME_LIMIT")
        # A job's message stays unacknowledged until the job ends (acks_late), and Redis
        # hands a message unacknowledged for VISIBILITY_TIMEOUT to a second worker.
        if self.visibility_timeout <= self.task_time_limit:
            raise ValueError(
                f"VISIBILITY_TIMEOUT ({self.visibility_timeout}) must exceed TASK_TIME_LIMIT "
                f"({self.task_time_limit}), or a long job is redelivered to a second worker while the first "
                f"still runs it: raise VISIBILITY_TIMEOUT above {self.task_time_limit} or lower TASK_TIME_LIMIT")
        held = self.retry_backoff_max + 2 * self.task_time_limit
        if self.visibility_timeout <= held:
            # A retry's message is held through its countdown, then while it waits for its
            # process to finish the job it took meanwhile (a countdown frees a prefetch
            # slot), then through its own run.
            room = self.visibility_timeout - 2 * self.task_time_limit - 1
            lower = f" or lower RETRY_BACKOFF_MAX to {room} or less" if room >= 1 else ""
            raise ValueError(
                f"VISIBILITY_TIMEOUT ({self.visibility_timeout}) must exceed RETRY_BACKOFF_MAX "
                f"({self.retry_backoff_max}) plus twice TASK_TIME_LIMIT ({self.task_time_limit}): a retried "
                "job's message is held unacknowledged while it waits out its backoff, then for a free worker "
                "process, then while it runs, so a longer wait has Redis hand it to a second worker and the job "
                f"runs twice: raise VISIBILITY_TIMEOUT above {held}{lower}")
        return self

    def __repr_args__(self) -> Iterator[tuple[Optional[str], Any]]:
        """The fields the repr (and str, and so any log of the settings) shows: secrets
        are left out (``repr=False``), and the Redis URL's password is masked the way
        Celery masks it in its banner."""
        for name, value in super().__repr_args__():
            yield name, maybe_sanitize_url(value) if name == "redis_url" else value

    @model_validator(mode="after")
    def _check_sentinels(self) -> "Settings":
        self.sentinel_addresses()  # a malformed list fails at start, not at the first connection
        if self.redis_wait_replicas is None:
            self.redis_wait_replicas = 1 if self.redis_sentinels else 0
        return self

    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """REDIS_SENTINELS as ``(host, port)`` pairs; empty without Sentinel."""
        found = []
        for entry in filter(None, (part.strip() for part in self.redis_sentinels.split(","))):
            host, _, port = entry.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"REDIS_SENTINELS entry {entry!r} is not host:port: write it as e.g. "
                                 "sentinel-0:26379 (comma-separated, one per sentinel)")
            found.append((host.strip("[]"), int(port)))
        return found

    @model_validator(mode="after")
    def _check_liveness(self) -> "Settings":
        if self.stranded_after_seconds < 3 * self.worker_heartbeat_seconds:
            raise ValueError(
                f"STRANDED_AFTER_SECONDS ({self.stranded_after_seconds:g}) must be at least three "
                f"WORKER_HEARTBEAT_SECONDS ({self.worker_heartbeat_seconds:g}), or one late beat makes a live "
                "worker's job look stranded and it runs twice: raise STRANDED_AFTER_SECONDS")
        return self

    @model_validator(mode="after")
    def _check_batch_bytes(self) -> "Settings":
        if self.max_batch_bytes < self.max_upload_bytes:
            raise ValueError(
                f"MAX_BATCH_BYTES ({self.max_batch_bytes}) is below MAX_UPLOAD_BYTES ({self.max_upload_bytes}): a "
                "batch could not carry one photo that POST /v1/jobs accepts; raise MAX_BATCH_BYTES")
        return self

    @property
    def image_limits(self) -> ImageLimits:
        """The input limits the API checks and the worker applies again."""
        return ImageLimits(self.max_pixels, self.max_side)

    @property
    def webhook_backoff_cap(self) -> float:
        """The longest wait between attempts: WEBHOOK_BACKOFF_MAX, but at most half the
        visibility timeout (a retry waiting longer inside its worker would be handed to a
        second worker meanwhile and sent twice)."""
        return min(self.webhook_backoff_max, self.visibility_timeout / 2)

    @property
    def readable_buckets(self) -> frozenset[str]:
        """Buckets whose objects may be parsed by reference."""
        extra = {b.strip() for b in self.source_buckets.split(",") if b.strip()}
        return frozenset(extra | {self.s3_bucket})


def load_settings() -> Settings:
    """Read the settings from the environment (call once per process)."""
    return Settings()
