"""Where the model comes from: a local directory, or the ModelScope hub (cached).

``M2FP_MODEL`` is either a directory holding ``configuration.json`` and
``pytorch_model.pt`` (air-gapped use, synthetic test models) or a hub id, downloaded
once at the pinned ``M2FP_REVISION`` into ``MODEL_CACHE_DIR``.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from common.settings import Settings

log = logging.getLogger(__name__)
MODEL_FILES = ("configuration.json", "pytorch_model.pt")


class ModelUnavailable(RuntimeError):
    """The worker cannot get a model; the message says what to set."""


def _looks_like_path(name: str) -> bool:
    """A hub id is ``owner/name``; anything else, or ``dir/name`` whose ``dir`` exists
    here (``models/m2fp-synthetic-tyni``), is meant as a local directory."""
    if name.startswith(("/", "./", "../", "~")) or name.count("/") != 1:
        return True
    return Path(name).parent.is_dir()


def check_model_dir(path: Path) -> Path:
    missing = [name for name in MODEL_FILES if not (path / name).is_file()]
    if missing:
        raise ModelUnavailable(
            f"model directory {path} lacks {', '.join(missing)}: a ModelScope model "
            "directory needs configuration.json and pytorch_model.pt "
            "(`make synthetic-model` writes test ones under models/)"
        )
    return path


def resolve_model_dir(settings: Settings) -> Path:
    """Return a local model directory for ``settings.m2fp_model``, downloading if needed."""
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

        log.info("downloading %s@%s into %s", name, settings.m2fp_revision, settings.model_cache_dir)
        path = snapshot_download(name, revision=settings.m2fp_revision,
                                 cache_dir=str(settings.model_cache_dir))
    except Exception as exc:  # the hub client raises many kinds; all mean "no model"
        raise ModelUnavailable(
            f"could not download {name}@{settings.m2fp_revision} from the ModelScope hub "
            f"({type(exc).__name__}: {exc}). Offline? Set M2FP_MODEL to a local model "
            "directory (configuration.json + pytorch_model.pt), e.g. one copied from a "
            "machine that has MODEL_CACHE_DIR filled, or run `make synthetic-model` for "
            "a test model."
        ) from None
    return check_model_dir(Path(path))
