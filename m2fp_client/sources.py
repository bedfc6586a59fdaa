"""What a backfill parses: the image files under a local folder or an S3 prefix,
narrowed by globs and a limit, cut into request-sized batches."""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
MAX_BATCH_BYTES = 8 * 1024 * 1024


class SourceError(Exception):
    """SRC names nothing that can be listed (the user's to fix)."""


@dataclass(frozen=True)
class Source:
    """Where the images are: a local root, or an S3 bucket and prefix."""

    root: Optional[Path] = None
    bucket: Optional[str] = None
    prefix: str = ""

    @classmethod
    def parse(cls, text: str) -> "Source":
        if text.startswith("s3://"):
            bucket, _, prefix = text[len("s3://"):].partition("/")
            if not bucket:
                raise SourceError(f"no bucket in {text!r}")
            return cls(bucket=bucket, prefix=prefix)
        root = Path(text).expanduser()
        if not root.is_dir():
            raise SourceError(f"{text} is not a directory (or s3://bucket/prefix)")
        return cls(root=root.resolve())

    def describe(self) -> str:
        return str(self.root) if self.root else f"s3://{self.bucket}/{self.prefix}"

    def names(self) -> Iterator[str]:
        """Every file name under the source: paths relative to the root, or full keys."""
        if self.root:
            for path in sorted(self.root.rglob("*")):
                if path.is_file():
                    yield path.relative_to(self.root).as_posix()
            return
        from m2fp_client.s3_listing import ListingError, iter_keys  # the S3 SDK, only for S3 sources

        try:
            yield from iter_keys(self.bucket, self.prefix)
        except ListingError as exc:
            raise SourceError(str(exc)) from exc


def select(names: Iterable[str], include: list[str], exclude: list[str], limit: Optional[int]) -> list[str]:
    """Image files matching any --include and no --exclude glob, at most --limit."""
    chosen = []
    for name in names:
        if Path(name).suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if include and not any(fnmatch.fnmatch(name, pattern) for pattern in include):
            continue
        if any(fnmatch.fnmatch(name, pattern) for pattern in exclude):
            continue
        chosen.append(name)
        if limit is not None and len(chosen) >= limit:
            break
    return chosen


def batches(source: Source, names: list[str], size: int) -> Iterator[list[str]]:
    """Groups of at most ``size`` names, and (for uploads) at most 8 MiB per request."""
    batch: list[str] = []
    total = 0
    for name in names:
        weight = (source.root / name).stat().st_size if source.root else 0
        if batch and (len(batch) >= size or total + weight > MAX_BATCH_BYTES):
            yield batch
            batch, total = [], 0
        batch.append(name)
        total += weight
    if batch:
        yield batch
