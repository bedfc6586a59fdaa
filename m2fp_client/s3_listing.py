"""Keys under an S3 prefix, for a backfill by reference, read with the service's own
``S3_*`` variables.

A small lister on the MinIO SDK rather than the service's storage layer, so the client
environment needs neither the service's settings nor its dependencies; only a backfill
of an ``s3://`` source imports this module.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator, Mapping, Optional
from urllib.parse import urlparse

import urllib3
from minio import Minio
from minio.error import MinioException


class ListingError(Exception):
    """The bucket cannot be listed: settings missing, endpoint down, access refused."""


@dataclass(frozen=True)
class S3Access:
    endpoint: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"
    secure: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "S3Access":
        missing = [name for name in ("S3_ENDPOINT", "S3_ACCESS_KEY", "S3_SECRET_KEY") if not env.get(name)]
        if missing:
            raise ListingError(f"an s3:// source needs the S3 settings in the environment: set {', '.join(missing)} "
                               "(the same values as the service's)")
        return cls(env["S3_ENDPOINT"], env["S3_ACCESS_KEY"], env["S3_SECRET_KEY"],
                   env.get("S3_REGION") or "us-east-1",
                   (env.get("S3_SECURE") or "false").strip().lower() in ("1", "true", "yes", "on"))

    def client(self) -> Minio:
        """``http(s)://host:port`` names its own TLS; a bare ``host:port`` follows S3_SECURE.
        Short timeouts: the SDK's default waits minutes to connect."""
        parsed = urlparse(self.endpoint if "://" in self.endpoint else f"//{self.endpoint}")
        secure = self.secure if not parsed.scheme else parsed.scheme == "https"
        http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=5, read=60),
                                   retries=urllib3.Retry(total=2, backoff_factor=0.2,
                                                         status_forcelist=[500, 502, 503, 504]))
        return Minio(parsed.netloc, self.access_key, self.secret_key, secure=secure, region=self.region,
                     http_client=http)


def iter_keys(bucket: str, prefix: str, access: Optional[S3Access] = None) -> Iterator[str]:
    """Every object key under ``prefix`` in ``bucket``, in key order."""
    client = (access or S3Access.from_env()).client()
    try:
        for item in client.list_objects(bucket, prefix=prefix, recursive=True):
            if not item.is_dir:
                yield item.object_name
    except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
        raise ListingError(f"listing s3://{bucket}/{prefix} failed: {exc}") from exc
