"""Origins, client addresses and bots: what collect decides about the sender of a request."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from urllib.parse import urlsplit

from crawlerdetect import CrawlerDetect

__all__ = ["bot_reason", "canonical_ip", "client_ip", "normalize_origin", "truncate_ip"]

_crawlers = CrawlerDetect()


@lru_cache(maxsize=4096)
def normalize_origin(value: str) -> str | None:
    """``scheme://host[:port]`` in lower case, default ports dropped; None if it is not an origin."""
    try:
        parts = urlsplit(value.strip())
    except ValueError:  # "http://[oops": an unclosed IPv6 host
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        return None
    if parts.query or parts.fragment or parts.username:
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    default = {"http": 80, "https": 443}[parts.scheme]
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")


def client_ip(peer: str | None, forwarded_for: str | None, trusted_proxies: tuple[str, ...]) -> str | None:
    """The client's address: the peer, or the nearest untrusted hop of X-Forwarded-For when the
    peer is a configured proxy (headers from anyone else are ignored)."""
    if peer is None:
        return None
    if not trusted_proxies or not forwarded_for or not _is_trusted(peer, trusted_proxies):
        return peer
    for hop in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
        if not _is_trusted(hop, trusted_proxies):
            return hop if _is_address(hop) else None  # our proxy appends addresses: anything else is forged
    return peer


def _is_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _is_trusted(address: str, trusted: tuple[str, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(net, strict=False) for net in trusted)


@lru_cache(maxsize=65536)
def canonical_ip(address: str | None) -> str | None:
    """The address as PostgreSQL's ``inet`` stores it, or None when it is not one (a test client's or
    a Unix socket's peer): a visit is stored without an address rather than not at all."""
    if not address:
        return None
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return None


@lru_cache(maxsize=65536)
def truncate_ip(address: str | None) -> str | None:
    """IPv4 to its /24, IPv6 to its /48: enough for geography, not for a person."""
    if not address:
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False).network_address)


@lru_cache(maxsize=8192)
def _user_agent_bot(user_agent: str) -> str | None:
    if "HeadlessChrome" in user_agent or "PhantomJS" in user_agent:
        return "headless browser"
    if _crawlers.isCrawler(user_agent):
        return f"crawler: {_crawlers.getMatches() or 'user agent'}"[:200]
    return None


def bot_reason(user_agent: str | None, purpose: str | None) -> str | None:
    """Why a request looks automated, or None for a person's browser."""
    if purpose and "prefetch" in purpose.lower():
        return "prefetch"
    if not user_agent:
        return "no user agent"
    return _user_agent_bot(user_agent[:1000])
