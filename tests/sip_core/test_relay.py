"""The media relay over real UDP sockets on 127.0.0.1, with fake endpoints on both sides.

No test measures time: waiting is bounded only so that a broken relay fails instead of hanging, and
"not forwarded" is shown by a later packet arriving first (UDP on loopback keeps order) and by the
leg's drop counters. Stream continuation after a flip is checked with a ManualClock, so the
timestamp jump is exact.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import AsyncIterator

import pytest

from sip_core.clock import ManualClock
from sip_core.dtmf import DtmfDigit, TelephoneEvent, build_telephone_event, parse_telephone_event
from sip_core.media.fastpath import FastPathState, load_fast_path
from sip_core.media.relay import (
    LegStats,
    MediaLeg,
    MediaRelay,
    MediaSession,
    PortAllocator,
    PortsExhaustedError,
    Side,
)
from sip_core.rtp import (
    RTCP_RR,
    RTCP_SR,
    ReportBlock,
    RtcpPacket,
    RtpPacket,
    build_rtcp,
    parse_rtcp,
    parse_rtp,
)
from sip_core.sdp import Codec
from sip_core.transport import Address

HOST = "127.0.0.1"
WAIT = 5.0  # upper bound for a packet to arrive; never a measurement


class Endpoint(asyncio.DatagramProtocol):
    """A fake phone: one UDP socket on loopback, a queue of what it received."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.DatagramTransport)
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait((data, addr))

    @property
    def address(self) -> Address:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return Address(host, port)

    def send(self, data: bytes, to: Address) -> None:
        assert self.transport is not None
        self.transport.sendto(data, (to.host, to.port))

    async def receive(self) -> tuple[bytes, tuple[str, int]]:
        return await asyncio.wait_for(self.queue.get(), WAIT)

    async def receive_rtp(self) -> RtpPacket:
        data, _ = await self.receive()
        return parse_rtp(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def endpoint() -> Endpoint:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_datagram_endpoint(Endpoint, local_addr=(HOST, 0))
    return protocol


def _port_range(pairs: int) -> tuple[int, int]:
    """A random range above bench/relay's ports (20000 up) and below Linux's ephemeral ones (32768
    up), so a benchmark running meanwhile does not hold them; pairs in use are skipped anyway."""
    start = random.randrange(24000, 32000 - 2 * pairs, 2)
    return start, start + 2 * pairs - 1


COMPILED = load_fast_path()[1] is FastPathState.COMPILED
needs_compiled = pytest.mark.skipif(not COMPILED, reason="the compiled packet path is not built")


@pytest.fixture(
    params=[False, pytest.param(True, marks=needs_compiled)], ids=["python", "compiled"]
)
def fast_path(request: pytest.FixtureRequest) -> bool:
    """Both packet paths: Python's handlers, and the compiled one where it was built."""
    return bool(request.param)


@pytest.fixture(
    params=[
        (True, False),
        (False, False),
        pytest.param((True, True), marks=needs_compiled),
    ],
    ids=["connected", "unconnected", "compiled"],
)
async def relay(request: pytest.FixtureRequest) -> AsyncIterator[MediaRelay]:
    """Every way a latched leg's packets go: a connected socket (the kernel checks the source),
    an unconnected one (Python checks it), and a connected one forwarded by the compiled path."""
    connect, fast = request.param
    low, high = _port_range(50)
    media = MediaRelay(
        HOST, low, high, clock=ManualClock(), connect_sockets=connect, fast_path=fast
    )
    assert media.connect_sockets is connect  # Linux can untie a UDP socket
    assert (media.engine.fast is not None) is fast
    yield media
    media.close()


def _intrude(relay: MediaRelay, leg: MediaLeg) -> None:
    """A stranger sends RTP to a latched leg. On a connected leg the kernel refuses it (the
    stranger hears ICMP port unreachable); otherwise the leg drops it in Python."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
        stranger.bind((HOST, 0))
        stranger.connect((HOST, leg.local_rtp.port))  # connected: ICMP errors are reported
        stranger.settimeout(WAIT)
        stranger.send(Stream(666, 1, 1).next())
        if relay.connect_sockets:
            with pytest.raises(ConnectionRefusedError):
                stranger.recv(64)


def _dropped_by_leg(relay: MediaRelay) -> int:
    """What the leg's dropped_source counts for one stranger's packet."""
    return 0 if relay.connect_sockets else 1


class Stream:
    """An RTP sender with its own SSRC, sequence and timestamp."""

    def __init__(self, ssrc: int, sequence: int, timestamp: int, payload_type: int = 0) -> None:
        self.ssrc = ssrc
        self.sequence = sequence
        self.timestamp = timestamp
        self.payload_type = payload_type

    def next(self, payload: bytes = b"\xd5" * 160, **fields: object) -> bytes:
        packet = RtpPacket(self.payload_type, self.sequence, self.timestamp, self.ssrc, payload)
        for name, value in fields.items():
            setattr(packet, name, value)
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.timestamp = (self.timestamp + 160) & 0xFFFFFFFF
        return packet.to_bytes()


async def _call(relay: MediaRelay) -> tuple[MediaSession, Endpoint, Endpoint]:
    session = relay.open_session(f"call-{random.random()}")
    return session, await endpoint(), await endpoint()


async def test_forwards_both_ways_and_latches(relay: MediaRelay) -> None:
    session, phone_a, phone_b = await _call(relay)
    try:
        assert session.a.local_rtp.port % 2 == 0
        assert session.a.local_rtcp.port == session.a.local_rtp.port + 1
        a_stream, b_stream = Stream(1, 100, 1000), Stream(2, 500, 9000, 8)
        # B is known from its SDP; A is learnt from its first packet.
        session.b.set_remote(phone_b.address)
        phone_a.send(a_stream.next(), session.a.local_rtp)
        got = await phone_b.receive_rtp()
        assert (got.ssrc, got.sequence, got.timestamp) == (1, 100, 1000)
        assert session.a.latched
        assert session.a.remote_rtp == (HOST, phone_a.address.port)
        phone_b.send(b_stream.next(), session.b.local_rtp)
        data, source = await phone_a.receive()
        assert parse_rtp(data).ssrc == 2
        assert source == (HOST, session.a.local_rtp.port)  # symmetric: from the port A sends to
        # the payload is forwarded byte for byte
        packet = a_stream.next(b"hello world!" * 10)
        phone_a.send(packet, session.a.local_rtp)
        assert (await phone_b.receive())[0] == packet
        assert session.a.stats.forwarded == 2
        assert session.b.stats.forwarded == 1
    finally:
        phone_a.close()
        phone_b.close()


async def test_nothing_is_sent_before_the_far_end_is_known(relay: MediaRelay) -> None:
    session, phone_a, phone_b = await _call(relay)
    try:
        phone_a.send(Stream(1, 1, 1).next(), session.a.local_rtp)
        phone_b.send(Stream(2, 1, 1).next(), session.b.local_rtp)  # learns B, sends to A
        got = await phone_a.receive_rtp()
        assert got.ssrc == 2
        assert session.a.stats.dropped_no_peer == 1
        assert phone_b.queue.empty()
    finally:
        phone_a.close()
        phone_b.close()


async def test_unexpected_source_is_dropped_after_latching(relay: MediaRelay) -> None:
    session, phone_a, phone_b = await _call(relay)
    intruder = await endpoint()
    try:
        session.b.set_remote(phone_b.address)
        stream = Stream(1, 1, 1)
        phone_a.send(stream.next(), session.a.local_rtp)
        assert (await phone_b.receive_rtp()).sequence == 1
        _intrude(relay, session.a)
        phone_a.send(stream.next(), session.a.local_rtp)
        got = await phone_b.receive_rtp()
        assert (got.ssrc, got.sequence) == (1, 2)  # the intruder's packet never came
        assert session.a.stats.dropped_source == _dropped_by_leg(relay)
        assert session.a.remote_rtp == (HOST, phone_a.address.port)
        # junk does not latch either
        fresh, *other = await _call(relay)
        fresh.b.set_remote(phone_b.address)
        intruder.send(b"\x00junk", fresh.a.local_rtp)
        phone_a.send(Stream(3, 1, 1).next(), fresh.a.local_rtp)
        assert (await phone_b.receive_rtp()).ssrc == 3
        assert fresh.a.stats.dropped_invalid == 1
        assert fresh.a.remote_rtp == (HOST, phone_a.address.port)
        for phone in other:
            phone.close()
    finally:
        for phone in (phone_a, phone_b, intruder):
            phone.close()


async def test_address_from_sdp_can_be_trusted_at_once(relay: MediaRelay) -> None:
    session, phone_a, phone_b = await _call(relay)
    intruder = await endpoint()
    try:
        session.a.set_remote(phone_a.address, latch=True)
        session.b.set_remote(phone_b.address)
        _intrude(relay, session.a)
        phone_a.send(Stream(1, 9, 1).next(), session.a.local_rtp)
        assert (await phone_b.receive_rtp()).ssrc == 1
        assert session.a.stats.dropped_source == _dropped_by_leg(relay)
    finally:
        for phone in (phone_a, phone_b, intruder):
            phone.close()


def test_port_allocator_pairs_and_exhaustion() -> None:
    ports = PortAllocator(40001, 40010)  # odd start: the first pair is 40002/40003
    taken = [ports.allocate() for _ in range(4)]
    assert taken == [40002, 40004, 40006, 40008]
    assert ports.available == 0
    with pytest.raises(PortsExhaustedError, match="all 4 RTP port pairs of 40001-40010"):
        ports.allocate()
    ports.release(40004)
    ports.release(40004)  # twice: harmless
    assert ports.available == 1
    assert ports.allocate() == 40004
    with pytest.raises(ValueError, match="no even/odd pair"):
        PortAllocator(40001, 40002)
    with pytest.raises(ValueError, match="bad RTP port range"):
        PortAllocator(5000, 4000)


async def test_ports_are_released_when_a_call_ends() -> None:
    low, high = _port_range(4)
    relay = MediaRelay(HOST, low, high, clock=ManualClock())
    try:
        first = relay.open_session("one")
        second = relay.open_session("two")
        assert relay.ports.available == 0
        with pytest.raises(PortsExhaustedError):
            relay.open_session("three")
        assert "three" not in relay.sessions
        port = first.b.local_rtp.port
        first.close()
        first.close()
        assert relay.ports.available == 2
        # the sockets really are closed: the ports can be bound again
        for number in (port, port + 1):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.bind((HOST, number))
        third = relay.open_session("three")
        assert {third.a.local_rtp.port, third.b.local_rtp.port} <= set(range(low, high, 2))
        assert second.a.local_rtp.port not in {third.a.local_rtp.port, third.b.local_rtp.port}
    finally:
        relay.close()
    assert relay.ports.available == 4
    assert relay.sessions == {}


async def test_a_busy_port_is_skipped() -> None:
    low, high = _port_range(3)
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind((HOST, low + 1))  # the RTCP port of the first pair
    relay = MediaRelay(HOST, low, high, clock=ManualClock())
    try:
        session = relay.open_session("x")
        assert low not in {session.a.local_rtp.port, session.b.local_rtp.port}
        with pytest.raises(PortsExhaustedError, match="could be bound"):
            relay.open_session("y")
    finally:
        relay.close()
        blocker.close()


async def _talk(
    sender: Endpoint, stream: Stream, to: Address, receiver: Endpoint, count: int
) -> list[RtpPacket]:
    received = []
    for _ in range(count):
        sender.send(stream.next(), to)
        received.append(await receiver.receive_rtp())
    return received


async def test_switch_leg_continues_the_stream_to_the_caller(fast_path: bool) -> None:
    clock = ManualClock()
    low, high = _port_range(10)
    relay = MediaRelay(HOST, low, high, clock=clock, fast_path=fast_path)
    session = relay.open_session("flip")
    caller, first, second, third = [await endpoint() for _ in range(4)]
    try:
        session.b.set_remote(first.address)
        session.a.set_remote(caller.address)
        before = await _talk(first, Stream(0x1111, 30000, 400_000), session.b.local_rtp, caller, 5)
        last = before[-1]
        assert [p.sequence for p in before] == [30000 + i for i in range(5)]
        old_port = session.b.local_rtp.port

        clock.advance(1.0)  # the new device answers a second after the old one's last packet
        new_leg = await session.switch_leg("b")
        assert new_leg is session.b
        assert new_leg.local_rtp.port != old_port
        # The new device starts its own stream, with a timestamp far *below* the old one: a
        # receiver like baresip would drop everything if that reached it unchanged.
        new_stream = Stream(0x2222, 7, 160)
        after = await _talk(second, new_stream, new_leg.local_rtp, caller, 5)
        assert all(p.ssrc == 0x1111 for p in after)
        assert [p.sequence for p in after] == [last.sequence + 1 + i for i in range(5)]
        assert after[0].timestamp == last.timestamp + 8000  # exactly the elapsed second
        assert [p.timestamp for p in after] == [after[0].timestamp + 160 * i for i in range(5)]
        assert [p.marker for p in after] == [True, False, False, False, False]
        stamps = [p.timestamp for p in before + after]
        assert stamps == sorted(stamps)  # never backwards
        assert after[2].payload == b"\xd5" * 160

        # the caller's audio reaches the new device, from the new leg's port
        caller.send(Stream(0x3333, 1, 1).next(), session.a.local_rtp)
        data, source = await second.receive()
        assert parse_rtp(data).ssrc == 0x3333
        assert source == (HOST, new_leg.local_rtp.port)

        # a second flip straight away (less than a frame later) still moves forward
        last = after[-1]
        newest = await session.switch_leg("b", second.address)
        more = await _talk(third, Stream(0x4444, 60000, 2**32 - 200), newest.local_rtp, caller, 3)
        assert [p.sequence for p in more] == [(last.sequence + 1 + i) & 0xFFFF for i in range(3)]
        assert more[0].timestamp == last.timestamp + 160  # one 20 ms frame at 8 kHz
        assert all(p.ssrc == 0x1111 for p in more)
        assert more[0].marker
        assert relay.ports.available == relay.ports.capacity - 2
    finally:
        relay.close()
        for phone in (caller, first, second, third):
            phone.close()


async def test_switch_uses_the_codec_clock_rate_and_payload_map(fast_path: bool) -> None:
    clock = ManualClock()
    low, high = _port_range(6)
    relay = MediaRelay(HOST, low, high, clock=clock, fast_path=fast_path)
    session = relay.open_session("opus")
    caller, first, second = [await endpoint() for _ in range(3)]
    try:
        session.a.set_remote(caller.address)
        before = await _talk(first, Stream(5, 1, 0, 111), session.b.local_rtp, caller, 2)
        clock.advance(0.5)
        leg = await session.switch_leg(
            "b",
            codecs=[Codec(96, "opus", 48000, 2), Codec(97, "telephone-event", 48000)],
            payload_map_in={96: 111},
        )
        assert leg.dtmf_payload_type == 97
        (got,) = await _talk(second, Stream(6, 1, 0, 96), leg.local_rtp, caller, 1)
        assert got.payload_type == 111
        assert got.timestamp == before[-1].timestamp + 24000  # 0.5 s at 48 kHz
    finally:
        relay.close()
        for phone in (caller, first, second):
            phone.close()


async def test_rtcp_is_rewritten_to_match_after_a_switch(fast_path: bool) -> None:
    clock = ManualClock()
    low, high = _port_range(6)
    relay = MediaRelay(HOST, low, high, clock=clock, fast_path=fast_path)
    session = relay.open_session("rtcp")
    caller, first, second = [await endpoint() for _ in range(4)][:3]
    try:
        session.a.set_remote(caller.address, caller.address)  # one socket for RTP and RTCP
        before = await _talk(first, Stream(0xAAAA, 100, 1000), session.b.local_rtp, caller, 1)
        # RTCP before the switch goes through untouched
        sr = RtcpPacket(RTCP_SR, 0xAAAA, rtp_timestamp=1000, packet_count=1, octet_count=160)
        first.send(build_rtcp([sr]), session.b.local_rtcp)
        data, source = await caller.receive()
        assert parse_rtcp(data) == [sr]
        assert source == (HOST, session.a.local_rtcp.port)

        clock.advance(2.0)
        leg = await session.switch_leg("b")
        (after,) = await _talk(second, Stream(0xBBBB, 7, 50), leg.local_rtp, caller, 1)
        offset = (after.timestamp - 50) & 0xFFFFFFFF
        assert after.timestamp == before[-1].timestamp + 16000
        report = RtcpPacket(
            RTCP_SR,
            0xBBBB,
            ntp_timestamp=0x1234_5678_0000_0000,
            rtp_timestamp=210,
            packet_count=2,
            octet_count=320,
            reports=[ReportBlock(0xCCCC, highest_sequence=42)],
        )
        second.send(build_rtcp([report]), leg.local_rtcp)
        data, _ = await caller.receive()
        (seen,) = parse_rtcp(data)
        assert seen.ssrc == 0xAAAA
        assert seen.rtp_timestamp == 210 + offset
        assert seen.ntp_timestamp == report.ntp_timestamp
        assert seen.reports == [ReportBlock(0xCCCC, highest_sequence=42)]

        # the caller's receiver report about "its" stream goes back in the new device's terms
        rr = RtcpPacket(
            RTCP_RR, 0xCCCC, reports=[ReportBlock(0xAAAA, highest_sequence=after.sequence)]
        )
        caller.send(build_rtcp([rr]), session.a.local_rtcp)
        data, _ = await second.receive()
        (back,) = parse_rtcp(data)
        assert back.ssrc == 0xCCCC
        assert back.reports[0].ssrc == 0xBBBB
        assert back.reports[0].highest_sequence == 7
    finally:
        relay.close()
        for phone in (caller, first, second):
            phone.close()


def _press(event: int, timestamp: int, stream: Stream) -> list[bytes]:
    """One key press: three updates then the end packet three times, one timestamp."""
    payloads = [build_telephone_event(TelephoneEvent(event, False, 10, d)) for d in (160, 320, 480)]
    payloads += [build_telephone_event(TelephoneEvent(event, True, 10, 640))] * 3
    packets = []
    for index, payload in enumerate(payloads):
        packet = RtpPacket(101, stream.sequence, timestamp, stream.ssrc, payload, marker=index == 0)
        stream.sequence += 1
        packets.append(packet.to_bytes())
    return packets


async def test_dtmf_is_reported_once_per_press_and_can_be_swallowed(relay: MediaRelay) -> None:
    session, phone_a, phone_b = await _call(relay)
    digits: list[tuple[Side, DtmfDigit]] = []
    session.on_dtmf = lambda side, digit: digits.append((side, digit))
    try:
        session.a.set_codecs([Codec(0, "PCMU", 8000), Codec(101, "telephone-event", 8000)])
        session.b.set_remote(phone_b.address)
        stream = Stream(9, 1, 8000)
        for packet in _press(5, 8000, stream):
            phone_a.send(packet, session.a.local_rtp)
            assert (await phone_b.receive())[0] == packet  # forwarded unchanged
        assert [(side, d.digit, d.timestamp) for side, d in digits] == [("a", "5", 8000)]

        session.a.swallow_dtmf = True
        for packet in [*_press(0, 16000, stream), stream.next()]:
            phone_a.send(packet, session.a.local_rtp)
        got = await phone_b.receive_rtp()
        assert got.payload_type == 0  # only the audio packet after the press arrives
        assert [d.digit for _, d in digits] == ["5", "0"]
        assert session.a.stats.dtmf_swallowed == 6
        # the flag survives a flip of the other side... and of this side
        leg = await session.switch_leg("a")
        assert leg.swallow_dtmf
        assert leg.dtmf_payload_type == 101
    finally:
        phone_a.close()
        phone_b.close()


async def test_a_broken_dtmf_callback_does_not_stop_the_media(relay: MediaRelay) -> None:
    session, phone_a, phone_b = await _call(relay)

    def explode(side: Side, digit: DtmfDigit) -> None:
        raise RuntimeError("boom")

    session.on_dtmf = explode
    try:
        session.a.dtmf_payload_type = 101
        session.b.set_remote(phone_b.address)
        stream = Stream(1, 1, 1)
        for packet in [*_press(3, 100, stream)[:1], stream.next()]:
            phone_a.send(packet, session.a.local_rtp)
        assert (await phone_b.receive_rtp()).payload_type == 101
        assert (await phone_b.receive_rtp()).payload_type == 0
    finally:
        phone_a.close()
        phone_b.close()


async def test_closed_session_refuses_a_switch(relay: MediaRelay) -> None:
    session = relay.open_session("gone")
    session.close()
    with pytest.raises(Exception, match="closed"):
        await session.switch_leg("b")
    with pytest.raises(Exception, match="exists already"):
        relay.open_session("again") and relay.open_session("again")


def _event_of(packet: RtpPacket) -> TelephoneEvent:
    return parse_telephone_event(packet.payload)


async def test_swallowed_dtmf_leaves_no_hole_in_the_sequence(relay: MediaRelay) -> None:
    session, phone_a, phone_b = await _call(relay)
    try:
        session.a.set_codecs([Codec(0, "PCMU", 8000), Codec(101, "telephone-event", 8000)])
        session.a.swallow_dtmf = True
        session.b.set_remote(phone_b.address)
        stream = Stream(9, 65533, 8000)  # the sequence wraps during the test
        for packet in [stream.next(), *_press(1, 8160, stream), stream.next(), stream.next()]:
            phone_a.send(packet, session.a.local_rtp)
        got = [await phone_b.receive_rtp() for _ in range(3)]
        assert [p.sequence for p in got] == [65533, 65534, 65535]
        assert {p.ssrc for p in got} == {9}
        assert [p.timestamp for p in got] == [8000, 8160, 8320]  # timestamps stay the sender's
    finally:
        phone_a.close()
        phone_b.close()


async def test_send_dtmf_puts_events_on_the_stream_in_real_time(fast_path: bool) -> None:
    clock = ManualClock()
    low, high = _port_range(4)
    relay = MediaRelay(HOST, low, high, clock=clock, fast_path=fast_path)
    session = relay.open_session("dtmf")
    phone_a, phone_b = await endpoint(), await endpoint()
    try:
        session.b.set_remote(phone_b.address)
        session.b.set_codecs([Codec(0, "PCMU", 8000), Codec(97, "telephone-event", 8000)])
        stream = Stream(0x77, 200, 16000)
        before = await _talk(phone_a, stream, session.a.local_rtp, phone_b, 2)
        clock.advance(0.01)  # half a frame after the last audio packet
        assert session.b.send_dtmf("4")
        assert session.b.send_dtmf("#")  # queued behind the "4"
        start = await phone_b.receive_rtp()
        assert (start.payload_type, start.ssrc, start.marker) == (97, 0x77, True)
        assert start.sequence == before[-1].sequence + 1
        assert start.timestamp == before[-1].timestamp + 80  # where the stream's clock is now
        assert _event_of(start) == TelephoneEvent(4, False, 10, 400)
        assert phone_b.queue.empty()  # the rest comes in real time
        # audio in the middle of the event continues after the event's packets
        (middle,) = await _talk(phone_a, stream, session.a.local_rtp, phone_b, 1)
        assert (middle.sequence, middle.timestamp) == (start.sequence + 1, stream.timestamp - 160)
        clock.advance(0.05)
        update = await phone_b.receive_rtp()
        assert (update.sequence, update.timestamp, update.marker) == (
            middle.sequence + 1,
            start.timestamp,
            False,
        )
        assert _event_of(update) == TelephoneEvent(4, False, 10, 800)
        clock.advance(0.05)
        ends = [await phone_b.receive_rtp() for _ in range(3)]
        assert [p.sequence for p in ends] == [update.sequence + 1 + i for i in range(3)]
        assert {_event_of(p) for p in ends} == {TelephoneEvent(4, True, 10, 800)}
        assert {p.timestamp for p in ends} == {start.timestamp}
        assert phone_b.queue.empty()
        clock.advance(0.05)  # the pause between two presses
        second = await phone_b.receive_rtp()
        assert _event_of(second).event == 11
        assert second.marker
        assert second.sequence == ends[-1].sequence + 1
        # 150 ms after the middle audio packet, on its clock
        assert second.timestamp == middle.timestamp + round(0.15 * 8000)
        clock.advance(0.1)
        rest = [_event_of(await phone_b.receive_rtp()).end for _ in range(4)]
        assert rest == [False, True, True, True]
        (after,) = await _talk(phone_a, stream, session.a.local_rtp, phone_b, 1)
        assert after.sequence == second.sequence + 5
        assert after.ssrc == 0x77
        assert session.b.stats.dtmf_sent == 2
    finally:
        relay.close()
        phone_a.close()
        phone_b.close()


async def test_send_dtmf_before_any_audio_starts_the_stream(relay: MediaRelay) -> None:
    session, phone_a, phone_b = await _call(relay)
    try:
        assert not session.b.send_dtmf("1")  # no telephone-event negotiated: use INFO instead
        session.b.set_codecs([Codec(0, "PCMU", 8000), Codec(101, "telephone-event", 8000)])
        session.b.set_remote(phone_b.address)
        assert session.b.send_dtmf("1")
        start = await phone_b.receive_rtp()
        assert start.payload_type == 101
        assert start.marker
        # the caller's audio then continues the stream the event began
        (audio,) = await _talk(phone_a, Stream(5, 9, 9), session.a.local_rtp, phone_b, 1)
        assert (audio.ssrc, audio.sequence) == (start.ssrc, (start.sequence + 1) & 0xFFFF)
        assert (audio.timestamp - start.timestamp) & 0xFFFFFFFF == 160  # at least one frame on
        session.close()
        assert not session.b.send_dtmf("1")
    finally:
        phone_a.close()
        phone_b.close()


async def test_packets_queued_while_the_thread_waits_are_all_forwarded_in_order(
    caplog: pytest.LogCaptureFixture,
) -> None:
    low, high = _port_range(4)
    media = MediaRelay(HOST, low, high, clock=ManualClock())
    session, phone_a, phone_b = await _call(media)
    try:
        session.b.set_remote(phone_b.address)
        stream = Stream(7, 1, 0)
        with media.engine.lock:  # five packets wait before the thread reads any
            for _ in range(5):
                phone_a.send(stream.next(), session.a.local_rtp)
        got = [await phone_b.receive_rtp() for _ in range(5)]
        assert [packet.sequence for packet in got] == [1, 2, 3, 4, 5]
        phone_b.send(Stream(8, 1, 0).next(), session.b.local_rtp)
        assert (await phone_a.receive_rtp()).ssrc == 8
        assert session.a.stats == LegStats(5, 5, 0, 0, 0, 0, 0)
        assert session.b.stats == LegStats(1, 1, 0, 0, 0, 0, 0)
        assert "relay handler failed" not in caplog.text
    finally:
        phone_a.close()
        phone_b.close()
        media.close()


async def test_new_sdp_address_unties_the_latch_and_the_same_one_keeps_it(
    relay: MediaRelay,
) -> None:
    session, phone_a, phone_b = await _call(relay)
    moved = await endpoint()
    try:
        session.b.set_remote(phone_b.address)
        # The SDP names a port nobody sends from (as behind NAT); the first packet latches.
        sdp_address = Address(HOST, 9)
        session.a.set_remote(sdp_address)
        phone_a.send(Stream(1, 1, 1).next(), session.a.local_rtp)
        assert (await phone_b.receive_rtp()).ssrc == 1
        assert session.a.remote_rtp == (HOST, phone_a.address.port)
        # a re-INVITE with the same SDP (hold, a refresh): the latch to the real source stays
        session.a.set_remote(sdp_address)
        assert session.a.latched
        assert session.a.remote_rtp == (HOST, phone_a.address.port)
        phone_b.send(Stream(2, 1, 1).next(), session.b.local_rtp)
        assert (await phone_a.receive_rtp()).ssrc == 2  # still sent to the latched source
        phone_a.send(Stream(1, 2, 1).next(), session.a.local_rtp)
        assert (await phone_b.receive_rtp()).sequence == 2
        # a re-INVITE with a new address: the old latch goes, the new source latches
        session.a.set_remote(moved.address)
        assert not session.a.latched
        moved.send(Stream(3, 1, 1).next(), session.a.local_rtp)
        assert (await phone_b.receive_rtp()).ssrc == 3
        assert session.a.remote_rtp == (HOST, moved.address.port)
        _intrude(relay, session.a)  # anyone else, the old phone included, is dropped again
        moved.send(Stream(3, 2, 1).next(), session.a.local_rtp)
        assert (await phone_b.receive_rtp()).sequence == 2
        assert session.a.stats.dropped_source == _dropped_by_leg(relay)
    finally:
        for phone in (phone_a, phone_b, moved):
            phone.close()


async def test_a_strangers_packet_queued_before_the_latch_is_still_dropped(
    relay: MediaRelay,
) -> None:
    session, phone_a, phone_b = await _call(relay)
    stranger = await endpoint()
    try:
        session.b.set_remote(phone_b.address)
        stream = Stream(1, 1, 1)
        with relay.engine.lock:  # all three wait before the thread reads: the first one latches
            phone_a.send(stream.next(), session.a.local_rtp)
            stranger.send(Stream(666, 1, 1).next(), session.a.local_rtp)
            phone_a.send(stream.next(), session.a.local_rtp)
            await asyncio.sleep(0)  # let the event loop hand the datagrams to the kernel
        assert [(await phone_b.receive_rtp()).sequence for _ in range(2)] == [1, 2]
        phone_a.send(stream.next(), session.a.local_rtp)
        assert (await phone_b.receive_rtp()).sequence == 3
        assert session.a.stats == LegStats(4, 3, 1, 0, 0, 0, 0)
    finally:
        for phone in (phone_a, phone_b, stranger):
            phone.close()
