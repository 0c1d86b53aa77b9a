"""Rest-hook endpoints and SSRF: where the server may send notifications.

An endpoint must be https, and its host must resolve to public addresses only: loopback,
private, link-local, multicast and reserved addresses are refused, unless the host (or its
address, or a CIDR block holding it) is allow-listed in configuration; allow-listed hosts may
also use plain http. The check runs at create time and again before every delivery, and the
delivery connects to the very address that was checked (the URL is pinned to it, with the
original Host header and TLS server name), so DNS rebinding cannot redirect it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
RESOLVE_CACHE_SECONDS = 30.0
# How the server's operator allows an endpoint (fhir_server.config reads the variable).
ALLOW_LIST_FORM = "comma-separated hosts, IP addresses or CIDR blocks, e.g. 127.0.0.1,10.0.0.0/8"


class EndpointRefused(Exception):
    """The endpoint may not be used (the message says why)."""


@dataclass(frozen=True)
class Target:
    """Where to send: the URL to connect to, and the headers / extensions that go with it."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    extensions: dict[str, str] = field(default_factory=dict)


def _internal(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_multicast
            or ip.is_reserved or ip.is_unspecified or not ip.is_global)


def _ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


class EndpointPolicy:
    def __init__(self, allowed_hosts: tuple[str, ...]) -> None:
        self.names: set[str] = set()
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in allowed_hosts:
            try:
                self.networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                self.names.add(entry.lower().rstrip("."))
        self._cache: dict[str, tuple[float, list[IPAddress]]] = {}

    def _allowed_ip(self, ip: IPAddress) -> bool:
        return any(ip in net for net in self.networks if net.version == ip.version)

    def allow_listed(self, host: str) -> bool:
        ip = _ip(host)
        return self._allowed_ip(ip) if ip is not None else host.lower().rstrip(".") in self.names

    async def _resolve(self, host: str, port: int) -> list[IPAddress]:
        cached = self._cache.get(host)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise EndpointRefused(f"the endpoint host '{host}' does not resolve ({exc})") from None
        ips = [ip for info in infos if (ip := _ip(str(info[4][0]))) is not None]
        if not ips:
            raise EndpointRefused(f"the endpoint host '{host}' does not resolve")
        self._cache[host] = (time.monotonic() + RESOLVE_CACHE_SECONDS, ips)
        return ips

    async def check(self, url: str) -> Target:
        """The target to connect to for `url`, or EndpointRefused."""
        parts = urlsplit(url)
        host = parts.hostname
        if parts.scheme not in ("http", "https") or not host:
            raise EndpointRefused("the endpoint must be an absolute http(s) URL")
        if parts.username or parts.password:
            raise EndpointRefused("the endpoint may not carry credentials; use channel.header")
        if self.allow_listed(host):
            return Target(url)
        if parts.scheme != "https":
            raise EndpointRefused(
                f"the endpoint must use https, unless its host '{host}' itself is allow-listed in "
                f"FHIR_SUBSCRIPTION_ALLOWED_HOSTS ({ALLOW_LIST_FORM})")
        port = parts.port or 443
        literal = _ip(host)
        ips = [literal] if literal is not None else await self._resolve(host, port)
        for ip in ips:
            if _internal(ip) and not self._allowed_ip(ip):
                raise EndpointRefused(
                    f"the endpoint host '{host}' is a loopback, private or link-local address "
                    f"and is not allow-listed in FHIR_SUBSCRIPTION_ALLOWED_HOSTS ({ALLOW_LIST_FORM})")
        if literal is not None:
            return Target(url)
        ip = ips[0]
        netloc = f"[{ip}]" if ip.version == 6 else str(ip)
        if parts.port:
            netloc += f":{parts.port}"
        pinned = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
        return Target(pinned, {"Host": parts.netloc}, {"sni_hostname": host})
