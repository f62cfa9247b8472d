"""RTP/RTCP port pairs: which pairs of the configured range are free, and binding one.

Why apart from the relay: the SIP process allocates and binds every pair itself (a port must be
known the moment an SDP offer or answer names it, without a round trip to the media engine) and
hands the bound sockets to the engine; the in-process relay binds the same way.
"""

from __future__ import annotations

import errno
import socket
from collections import deque

__all__ = ["PortAllocator", "PortsExhaustedError", "RelayError", "bind_pair"]


class RelayError(Exception):
    """The relay cannot do what was asked (ports, sockets, a closed session, no engine)."""


class PortsExhaustedError(RelayError):
    """Every RTP/RTCP port pair of the configured range is in use."""


class PortAllocator:
    """Even RTP ports (RTCP on the odd port above) from an inclusive range, reused round-robin.

    A released pair goes to the back of the queue, so a stray late packet of an ended call is
    unlikely to reach the next call to get the same ports.
    """

    def __init__(self, port_min: int, port_max: int) -> None:
        if not 0 < port_min <= port_max <= 65535:
            raise ValueError(f"bad RTP port range {port_min}-{port_max}")
        self.port_min = port_min
        self.port_max = port_max
        first = port_min + (port_min & 1)
        self._free: deque[int] = deque(range(first, port_max, 2))
        self._used: set[int] = set()
        if not self._free:
            raise ValueError(f"RTP port range {port_min}-{port_max} holds no even/odd pair")

    @property
    def capacity(self) -> int:
        return len(self._free) + len(self._used)

    @property
    def available(self) -> int:
        return len(self._free)

    def allocate(self) -> int:
        """The RTP port of a free pair; `PortsExhaustedError` when there is none."""
        if not self._free:
            raise PortsExhaustedError(
                f"all {self.capacity} RTP port pairs of {self.port_min}-{self.port_max} are in use"
            )
        port = self._free.popleft()
        self._used.add(port)
        return port

    def release(self, port: int) -> None:
        """Give a pair back (a second release of the same pair is ignored)."""
        if port in self._used:
            self._used.remove(port)
            self._free.append(port)


def bind_pair(ports: PortAllocator, host: str) -> tuple[socket.socket, socket.socket, int]:
    """Bind the next free pair (non-blocking UDP sockets); pairs other programs hold are skipped.

    The pair stays allocated in `ports` until released; a skipped pair is released again (it may
    be free next time). `PortsExhaustedError` when no pair could be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    busy: list[int] = []
    try:
        for _ in range(ports.available):
            port = ports.allocate()
            sockets: list[socket.socket] = []
            try:
                for number in (port, port + 1):
                    sock = socket.socket(family, socket.SOCK_DGRAM)
                    sockets.append(sock)
                    sock.setblocking(False)
                    sock.bind((host, number))
            except OSError as exc:
                for sock in sockets:
                    sock.close()
                if exc.errno not in (errno.EADDRINUSE, errno.EACCES):
                    ports.release(port)
                    raise RelayError(f"cannot bind RTP port {port}: {exc}") from exc
                busy.append(port)
                continue
            return sockets[0], sockets[1], port
        if busy:
            raise PortsExhaustedError(
                f"no free RTP port pair of {ports.port_min}-{ports.port_max} could "
                f"be bound ({len(busy)} taken by other programs)"
            )
        ports.allocate()  # raises: every pair is ours and in use
        raise AssertionError("unreachable")
    finally:
        for port in busy:
            ports.release(port)
