"""The SIP transport layer: UDP and TCP on one port, TLS on another, IPv4 or IPv6 (RFC 3261 §18,
RFC 3581, §26.3.1).

Why it is shaped like this:

- It sits directly on asyncio's ``DatagramProtocol`` and ``Protocol`` (no streams): a registrar
  doing thousands of requests a second cannot afford a task, a reader and a writer per connection,
  nor a copy of every packet on its way in. Nothing is logged per packet above DEBUG.
- One bad peer must never hurt another. Every datagram and every connection is handled inside its
  own ``try``: a garbage or oversize TCP stream closes that connection only, a malformed datagram is
  answered or dropped, and an exception raised by the ``on_message`` callback is logged, not raised.
- CRLF keep-alives (RFC 5626 §3.5.1): a double-CRLF ping on TCP is answered with a single CRLF pong;
  a datagram of nothing but CRLFs is ignored.
- Requests that arrive are stamped with ``received``/``rport`` on their top Via (RFC 3261 §18.2.1,
  RFC 3581 §4) before anyone sees them, so a response built from them with ``make_response`` already
  carries everything §18.2.2 needs to route it back, even through a NAT.
- TCP connections are kept in one table whatever their direction. A phone behind NAT that registered
  over TCP can only be reached on the connection it opened, so ``send_request`` reuses an inbound
  connection from the destination address before it opens a new one. Idle connections are closed
  after ``idle_timeout`` seconds without traffic, measured on the injected ``Clock``.
- UDP is never used for a message over ``MAX_UDP_MESSAGE`` bytes. RFC 3261 §18.1.1 asks a client to
  switch to TCP for large requests; this layer does not switch silently (the Via the caller wrote
  names the transport, and changing it here would break the transaction), so it raises
  ``MessageTooLargeError`` and the caller must choose TCP.
- TLS is TCP with a TLS session on top: the same connection table, framing, limits and reuse
  (a provider's requests arrive on the connection our REGISTER opened, and responses and our own
  requests go back on it). Connections we open verify the server (`sip_core.tls`): the context
  set for that destination with `set_tls_client` (a trunk's CA file), else the system's trusted
  authorities, and the name we connected to, also sent as SNI. A refused certificate fails the
  connection like a refused connect, with the reason ("certificate verify failed: ..."). The
  TLS listener (``tls_context`` with ``tls_port``) is optional: it needs a certificate.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import functools
import ipaddress
import logging
import socket
import ssl
import struct
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from sip_core.clock import Clock, LoopClock, TimerHandle
from sip_core.framing import Keepalive, StreamFramer
from sip_core.message import ParseError, Request, Response, Via, make_response, parse_message
from sip_core.tls import DEFAULT_TLS_PORT, client_context, failure_reason

_LOGGER = logging.getLogger(__name__)

DEFAULT_SIP_PORT: Final = 5060
MAX_UDP_MESSAGE: Final = 65_000
"""The largest message sent as one UDP datagram; anything larger must go over TCP."""
DEFAULT_IDLE_TIMEOUT: Final = 600.0
"""Seconds without traffic after which a TCP connection is closed (either direction)."""
DEFAULT_CONNECT_TIMEOUT: Final = 10.0
MAX_WRITE_BUFFER: Final = 4 * 1024 * 1024
"""A peer that stops reading is cut off once this much output is queued for it."""
MAX_CONNECTIONS_PER_SOURCE: Final = 32
"""Inbound TCP connections one source address may hold open; the next is closed at once (a phone
needs one, a few phones behind one NAT a few; a peer opening hundreds only ties up sockets)."""
DEFAULT_MESSAGE_TIMEOUT: Final = 32.0
"""Seconds a TCP message, once begun, may take to arrive whole (64*T1, a transaction's life);
a peer that trickles a message and never finishes it is cut off."""
_PORT_ATTEMPTS: Final = 20
_SOCKET_BUFFER: Final = 1024 * 1024
_UDP_RECEIVE_SIZE: Final = 256 * 1024  # what asyncio's datagram transport reads at most, too
_UDP_DRAIN: Final = 64
"""Datagrams read per event-loop wake-up beyond the one asyncio delivers (see _UdpProtocol)."""
_PONG: Final = b"\r\n"
_PING: Final = b"\r\n\r\n"


class TransportKind(StrEnum):
    """The transports callflip speaks; the value is the Via sent-protocol transport token."""

    UDP = "UDP"
    TCP = "TCP"
    TLS = "TLS"

    @property
    def reliable(self) -> bool:
        """A stream (TCP or TLS): no retransmissions, responses on the request's connection."""
        return self is not TransportKind.UDP


@dataclass(frozen=True, slots=True)
class Address:
    """An IP address (or host name) and port. IPv6 hosts are kept without brackets."""

    host: str
    port: int

    def __str__(self) -> str:
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Source:
    """Where a message came from, and so how to answer it.

    ``identity`` is the device a trusted front end already authenticated the message as (a
    registration worker process of the runner, see `sip_core.workers`); it is set only by
    `TransportLayer.receive_forwarded`, never from anything in the message itself.
    """

    kind: TransportKind
    remote: Address
    local: Address
    connection_id: int | None
    identity: str | None = None


class TransportError(Exception):
    """The transport could not do what was asked: bind, connect or send."""


class CertificateError(TransportError):
    """A TLS server's certificate was refused (untrusted, expired, or for another name);
    ``detail`` says why, as OpenSSL put it, and where."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"certificate verify failed: {detail}")
        self.detail = detail


class MessageTooLargeError(TransportError):
    """A message too large for one UDP datagram; the caller must send it over TCP."""


MessageCallback = Callable[[Request | Response, Source], None]
DatagramFilter = Callable[[bytes, Source], bool]
"""Sees each UDP datagram before it is parsed; returns True when it took the datagram."""
ResponseRoute = tuple[str, str, int, int | None, tuple[str, int] | None]
"""Where a response goes (`TransportLayer.response_route`): transport ("UDP"/"TCP"/"TLS"), host,
port, then for TCP and TLS the request's connection id and the ``received``/``rport`` address,
else None.
Plain strings, not `TransportKind` members, so that the garbage collector can stop tracking it."""
_UDP: Final = "UDP"
_TCP: Final = "TCP"
_TLS: Final = "TLS"
FailureCallback = Callable[[Exception], None]


# Hosts repeat from packet to packet (the same phones, the same proxy): the IPv6 parsing below is
# remembered rather than redone for every message. Bounded, so a flood of names cannot grow it.
@functools.lru_cache(maxsize=1024)
def _bare_host(host: str) -> str:
    """The host as sockets want it: IPv6 without brackets, IP literals in canonical form."""
    if host.startswith("["):
        host = host[1:-1] if host.endswith("]") else host[1:]
    if ":" in host:
        try:
            ip = ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            return host
        mapped = ip.ipv4_mapped
        return str(mapped) if mapped is not None else ip.compressed
    return host.lower()


@functools.lru_cache(maxsize=1024)
def _is_ip_literal(host: str) -> bool:
    """Whether ``host`` is an IP address (no name to resolve); asked for every datagram sent."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _same_host(via_host: str, source_ip: str) -> bool:
    """Whether a Via sent-by host names the address a packet came from (RFC 3261 §18.2.1)."""
    if via_host == source_ip:
        return True
    return _bare_host(via_host) == source_ip


def _stamp_via(request: Request, remote: Address) -> None:
    """Fill ``received`` and ``rport`` on the top Via of a request that just arrived.

    ``received`` is added when the sent-by host is not the packet's source address (§18.2.1), and
    always when the client asked for ``rport``: RFC 3581 §4 wants both then, so that the response
    can find its way back through a NAT. The Via is changed in place; the message's headers hold
    the parsed object, so serialising the request (or a response copied from it) shows the change.
    """
    via = request.top_via
    params = via.params
    if "rport" in params:
        if params["rport"] is None:
            params["rport"] = str(remote.port)
        params["received"] = remote.host
    elif not _same_host(via.host, remote.host):
        params["received"] = remote.host


_SO_ATTACH_REUSEPORT_CBPF: Final = getattr(socket, "SO_ATTACH_REUSEPORT_CBPF", 51)
_BPF_LD_W_ABS: Final = 0x20
_BPF_JEQ_K: Final = 0x15
_BPF_MOD_K: Final = 0x94
_BPF_ADD_K: Final = 0x04
_BPF_RET_A: Final = 0x16
_BPF_RET_K: Final = 0x06
_SKF_AD_RXHASH: Final = -0x1000 + 32  # SKF_AD_OFF + SKF_AD_RXHASH: the packet's flow hash


def _reuse_port_option() -> int:
    """SO_REUSEPORT, or an OSError saying the platform has none (caught as a bind failure)."""
    option = getattr(socket, "SO_REUSEPORT", None)
    if option is None:
        raise OSError(
            errno.ENOPROTOOPT,
            "this platform cannot share a UDP port between processes (no SO_REUSEPORT): "
            "set sip.workers to 0",
        )
    return int(option)


def _register_steering_program(workers: int) -> bytes:
    """The classic BPF program of `TransportLayer.steer_registers`, as struct sock_filter[]."""

    def op(code: int, jt: int, jf: int, k: int) -> bytes:
        return struct.pack("HBBI", code, jt, jf, k & 0xFFFFFFFF)

    return b"".join(
        (
            op(_BPF_LD_W_ABS, 0, 0, 0),  # A = first 4 bytes of the UDP payload
            op(_BPF_JEQ_K, 1, 0, int.from_bytes(b"REGI")),
            op(_BPF_RET_K, 0, 0, 0),  # not a REGISTER: socket 0
            op(_BPF_LD_W_ABS, 0, 0, _SKF_AD_RXHASH),
            op(_BPF_MOD_K, 0, 0, workers),
            op(_BPF_ADD_K, 0, 0, 1),
            op(_BPF_RET_A, 0, 0, 0),
        )
    )


def _response_port(via: Via) -> int:
    if via.port is not None:
        return via.port
    return DEFAULT_TLS_PORT if via.transport.upper() == _TLS else DEFAULT_SIP_PORT


class _UdpProtocol(asyncio.DatagramProtocol):
    """Hands datagrams to the layer; ignores CRLF keep-alives (RFC 5626 §3.5.1 is TCP-only).

    asyncio's datagram transport reads one datagram per readiness event, so under load every
    request costs a whole turn of the event loop (a poll system call and the callback machinery),
    which is a large share of a registration. After the datagram asyncio hands over, the socket is
    read directly until it is empty, at most ``_UDP_DRAIN`` more, then the loop gets its turn again
    (timers and TCP are not starved). The order of datagrams is the socket's either way.
    """

    def __init__(self, layer: TransportLayer, sock: socket.socket) -> None:
        self._layer = layer
        self._sock = sock

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self._receive(data, addr)
        layer = self._layer
        recvfrom = self._sock.recvfrom
        for _ in range(_UDP_DRAIN):
            if layer._udp is None:  # stopped by a handler
                return
            try:
                data, addr = recvfrom(_UDP_RECEIVE_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.error_received(exc)
                return
            self._receive(data, addr)

    def _receive(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if not data or (data[0] in (13, 10) and not data.strip(b"\r\n")):
            return
        layer = self._layer
        try:
            host: str = addr[0]
            remote = Address(_bare_host(host) if ":" in host else host, addr[1])
            source = Source(TransportKind.UDP, remote, layer.local_address, None)
            if layer.on_datagram is not None and layer.on_datagram(data, source):
                return
            layer._handle_datagram(data, source)
        except Exception:
            _LOGGER.exception("Error handling a UDP datagram from %s", addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (port unreachable after a sendto) land here; they are routine on UDP.
        _LOGGER.debug("UDP error: %s", exc)


class _Connection(asyncio.Protocol):
    """One TCP or TLS connection, inbound or outbound, with its own framer and idle timer."""

    def __init__(
        self,
        layer: TransportLayer,
        connection_id: int,
        remote: Address | None,
        kind: TransportKind = TransportKind.TCP,
    ) -> None:
        self._layer = layer
        self.id = connection_id
        self.kind = kind
        self.remote = remote if remote is not None else Address("", 0)
        self.local = layer.local_address
        self.transport: asyncio.Transport | None = None
        self.framer = StreamFramer()
        self.last_activity = layer.clock.monotonic()
        self.closed = False
        self.aliases: set[Address] = set()
        self._pending: list[bytes] = []
        self._failure_callbacks: list[FailureCallback] = []
        self._idle_timer: TimerHandle | None = None
        self._source: Source | None = None
        self.inbound = remote is None  # accepted by our listening socket
        self._partial_since: float | None = None  # when the unfinished message began
        self._message_timer: TimerHandle | None = None

    # -- asyncio.Protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("sockname")
        if peer:
            self.remote = Address(_bare_host(peer[0]), int(peer[1]))
        if sock:
            self.local = Address(_bare_host(sock[0]), int(sock[1]))
        self._source = Source(self.kind, self.remote, self.local, self.id)
        self._layer._register(self)
        if self.closed:  # stop() or a failure happened while we were connecting
            transport.abort()
            return
        if self.inbound and self._layer._too_many_from(self.remote.host):
            self.close(abort=True)
            return
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            transport.write(data)
        self._failure_callbacks.clear()
        self.last_activity = self._layer.clock.monotonic()
        self._arm_idle_timer(self._layer.idle_timeout)

    def data_received(self, data: bytes) -> None:
        self.last_activity = self._layer.clock.monotonic()
        try:
            items = self.framer.feed(data)
        except ParseError as exc:
            _LOGGER.info("Closing TCP connection from %s: %s", self.remote, exc.reason)
            self.close(abort=True)
            return
        except Exception:
            _LOGGER.exception("Closing TCP connection from %s after a framing error", self.remote)
            self.close(abort=True)
            return
        self._track_partial()
        source = self._source
        assert source is not None
        for item in items:
            if self.closed:
                return
            if item is Keepalive.PING:
                self.write(_PONG)
            elif item is Keepalive.PONG:
                continue
            else:
                try:
                    self._layer._handle_message(item, source)
                except Exception:
                    _LOGGER.exception("Error handling a TCP message from %s", self.remote)

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            _LOGGER.debug("TCP connection %s to %s lost: %s", self.id, self.remote, exc)
        self.closed = True
        self._cancel_idle_timer()
        self._cancel_message_timer()
        self._layer._unregister(self)

    # -- used by the layer ------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        """Usable for sending: not closed nor closing (a connection still opening counts)."""
        transport = self.transport
        return not self.closed and (transport is None or not transport.is_closing())

    def write(self, data: bytes, on_failure: FailureCallback | None = None) -> None:
        if self.closed:
            raise TransportError(f"TCP connection to {self.remote} is closed")
        transport = self.transport
        if transport is None:  # still connecting
            self._pending.append(data)
            if on_failure is not None:
                self._failure_callbacks.append(on_failure)
            return
        transport.write(data)
        self.last_activity = self._layer.clock.monotonic()
        if transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            _LOGGER.info("Closing TCP connection to %s: it stopped reading", self.remote)
            self.close(abort=True)

    def close(self, *, abort: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        self._cancel_idle_timer()
        self._cancel_message_timer()
        if self.transport is not None:
            if abort:
                self.transport.abort()
            else:
                self.transport.close()
        else:
            self._layer._unregister(self)

    def fail(self, error: TransportError) -> None:
        """Connecting failed: drop what was queued and tell whoever queued it."""
        self.closed = True
        self._pending.clear()
        callbacks, self._failure_callbacks = self._failure_callbacks, []
        self._layer._unregister(self)
        for callback in callbacks:
            try:
                callback(error)
            except Exception:
                _LOGGER.exception("Error in a transport failure callback")

    # -- unfinished messages ---------------------------------------------------------------------

    def _track_partial(self) -> None:
        """Start the clock when a message begins, stop it when the buffer is empty again."""
        if not self.framer.buffered:
            self._partial_since = None
            self._cancel_message_timer()
        elif self._partial_since is None:
            self._partial_since = self.last_activity
            if self._message_timer is None:
                timeout = self._layer.message_timeout
                self._message_timer = self._layer.clock.call_later(timeout, self._check_partial)

    def _cancel_message_timer(self) -> None:
        if self._message_timer is not None:
            self._message_timer.cancel()
            self._message_timer = None

    def _check_partial(self) -> None:
        self._message_timer = None
        if self.closed or self._partial_since is None:
            return
        timeout = self._layer.message_timeout
        waited = self._layer.clock.monotonic() - self._partial_since
        if waited >= timeout:
            _LOGGER.info(
                "Closing TCP connection from %s: a message begun %.0f s ago is still unfinished",
                self.remote,
                waited,
            )
            self.close(abort=True)
        else:
            self._message_timer = self._layer.clock.call_later(
                timeout - waited, self._check_partial
            )

    # -- idle timeout ---------------------------------------------------------------------------

    def _arm_idle_timer(self, delay: float) -> None:
        self._idle_timer = self._layer.clock.call_later(delay, self._check_idle)

    def _cancel_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _check_idle(self) -> None:
        # One timer per connection, re-armed lazily: traffic only updates a float, never a timer.
        self._idle_timer = None
        if self.closed:
            return
        timeout = self._layer.idle_timeout
        idle = self._layer.clock.monotonic() - self.last_activity
        if idle >= timeout:
            _LOGGER.debug("Closing TCP connection %s to %s: idle", self.id, self.remote)
            self.close()
        else:
            self._arm_idle_timer(timeout - idle)


class TransportLayer:
    """UDP and TCP on one ``host:port``, TLS on ``tls_port`` when given a server context;
    delivers parsed messages to ``on_message``.

    ``local_address`` (and ``tls_address``) are valid after ``start()`` (with the real port when
    0 was asked for).
    """

    def __init__(
        self,
        host: str,
        port: int,
        on_message: MessageCallback,
        *,
        clock: Clock | None = None,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        message_timeout: float = DEFAULT_MESSAGE_TIMEOUT,
        max_connections_per_source: int = MAX_CONNECTIONS_PER_SOURCE,
        reuse_port: bool = False,
        tcp: bool = True,
        on_datagram: DatagramFilter | None = None,
        tls_context: ssl.SSLContext | None = None,
        tls_port: int = DEFAULT_TLS_PORT,
    ) -> None:
        self.host = _bare_host(host) if host else "0.0.0.0"
        self.port = port
        self.on_message = on_message
        # Several processes sharing the UDP port (the runner's registration workers): the kernel
        # spreads datagrams over the sockets of the group, see `steer_registers`.
        self.reuse_port = reuse_port
        self.tcp = tcp
        self.on_datagram = on_datagram
        self._clock = clock
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        self.message_timeout = message_timeout
        self.max_connections_per_source = max_connections_per_source
        self._inbound_by_host: dict[str, int] = {}
        self._refusing: set[str] = set()  # hosts told about the cap since they last had none
        self.local_address = Address(self.host, port)
        self._udp: asyncio.DatagramTransport | None = None
        self._server: asyncio.Server | None = None
        self._connections: dict[int, _Connection] = {}
        self._by_remote: dict[Address, _Connection] = {}
        self._next_connection_id = 1
        self._tasks: set[asyncio.Task[None]] = set()
        self._running = False
        self._family = socket.AF_INET
        self.tls_context = tls_context
        self.tls_port = tls_port
        self.tls_address: Address | None = None
        self._tls_server: asyncio.Server | None = None
        self._tls_clients: dict[Address, ssl.SSLContext] = {}
        self._default_tls_client: ssl.SSLContext | None = None

    @property
    def clock(self) -> Clock:
        if self._clock is None:
            self._clock = LoopClock()
        return self._clock

    @property
    def connection_count(self) -> int:
        """Open (or opening) TCP connections, both directions."""
        return len(self._connections)

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind UDP and TCP on the same port (port 0: one free for both; UDP only without tcp).

        Raises ``TransportError`` naming the address, port and transport when it is in use.
        """
        if self._running:
            raise TransportError("transport already started")
        loop = asyncio.get_running_loop()
        family = self._family = await self._resolve_family(loop)
        if self.tcp:
            udp_sock, tcp_sock = self._bind_both(family)
        else:
            udp_sock, tcp_sock = self._bind(family, socket.SOCK_DGRAM, self.port), None
        port = int(udp_sock.getsockname()[1])
        self.local_address = Address(self.host, port)
        tls_sock = None
        if self.tls_context is not None:
            try:
                tls_sock = self._bind(family, socket.SOCK_STREAM, self.tls_port, name="tls")
            except TransportError:
                udp_sock.close()
                if tcp_sock is not None:
                    tcp_sock.close()
                raise
            self.tls_address = Address(self.host, int(tls_sock.getsockname()[1]))
        self._running = True  # before serving: a connection may be accepted during the awaits
        try:
            transport, _protocol = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self, udp_sock), sock=udp_sock
            )
            self._udp = transport
            if tcp_sock is not None:
                self._server = await loop.create_server(
                    self._accept, sock=tcp_sock, backlog=1024, start_serving=True
                )
            if tls_sock is not None:
                self._tls_server = await loop.create_server(
                    self._accept_tls,
                    sock=tls_sock,
                    backlog=1024,
                    ssl=self.tls_context,
                    ssl_handshake_timeout=self.connect_timeout,
                    start_serving=True,
                )
        except BaseException:
            self._running = False
            udp_sock.close()
            for sock in (tcp_sock, tls_sock):
                if sock is not None:
                    sock.close()
            if self._udp is not None:
                self._udp.close()
                self._udp = None
            if self._server is not None:
                self._server.close()
                self._server = None
            raise
        _LOGGER.debug(
            "SIP transport listening on %s (%s)%s",
            self.local_address,
            "UDP and TCP" if tcp_sock is not None else "UDP",
            f", TLS on {self.tls_address}" if self.tls_address is not None else "",
        )

    async def stop(self) -> None:
        """Close the listeners and every connection; the port is free again when this returns."""
        self._running = False
        for task in list(self._tasks):
            task.cancel()
        for connection in list(self._connections.values()):
            connection.close(abort=True)
        self._connections.clear()
        self._by_remote.clear()
        self._inbound_by_host.clear()
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        for attribute in ("_server", "_tls_server"):
            server = getattr(self, attribute)
            if server is not None:
                setattr(self, attribute, None)
                server.close()
                await server.wait_closed()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        # Let the transports run their close callbacks so the sockets are really released.
        await asyncio.sleep(0)

    async def _resolve_family(self, loop: asyncio.AbstractEventLoop) -> socket.AddressFamily:
        try:
            infos = await loop.getaddrinfo(
                self.host, None, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE
            )
        except OSError as exc:
            raise TransportError(f"cannot listen on {self.host!r}: {exc}") from exc
        family = infos[0][0]
        if not _is_ip_literal(self.host):
            self.host = str(infos[0][4][0])
        return family

    def _bind_both(self, family: socket.AddressFamily) -> tuple[socket.socket, socket.socket]:
        """Bind UDP, then TCP on the same port; with port 0, retry when TCP finds it taken."""
        attempts = _PORT_ATTEMPTS if self.port == 0 else 1
        for attempt in range(1, attempts + 1):
            udp_sock = self._bind(family, socket.SOCK_DGRAM, self.port)
            try:
                return udp_sock, self._bind(family, socket.SOCK_STREAM, udp_sock.getsockname()[1])
            except TransportError:
                udp_sock.close()
                if attempt == attempts:
                    raise
        raise AssertionError("unreachable")

    def _bind(
        self,
        family: socket.AddressFamily,
        kind: socket.SocketKind,
        port: int,
        *,
        name: str | None = None,
    ) -> socket.socket:
        name = name or ("udp" if kind == socket.SOCK_DGRAM else "tcp")
        where = f"{Address(self.host, port)}/{name}"
        sock = socket.socket(family, kind)
        try:
            if kind == socket.SOCK_STREAM:
                # Lets a restarted PBX bind again while old connections sit in TIME_WAIT; it does
                # not let two listeners share the port on Linux. Never set on UDP: there it would.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            else:
                for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                    with contextlib.suppress(OSError):  # a smaller buffer still works
                        sock.setsockopt(socket.SOL_SOCKET, option, _SOCKET_BUFFER)
                if self.reuse_port:
                    # Only sockets of the same user that set it too can join the group; a
                    # foreign listener on the port still makes this bind fail.
                    sock.setsockopt(socket.SOL_SOCKET, _reuse_port_option(), 1)
            sock.setblocking(False)
            sock.bind((self.host, port))
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise TransportError(f"{where} is already in use") from exc
            raise TransportError(f"cannot bind {where}: {exc.strerror or exc}") from exc
        return sock

    def _accept(self) -> _Connection:
        return self._new_connection(None)

    def _accept_tls(self) -> _Connection:
        return self._new_connection(None, TransportKind.TLS)

    def set_tls_client(self, destination: Address, context: ssl.SSLContext | None) -> None:
        """Connect to ``destination`` over TLS with ``context`` (a trunk's CA file, or no
        verification); None: back to the default, the system's trusted authorities.

        Connections already open keep the context they were made with; close them to apply a
        change (`close_connections_to`).
        """
        key = Address(_bare_host(destination.host), destination.port)
        if context is None:
            self._tls_clients.pop(key, None)
        else:
            self._tls_clients[key] = context

    def close_connections_to(self, destination: Address) -> None:
        """Close the connection we hold to ``destination`` (as it was named when sent to)."""
        connection = self._by_remote.get(Address(_bare_host(destination.host), destination.port))
        if connection is not None:
            connection.close()

    def ping(self, destination: Address, kind: TransportKind) -> bool:
        """Send a CRLF keep-alive (RFC 5626 §3.5.1) on the open ``kind`` connection to
        ``destination``; False when there is none (nothing is opened for a ping).

        Keeps a connection that only the far end would use (a trunk's, for the provider's
        calls) from being closed as idle, here and at the far end, and any NAT on the way open.
        """
        key = Address(_bare_host(destination.host), destination.port)
        connection = self._by_remote.get(key)
        if (
            connection is None
            or not connection.is_open
            or connection.kind is not kind
            or connection.transport is None
        ):
            return False
        connection.write(_PING)
        return True

    def _tls_client_for(self, target: Address) -> ssl.SSLContext:
        context = self._tls_clients.get(target)
        if context is not None:
            return context
        if self._default_tls_client is None:
            self._default_tls_client = client_context()
        return self._default_tls_client

    def steer_registers(self, workers: int) -> None:
        """Send REGISTER datagrams to the ``workers`` sockets that joined the port after ours.

        With ``reuse_port`` the kernel picks one socket of the group per datagram. A classic BPF
        program attached to the group makes the pick: a datagram whose payload starts with
        "REGI" goes to socket 1 + (flow hash mod ``workers``), so one client stays with one
        worker; everything else (calls, responses, keep-alives) to socket 0, this one. It is an
        optimisation only: wherever a datagram lands it is handled correctly (a worker forwards
        what it does not handle, and this layer handles REGISTER itself). An index the group
        does not have (a worker that exited) makes the kernel fall back to its own hash.
        """
        if not self.reuse_port or self._udp is None or workers < 1:
            raise TransportError("steering needs a started transport with reuse_port")
        sock = self._udp.get_extra_info("socket")
        program = _register_steering_program(workers)
        # struct sock_fprog {unsigned short len; struct sock_filter *filter;}
        buffer = ctypes.create_string_buffer(program)
        fprog = struct.pack("HL", len(program) // 8, ctypes.addressof(buffer))
        try:
            sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_REUSEPORT_CBPF, fprog)
        except OSError as exc:
            raise TransportError(f"cannot steer REGISTER to the workers: {exc}") from exc

    def join_multicast(self, group: str, interface: str) -> None:
        """Have the UDP socket also receive datagrams sent to an IPv4 multicast ``group`` (joined
        on the interface with address ``interface``; the wildcard lets the kernel choose).

        For plug-and-play discovery when this socket holds the wildcard address on the group's
        port, so no other socket can bind it. Raises OSError when the group cannot be joined.
        """
        if self._udp is None or self._family != socket.AF_INET:
            raise OSError(errno.EAFNOSUPPORT, "needs a started IPv4 UDP transport")
        sock = self._udp.get_extra_info("socket")
        local = "0.0.0.0" if interface in ("", "0.0.0.0") else interface
        sock.setsockopt(
            socket.IPPROTO_IP,
            socket.IP_ADD_MEMBERSHIP,
            socket.inet_aton(group) + socket.inet_aton(local),
        )

    def receive_forwarded(self, data: bytes, remote: Address, identity: str | None) -> None:
        """Handle a UDP datagram that another process of ours received on our port.

        ``identity``: the device that process authenticated the request as (see `Source`).
        Responses go out of this layer's own socket, which has the same local address.
        """
        self._handle_datagram(
            data, Source(TransportKind.UDP, remote, self.local_address, None, identity)
        )

    # -- receiving ----------------------------------------------------------------------------

    def _handle_datagram(self, data: bytes, source: Source) -> None:
        try:
            message = parse_message(data)
        except ParseError as exc:
            self._reject(exc, source)
            return
        self._handle_message(message, source)

    def _handle_message(self, message: Request | Response | bytes, source: Source) -> None:
        """Parse (if framed bytes), stamp the Via of requests and hand the message upwards."""
        if isinstance(message, bytes | bytearray | memoryview):
            try:
                message = parse_message(bytes(message))
            except ParseError as exc:
                self._reject(exc, source)
                return
        if isinstance(message, Request):
            try:
                _stamp_via(message, source.remote)
            except ValueError as exc:  # ParseError included: the Via is parsed lazily
                _LOGGER.debug("Dropping a request from %s: bad Via: %s", source.remote, exc)
                return
        try:
            self.on_message(message, source)
        except Exception:
            _LOGGER.exception(
                "Error in the SIP message handler for a message from %s", source.remote
            )

    def _reject(self, error: ParseError, source: Source) -> None:
        """Answer an unparseable request statelessly when we can, else drop it."""
        basis = error.basis
        if error.status is None or basis is None or basis.method == "ACK":
            _LOGGER.debug("Dropping a message from %s: %s", source.remote, error.reason)
            return
        _LOGGER.debug(
            "Rejecting a request from %s: %s %s", source.remote, error.status, error.reason
        )
        try:
            _stamp_via(basis, source.remote)
            self.send_response(make_response(basis, error.status, error.reason), source)
        except (ParseError, TransportError) as exc:
            _LOGGER.debug("Could not answer a bad request from %s: %s", source.remote, exc)

    # -- sending ------------------------------------------------------------------------------

    def send_request(
        self,
        request: Request,
        destination: Address,
        kind: TransportKind,
        *,
        on_failure: FailureCallback | None = None,
    ) -> None:
        """Send a request to ``destination`` over ``kind``; the Via is left as the caller wrote it.

        TCP reuses any open connection to the destination, including one the destination opened to
        us (a phone behind NAT), and otherwise opens one. A TCP connection that cannot be opened is
        reported to ``on_failure`` (later, since connecting is asynchronous); failures that can be
        seen at once raise ``TransportError``. Over UDP a message larger than ``MAX_UDP_MESSAGE``
        raises ``MessageTooLargeError``: send it over TCP instead (RFC 3261 §18.1.1).
        """
        self._send(request.to_bytes(), destination, kind, on_failure)

    def send_response(self, response: Response, source: Source | None = None) -> None:
        """Send a response where RFC 3261 §18.2.2 (and RFC 3581 §4) say, from its top Via.

        Reliable: the connection the request came on if it is still open, else a connection to
        ``received`` (or the sent-by host) and the sent-by port. Unreliable: ``maddr``, else
        ``received`` with ``rport`` (or the sent-by port), else the sent-by host and port.
        """
        route = self.response_route(response, source)
        self.send_response_bytes(response.to_bytes(), route)

    def response_route(self, response: Response, source: Source | None = None) -> ResponseRoute:
        """Where `send_response` would send ``response`` (§18.2.2), as a plain tuple.

        A server transaction keeps this and the serialised response instead of the parsed one,
        to answer retransmissions for 32 s: tuples of strings and numbers, and bytes, are not
        traversed by the garbage collector. For TCP the route keeps every step of the choice
        (the request's connection, the ``received``/``rport`` one, then a connection to the
        sent-by port), made again at each send because connections come and go.
        """
        via = response.top_via
        if source is not None:
            kind = source.kind
        else:
            try:
                kind = TransportKind(via.transport.upper())
            except ValueError as exc:
                raise TransportError(f"cannot send a response over {via.transport}") from exc
        params = via.params
        received = params.get("received")
        rport = params.get("rport")
        if kind.reliable:
            connection_id = source.connection_id if source is not None else None
            alias = (
                (_bare_host(received), int(rport))
                if received and rport and rport.isdigit()
                else None
            )
            name = _TLS if kind is TransportKind.TLS else _TCP
            return (name, received or via.host, _response_port(via), connection_id, alias)
        maddr = params.get("maddr")
        if maddr:
            return (_UDP, maddr, _response_port(via), None, None)
        if received:
            port = int(rport) if rport and rport.isdigit() else _response_port(via)
            return (_UDP, received, port, None, None)
        return (_UDP, via.host, _response_port(via), None, None)

    def send_response_bytes(self, data: bytes, route: ResponseRoute) -> None:
        """Send an already serialised response along a route from `response_route`."""
        kind, host, port, connection_id, alias = route
        if kind != _UDP:
            if connection_id is not None:
                connection = self._connections.get(connection_id)
                if connection is not None and connection.is_open:
                    connection.write(data)
                    return
            if alias is not None:
                # The client's own connection, when the request's source was not passed in.
                connection = self._by_remote.get(Address(*alias))
                if connection is not None and connection.is_open:
                    connection.write(data)
                    return
            self._send(data, Address(host, port), TransportKind(kind), None)
            return
        self._send(data, Address(host, port), TransportKind.UDP, None)

    def _send(
        self,
        data: bytes,
        destination: Address,
        kind: TransportKind,
        on_failure: FailureCallback | None,
    ) -> None:
        if not self._running:
            raise TransportError("transport is not running")
        host = _bare_host(destination.host)
        if kind is TransportKind.UDP:
            if len(data) > MAX_UDP_MESSAGE:
                raise MessageTooLargeError(
                    f"a {len(data)}-byte message is too large for UDP (limit {MAX_UDP_MESSAGE}); "
                    "send it over TCP"
                )
            udp = self._udp
            assert udp is not None
            if _is_ip_literal(host):
                if self._family == socket.AF_INET6 and ":" not in host:
                    host = "::ffff:" + host  # an IPv4 peer of a dual-stack socket
                udp.sendto(data, (host, destination.port))
            else:
                self._spawn(self._resolve_and_send(data, host, destination.port, on_failure))
            return
        if not isinstance(kind, TransportKind) or not kind.reliable:
            raise TransportError(f"unsupported transport {kind}")
        target = Address(host, destination.port)
        connection = self._by_remote.get(target)
        if connection is None or not connection.is_open or connection.kind is not kind:
            connection = self._connect(target, kind)
        connection.write(data, on_failure)

    async def _resolve_and_send(
        self, data: bytes, host: str, port: int, on_failure: FailureCallback | None
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except OSError as exc:
            _LOGGER.info("Cannot resolve %s: %s", host, exc)
            if on_failure is not None:
                on_failure(TransportError(f"cannot resolve {host}: {exc}"))
            return
        if self._udp is not None:
            self._udp.sendto(data, infos[0][4][:2])

    # -- the connection table -----------------------------------------------------------------

    def _new_connection(
        self, remote: Address | None, kind: TransportKind = TransportKind.TCP
    ) -> _Connection:
        connection = _Connection(self, self._next_connection_id, remote, kind)
        self._next_connection_id += 1
        return connection

    def _register(self, connection: _Connection) -> None:
        if not self._running:
            connection.closed = True
            return
        self._connections[connection.id] = connection
        self._alias(connection, connection.remote)
        if connection.inbound:
            host = connection.remote.host
            self._inbound_by_host[host] = self._inbound_by_host.get(host, 0) + 1

    def _too_many_from(self, host: str) -> bool:
        """Whether an inbound connection just registered is one more than ``host`` may hold."""
        count = self._inbound_by_host.get(host, 0)
        if count <= self.max_connections_per_source:
            return False
        if host not in self._refusing:
            self._refusing.add(host)  # one line per episode, not one per connection
            _LOGGER.info(
                "Refusing TCP connections from %s beyond %d at once",
                host,
                self.max_connections_per_source,
            )
        return True

    def _alias(self, connection: _Connection, address: Address) -> None:
        connection.aliases.add(address)
        self._by_remote[address] = connection

    def _unregister(self, connection: _Connection) -> None:
        if self._connections.pop(connection.id, None) is not None and connection.inbound:
            host = connection.remote.host
            left = self._inbound_by_host.get(host, 0) - 1
            if left > 0:
                self._inbound_by_host[host] = left
            else:
                self._inbound_by_host.pop(host, None)
                self._refusing.discard(host)
        for address in connection.aliases:
            if self._by_remote.get(address) is connection:
                del self._by_remote[address]
        connection.aliases.clear()

    def _connect(self, target: Address, kind: TransportKind = TransportKind.TCP) -> _Connection:
        connection = self._new_connection(target, kind)
        self._connections[connection.id] = connection
        self._alias(connection, target)
        self._spawn(self._open(connection, target))
        return connection

    async def _open(self, connection: _Connection, target: Address) -> None:
        loop = asyncio.get_running_loop()
        local_addr = None if self.host in ("0.0.0.0", "::") else (self.host, 0)
        name = connection.kind.value.lower()
        if connection.kind is TransportKind.TLS:
            # The name we were asked to reach is what the certificate must name (and the SNI).
            attempt = asyncio.ensure_future(
                loop.create_connection(
                    lambda: connection,
                    target.host,
                    target.port,
                    local_addr=local_addr,
                    ssl=self._tls_client_for(target),
                    server_hostname=target.host,
                    ssl_handshake_timeout=self.connect_timeout,
                )
            )
        else:
            attempt = asyncio.ensure_future(
                loop.create_connection(
                    lambda: connection, target.host, target.port, local_addr=local_addr
                )
            )
        timed_out = False

        def give_up() -> None:
            nonlocal timed_out
            timed_out = True
            attempt.cancel()

        timer = self.clock.call_later(self.connect_timeout, give_up)
        try:
            await attempt
        except asyncio.CancelledError:
            if not timed_out:  # stop() cancelled us
                connection.fail(TransportError("transport stopped"))
                raise
            _LOGGER.info("Cannot open a %s connection to %s: timed out", name.upper(), target)
            connection.fail(TransportError(f"cannot connect to {target}/{name}: timed out"))
        except ssl.SSLError as exc:
            reason = failure_reason(exc)
            _LOGGER.warning("Cannot open a TLS connection to %s: %s", target, reason)
            if isinstance(exc, ssl.SSLCertVerificationError):
                why = reason.removeprefix("certificate verify failed: ")
                connection.fail(CertificateError(f"{why} ({target}/tls)"))
            else:
                connection.fail(TransportError(f"{reason} ({target}/tls)"))
        except OSError as exc:
            _LOGGER.info("Cannot open a %s connection to %s: %s", name.upper(), target, exc)
            connection.fail(TransportError(f"cannot connect to {target}/{name}: {exc}"))
        finally:
            timer.cancel()

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
