"""Where findings may be POSTed, and the one function that sends them.

A webhook URL in a run's config is input from whoever can create runs, so without
limits it is a server-side request forgery: the API would POST to any port of any
machine it can reach (its own database, a cloud metadata service). The rules:

- http and https only;
- the URL must fall under a prefix in TRAINLENS_WEBHOOK_ALLOWLIST (the operator's own
  TRAINLENS_RULES_WEBHOOK_URL is always allowed);
- private, loopback, link-local and other non-global addresses are refused unless
  TRAINLENS_WEBHOOK_ALLOW_PRIVATE is set. The check is made on the addresses the name
  resolves to, when the run is created and again at every send, and the request goes to
  the address that was checked (so DNS cannot change its answer in between);
- a bounded timeout, and redirects are not followed.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any
from urllib.parse import SplitResult, urlsplit

import httpx

from app.config import Settings
from app.errors import quote

DEFAULT_PORTS = {"http": 80, "https": 443}


class WebhookRefused(ValueError):
    """The URL may not be sent to; the message says why."""


def _parse(url: str) -> SplitResult:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise WebhookRefused(f"{quote(url)} is not a URL") from None
    if parts.scheme not in DEFAULT_PORTS:
        raise WebhookRefused(f"{quote(url)}: only http and https webhooks are sent")
    if not parts.hostname:
        raise WebhookRefused(f"{quote(url)} names no host")
    return parts


def _origin(parts: SplitResult) -> tuple[str, str, int]:
    return parts.scheme, parts.hostname or "", parts.port or DEFAULT_PORTS[parts.scheme]


def _allowlist(settings: Settings) -> list[str]:
    prefixes = list(settings.webhook_allowlist)
    if settings.rules_webhook_url:
        prefixes.append(settings.rules_webhook_url)
    return prefixes


def _allowed(parts: SplitResult, settings: Settings) -> bool:
    for prefix in _allowlist(settings):
        try:
            allowed = _parse(prefix)
        except WebhookRefused:
            continue
        if _origin(allowed) == _origin(parts) and (parts.path or "/").startswith(
            allowed.path or "/"
        ):
            return True
    return False


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def _addresses(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:
        raise WebhookRefused(f"cannot resolve {quote(host)}: {error}") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def check_destination(url: str, settings: Settings) -> tuple[SplitResult, str]:
    """Raises WebhookRefused unless `url` may be sent to now; returns its parts and the
    checked address to connect to."""
    parts = _parse(url)
    if not _allowed(parts, settings):
        raise WebhookRefused(
            f"{quote(url)} is not under TRAINLENS_WEBHOOK_ALLOWLIST "
            f"({', '.join(_allowlist(settings)) or 'empty'})"
        )
    _, host, port = _origin(parts)
    addresses = _addresses(host, port)
    if not settings.webhook_allow_private:
        private = [address for address in addresses if not _public(address)]
        if private:
            raise WebhookRefused(
                f"{quote(host)} resolves to a private, loopback or link-local address "
                f"({private[0]}); set TRAINLENS_WEBHOOK_ALLOW_PRIVATE=1 to allow it"
            )
    return parts, addresses[0]


def send(url: str, payload: dict[str, Any], settings: Settings) -> httpx.Response:
    """POST `payload` to the webhook, connecting to the address that was checked."""
    parts, address = check_destination(url, settings)
    scheme, host, port = _origin(parts)
    literal = f"[{address}]" if ":" in address else address
    default_port = port == DEFAULT_PORTS[scheme]
    pinned = parts._replace(netloc=literal if default_port else f"{literal}:{port}").geturl()
    host_header = parts.netloc.rpartition("@")[2]
    with httpx.Client(timeout=settings.webhook_timeout_seconds, follow_redirects=False) as client:
        return client.post(
            pinned,
            json=payload,
            headers={"Host": host_header},
            # TLS still verifies the certificate against the name, not the address.
            extensions={"sni_hostname": host} if scheme == "https" else None,
        )
