"""Request middleware: the client address (and channel) that audit records of a request
carry."""
from __future__ import annotations

import ipaddress
from functools import lru_cache

from django.conf import settings

from panel.services.audit import client_address, valid_address


@lru_cache(maxsize=8)
def _networks(proxies: tuple) -> tuple:
    return tuple(ipaddress.ip_network(p, strict=False) for p in proxies)


def _trusted(address: str | None, networks) -> bool:
    if address is None:
        return False
    ip = ipaddress.ip_address(address)
    return any(ip in net for net in networks)


def request_address(request) -> str | None:
    """The client's address: the peer (``REMOTE_ADDR``), unless the peer is one of
    ``HAKO_TRUSTED_PROXIES``; then the right-most ``X-Forwarded-For`` entry that is not a
    trusted proxy. Without trusted proxies the header is ignored: anyone can send it."""
    peer = valid_address(request.META.get("REMOTE_ADDR", ""))
    networks = _networks(tuple(getattr(settings, "HAKO_TRUSTED_PROXIES", ()) or ()))
    if not networks or not _trusted(peer, networks):
        return peer
    client = peer
    # Right to left: each trusted proxy appended the address it got the request from.
    for part in reversed(request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")[-20:]):
        hop = valid_address(part)
        if hop is None:
            break  # junk the proxy passed on from the client: trust nothing beyond it
        client = hop
        if not _trusted(hop, networks):
            break
    return client


class ClientAddressMiddleware:
    """Every audit record written while serving a request names the request's client
    address (panel.services.audit reads it), so services keep their signatures."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        with client_address(request_address(request), channel(request.path)):
            return self.get_response(request)


def channel(path: str) -> str:
    """The channel a request came through, by its URL (panel.urls mounts the APIs)."""
    if path.startswith("/api/billing/"):
        return "billing-api"
    if path.startswith("/api/"):
        return "api"
    return "web"
