"""One attempt at a webhook delivery: vet the receiver's address, sign, POST.

Signing follows Standard Webhooks (the ``standardwebhooks`` reference library):
``webhook-id`` is the delivery's id (the same on every attempt, so a receiver can drop
repeats), ``webhook-timestamp`` the attempt's time, ``webhook-signature``
``v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` under the tenant's secret
(:func:`common.webhooks.tenant_secret`). The connection goes to the address
:meth:`~common.webhooks.WebhookPolicy.vet` approved, with the URL's host name kept
for the Host header, TLS SNI and certificate check; redirects are not followed.
"""
from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from datetime import datetime, timezone
from math import floor
from typing import Optional
from urllib.parse import urlsplit

import certifi
import urllib3
from urllib3.util.ssl_match_hostname import CertificateError
from standardwebhooks import Webhook

from common.settings import Settings
from common.webhooks import DeliveryMessage, WebhookPolicy, WebhookRefused, ascii_host, tenant_secret

log = logging.getLogger(__name__)

USER_AGENT = "m2fp-queue-webhooks/1"
_KEEP_BODY = 64 * 1024  # of a receiver's answer, read and dropped


@dataclass(frozen=True)
class Attempt:
    """What one POST found: ``delivered`` (a 2xx), else whether trying again may help."""

    delivered: bool
    status: Optional[int] = None
    error: Optional[str] = None
    retry: bool = True


def signed_headers(message: DeliveryMessage, signing_key: str, now: Optional[datetime] = None) -> dict[str, str]:
    """The three Standard Webhooks headers of one attempt."""
    now = now or datetime.now(timezone.utc)
    signature = Webhook(tenant_secret(signing_key, message.tenant)).sign(message.delivery_id, now, message.body)
    return {"webhook-id": message.delivery_id, "webhook-timestamp": str(floor(now.timestamp())),
            "webhook-signature": signature}


class Sender:
    """Posts deliveries for one delivery worker (its policy and TLS settings read once)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.policy = WebhookPolicy.from_settings(settings)
        self.ca_file = str(settings.webhook_ca_file or certifi.where())
        self.timeout = urllib3.Timeout(connect=min(5.0, settings.webhook_timeout_seconds),
                                       read=settings.webhook_timeout_seconds)

    def attempt(self, message: DeliveryMessage) -> Attempt:
        try:
            return self._attempt(message)
        except Exception as exc:  # a URL this code cannot send to: give up, keep the worker serving
            log.exception("webhook %s of job %s cannot be sent", message.delivery_id, message.job_id)
            return Attempt(False, error=f"cannot send: {type(exc).__name__}", retry=False)

    def _attempt(self, message: DeliveryMessage) -> Attempt:
        url = urlsplit(message.url)
        host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
        try:
            addresses = self.policy.vet(host, port)
        except WebhookRefused as exc:
            return Attempt(False, error=f"refused: {exc}", retry=False)
        except OSError as exc:
            return Attempt(False, error=str(exc))
        wire_host = ascii_host(host)
        netloc = f"[{wire_host}]" if ":" in wire_host else wire_host
        headers = {"content-type": "application/json", "user-agent": USER_AGENT,
                   "host": f"{netloc}:{url.port}" if url.port else netloc,
                   **signed_headers(message, self.settings.webhook_signing_key)}
        path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        error = "no address"
        for address in addresses:  # the first that answers
            try:
                return self._post(url.scheme, wire_host, address, port, path, headers, message.body)
            except urllib3.exceptions.HTTPError as exc:
                error = _describe(exc)
        return Attempt(False, error=error)

    def _post(self, scheme: str, host: str, address: str, port: int, path: str, headers: dict[str, str],
              body: str) -> Attempt:
        if scheme == "https":
            pool = urllib3.HTTPSConnectionPool(address, port, timeout=self.timeout, retries=False,
                                               cert_reqs="CERT_REQUIRED", ca_certs=self.ca_file,
                                               server_hostname=host, assert_hostname=host)
        else:
            pool = urllib3.HTTPConnectionPool(address, port, timeout=self.timeout, retries=False)
        with pool:
            response = pool.urlopen("POST", path, body=body.encode(), headers=headers, redirect=False,
                                    assert_same_host=False, preload_content=False)
            try:
                response.read(_KEEP_BODY)
            finally:
                response.release_conn()
        if 200 <= response.status < 300:
            return Attempt(True, status=response.status)
        return Attempt(False, status=response.status, error=f"HTTP {response.status}")


def _describe(exc: Exception) -> str:
    """Why a connection failed, in words the job's owner reads in its webhook status:
    without the URL (its query may hold a token) or OpenSSL's source locations."""
    if isinstance(exc, urllib3.exceptions.NewConnectionError):  # (a subclass of the timeout error)
        return "connection refused" if isinstance(exc.__context__, ConnectionRefusedError) else "cannot connect"
    if isinstance(exc, (urllib3.exceptions.ConnectTimeoutError, urllib3.exceptions.ReadTimeoutError)):
        return "timed out"
    if isinstance(exc, urllib3.exceptions.SSLError):
        cause = exc.__context__
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"TLS: the receiver's certificate was not accepted ({cause.verify_message})"
        if isinstance(cause, CertificateError):  # urllib3's own check of the name (assert_hostname)
            return f"TLS: the receiver's certificate was not accepted ({cause})"
        return f"TLS: the handshake failed ({getattr(cause, 'reason', None) or 'no reason given'})"
    if isinstance(exc, urllib3.exceptions.ProtocolError):
        return "connection dropped"
    return type(exc).__name__
