"""Issue 14 item 10: the outbound-address guard sees through every IPv6 transition form.

``is_forbidden_address`` (the guard webhooks use, reusable for any outbound URL) refuses an
IPv6 address that carries a loopback, private, link-local or otherwise non-global IPv4
address, in each form that embeds one; the API refuses such a webhook target (422)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from netsuke.api import Settings
from netsuke.api._ssrf import embedded_ipv4, is_forbidden_address
from tests.api.conftest import serve


def _teredo(server: str, client: str) -> str:
    """A Teredo address (2001:0::/32): server IPv4, then the client IPv4 obfuscated."""
    value = (0x20010000 << 96) | (int(ipaddress.IPv4Address(server)) << 64)
    value |= int(ipaddress.IPv4Address(client)) ^ 0xFFFFFFFF
    return str(ipaddress.IPv6Address(value))


# (form, address carrying a forbidden IPv4, the IPv4 it carries)
FORBIDDEN = [
    ("IPv4-mapped", "::ffff:127.0.0.1", "127.0.0.1"),
    ("IPv4-mapped private", "::ffff:10.0.0.1", "10.0.0.1"),
    ("IPv4-translated", "::ffff:0:169.254.169.254", "169.254.169.254"),
    ("IPv4-compatible", "::127.0.0.1", "127.0.0.1"),
    ("IPv4-compatible private", "::192.168.1.1", "192.168.1.1"),
    ("NAT64 well-known", "64:ff9b::127.0.0.1", "127.0.0.1"),
    ("NAT64 well-known metadata", "64:ff9b::a9fe:a9fe", "169.254.169.254"),
    ("6to4 loopback", "2002:7f00:1::1", "127.0.0.1"),
    ("6to4 private", "2002:c0a8:101::1", "192.168.1.1"),
    ("6to4 metadata", "2002:a9fe:a9fe::1", "169.254.169.254"),
    ("Teredo private client", _teredo("8.8.8.8", "10.0.0.1"), "10.0.0.1"),
    ("Teredo loopback server", _teredo("127.0.0.1", "8.8.4.4"), "127.0.0.1"),
    ("ISATAP", "2606:4700::5efe:7f00:1", "127.0.0.1"),
    ("ISATAP u-bit", "2606:4700::200:5efe:a00:1", "10.0.0.1"),
    ("ISATAP CGNAT", "2606:4700::200:5efe:6440:1", "100.64.0.1"),
]


@pytest.mark.parametrize(("form", "address", "carried"), FORBIDDEN, ids=[f[0] for f in FORBIDDEN])
def test_every_transition_form_carrying_a_forbidden_ipv4_is_refused(
    form: str, address: str, carried: str
) -> None:
    assert ipaddress.IPv4Address(carried) in embedded_ipv4(ipaddress.IPv6Address(address))
    assert is_forbidden_address(address), form


def test_local_nat64_and_plain_addresses() -> None:
    assert is_forbidden_address("64:ff9b:1::808:808")  # local-use NAT64 prefix: refused
    assert is_forbidden_address("::1") and is_forbidden_address("::")
    # public addresses, and transition forms carrying a public IPv4, stay reachable
    for address in ("2606:4700:4700::1111", "2002:808:808::1", "::ffff:8.8.8.8",
                    "2606:4700::200:5efe:808:808", "8.8.8.8"):  # fmt: skip
        assert not is_forbidden_address(address), address
    assert embedded_ipv4(ipaddress.IPv6Address("2606:4700:4700::1111")) == []


@pytest.mark.timeout(60)
async def test_api_refuses_webhook_targets_in_transition_forms(tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'api.db'}", port=0, rate_limit_per_minute=0
    )
    async with serve(settings) as live:
        admin = live.admin
        for _, address, _ in FORBIDDEN:
            r = await admin.post(
                "/api/v1/webhooks", json={"url": f"http://[{address}]:18251/", "topics": ["*"]}
            )
            assert r.status_code == 422, (address, r.text)
            assert r.headers["content-type"] == "application/problem+json"
        assert (await admin.get("/api/v1/webhooks")).json()["items"] == []
