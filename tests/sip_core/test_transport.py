"""The transport layer over real sockets on 127.0.0.1 and ::1 (RFC 3261 §18, RFC 3581, RFC 5626)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

import pytest

from sip_core.clock import ManualClock
from sip_core.message import Request, Response, make_response, parse_message
from sip_core.transport import (
    MAX_UDP_MESSAGE,
    Address,
    MessageTooLargeError,
    Source,
    TransportError,
    TransportKind,
    TransportLayer,
)

WAIT = 5.0  # a guard against hanging, never a performance expectation


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def _can_bind(host: str) -> bool:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((host, 0))
    except OSError:
        return False
    return True


HOSTS = [
    pytest.param("127.0.0.1", id="ipv4"),
    pytest.param(
        "::1",
        id="ipv6",
        marks=pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback"),
    ),
]
needs_second_loopback = pytest.mark.skipif(
    not _can_bind("127.0.0.2"), reason="127.0.0.2 is not a local address here"
)


def family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


_counter = iter(range(1, 1_000_000))


def sip_request(
    via: str,
    *,
    method: str = "OPTIONS",
    body: bytes = b"",
    version: str = "SIP/2.0",
    cseq: str | None = None,
    max_forwards: str = "70",
) -> bytes:
    """A small, valid request; `via` is the top Via's value."""
    n = next(_counter)
    head = (
        f"{method} sip:pbx@127.0.0.1 {version}\r\n"
        f"Via: {via}\r\n"
        f"Max-Forwards: {max_forwards}\r\n"
        f"From: <sip:alice@127.0.0.1>;tag=f{n}\r\n"
        "To: <sip:pbx@127.0.0.1>\r\n"
        f"Call-ID: call-{n}@test\r\n"
        f"CSeq: {cseq or f'{n} {method}'}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "\r\n"
    )
    return head.encode() + body


@dataclass
class Inbox:
    """What the layer delivered; optionally answers every request with `answer`."""

    answer: int | None = None
    layer: TransportLayer | None = None
    raise_on: str | None = None
    items: asyncio.Queue[tuple[Request | Response, Source]] = field(default_factory=asyncio.Queue)

    def __call__(self, message: Request | Response, source: Source) -> None:
        self.items.put_nowait((message, source))
        if isinstance(message, Request):
            if self.raise_on is not None and message.method == self.raise_on:
                raise RuntimeError("the handler failed")
            if self.answer is not None and message.method != "ACK":
                assert self.layer is not None
                self.layer.send_response(make_response(message, self.answer), source)

    async def next(self) -> tuple[Request | Response, Source]:
        return await asyncio.wait_for(self.items.get(), WAIT)


@contextlib.asynccontextmanager
async def running(
    host: str = "127.0.0.1", port: int = 0, *, answer: int | None = 200, **kwargs: object
) -> AsyncIterator[tuple[TransportLayer, Inbox]]:
    inbox = Inbox(answer=answer)
    layer = TransportLayer(host, port, inbox, **kwargs)  # type: ignore[arg-type]
    inbox.layer = layer
    await layer.start()
    try:
        yield layer, inbox
    finally:
        await layer.stop()


class UdpPeer:
    """A UDP socket on loopback, driven through the running loop."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket(family(host), socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.setblocking(False)
        self.port: int = self.sock.getsockname()[1]

    async def send(self, data: bytes, to: Address) -> None:
        await asyncio.get_running_loop().sock_sendto(self.sock, data, (to.host, to.port))

    async def recv(self) -> bytes:
        loop = asyncio.get_running_loop()
        data, _ = await asyncio.wait_for(loop.sock_recvfrom(self.sock, 70_000), WAIT)
        return data

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def udp_peer() -> Iterator[Callable[[str], UdpPeer]]:
    peers: list[UdpPeer] = []

    def make(host: str = "127.0.0.1") -> UdpPeer:
        peers.append(UdpPeer(host))
        return peers[-1]

    yield make
    for peer in peers:
        peer.close()


async def tcp_connect(address: Address) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(address.host, address.port)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return reader, writer


async def read_message(reader: asyncio.StreamReader) -> Request | Response:
    """One message from a stream (Content-Length framed), parsed."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() in (b"content-length", b"l"):
            length = int(value)
    body = await asyncio.wait_for(reader.readexactly(length), WAIT) if length else b""
    return parse_message(head + body)


async def is_closed_by_peer(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(65536), WAIT) == b""
    except ConnectionResetError:
        return True


def as_response(message: Request | Response) -> Response:
    assert isinstance(message, Response), message
    return message


def as_request(message: Request | Response) -> Request:
    assert isinstance(message, Request), message
    return message


# -- start, stop, ports ------------------------------------------------------------------------


@pytest.mark.parametrize("host", HOSTS)
async def test_start_binds_udp_and_tcp_on_one_free_port(host: str) -> None:
    async with running(host) as (layer, _):
        address = layer.local_address
        assert address.host == host
        assert address.port > 0
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            with (
                socket.socket(family(host), kind) as sock,
                pytest.raises(OSError, match="in use") as caught,
            ):
                sock.bind((host, address.port))
            assert caught.value.errno == errno.EADDRINUSE


async def test_a_port_in_use_for_udp_raises_a_clear_transport_error() -> None:
    async with running() as (first, _):
        port = first.local_address.port
        second = TransportLayer("127.0.0.1", port, Inbox())
        with pytest.raises(TransportError) as caught:
            await second.start()
        assert str(caught.value) == f"127.0.0.1:{port}/udp is already in use"


async def test_a_port_in_use_for_tcp_names_tcp_and_releases_the_udp_socket() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        layer = TransportLayer("127.0.0.1", port, Inbox())
        with pytest.raises(TransportError, match=rf"^127\.0\.0\.1:{port}/tcp is already in use$"):
            await layer.start()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", port))  # the layer let go of the UDP port it had bound


@pytest.mark.parametrize("host", HOSTS)
async def test_stop_releases_the_port_and_closes_connections(host: str) -> None:
    async with running(host) as (layer, inbox):
        address = layer.local_address
        reader, writer = await tcp_connect(address)
        writer.write(sip_request(f"SIP/2.0/TCP {hostport(host, 5999)};branch=z9hG4bKs"))
        await inbox.next()
        assert as_response(await read_message(reader)).status == 200
        assert layer.connection_count == 1
    assert await is_closed_by_peer(reader)
    writer.close()
    again = TransportLayer(host, address.port, Inbox())
    await again.start()
    assert again.local_address == address
    await again.stop()


async def test_sending_before_start_or_after_stop_raises() -> None:
    layer = TransportLayer("127.0.0.1", 0, Inbox())
    request = as_request(parse_message(sip_request("SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKb")))
    with pytest.raises(TransportError):
        layer.send_request(request, Address("127.0.0.1", 9), TransportKind.UDP)
    await layer.start()
    await layer.stop()
    with pytest.raises(TransportError):
        layer.send_request(request, Address("127.0.0.1", 9), TransportKind.UDP)


# -- UDP ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", HOSTS)
async def test_udp_request_gets_received_and_rport_and_the_response_follows_them(
    host: str, udp_peer: Callable[[str], UdpPeer]
) -> None:
    # The Via claims another address and port, as a phone behind NAT would.
    claimed = "127.0.0.2" if ":" not in host else "[::2]"
    async with running(host) as (layer, inbox):
        peer = udp_peer(host)
        await peer.send(
            sip_request(f"SIP/2.0/UDP {claimed}:5999;rport;branch=z9hG4bKu1"), layer.local_address
        )
        message, source = await inbox.next()
        via = as_request(message).top_via
        assert via.received == host
        assert via.rport == peer.port  # type: ignore[comparison-overlap]
        assert source.kind is TransportKind.UDP
        assert source.remote == Address(host, peer.port)
        assert source.local == layer.local_address
        assert source.connection_id is None
        response = as_response(parse_message(await peer.recv()))
        assert response.status == 200
        assert response.top_via.received == host
        assert response.call_id == as_request(message).call_id


async def test_rport_adds_received_even_when_the_host_matches(
    udp_peer: Callable[[str], UdpPeer],
) -> None:
    async with running() as (layer, inbox):
        peer = udp_peer("127.0.0.1")
        await peer.send(
            sip_request("SIP/2.0/UDP 127.0.0.1:5999;rport;branch=z9hG4bKu2"), layer.local_address
        )
        message, _ = await inbox.next()
        assert as_request(message).top_via.params["received"] == "127.0.0.1"
        assert as_request(message).top_via.params["rport"] == str(peer.port)
        assert as_response(parse_message(await peer.recv())).status == 200


async def test_udp_without_rport_answers_the_sent_by_port_and_adds_no_received(
    udp_peer: Callable[[str], UdpPeer],
) -> None:
    async with running() as (layer, inbox):
        sender, listener = udp_peer("127.0.0.1"), udp_peer("127.0.0.1")
        await sender.send(
            sip_request(f"SIP/2.0/UDP 127.0.0.1:{listener.port};branch=z9hG4bKu3"),
            layer.local_address,
        )
        message, _ = await inbox.next()
        params = as_request(message).top_via.params
        assert "received" not in params
        assert "rport" not in params
        response = as_response(parse_message(await listener.recv()))
        assert response.status == 200
        assert response.top_via.branch == "z9hG4bKu3"


@needs_second_loopback
async def test_udp_received_without_rport_uses_the_received_host_and_sent_by_port(
    udp_peer: Callable[[str], UdpPeer],
) -> None:
    async with running() as (layer, inbox):
        sender = udp_peer("127.0.0.1")
        listener = udp_peer("127.0.0.1")
        await sender.send(
            sip_request(f"SIP/2.0/UDP 127.0.0.2:{listener.port};branch=z9hG4bKu4"),
            layer.local_address,
        )
        message, _ = await inbox.next()
        assert as_request(message).top_via.received == "127.0.0.1"
        assert as_response(parse_message(await listener.recv())).status == 200


@needs_second_loopback
async def test_a_response_without_source_follows_maddr_then_received_then_sent_by(
    udp_peer: Callable[[str], UdpPeer],
) -> None:
    async with running(answer=None) as (layer, _):
        first, second = udp_peer("127.0.0.1"), udp_peer("127.0.0.2")
        cases = [
            # (top Via of the response, the peer that must get it)
            (f"SIP/2.0/UDP 127.0.0.1:{second.port};maddr=127.0.0.2;branch=z9hG4bKm", second),
            (
                f"SIP/2.0/UDP 127.0.0.1:9;received=127.0.0.2;rport={second.port};branch=z9hG4bKr",
                second,
            ),
            (f"SIP/2.0/UDP 127.0.0.1:{first.port};received=127.0.0.2;branch=z9hG4bKn", None),
            (f"SIP/2.0/UDP 127.0.0.2:{second.port};branch=z9hG4bKs", second),
            (f"SIP/2.0/UDP 127.0.0.1:{first.port};branch=z9hG4bKf", first),
        ]
        for via, target in cases:
            request = as_request(parse_message(sip_request(via)))
            layer.send_response(make_response(request, 200))
            if target is None:  # received=127.0.0.2 with the first peer's port: nobody is there
                continue
            response = as_response(parse_message(await target.recv()))
            assert response.top_via.branch == request.top_via.branch


async def test_crlf_keepalive_datagrams_are_ignored(udp_peer: Callable[[str], UdpPeer]) -> None:
    async with running() as (layer, inbox):
        peer = udp_peer("127.0.0.1")
        await peer.send(b"\r\n\r\n", layer.local_address)
        await peer.send(b"\r\n", layer.local_address)
        await peer.send(
            sip_request("SIP/2.0/UDP 127.0.0.1:1;rport;branch=z9hG4bKk"), layer.local_address
        )
        message, _ = await inbox.next()
        assert as_request(message).top_via.branch == "z9hG4bKk"
        # The first thing back is the answer to the real request: the pings got no reply.
        assert as_response(parse_message(await peer.recv())).top_via.branch == "z9hG4bKk"
        assert inbox.items.empty()


@pytest.mark.parametrize(
    ("data", "status"),
    [
        pytest.param(
            sip_request("SIP/2.0/UDP 127.0.0.1:1;rport;branch=z9hG4bKv", version="SIP/3.0"),
            505,
            id="version",
        ),
        pytest.param(
            sip_request("SIP/2.0/UDP 127.0.0.1:1;rport;branch=z9hG4bKc", max_forwards="many"),
            400,
            id="bad-max-forwards",
        ),
    ],
)
async def test_a_malformed_udp_request_gets_a_stateless_error(
    data: bytes, status: int, udp_peer: Callable[[str], UdpPeer]
) -> None:
    async with running() as (layer, inbox):
        peer = udp_peer("127.0.0.1")
        await peer.send(data, layer.local_address)
        response = as_response(parse_message(await peer.recv()))
        assert response.status == status
        assert response.top_via.rport == peer.port  # type: ignore[comparison-overlap]
        assert inbox.items.empty()  # the upper layers never saw it


async def test_garbage_and_handler_errors_do_not_stop_udp(
    udp_peer: Callable[[str], UdpPeer], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="sip_core.transport")
    async with running() as (layer, inbox):
        inbox.raise_on = "INFO"
        peer = udp_peer("127.0.0.1")
        await peer.send(b"\x00\x01 this is not SIP\r\n\r\n", layer.local_address)
        await peer.send(
            sip_request("SIP/2.0/UDP 127.0.0.1:1;rport;branch=z9hG4bKe1", method="INFO"),
            layer.local_address,
        )
        await peer.send(
            sip_request("SIP/2.0/UDP 127.0.0.1:1;rport;branch=z9hG4bKe2"), layer.local_address
        )
        first, _ = await inbox.next()
        second, _ = await inbox.next()
        assert [as_request(first).method, as_request(second).method] == ["INFO", "OPTIONS"]
        assert as_response(parse_message(await peer.recv())).top_via.branch == "z9hG4bKe2"
    # The garbage was dropped quietly, the handler's exception logged rather than raised.
    dropped = [r for r in caplog.records if r.getMessage().startswith("Dropping a message")]
    assert [r.levelno for r in dropped] == [logging.DEBUG]
    failures = [
        r for r in caplog.records if r.exc_info and "the handler failed" in str(r.exc_info[1])
    ]
    assert len(failures) == 1


async def test_udp_refuses_messages_over_65000_bytes_but_tcp_takes_them(
    udp_peer: Callable[[str], UdpPeer],
) -> None:
    async with running(answer=None) as (layer, inbox):
        request = as_request(
            parse_message(
                sip_request(
                    "SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bKbig", body=b"x" * MAX_UDP_MESSAGE
                )
            )
        )
        peer = udp_peer("127.0.0.1")
        with pytest.raises(MessageTooLargeError, match="TCP"):
            layer.send_request(request, Address("127.0.0.1", peer.port), TransportKind.UDP)
        async with running(answer=None) as (other, server_inbox):
            layer.send_request(request, other.local_address, TransportKind.TCP)
            message, source = await server_inbox.next()
            assert as_request(message).body == b"x" * MAX_UDP_MESSAGE
            assert source.kind is TransportKind.TCP
        assert inbox.items.empty()


# -- TCP ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", HOSTS)
async def test_tcp_request_and_response_share_the_connection(host: str) -> None:
    claimed = "127.0.0.2" if ":" not in host else "[::2]"
    async with running(host) as (layer, inbox):
        reader, writer = await tcp_connect(layer.local_address)
        writer.write(sip_request(f"SIP/2.0/TCP {claimed}:5999;branch=z9hG4bKt1", method="REGISTER"))
        message, source = await inbox.next()
        assert source.kind is TransportKind.TCP
        assert source.connection_id is not None
        assert source.remote.host == host
        assert as_request(message).top_via.received == host
        response = as_response(await read_message(reader))
        assert (response.status, response.top_via.branch) == (200, "z9hG4bKt1")
        writer.close()


async def test_a_tcp_response_reopens_to_received_and_sent_by_port_when_the_connection_closed() -> (
    None
):
    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got.put_nowait(await reader.readuntil(b"\r\n\r\n"))
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    client_port = server.sockets[0].getsockname()[1]
    async with running(answer=None) as (layer, inbox):
        _reader, writer = await tcp_connect(layer.local_address)
        writer.write(sip_request(f"SIP/2.0/TCP 127.0.0.1:{client_port};branch=z9hG4bKt2"))
        message, source = await inbox.next()
        writer.close()
        await writer.wait_closed()
        async with asyncio.timeout(WAIT):
            while layer.connection_count:  # noqa: ASYNC110 - until the layer has seen the close
                await asyncio.sleep(0.01)
        layer.send_response(make_response(as_request(message), 486), source)
        head = await asyncio.wait_for(got.get(), WAIT)
        assert head.startswith(b"SIP/2.0 486 ")
    server.close()
    await server.wait_closed()


async def test_a_split_tcp_stream_and_several_messages_in_one_segment() -> None:
    async with running(answer=None) as (layer, inbox):
        _reader, writer = await tcp_connect(layer.local_address)
        one = sip_request("SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bKa", body=b"v=0\r\n\r\nbody-one")
        two = sip_request("SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bKb")
        three = sip_request("SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bKc", body=b"\r\n\r\n")
        four = sip_request("SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bKd", body=b"tail")
        stream = one + two + three + four
        header_end = one.index(b"\r\n\r\n")
        cuts = [1, header_end + 1, header_end + 3, len(one) - 2, len(one) + 5, len(one) + len(two)]
        pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
        for piece in pieces[:-1]:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.01)  # let each piece arrive as its own segment
        # The last piece carries the end of the third message and all of the fourth.
        writer.write(pieces[-1])
        received = [as_request((await inbox.next())[0]) for _ in range(4)]
        assert [r.top_via.branch for r in received] == [
            "z9hG4bKa",
            "z9hG4bKb",
            "z9hG4bKc",
            "z9hG4bKd",
        ]
        assert [r.body for r in received] == [b"v=0\r\n\r\nbody-one", b"", b"\r\n\r\n", b"tail"]
        writer.write(two + four)  # two whole messages in one write
        more = [as_request((await inbox.next())[0]).top_via.branch for _ in range(2)]
        assert more == ["z9hG4bKb", "z9hG4bKd"]
        writer.close()


async def test_a_tcp_ping_gets_a_pong_and_the_connection_goes_on() -> None:
    async with running() as (layer, inbox):
        reader, writer = await tcp_connect(layer.local_address)
        writer.write(b"\r\n\r\n")
        assert await asyncio.wait_for(reader.readexactly(2), WAIT) == b"\r\n"
        writer.write(b"\r\n")  # a pong from the client: nothing comes back for it
        writer.write(sip_request("SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bKp"))
        await inbox.next()
        response = as_response(await read_message(reader))  # not preceded by a second CRLF
        assert response.top_via.branch == "z9hG4bKp"
        writer.close()


async def test_garbage_on_one_tcp_connection_leaves_the_others_alone() -> None:
    async with running() as (layer, inbox):
        inbox.raise_on = "INFO"
        good_reader, good_writer = await tcp_connect(layer.local_address)
        bad_reader, bad_writer = await tcp_connect(layer.local_address)
        good_writer.write(sip_request("SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bKg1"))
        await inbox.next()
        assert as_response(await read_message(good_reader)).top_via.branch == "z9hG4bKg1"
        # No end of headers ever comes: an oversize, unframeable stream.
        with contextlib.suppress(ConnectionError):
            for _ in range(40):
                bad_writer.write(b"X-Garbage: " + b"\x00\xff" * 4000 + b"\r\n")
                await bad_writer.drain()
        assert await is_closed_by_peer(bad_reader)
        bad_writer.close()
        # The handler failing on one message neither closes the connection nor loses the next.
        good_writer.write(sip_request("SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bKg2", method="INFO"))
        good_writer.write(sip_request("SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bKg3"))
        assert as_request((await inbox.next())[0]).method == "INFO"
        assert as_request((await inbox.next())[0]).top_via.branch == "z9hG4bKg3"
        assert as_response(await read_message(good_reader)).top_via.branch == "z9hG4bKg3"
        assert layer.connection_count == 1
        good_writer.close()


async def test_a_malformed_tcp_request_gets_a_400_on_its_connection() -> None:
    async with running() as (layer, inbox):
        reader, writer = await tcp_connect(layer.local_address)
        writer.write(sip_request("SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bKx", max_forwards="many"))
        response = as_response(await read_message(reader))
        assert response.status == 400
        writer.write(sip_request("SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bKy", version="SIP/3.0"))
        assert as_response(await read_message(reader)).status == 505
        assert inbox.items.empty()
        writer.close()


async def test_tcp_send_request_reuses_the_connection_the_phone_opened() -> None:
    async with running() as (layer, inbox):
        reader, writer = await tcp_connect(layer.local_address)
        writer.write(sip_request("SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bKr1", method="REGISTER"))
        _, source = await inbox.next()
        await read_message(reader)  # the 200
        options = as_request(parse_message(sip_request("SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bKo")))
        layer.send_request(options, source.remote, TransportKind.TCP)
        got = as_request(await read_message(reader))
        assert (got.method, got.top_via.branch) == ("OPTIONS", "z9hG4bKo")
        assert str(got.top_via.host) == "127.0.0.1"  # the Via was left as the caller wrote it
        assert layer.connection_count == 1
        writer.close()


async def test_tcp_send_request_opens_one_connection_and_reuses_it() -> None:
    accepted: list[asyncio.StreamWriter] = []
    got: asyncio.Queue[Request | Response] = asyncio.Queue()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                got.put_nowait(await read_message(reader))

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    target = Address("127.0.0.1", server.sockets[0].getsockname()[1])
    async with running() as (layer, _):
        for branch in ("z9hG4bKn1", "z9hG4bKn2"):
            request = as_request(
                parse_message(sip_request(f"SIP/2.0/TCP 127.0.0.1:1;branch={branch}"))
            )
            layer.send_request(request, target, TransportKind.TCP)
        branches = [
            as_request(await asyncio.wait_for(got.get(), WAIT)).top_via.branch for _ in range(2)
        ]
        assert branches == ["z9hG4bKn1", "z9hG4bKn2"]
        assert len(accepted) == 1
        assert layer.connection_count == 1
        # The connection's far end is the server: its peer address is our own listening host.
        assert accepted[0].get_extra_info("peername")[0] == "127.0.0.1"
    for writer in accepted:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_a_tcp_connection_that_cannot_be_opened_is_reported() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]  # bound but not listening: connections are refused
        async with running() as (layer, _):
            failures: asyncio.Queue[TransportError] = asyncio.Queue()
            request = as_request(
                parse_message(sip_request("SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bKf"))
            )
            layer.send_request(
                request,
                Address("127.0.0.1", closed_port),
                TransportKind.TCP,
                on_failure=failures.put_nowait,
            )
            error = await asyncio.wait_for(failures.get(), WAIT)
            assert f"127.0.0.1:{closed_port}/tcp" in str(error)
            assert layer.connection_count == 0


async def test_idle_tcp_connections_are_closed_after_the_idle_timeout() -> None:
    clock = ManualClock()
    async with running(clock=clock, idle_timeout=600.0) as (layer, inbox):
        quiet_reader, quiet_writer = await tcp_connect(layer.local_address)
        busy_reader, busy_writer = await tcp_connect(layer.local_address)
        for writer, branch in ((quiet_writer, "z9hG4bKi1"), (busy_writer, "z9hG4bKi2")):
            writer.write(sip_request(f"SIP/2.0/TCP 127.0.0.1:5999;branch={branch}"))
            await inbox.next()
        await read_message(quiet_reader)
        await read_message(busy_reader)
        clock.advance(400)
        busy_writer.write(b"\r\n\r\n")  # traffic restarts the busy connection's idle time
        assert await asyncio.wait_for(busy_reader.readexactly(2), WAIT) == b"\r\n"
        clock.advance(201)
        assert await is_closed_by_peer(quiet_reader)
        assert layer.connection_count == 1
        clock.advance(400)
        assert await is_closed_by_peer(busy_reader)
        assert layer.connection_count == 0
        quiet_writer.close()
        busy_writer.close()


async def test_a_response_for_an_unsupported_transport_raises() -> None:
    async with running(answer=None) as (layer, _):
        request = as_request(
            parse_message(sip_request("SIP/2.0/SCTP 127.0.0.1:5061;branch=z9hG4bKl"))
        )
        with pytest.raises(TransportError, match="SCTP"):
            layer.send_response(make_response(request, 200))


# -- routes kept by server transactions ----------------------------------------------------------


def test_response_route_is_a_flat_tuple_that_follows_section_18_2_2() -> None:
    layer = TransportLayer("127.0.0.1", 0, Inbox())
    udp = Source(TransportKind.UDP, Address("127.0.0.1", 5070), Address("127.0.0.1", 5060), None)
    cases = [
        ("SIP/2.0/UDP 10.0.0.9:5080;maddr=127.0.0.3;branch=z9hG4bKa", ("127.0.0.3", 5080)),
        (
            "SIP/2.0/UDP 10.0.0.9:5080;received=127.0.0.4;rport=7000;branch=z9hG4bKb",
            ("127.0.0.4", 7000),
        ),
        ("SIP/2.0/UDP 10.0.0.9:5080;received=127.0.0.4;branch=z9hG4bKc", ("127.0.0.4", 5080)),
        ("SIP/2.0/UDP 127.0.0.5;branch=z9hG4bKd", ("127.0.0.5", 5060)),
    ]
    for via, (host, port) in cases:
        response = make_response(as_request(parse_message(sip_request(via))), 200)
        assert layer.response_route(response, udp) == ("UDP", host, port, None, None)
    tcp = Source(TransportKind.TCP, Address("127.0.0.1", 40000), Address("127.0.0.1", 5060), 3)
    via = "SIP/2.0/TCP 10.0.0.9:5080;received=127.0.0.1;rport=40000;branch=z9hG4bKe"
    response = make_response(as_request(parse_message(sip_request(via))), 200)
    route = layer.response_route(response, tcp)
    assert route == ("TCP", "127.0.0.1", 5080, 3, ("127.0.0.1", 40000))
    assert type(route[0]) is str  # not a TransportKind: the collector can untrack the tuple


async def test_send_response_bytes_repeats_a_response_on_its_route(
    udp_peer: Callable[[str], UdpPeer],
) -> None:
    async with running(answer=None) as (layer, inbox):
        peer = udp_peer("127.0.0.1")
        await peer.send(
            sip_request("SIP/2.0/UDP 127.0.0.1:9;rport;branch=z9hG4bKbytes"), layer.local_address
        )
        message, source = await inbox.next()
        response = make_response(as_request(message), 200)
        route = layer.response_route(response, source)
        data = response.to_bytes()
        layer.send_response_bytes(data, route)
        layer.send_response_bytes(data, route)
        assert await peer.recv() == data
        assert await peer.recv() == data


async def test_a_kept_tcp_route_reopens_to_the_sent_by_port_once_its_connection_closed() -> None:
    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got.put_nowait(await reader.readuntil(b"\r\n\r\n"))
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    client_port = server.sockets[0].getsockname()[1]
    async with running(answer=None) as (layer, inbox):
        reader, writer = await tcp_connect(layer.local_address)
        writer.write(sip_request(f"SIP/2.0/TCP 127.0.0.1:{client_port};branch=z9hG4bKt9"))
        message, source = await inbox.next()
        response = make_response(as_request(message), 486)
        route = layer.response_route(response, source)
        layer.send_response_bytes(response.to_bytes(), route)  # on the request's connection
        assert as_response(await read_message(reader)).status == 486
        writer.close()
        await writer.wait_closed()
        async with asyncio.timeout(WAIT):
            while layer.connection_count:  # noqa: ASYNC110 - until the layer has seen the close
                await asyncio.sleep(0.01)
        layer.send_response_bytes(response.to_bytes(), route)
        head = await asyncio.wait_for(got.get(), WAIT)
        assert head.startswith(b"SIP/2.0 486 ")
    server.close()
    await server.wait_closed()
