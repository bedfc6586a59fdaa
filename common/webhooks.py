"""Webhooks: which receivers may be called, what signs a delivery, and how an event
leaves the process where the job changed.

A job's webhook is told of the statuses it asked for (:class:`m2fp_contract.schema.WebhookEvent`).
When a lifecycle step moves the job to one, the job store begins that event's delivery
in the same write and calls :meth:`WebhookNotifier.send`, which renders the job's JSON
at that moment (the body, signed as is on every attempt) and puts a
:class:`DeliveryMessage` on the webhook queue. The light delivery worker
(:mod:`delivery.tasks`) posts it, retries it, and notes each attempt on the job. A
model process only ever pushes one small message: no receiver can slow parsing.

Two guards against a webhook used to reach what it should not (SSRF): at submission,
:meth:`WebhookPolicy.admit` refuses plain http, credentials in the URL and literal local
or private addresses (:meth:`WebhookPolicy.check`), then resolves the host (for at most
:data:`SUBMISSION_RESOLVE_SECONDS`) and refuses a name that resolves to such an address
or to none; at each delivery, :meth:`WebhookPolicy.vet` resolves the host again and
refuses it unless every address is public, then the connection goes to the vetted
address (so a DNS answer that changes in between cannot redirect it). Hosts the
operator lists in ``WEBHOOK_ALLOW_HOSTS`` pass both.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import re
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, TypeVar, Union
from urllib.parse import SplitResult, urlsplit

from pydantic import BaseModel

from m2fp_contract.errors import ErrorCode, ServiceError
from common.jobs import Job
from common.job_store import JobStore
from common.queue import JobQueue
from common.settings import Settings
from common.storage import Storage
from common.views import job_view

log = logging.getLogger(__name__)

T = TypeVar("T")
IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
_SECRET_CONTEXT = b"m2fp-queue webhook secret\x00"


# At submission, a webhook's host name gets this long to resolve; a resolver that has not
# answered by then lets the submission pass (each delivery vets the host again).
SUBMISSION_RESOLVE_SECONDS = 2.0


class WebhookRefused(Exception):
    """The receiver's address is one the policy forbids (not worth retrying)."""


class UnknownHost(OSError):
    """The resolver answered that the name has no address (not a passing failure)."""


_NO_SUCH_NAME = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}


def tenant_secret(signing_key: str, tenant: str) -> str:
    """The tenant's signing secret in the Standard Webhooks form (``whsec_`` + base64 of
    32 bytes), derived from the operator's key: nothing to store, one key to rotate, and
    no tenant's secret says anything about another's."""
    digest = hmac.new(signing_key.encode(), _SECRET_CONTEXT + tenant.encode(), hashlib.sha256).digest()
    return "whsec_" + base64.b64encode(digest).decode()


_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
# IPv6 forms that carry an IPv4 address in their low 32 bits and are no receiver's public
# address, which Python 3.10 still calls global: IPv4-compatible (``::7f00:1``, deprecated
# by RFC 4291) and IPv4-translated (``::ffff:0:a9fe:a9fe``, RFC 2765). Refused whatever
# they carry.
_EMBEDDING_ONLY = (ipaddress.ip_network("::/96"), ipaddress.ip_network("::ffff:0:0:0/96"))


def _public(address: IPAddress) -> bool:
    """A global unicast address, and so is any IPv4 address an IPv6 one carries (mapped,
    6to4, Teredo, NAT64: Python 3.10 calls some of those global whatever they embed)."""
    if not address.is_global or address.is_multicast:
        return False
    if isinstance(address, ipaddress.IPv6Address):
        if any(address in network for network in _EMBEDDING_ONLY):
            return False
        embedded = [address.ipv4_mapped, address.sixtofour, *(address.teredo or ())]
        if any(address in network for network in _NAT64):
            embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        return all(_public(inner) for inner in embedded if inner is not None)
    return True


@dataclass(frozen=True)
class WebhookPolicy:
    """Which receivers a webhook may name: https at public addresses, plus the hosts
    (names, IPs, CIDR networks) the operator allows, over http too."""

    names: frozenset[str]
    networks: tuple[IPNetwork, ...]

    @classmethod
    def from_settings(cls, settings: Settings) -> "WebhookPolicy":
        names, networks = set(), []
        for entry in (part.strip().lower() for part in settings.webhook_allow_hosts.split(",")):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                names.add(entry)
        return cls(frozenset(names), tuple(networks))

    def allows(self, host: str) -> bool:
        """Whether the operator listed this host (by name, or an address in a network)."""
        host = host.lower().rstrip(".")
        if host in self.names:
            return True
        address = _address(host)
        return address is not None and any(address in network for network in self.networks)

    def check(self, url: str) -> str:
        """The URL, if a submission may name it; else :class:`ServiceError` invalid_webhook."""
        parts = _split(url)
        host = parts.hostname.rstrip(".")
        if parts.scheme != "https" and not self.allows(host):
            raise _invalid(f"a webhook must be https (plain http only to hosts in WEBHOOK_ALLOW_HOSTS): {host!r}")
        if self.allows(host):
            return url
        address = _address(host)
        if (address is not None and not _public(address)) or host == "localhost" or host.endswith(".localhost"):
            raise _invalid(f"the webhook host {host} is a local or private address; its operator may allow it "
                           "with WEBHOOK_ALLOW_HOSTS")
        return url

    def admit(self, url: str, timeout: float = SUBMISSION_RESOLVE_SECONDS) -> str:
        """The URL, if a submission may name it: :meth:`check`, then the host's addresses
        vetted as a delivery vets them (:meth:`vet`), so a name that resolves to a local,
        private or metadata address is refused now rather than at its first delivery. So is
        a name the resolver says does not exist. A resolver that fails for the moment or
        takes over ``timeout`` seconds lets the URL pass: every delivery vets it again."""
        url = self.check(url)
        parts = urlsplit(url)
        host = parts.hostname
        if self.allows(host) or _address(host) is not None:
            return url  # listed by the operator, or a literal address check() has judged
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            _within(timeout, self.vet, host, port)
        except WebhookRefused as exc:
            raise _invalid(f"the webhook host {exc}") from None
        except UnknownHost:
            raise _invalid(f"the webhook host {host} does not resolve (no such name)") from None
        except (OSError, TimeoutError) as exc:
            log.info("webhook host %s not resolved at submission (%s); its deliveries will check it", host,
                     exc or "timed out")
        return url

    def vet(self, host: str, port: int) -> list[str]:
        """The addresses to connect to for ``host``: all it resolves to, each public or
        allowed; :class:`WebhookRefused` naming the first that is neither."""
        try:
            found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            kind = UnknownHost if exc.errno in _NO_SUCH_NAME else OSError
            raise kind(f"cannot resolve {host}: {exc.strerror}") from None
        except UnicodeError:
            raise WebhookRefused(f"{host!r} is not a valid host name") from None
        addresses = list(dict.fromkeys(entry[4][0] for entry in found))
        if self.allows(host):
            return addresses
        for text in addresses:
            address = ipaddress.ip_address(text.split("%")[0])
            if not _public(address) and not any(address in network for network in self.networks):
                raise WebhookRefused(f"{host} resolves to {address}, which is not a public address; "
                                     "allow it with WEBHOOK_ALLOW_HOSTS")
        return addresses


def _within(seconds: float, call: Callable[..., T], *args: Any) -> T:
    """``call(*args)`` in a daemon thread, waited for ``seconds`` (``getaddrinfo`` takes no
    timeout); TimeoutError after that, the thread left to end when the resolver gives up."""
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def run() -> None:
        try:
            outcome["value"] = call(*args)
        except BaseException as exc:  # handed to the waiting caller
            outcome["error"] = exc
        finally:
            done.set()

    threading.Thread(target=run, name="webhook-resolve", daemon=True).start()
    if not done.wait(seconds):
        raise TimeoutError()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _split(url: str) -> SplitResult:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError for a port out of range)
    except ValueError:
        raise _invalid("the webhook is not a URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _invalid("the webhook must be an absolute https URL")
    if parts.username is not None or parts.password is not None:
        raise _invalid("a webhook URL must not carry user:password@ (it is shown in the job's JSON); "
                       "verify deliveries by their signature")
    try:
        ascii_host(parts.hostname)
    except UnicodeError:
        raise _invalid(f"the webhook host {parts.hostname!r} is not a valid host name") from None
    return parts


def ascii_host(host: str) -> str:
    """The host as it goes on the wire (IDNA for international names); UnicodeError if it
    cannot be one (an empty or over-long label)."""
    if _address(host) is not None and ":" in host:
        return host
    return host.encode("idna").decode("ascii")


def _address(host: str) -> Optional[IPAddress]:
    """The address a literal host names, in any form the resolver reads as one (also
    ``2130706433``, ``127.1`` or ``0x7f.1`` for 127.0.0.1)."""
    host = host.strip("[]").rstrip(".")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if re.fullmatch(r"[0-9a-fA-FxX.]+", host) and any(c.isdigit() for c in host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _invalid(message: str) -> ServiceError:
    return ServiceError(message, ErrorCode.INVALID_WEBHOOK)


class DeliveryMessage(BaseModel):
    """A webhook delivery as its queue message carries it (JSON): all it needs, so it
    is delivered even if the job's record expires meanwhile."""

    job_id: str
    delivery_id: str  # the webhook-id header, the same on every attempt
    event: str
    tenant: str
    url: str
    body: str  # the job's JSON when the event happened, signed and sent as is
    created: float  # when the event happened (epoch seconds): retries stop WEBHOOK_RETRY_SECONDS after


class WebhookNotifier:
    """Sends a job's begun webhook event to the delivery queue (the job store's ``on_event``)."""

    def __init__(self, settings: Settings, storage: Storage, queue: JobQueue) -> None:
        self.settings = settings
        self.storage = storage
        self.queue = queue

    def send(self, job: Job) -> None:
        webhook = job.webhook
        view = job_view(job, self.storage, self.settings.presign_seconds, webhook.links_base)
        message = DeliveryMessage(job_id=job.id, delivery_id=webhook.delivery_id, event=webhook.event.value,
                                  tenant=job.tenant, url=webhook.url,
                                  body=json.dumps(view.to_json(), separators=(",", ":")),
                                  created=time.time())
        self.queue.send_webhook(message.model_dump(mode="json"))

    def resend_unsent(self, jobs: JobStore, older_than: float) -> int:
        """Send again every delivery begun over ``older_than`` seconds ago that never
        reached a delivery worker (its message was lost); the number sent."""
        sent = 0
        for job_id, delivery_id in jobs.outbox.take_unsent(older_than):
            job = jobs.get(job_id)
            if job is None or job.webhook is None or job.webhook.delivery_id != delivery_id or job.webhook.attempts:
                jobs.outbox.attempted(job_id, delivery_id)  # expired, superseded, or under way after all
                continue
            log.warning("job %s: its %s webhook never reached a delivery worker; sending it again", job_id,
                        job.webhook.event.value)
            self.send(job)
            sent += 1
        return sent
