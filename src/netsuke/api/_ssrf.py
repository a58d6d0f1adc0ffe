"""Which webhook targets may be called: no loopback, private, link-local or reserved address.

``check_target(url, allow_private=False)`` parses the URL (http or https, a host, no
credentials in it), resolves the host, and checks **every** address it resolves to, so a name
with one public and one private address is refused. IPv4-mapped IPv6 addresses
(``::ffff:127.0.0.1``) are checked as the IPv4 address they carry; numeric forms such as
``2130706433`` resolve to what they mean (127.0.0.1) and are refused with it. The dispatcher
checks again before each attempt, so a name re-pointed after registration is refused then.
With ``allow_private`` (the operator's ``allow_private_webhooks``) only the form is checked.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

__all__ = ["TargetRefusedError", "check_target", "is_forbidden_address"]


class TargetRefusedError(ValueError):
    """A webhook URL that may not be called; ``reason`` says why (no secret in it)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def is_forbidden_address(address: str) -> bool:
    """Whether ``address`` (an IP literal) is loopback, private, link-local, multicast,
    reserved, unspecified or otherwise not globally routable."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    )


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
