"""Where the model comes from: a local directory, or the ModelScope hub (cached).

``M2FP_MODEL`` is either a directory holding ``configuration.json`` and
``pytorch_model.pt`` (air-gapped use, synthetic test models) or a hub id, downloaded
once at the pinned ``M2FP_REVISION`` into ``MODEL_CACHE_DIR``.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

from common.settings import Settings

log = logging.getLogger(__name__)
MODEL_FILES = ("configuration.json", "pytorch_model.pt")


# The way round any hub failure, named in each message.
_LOCAL_FIX = ("M2FP_MODEL to a local model directory (configuration.json + pytorch_model.pt), e.g. one "
              "copied from a machine that has MODEL_CACHE_DIR filled, or run `make synthetic-model` for a test "
              "model.")


class ModelUnavailable(RuntimeError):
    """The worker cannot get a model; the message says what to set."""


def _looks_like_path(name: str) -> bool:
    """A hub id is ``owner/name``; anything else, or ``dir/name`` whose ``dir`` exists
    here (``models/m2fp-synthetic-tyni``), is meant as a local directory."""
    if name.startswith(("/", "./", "../", "~")) or name.count("/") != 1:
        return True
    return Path(name).parent.is_dir()


def check_model_dir(path: Path) -> Path:
    """``path`` if it holds the files ModelScope loads an M2FP model from; else
    :class:`ModelUnavailable` naming the missing ones, so a half-copied folder fails at
    start rather than on the first job."""
    missing = _missing_files(path)
    if missing:
        raise ModelUnavailable(
            f"model directory {path} lacks {', '.join(missing)}: a ModelScope model "
            "directory needs configuration.json and pytorch_model.pt "
            "(`make synthetic-model` writes test ones under models/)"
        )
    return path


def _missing_files(path: Path) -> list[str]:
    """The model files ``path`` lacks (all of them if it is no directory)."""
    return [name for name in MODEL_FILES if not (path / name).is_file()]


def resolve_model_dir(settings: Settings) -> Path:
    """Return a local model directory for ``settings.m2fp_model``, downloading if needed.

    Each way of failing raises :class:`ModelUnavailable` with its own fix: the operator
    reads it once, at the worker's start, and an "offline?" for a mistyped revision or a
    full disk would send them the wrong way."""
    name = settings.m2fp_model
    local = Path(name).expanduser()
    try:
        is_dir = local.is_dir()
    except PermissionError:
        raise ModelUnavailable(
            f"M2FP_MODEL={name} cannot be read by this process (uid {os.getuid()}): permission denied on it or "
            "a folder above it. Make them readable (e.g. chmod o+rx on each folder, o+r on the files), or "
            "mount a readable copy"
        ) from None
    if is_dir:
        return check_model_dir(local.resolve())
    if _looks_like_path(name):
        raise ModelUnavailable(
            f"M2FP_MODEL={name} is not a directory. Set it to a local model directory "
            "(`make synthetic-model` writes models/m2fp-synthetic-tiny and -full) or to a "
            "ModelScope hub id such as damo/cv_resnet101_image-multiple-human-parsing"
        )
    try:
        from modelscope.hub.snapshot_download import snapshot_download
        from modelscope.hub.utils.utils import get_endpoint
    except ImportError as exc:
        raise ModelUnavailable(
            f"M2FP_MODEL={name} is a ModelScope hub id, but the hub client cannot be imported ({exc}). "
            f"Install the locked requirements (requirements/lock.txt), or set {_LOCAL_FIX}"
        ) from None
    endpoint = get_endpoint()
    log.info("downloading %s@%s from %s into %s", name, settings.m2fp_revision, endpoint, settings.model_cache_dir)
    try:
        path = Path(snapshot_download(name, revision=settings.m2fp_revision,
                                      cache_dir=str(settings.model_cache_dir)))
    except Exception as exc:  # the hub client raises many kinds; each gets its own fix
        raise _download_failure(exc, settings, endpoint) from None
    missing = _missing_files(path)
    if missing:
        raise ModelUnavailable(
            f"the hub's {name}@{settings.m2fp_revision}, downloaded into {path}, lacks {', '.join(missing)}: "
            "it is not an M2FP model in ModelScope's format. Check M2FP_MODEL and M2FP_REVISION (the default "
            "is damo/cv_resnet101_image-multiple-human-parsing@v1.0.1); if a download was cut short, delete "
            f"{path} and start the worker again"
        )
    return path


def _download_failure(exc: Exception, settings: Settings, endpoint: str) -> ModelUnavailable:
    """The message for a failed hub download, sorted by cause: hub unreachable, model or
    revision unknown there, the cache not writable, or anything else (named as is)."""
    import requests
    from modelscope.hub.errors import NoValidRevisionError, NotExistError

    name, revision = settings.m2fp_model, settings.m2fp_revision
    detail = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
        return ModelUnavailable(
            f"cannot reach the ModelScope hub at {endpoint} (MODELSCOPE_DOMAIN sets it) to download {name}@{revision} "
            f"({detail}). Offline? Set {_LOCAL_FIX}"
        )
    status = _http_status(exc)
    if status is not None and 400 <= status < 500:
        return ModelUnavailable(
            f"the ModelScope hub at {endpoint} answered HTTP {status} for the model {name}: no such model, or "
            "a private one. Check M2FP_MODEL: a hub id as the hub spells it (owner/name, e.g. "
            f"damo/cv_resnet101_image-multiple-human-parsing), or set {_LOCAL_FIX}"
        )
    if isinstance(exc, (NotExistError, NoValidRevisionError)):
        return ModelUnavailable(
            f"the ModelScope hub at {endpoint} has no revision {revision} of {name} ({exc}). "
            "Set M2FP_REVISION to one the hub lists (v1.0.1 for the default model)"
        )
    if isinstance(exc, OSError) and not isinstance(exc, requests.RequestException):
        return ModelUnavailable(
            f"cannot store {name}@{revision} in MODEL_CACHE_DIR={settings.model_cache_dir} ({detail}). "
            "Point MODEL_CACHE_DIR at a directory this process can write, with room for the model"
        )
    return ModelUnavailable(
        f"downloading {name}@{revision} from the ModelScope hub at {endpoint} failed ({detail}); "
        f"the hub client's own messages are in the log above. Retry, or set {_LOCAL_FIX}"
    )


def _http_status(exc: BaseException) -> Optional[int]:
    """The HTTP status behind a hub error: modelscope re-raises requests' HTTPError as a
    new one without the response, so the status is on the error it came from."""
    for error in (exc, exc.__cause__, exc.__context__):
        response = getattr(error, "response", None)
        if response is not None:
            return int(response.status_code)
    return None
