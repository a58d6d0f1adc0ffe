"""Which webhook targets may be called: no loopback, private, link-local or reserved address.

``check_target(url, allow_private=False)`` parses the URL (http or https, a host, no
credentials in it), resolves the host, and checks **every** address it resolves to, so a name
with one public and one private address is refused. An IPv6 address that carries an IPv4
address (every transition form: IPv4-mapped ``::ffff:a.b.c.d``, IPv4-translated
``::ffff:0:a.b.c.d``, IPv4-compatible ``::a.b.c.d``, NAT64 ``64:ff9b::/96``, 6to4
``2002::/16``, Teredo ``2001::/32`` (server and client), ISATAP interface ids
``…:0:5efe:a.b.c.d`` / ``…:200:5efe:a.b.c.d``) is refused when the IPv4 address it carries is;
the local-use NAT64 prefix ``64:ff9b:1::/48`` is refused outright. Numeric forms such as
``2130706433`` resolve to what they mean (127.0.0.1) and are refused with it. The dispatcher
checks again before each attempt, so a name re-pointed after registration is refused then.
With ``allow_private`` (the operator's ``allow_private_webhooks``) only the form is checked.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

__all__ = ["TargetRefusedError", "check_target", "embedded_ipv4", "is_forbidden_address"]

_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
_COMPATIBLE = ipaddress.IPv6Network("::/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
_SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")
_TEREDO = ipaddress.IPv6Network("2001::/32")
_ISATAP_IDS = (0x00005EFE, 0x02005EFE)


class TargetRefusedError(ValueError):
    """A webhook URL that may not be called; ``reason`` says why (no secret in it)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 transition address carries (empty for a plain one):
    IPv4-mapped, IPv4-translated, IPv4-compatible, NAT64 (``64:ff9b::/96``), 6to4, Teredo
    (server and de-obfuscated client) and ISATAP-style interface ids."""
    value = int(ip)
    low32 = ipaddress.IPv4Address(value & 0xFFFFFFFF)
    if ip in _MAPPED or ip in _TRANSLATED or ip in _NAT64:
        return [low32]
    if ip in _COMPATIBLE:
        return [low32] if value > 1 else []  # :: and ::1 are judged as themselves
    if ip in _SIX_TO_FOUR:
        return [ipaddress.IPv4Address((value >> 80) & 0xFFFFFFFF)]
    if ip in _TEREDO and ip.teredo is not None:
        return list(ip.teredo)
    if (value >> 32) & 0xFFFFFFFF in _ISATAP_IDS:
        return [low32]
    return []


def _forbidden_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return (
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    )


def is_forbidden_address(address: str) -> bool:
    """Whether ``address`` (an IP literal) is loopback, private, link-local, multicast,
    reserved, unspecified or otherwise not globally routable, or an IPv6 transition address
    (see ``embedded_ipv4``) carrying such an IPv4 address. Reusable for any outbound URL
    (webhooks, model endpoints)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv4Address):
        return _forbidden_ip(ip)
    if ip in _NAT64_LOCAL:
        return True
    carried = embedded_ipv4(ip)
    if carried and any(_forbidden_ip(v4) for v4 in carried):
        return True
    if ip in _MAPPED:
        return False  # the IPv4 address itself, written the IPv6 way
    return _forbidden_ip(ip)


async def check_target(url: str, *, allow_private: bool = False) -> None:
    """Refuse (``TargetRefusedError``) a URL that is malformed or, unless ``allow_private``,
    resolves to any forbidden address."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise TargetRefusedError("not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise TargetRefusedError("scheme must be http or https")
    if not parts.hostname:
        raise TargetRefusedError("the URL names no host")
    if parts.username is not None or parts.password is not None:
        raise TargetRefusedError("credentials in the URL are not accepted")
    if allow_private:
        return
    host = parts.hostname
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port or (443 if parts.scheme == "https" else 80), type=socket.SOCK_STREAM
        )
    except (socket.gaierror, UnicodeError):
        raise TargetRefusedError(f"cannot resolve host {host!r}") from None
    addresses = {str(info[4][0]) for info in infos}
    if not addresses:
        raise TargetRefusedError(f"host {host!r} has no address")
    for address in sorted(addresses):
        if is_forbidden_address(address):
            raise TargetRefusedError(
                f"host {host!r} resolves to {address}, a loopback, private or reserved "
                "address (the operator may allow these with allow_private_webhooks)"
            )
