"""Warn when the API key would cross a network in clear text (pure)."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


def is_loopback_host(host: str) -> bool:
    """``localhost`` (and ``*.localhost``), 127.0.0.0/8, ``::1`` and IPv4-mapped loopback."""
    host = host.strip("[]").lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def plain_http_warning(endpoint: str) -> str | None:
    """A warning for ``http://`` to anything but this machine, else None."""
    parts = urlsplit(endpoint.strip())
    if parts.scheme.lower() != "http":
        return None
    host = parts.hostname or ""
    if is_loopback_host(host):
        return None
    shown = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()  # no user:pass
    return (
        f"warning: --endpoint {shown} is plain http to {host or 'an unknown host'}: the API key "
        "and every prompt and answer cross the network unencrypted; use https"
    )
