"""Host names and addresses: parsing ``HOST:PORT`` and telling loopback apart (standard library only)."""

from __future__ import annotations

import ipaddress


def split_host(host: str) -> tuple[str, str] | None:
    """``(name, port)`` of ``HOST[:PORT]`` or ``[V6][:PORT]`` (port ``""`` when absent), or None when malformed."""
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            return None
        name, rest = host[: end + 1], host[end + 1 :]
        if rest and not rest.startswith(":"):
            return None
        port = rest[1:]
    else:
        name, _, port = host.partition(":")
        if ":" in port:
            return None
    if not name or (port and not (port.isascii() and port.isdigit() and len(port) <= 5)):
        return None
    return name, port


def loopback(host: str) -> bool:
    """Whether ``host`` (a name or address, IPv6 with or without brackets) is this machine only."""
    host = host.removeprefix("[").removesuffix("]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def wildcard(host: str) -> bool:
    """Whether ``host`` is the any-address (0.0.0.0 or ::), which includes loopback."""
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]")).is_unspecified
    except ValueError:
        return False
