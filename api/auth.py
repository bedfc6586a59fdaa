"""Who is calling: API keys, the tenant each belongs to, and what each key may do.

Keys are configured by the operator, never stored in clear by the service:

- ``API_KEYS``: comma-separated ``tenant:key`` pairs (simple setups, tests);
- ``API_KEYS_FILE``: one key per line, ``tenant sha256-of-key [admin] [rate=N]
  [s3://bucket/prefix ...]`` (``#`` starts a comment). ``admin`` may read every
  tenant's jobs; ``rate`` is the key's submissions per minute (else
  ``SUBMIT_RATE_PER_MINUTE``); ``s3://`` prefixes limit what the key may submit by
  reference.

A presented key is hashed and compared with every configured hash in constant time. With
no key configured the service runs open: every caller is the default tenant (the
API logs one warning at start).
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from m2fp_contract.errors import ErrorCode, ServiceError
from common.jobs import DEFAULT_TENANT
from common.settings import Settings

log = logging.getLogger(__name__)
_TENANT = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Principal:
    """The caller: its tenant, whether it may read every tenant's jobs, its limits."""

    tenant: str
    admin: bool = False
    rate_per_minute: Optional[int] = None  # None: the service's default
    source_prefixes: tuple[str, ...] = ()  # empty: every readable bucket
    key_id: str = field(default="open", repr=False)  # a short hash of the key, for rate limits

    def may_read(self, uri: str) -> bool:
        return not self.source_prefixes or any(uri.startswith(prefix) for prefix in self.source_prefixes)

    def owns(self, tenant: str) -> bool:
        return self.admin or tenant == self.tenant


OPEN = Principal(DEFAULT_TENANT)


class Unauthorized(ServiceError):
    code = ErrorCode.UNAUTHORIZED


class KeyRing:
    """The configured keys, by the SHA-256 of each."""

    def __init__(self, keys: dict[str, Principal]) -> None:
        self._keys = keys

    @property
    def open(self) -> bool:
        return not self._keys

    def __len__(self) -> int:
        return len(self._keys)

    @classmethod
    def from_settings(cls, settings: Settings) -> "KeyRing":
        """The keys the settings name. ValueError for a malformed entry, and for a key
        setting that is set but names no key: an operator who meant to close the service
        must not find it running open."""
        keys: dict[str, Principal] = {}
        for pair in filter(None, (p.strip() for p in settings.api_keys.split(","))):
            tenant, sep, key = pair.partition(":")
            if not sep or not key or not _TENANT.fullmatch(tenant):
                raise ValueError("API_KEYS takes comma-separated tenant:key pairs (tenant: letters, digits, _.-)")
            digest = _sha256(key)
            keys[digest] = Principal(tenant, key_id=digest[:16])
        if settings.api_keys.strip() and not keys:
            raise ValueError("API_KEYS is set but names no key: give tenant:key pairs, or unset it to run open")
        if settings.api_keys_file:
            from_file = _read_file(settings.api_keys_file)
            if not from_file:
                raise ValueError(f"API_KEYS_FILE {settings.api_keys_file} holds no key: add a line 'tenant "
                                 "sha256-of-key [admin] [rate=N]' per key (printf %s KEY | sha256sum), or unset "
                                 "API_KEYS_FILE to run open")
            keys.update(from_file)
        return cls(keys)

    def identify(self, presented: Optional[str]) -> Principal:
        """The principal of a presented key; :class:`Unauthorized` unless it is configured."""
        if self.open:
            return OPEN
        if not presented:
            raise Unauthorized("send an API key: Authorization: Bearer <key> (or X-API-Key)")
        digest = _sha256(presented)
        found = None
        for known, principal in self._keys.items():  # every entry: the time says nothing about which
            if hmac.compare_digest(known, digest):
                found = principal
        if found is None:
            raise Unauthorized("this API key is not valid")
        return found


def _sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _read_file(path: Path) -> dict[str, Principal]:
    keys: dict[str, Principal] = {}
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise ValueError(f"API_KEYS_FILE {path} cannot be read: {exc}") from None
    for number, line in enumerate(lines, 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) < 2 or not _TENANT.fullmatch(fields[0]) or not _SHA256.fullmatch(fields[1].lower()):
            raise ValueError(f"API_KEYS_FILE {path}:{number}: expected 'tenant sha256-of-key [admin] [rate=N] "
                             "[s3://bucket/prefix ...]' (make the hash with: printf %s KEY | sha256sum)")
        tenant, digest, options = fields[0], fields[1].lower(), fields[2:]
        rate = [int(o[5:]) for o in options if re.fullmatch(r"rate=\d+", o)]
        prefixes = tuple(o for o in options if o.startswith("s3://"))
        unknown = [o for o in options if o != "admin" and not re.fullmatch(r"rate=\d+", o) and not o.startswith("s3://")]
        if unknown:
            raise ValueError(f"API_KEYS_FILE {path}:{number}: unknown option {unknown[0]!r} "
                             "(admin, rate=N or s3://bucket/prefix)")
        keys[digest] = Principal(tenant, admin="admin" in options, rate_per_minute=rate[0] if rate else None,
                                 source_prefixes=prefixes, key_id=digest[:16])
    return keys


def presented_key(authorization: Optional[str], api_key_header: Optional[str]) -> Optional[str]:
    """The key from ``Authorization: Bearer <key>``, else from ``X-API-Key``."""
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
    return api_key_header.strip() if api_key_header and api_key_header.strip() else None


# Set by gunicorn's master once it has announced the keys (api/gunicorn_conf.py); the
# workers it forks inherit it, so a service says how it admits callers once per start.
announced = False


def announce(settings: Settings, keys: KeyRing) -> None:
    """Log how callers are admitted: one warning when the service runs open (and one more
    when it also signs webhooks, whose secret anyone may then read)."""
    log = logging.getLogger("api")
    log.setLevel(logging.INFO)
    if keys.open:
        log.warning("no API keys configured (API_KEYS, API_KEYS_FILE): the API is open to anyone who reaches it, "
                    "and every job belongs to the tenant %r", DEFAULT_TENANT)
    else:
        log.info("%d API key(s) configured; requests without a valid key get 401", len(keys))
    if not settings.webhook_signing_key:
        log.info("no WEBHOOK_SIGNING_KEY: submissions that name a webhook get 400 webhooks_disabled")
    elif keys.open:
        log.warning("webhooks are signed, but with no API keys anyone who reaches the API can read the signing "
                    "secret (GET /v1/webhooks/secret) and forge deliveries; configure API_KEYS before receivers "
                    "trust signatures")
