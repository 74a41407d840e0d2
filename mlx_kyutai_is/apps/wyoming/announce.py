# Copyright © 2026 mlx-kyutai-is contributors
"""Zeroconf (mDNS) announcement, so Home Assistant discovers the server by itself, as
wyoming-faster-whisper's ``--zeroconf`` does (``_wyoming._tcp.local.``). Off by default; needs the
`zeroconf` extra (``pip install "mlx-kyutai-is[zeroconf]"``), imported only when announcing."""

import ipaddress
import socket
from dataclasses import dataclass

from ...errors import Error

SERVICE_TYPE = "_wyoming._tcp.local."
MDNS_GROUP = "224.0.0.251"


class AnnounceError(Error):
    """The server cannot be announced as asked (one line)."""


@dataclass(frozen=True)
class Announcement:
    """What would be announced: the service `name`, and the `address` and `port` to reach it at."""

    name: str
    address: str
    port: int

    @property
    def service_name(self) -> str:
        return f"{self.name}.{SERVICE_TYPE}"


def lan_address() -> str:
    """This machine's address on the network that carries multicast: the source address a UDP
    socket would use toward the mDNS group (connecting a UDP socket sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((MDNS_GROUP, 1))
        return s.getsockname()[0]


def announcement(host: str, port: int, name: str | None = None, find_address=lan_address) -> Announcement:
    """The announcement of a server listening on `host`:`port`.

    A wildcard host (0.0.0.0) is announced at this machine's network address; a loopback host is
    refused, as no other machine could reach it.
    """
    if host in ("", "0.0.0.0", "::"):
        address = find_address()
    else:
        try:
            address = socket.gethostbyname(host)
        except OSError as e:
            raise AnnounceError(f"--zeroconf: cannot resolve {host!r}: {e.strerror or e}") from None
    if ipaddress.ip_address(address).is_loopback:
        raise AnnounceError(
            f"--zeroconf: the server listens on {host} (loopback), which no other machine can reach: "
            "listen on the network, e.g. --uri tcp://0.0.0.0:10300"
        )
    return Announcement(name or f"mlx-kyutai-is-{socket.gethostname()}", address, port)


async def announce(a: Announcement):
    """Register `a` on the network; returns the `AsyncZeroconf` (its ``async_close()`` withdraws it)."""
    import zeroconf.asyncio as zc  # optional: the [zeroconf] extra

    info = zc.AsyncServiceInfo(SERVICE_TYPE, a.service_name, port=a.port, addresses=[socket.inet_aton(a.address)])
    aiozc = zc.AsyncZeroconf(interfaces=[a.address])
    await aiozc.async_register_service(info)
    return aiozc
