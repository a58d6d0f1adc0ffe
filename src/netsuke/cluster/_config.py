"""What ``netsuke serve --cluster`` needs: URL checks and nats-py connection options built
from the node's settings (credentials and TLS passed through to ``nats.connect``)."""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = ["NODE_NAME", "check_cluster_url", "connect_options", "redact"]

NODE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_SCHEMES = ("nats", "tls", "ws", "wss")


def check_cluster_url(value: str | None) -> str | None:
    """``value`` if every comma-separated URL is ``nats://HOST:PORT`` (or ``tls``, ``ws``,
    ``wss``) with a host; else ``ValueError`` naming the bad one. Userinfo is allowed but
    never echoed back."""
    if value is None:
        return None
    urls = [u.strip() for u in value.split(",")]
    if not urls or any(not u for u in urls):
        raise ValueError("give one or more NATS URLs, comma-separated (nats://HOST:PORT)")
    for u in urls:
        shown = redact(u)
        try:
            parts = urlsplit(u)
            port = parts.port
        except ValueError as e:
            raise ValueError(f"not a NATS URL {shown!r}: {e}") from None
        if parts.scheme not in _SCHEMES:
            raise ValueError(
                f"not a NATS URL {shown!r}: the scheme must be one of "
                f"{', '.join(s + '://' for s in _SCHEMES)}"
            )
        if not parts.hostname:
            raise ValueError(f"not a NATS URL {shown!r}: no host")
        if port == 0:
            raise ValueError(f"not a NATS URL {shown!r}: port 0")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"not a NATS URL {shown!r}: no path or query allowed")
    return ",".join(urls)


def redact(url: str) -> str:
    """``url`` without its user and password (they never reach an error message)."""
    return re.sub(r"(\w+://)[^/@\s]*@", r"\1***@", url)


def connect_options(
    *,
    creds: Path | None = None,
    user: str | None = None,
    password: str | None = None,
    token: str | None = None,
    tls_ca: Path | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    tls_hostname: str | None = None,
) -> dict[str, Any]:
    """``nats.connect`` keyword arguments for credentials and TLS. Raises ``ValueError`` for
    a file that cannot be read (named, without its content)."""
    opts: dict[str, Any] = {}
    if creds is not None:
        if not creds.is_file():
            raise ValueError(f"cluster credentials file {str(creds)!r} does not exist")
        opts["user_credentials"] = str(creds)
    if user is not None:
        opts["user"] = user
    if password is not None:
        opts["password"] = password
    if token is not None:
        opts["token"] = token
    if tls_ca is not None or tls_cert is not None:
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("cluster TLS: give both a certificate and its key, or neither")
        try:
            ctx = ssl.create_default_context(
                ssl.Purpose.SERVER_AUTH, cafile=str(tls_ca) if tls_ca else None
            )
            if tls_cert is not None and tls_key is not None:
                ctx.load_cert_chain(str(tls_cert), str(tls_key))
        except (OSError, ssl.SSLError) as e:
            raise ValueError(f"cluster TLS files: {type(e).__name__}: {e}") from None
        opts["tls"] = ctx
    if tls_hostname is not None:
        opts["tls_hostname"] = tls_hostname
    return opts
