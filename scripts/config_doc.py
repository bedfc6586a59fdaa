"""``python -m scripts.config_doc > docs/configuration.md``: the configuration page,
written from the settings object (:class:`common.settings.Settings`).

The page is generated so that it cannot drift from the code: every field's variable
name, type, constraints and default come from the field itself, and ``tests/test_docs.py``
fails when the committed page differs from what this prints. A field's description is,
in this order, its ``Field(description=...)``, the user-facing text in
:data:`DESCRIPTIONS` below, or the comment written above it in ``common/settings.py``;
a field with none of them is listed as undocumented (and the test fails on it).
"""
from __future__ import annotations

import ast
import inspect
import typing
from pathlib import Path
from typing import Any, Optional

import annotated_types
from pydantic.fields import FieldInfo

from common import settings as settings_module
from common.settings import PROCESS_MEMORY_MB, Settings

UNDOCUMENTED = "(undocumented: write a comment above this field in common/settings.py)"

# Descriptions for users and operators (the code's comments are written for its readers).
DESCRIPTIONS: dict[str, str] = {
    "redis_url": "Redis for the Celery queues and the job records (`make run`: an embedded "
                 "redis-server unless this is set).",
    "queue_name": "Celery queue of interactive jobs; workers always take these first.",
    "backfill_queue_name": "Celery queue of backfill jobs (batches and `m2fp backfill`).",
    "backfill_max_queued": "Waiting backfill jobs above which backfill submissions get `429 queue_full` "
                           "(a batch admitted just below the bound may overshoot it by up to 99).",
    "job_ttl_seconds": "A job record's lifetime after its last change (7 days). Stored files outlive it.",
    "task_soft_time_limit": "Seconds a job may parse before it fails `inference_timeout`.",
    "task_time_limit": "Hard limit per job: the model process is replaced. Must exceed the soft limit.",
    "visibility_timeout": "Seconds before Redis hands an unacknowledged job message to another worker "
                          "(the sweep usually requeues a dead worker's job sooner); must exceed "
                          "`RETRY_BACKOFF_MAX` plus twice `TASK_TIME_LIMIT`, or a retried job runs twice.",
    "unacked_restore_interval": "Seconds between the sweeps that hand such jobs on.",
    "max_attempts": "Worker deaths tolerated per job before it fails `worker_lost`.",
    "retry_backoff_max": "Longest wait between retries of a transient storage or Redis error; "
                         "with twice `TASK_TIME_LIMIT`, below `VISIBILITY_TIMEOUT`.",
    "storage_backend": "`local` or `s3`; `s3` needs `S3_ENDPOINT`, `S3_ACCESS_KEY` and `S3_SECRET_KEY`.",
    "local_store_dir": "The local store's directory (used when no S3 endpoint is set).",
    "s3_endpoint": "S3-compatible endpoint, `http(s)://host:port`; setting it selects the S3 store.",
    "s3_public_endpoint": "Host that presigned output links name: what clients can reach.",
    "s3_access_key": "S3 access key.",
    "s3_secret_key": "S3 secret key (never shown in logs or the settings' repr).",
    "s3_bucket": "Bucket for inputs and outputs (`jobs/<id>/...`); also readable by reference.",
    "s3_region": "S3 region.",
    "s3_secure": "Use TLS to the S3 endpoint.",
    "presign_seconds": "Lifetime of presigned output links (S3 store).",
    "source_buckets": "Extra buckets (comma-separated) whose objects may be submitted by reference.",
    "api_keys": "`tenant:key` pairs, comma-separated; unset with `API_KEYS_FILE` unset: the API runs "
                "open (see [security](security.md#api-keys-and-tenants)).",
    "api_keys_file": "File of hashed keys, one per line: `tenant sha256 [admin] [rate=N] [s3://bucket/prefix ...]`.",
    "submit_rate_per_minute": "Submissions per minute per key (`0`: unlimited), unless its line in "
                              "`API_KEYS_FILE` says `rate=N`.",
    "webhook_signing_key": "The operator's key each tenant's webhook secret is derived from; unset, webhooks "
                           "are refused (`webhooks_disabled`). `make run` makes one in `var/webhook-signing-key`.",
    "webhook_allow_hosts": "Hosts (names, IPs, CIDR networks) webhooks may reach over plain http and at "
                           "private addresses.",
    "webhook_queue_name": "The webhook delivery worker's queue.",
    "webhook_timeout_seconds": "Per delivery attempt: connect (at most 5 s) and each read.",
    "webhook_retry_seconds": "An event's delivery is given up this long after the event.",
    "webhook_backoff_first": "Wait after the first failed attempt; it doubles on each retry.",
    "webhook_backoff_max": "Cap of that wait, and never above half `VISIBILITY_TIMEOUT`.",
    "webhook_resend_after": "A delivery whose message never reached a delivery worker is sent again after this.",
    "webhook_concurrency": "Deliveries at a time per delivery worker (threads).",
    "webhook_ca_file": "CA bundle for https receivers behind a private CA.",
    "max_upload_bytes": "Largest upload, or referenced object, in bytes (20 MiB).",
    "max_pixels": "Most pixels in a photo (40 megapixels).",
    "max_side": "Longest side of a photo, in pixels.",
    "m2fp_model": "ModelScope hub id, or a local model directory (`configuration.json`, `pytorch_model.pt`).",
    "m2fp_revision": "Pinned hub revision of the model.",
    "model_cache_dir": "Hub downloads and OpenVINO engines (`engines/`); share it between workers.",
    "inference_max_side": "The model runs with the short side at 640 px and the long side at most this.",
    "worker_concurrency": "Model-holding processes per worker (`make run`: `WORKERS`).",
    "torch_threads": "torch / OpenMP / MKL / OpenVINO threads per model process.",
    "m2fp_engine": "`auto`: OpenVINO, falling back to torch with one warning if OpenVINO cannot load or "
                   "compile; `openvino`: no fallback (the worker stops); `torch`: modelscope's own model.",
    "m2fp_precision": "`mixed`: the backbone and the transformer decoder in bf16, the deformable-attention "
                      "encoder and the prediction heads in fp32; `bf16`: everything in bf16. Both need "
                      "avx512_bf16 or AMX (elsewhere fp32 runs, with a warning and a note in every job's "
                      "summary), run faster and move labels (see [performance](performance.md#precision)).",
    "labels_max_pixels": "Photos up to this size get labels decided at their own size; larger ones at the "
                         "largest size within it, then scaled.",
    "malloc_keep_freed": "glibc keeps freed memory for the next photo (set before torch loads); "
                         "`MALLOC_MMAP_MAX_`, `MALLOC_TRIM_THRESHOLD_` or their `GLIBC_TUNABLES` set by you win.",
    "mkl_avx2_on_amd": "On AMD CPUs, set `MKL_DEBUG_CPU_TYPE=5` so torch's bundled MKL uses its AVX2 "
                       "kernels (a value you set wins).",
    "model_process_memory_mb": "Peak memory budgeted per model process; caps the derived `WORKER_CONCURRENCY`.",
    "prometheus_multiproc_dir": "Where the API's (or a worker's) processes write metric values; one "
                                "directory per server, emptied at its start.",
    "worker_metrics_port": "Port of a worker's `/metrics` (its main process, for all its model processes); "
                           "`0`: none.",
}

# Defaults that are derived at start rather than written on the field.
DERIVED_DEFAULTS: dict[str, str] = {
    "storage_backend": "`s3` when `S3_ENDPOINT` is set, else `local`",
    "s3_public_endpoint": "`S3_ENDPOINT`",
    "worker_concurrency": "usable CPUs, capped by memory",
    "torch_threads": "usable CPUs / `WORKER_CONCURRENCY`",
    "webhook_ca_file": "certifi's bundle",
    "prometheus_multiproc_dir": "a new temporary directory per start",
    "model_process_memory_mb": ", ".join(f"{mb} ({engine})" for engine, mb in PROCESS_MEMORY_MB.items())
    + "; `auto` budgets for openvino",
}

HEADER = """\
# Configuration

<!-- Generated by `python -m scripts.config_doc > docs/configuration.md` from
common/settings.py; do not edit by hand (tests/test_docs.py checks it is current). -->

Every process (API, worker, delivery worker, scripts) reads its configuration once at
start from environment variables into one typed object, `Settings` in
`common/settings.py`. Names are case-insensitive and an empty value counts as unset. A
value of the wrong type, or settings that contradict each other, stop the process at
start with a message naming the variable. Booleans take `true`/`false` (also `1`/`0`).

| Variable | Type | Default | Description |
|---|---|---|---|
"""

FOOTER = """
## Variables outside the settings object

| Variable | Read by | Default | Description |
|---|---|---|---|
| `PORT` | `make run` | `8000` | the API's port on 127.0.0.1 |
| `WORKERS` | `make run` | `1` | sets `WORKER_CONCURRENCY` of the one worker it starts |
| `REDIS_PORT` | `make run` | `6390` | port of the embedded Redis (when `REDIS_URL` is unset) |
| `PYTHON` | `make` | Python 3.10 on `PATH` or through pyenv | the interpreter `.venv` is built from |
| `PYTEST_ARGS` | `make test` | empty | extra pytest arguments, e.g. `-k end_to_end` |
| `M2FP_API_URL` | `m2fp`, `m2fp_client.Client` | `http://127.0.0.1:8000` | the API a client talks to |
| `M2FP_API_KEY` | `m2fp`, `m2fp_client.Client` | unset | sent as `Authorization: Bearer <key>` |

Compose adds variables of its own (storage credentials, key directories, Grafana's
password): see [deployment](deployment.md).
"""


def env_name(name: str, field: FieldInfo) -> str:
    """The environment variable pydantic-settings reads for ``name`` (no prefix here)."""
    alias = field.validation_alias
    if isinstance(alias, str):
        return alias.upper()
    if alias is not None and hasattr(alias, "choices"):
        return " / ".join(str(choice).upper() for choice in alias.choices)
    return (Settings.model_config.get("env_prefix", "") + name).upper()


def type_name(annotation: Any) -> str:
    """A reader's name for a field's type: ``int``, ``path``, ``one of: a, b``."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return "one of: " + ", ".join(f"`{value}`" for value in typing.get_args(annotation))
    if origin is typing.Union:
        inner = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return " or ".join(type_name(arg) for arg in inner)
    if annotation is Path:
        return "path"
    return getattr(annotation, "__name__", str(annotation))


def constraints(field: FieldInfo) -> str:
    """The field's bounds (``> 0``, ``0..65535``) from its annotated-types metadata."""
    bounds = []
    for item in field.metadata:
        for kind, symbol in ((annotated_types.Gt, ">"), (annotated_types.Ge, "≥"),
                             (annotated_types.Lt, "<"), (annotated_types.Le, "≤")):
            if isinstance(item, kind):
                bounds.append(f"{symbol} {getattr(item, kind.__name__.lower())}")
    return ", ".join(bounds)


def default_text(name: str, field: FieldInfo) -> str:
    if name in DERIVED_DEFAULTS:
        return DERIVED_DEFAULTS[name]
    value = field.get_default(call_default_factory=True)
    if value is None or value == "":
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def source_comments() -> dict[str, str]:
    """Each field's comment in ``common/settings.py``: its own line's trailing comment, or
    the comment block heading the paragraph of fields it belongs to."""
    source = inspect.getsource(settings_module)
    lines = source.splitlines()
    tree = ast.parse(source)
    [cls] = [node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "Settings"]
    found: dict[str, str] = {}
    for node in cls.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        line = lines[node.lineno - 1]
        if "#" in line.split("=", 1)[-1]:
            found[node.target.id] = line.rsplit("#", 1)[1].strip()
            continue
        index = node.lineno - 2
        own = index >= 0 and lines[index].strip().startswith("#")
        block: list[str] = []
        while index >= 0 and lines[index].strip():
            text = lines[index].strip()
            if text.startswith("#"):
                block.insert(0, text.lstrip("#").strip())
            elif block:
                break
            index -= 1
        # A comment right above the field is its own; one reached over other fields counts
        # only when it heads the paragraph (a blank line above it), not when it is another
        # field's comment.
        heads_paragraph = index < 0 or not lines[index].strip()
        if block and (own or heads_paragraph):
            found[node.target.id] = " ".join(block)
    return found


def description(name: str, field: FieldInfo, comments: dict[str, str], shown: dict[str, str]) -> str:
    """The field's description; a paragraph comment already shown for an earlier field
    is referred to rather than repeated."""
    text = field.description or DESCRIPTIONS.get(name)
    if not text and name in comments:
        text = comments[name]
        if text in shown:
            text = f"See `{shown[text]}` above."
        else:
            shown[text] = env_name(name, field)
    return (text or UNDOCUMENTED).replace("|", "\\|").replace("\n", " ")


def render() -> str:
    """The whole page, as committed in docs/configuration.md."""
    comments = source_comments()
    shown: dict[str, str] = {}
    rows = []
    for name, field in Settings.model_fields.items():
        kind = type_name(field.annotation)
        bounds = constraints(field)
        if bounds:
            kind = f"{kind}, {bounds}"
        rows.append(f"| `{env_name(name, field)}` | {kind} | {default_text(name, field)} | "
                    f"{description(name, field, comments, shown)} |")
    return HEADER + "\n".join(rows) + "\n" + FOOTER


def main(argv: Optional[list[str]] = None) -> None:
    print(render(), end="")


if __name__ == "__main__":
    main()
