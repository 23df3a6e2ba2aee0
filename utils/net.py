"""Who is calling: the address for the login-failure counter and the session list.

gunicorn leaves REMOTE_ADDR as the peer; behind a proxy listed in FORWARDED_ALLOW_IPS (the
variable gunicorn's ``forwarded_allow_ips`` reads, same default) we take the address that proxy
saw: the last entry of X-Forwarded-For. From anyone else the header is ignored.
"""

from __future__ import annotations

import ipaddress
from typing import NamedTuple

from werkzeug import Request

DEFAULT_TRUSTED_PROXIES = "127.0.0.1,::1"
MAX_USER_AGENT_LENGTH = 256


class Caller(NamedTuple):
    """Who a session's tokens were last issued to, as ``GET /user/sessions`` shows it."""

    address: str
    user_agent: str


def parse_trusted_proxies(raw: str) -> frozenset[str]:
    """``"127.0.0.1, ::1"`` -> a set of addresses; ``"*"`` trusts every peer."""
    return frozenset(filter(None, (part.strip() for part in raw.split(","))))


def client_address(peer: str | None, forwarded_for: str | None, trusted: frozenset[str]) -> str:
    """The peer, or the last X-Forwarded-For hop when the peer is a trusted proxy."""
    peer = peer or "unknown"
    if forwarded_for and (peer in trusted or "*" in trusted):
        last_hop = forwarded_for.rsplit(",", 1)[-1].strip()
        if last_hop:
            return last_hop[:64]
    return peer


def request_client(request: Request, trusted: frozenset[str]) -> Caller:
    """Who is calling: the address (as :func:`client_address`) and the ``User-Agent``."""
    address = client_address(request.remote_addr, request.headers.get("X-Forwarded-For"), trusted)
    return Caller(address, request.headers.get("User-Agent", "")[:MAX_USER_AGENT_LENGTH])


AddressNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
ALL_ADDRESSES = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))


def parse_networks(raw: str) -> tuple[AddressNetwork, ...]:
    """``"127.0.0.1, ::1, 10.0.0.0/8"`` -> networks; ``"*"`` is every address; ValueError if bad."""
    parts = [part.strip() for part in raw.split(",") if part.strip()]
    if "*" in parts:
        return ALL_ADDRESSES
    networks = []
    for part in parts:
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(f"has {part!r}, not an IP address or network (or '*')") from None
    return tuple(networks)


def address_in(address: str, networks: tuple[AddressNetwork, ...]) -> bool:
    """Whether ``address`` (as a client address is logged: an IP, or "unknown") is in one of
    ``networks``; anything that is not an IP address is in none."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)
