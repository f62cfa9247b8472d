"""Feature codes dialled as RFC 4733 telephone-events, end to end through the B2BUA and the relay.

The phones' signalling is the harness's; their media is real UDP on 127.0.0.1. The desk (the
callee) dials; the caller's socket records everything the relay sends it. "Never arrives" is shown
the way UDP on loopback allows: a later audio packet, sent after the digits, arrives, and nothing
before it was a telephone-event. The B2BUA's timers (the inter-digit timeout) run on the
harness's ManualClock; the regenerated events are paced by the media engine's own clock in real
time, so the tests wait for them (bounded) and never measure them.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator

import pytest

from sip_core.dtmf import DIGITS, TelephoneEvent, build_telephone_event, parse_telephone_event
from sip_core.events import DtmfMethod, DtmfReceived
from sip_core.rtp import RtpPacket, parse_rtp
from sip_core.transport import Address

from .test_b2bua_harness import Harness, Phone, sdp, settle

# Every test here runs against an engine forwarding in Python and one forwarding in C.
pytestmark = pytest.mark.usefixtures("packet_path")

HOST = "127.0.0.1"
WAIT = 5.0  # an upper bound so a broken relay fails instead of hanging; never a measurement
CALLER_EVENT_PT = 96  # the caller numbers telephone-event differently from the desk (101)


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness()
    yield harness
    harness.close()


class MediaPhone:
    """A phone's RTP socket: sends a stream with its own numbering, keeps what it receives."""

    def __init__(self, ssrc: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.sock.setblocking(False)
        self.ssrc = ssrc
        self.sequence = 1000
        self.timestamp = 50_000
        self.received: list[RtpPacket] = []

    def audio(self, to: Address) -> None:
        packet = RtpPacket(0, self.sequence, self.timestamp, self.ssrc, b"\xd5" * 160)
        self.sequence += 1
        self.timestamp += 160
        self.sock.sendto(packet.to_bytes(), (to.host, to.port))

    def press(self, digit: str, to: Address) -> None:
        """One key press as most phones send it: three updates, three end packets."""
        code = DIGITS.index(digit)
        for index in range(6):
            end = index >= 3
            duration = 400 * min(index + 1, 3)
            packet = RtpPacket(
                101,
                self.sequence,
                self.timestamp,
                self.ssrc,
                build_telephone_event(TelephoneEvent(code, end, 10, duration)),
                marker=index == 0,
            )
            self.sequence += 1
            self.sock.sendto(packet.to_bytes(), (to.host, to.port))
        self.timestamp += 1200

    def drain(self) -> None:
        while True:
            try:
                data = self.sock.recv(2048)
            except BlockingIOError:
                return
            self.received.append(parse_rtp(data))

    async def wait_for(self, check: Callable[[list[RtpPacket]], bool]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while True:
            self.drain()
            if check(self.received):
                return
            assert loop.time() < deadline, f"not received in time: {self.received}"
            await asyncio.sleep(0.002)

    def close(self) -> None:
        self.sock.close()


async def wait_digits(h: Harness, count: int) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while len(h.events_of(DtmfReceived)) < count:
        assert loop.time() < deadline, h.events_of(DtmfReceived)
        await asyncio.sleep(0.002)


async def talking(h: Harness) -> tuple[Phone, Phone, Phone, MediaPhone, MediaPhone]:
    """Carol calls Alice's desk, which answers; both phones' RTP flows through the relay."""
    carol = h.phone("401", 5401)
    desk = h.phone("201", 5201)
    mobile = h.phone("202", 5202)
    invite = carol.invite("201", body=sdp(6401, pt=CALLER_EVENT_PT))
    await settle()
    desk.answer(desk.last_request("INVITE"), 200, sdp(6201))
    carol.confirm(invite, carol.responses(200)[-1])
    call = h.only_call()
    assert call.media is not None
    caller_rtp, desk_rtp = MediaPhone(0xCA11), MediaPhone(0xDE5C)
    # Each phone's first packet latches its leg (the SDP ports are not the sockets').
    caller_rtp.audio(call.media.a.local_rtp)
    desk_rtp.audio(call.media.b.local_rtp)
    await caller_rtp.wait_for(lambda got: len(got) == 1)
    return carol, desk, mobile, caller_rtp, desk_rtp


def events(packets: list[RtpPacket]) -> list[RtpPacket]:
    return [p for p in packets if p.payload_type != 0]


def check_stream(packets: list[RtpPacket]) -> None:
    """One stream as a receiver needs it: one SSRC, every sequence number once, in order."""
    assert len({p.ssrc for p in packets}) == 1
    first = packets[0].sequence
    assert [p.sequence for p in packets] == [(first + i) & 0xFFFF for i in range(len(packets))]


def pressed(packets: list[RtpPacket]) -> list[str]:
    """The key presses in a received stream, checked to be well-formed RFC 4733 events."""
    digits: list[str] = []
    by_start: dict[int, list[RtpPacket]] = {}
    for packet in events(packets):
        assert packet.payload_type == CALLER_EVENT_PT
        by_start.setdefault(packet.timestamp, []).append(packet)
    for start, group in by_start.items():
        parsed = [parse_telephone_event(p.payload) for p in group]
        assert [p.marker for p in group] == [True] + [False] * (len(group) - 1), start
        assert len({e.event for e in parsed}) == 1
        durations = [e.duration for e in parsed]
        assert durations == sorted(durations)
        assert durations[0] > 0
        assert [e.end for e in parsed][-3:] == [True] * 3
        assert not any(e.end for e in parsed[:-3])
        assert len({e.duration for e in parsed[-3:]}) == 1
        digits.append(DIGITS[parsed[0].event])
    starts = list(by_start)
    assert starts == sorted(starts)  # events move forward on the stream's clock
    return digits


async def test_star_zero_never_reaches_the_caller_while_the_flip_happens(h: Harness) -> None:
    carol, _desk, mobile, caller_rtp, desk_rtp = await talking(h)
    call = h.only_call()
    assert call.media is not None
    relay_b = call.media.b.local_rtp
    try:
        for digit in "*0":
            desk_rtp.audio(relay_b)
            desk_rtp.press(digit, relay_b)
        desk_rtp.audio(relay_b)
        await wait_digits(h, 2)
        assert [(e.digit, e.method) for e in h.events_of(DtmfReceived)] == [
            ("*", DtmfMethod.RFC4733),
            ("0", DtmfMethod.RFC4733),
        ]
        # "*0" is complete: the flip rang the only other device at once, no timer involved
        (ringing,) = [m for m in mobile.new() if getattr(m, "method", None) == "INVITE"]
        assert ringing.to.uri.user == "202"
        desk_rtp.audio(relay_b)
        await caller_rtp.wait_for(lambda got: len(got) == 5)
        assert events(caller_rtp.received) == []
        check_stream(caller_rtp.received)  # no hole where the 12 event packets were
        assert (await call.media.b.fetch_stats()).dtmf_swallowed == 12
        assert carol.requests("INFO") == []
    finally:
        caller_rtp.close()
        desk_rtp.close()


async def test_digits_that_are_no_code_reach_the_caller_as_telephone_events(
    h: Harness,
) -> None:
    carol, _desk, mobile, caller_rtp, desk_rtp = await talking(h)
    call = h.only_call()
    assert call.media is not None
    relay_b = call.media.b.local_rtp
    try:
        desk_rtp.audio(relay_b)
        desk_rtp.press("5", relay_b)  # cannot start "*0": passed on at once
        await wait_digits(h, 1)
        # The engine sends the regenerated event in real time: start, updates, end.
        await caller_rtp.wait_for(lambda got: len(events(got)) == 5)
        desk_rtp.audio(relay_b)
        desk_rtp.press("*", relay_b)  # may start "*0": held...
        desk_rtp.press("7", relay_b)  # ...until "*7" cannot be a code: both go on, in order
        await wait_digits(h, 3)
        await caller_rtp.wait_for(lambda got: len(events(got)) == 15)
        desk_rtp.audio(relay_b)
        await caller_rtp.wait_for(lambda got: len(events(got)) == 15 and got[-1].payload_type == 0)
        assert pressed(caller_rtp.received) == ["5", "*", "7"]
        check_stream(caller_rtp.received)
        audio = [p for p in caller_rtp.received if p.payload_type == 0]
        first_event = events(caller_rtp.received)[0]
        before = [p for p in audio if p.sequence < first_event.sequence]
        # The event starts on the stream's clock, where its audio is, not somewhere else: after
        # the last audio, by the real time the digit took to go round (bounded by WAIT).
        assert 0 <= (first_event.timestamp - before[-1].timestamp) & 0xFFFFFFFF <= 8000 * WAIT
        assert (await call.media.b.fetch_stats()).dtmf_swallowed == 18
        assert (await call.media.a.fetch_stats()).dtmf_sent == 3
        assert [m for m in mobile.new() if getattr(m, "method", None) == "INVITE"] == []
        assert carol.requests("INFO") == []
    finally:
        caller_rtp.close()
        desk_rtp.close()


async def test_a_star_that_times_out_is_passed_on(h: Harness) -> None:
    _carol, _desk, mobile, caller_rtp, desk_rtp = await talking(h)
    call = h.only_call()
    assert call.media is not None
    relay_b = call.media.b.local_rtp
    try:
        desk_rtp.press("*", relay_b)
        await wait_digits(h, 1)
        desk_rtp.audio(relay_b)
        await caller_rtp.wait_for(lambda got: len(got) == 2)
        assert events(caller_rtp.received) == []  # held while it may become "*0"
        h.clock.advance(2)  # the inter-digit timeout: "*" alone is no code
        await caller_rtp.wait_for(lambda got: len(events(got)) == 5)
        desk_rtp.audio(relay_b)
        await caller_rtp.wait_for(lambda got: len(events(got)) == 5 and got[-1].payload_type == 0)
        assert pressed(caller_rtp.received) == ["*"]
        check_stream(caller_rtp.received)
        assert [m for m in mobile.new() if getattr(m, "method", None) == "INVITE"] == []
    finally:
        caller_rtp.close()
        desk_rtp.close()


async def test_a_far_end_without_telephone_event_gets_info(h: Harness) -> None:
    carol = h.phone("401", 5401)
    desk = h.phone("201", 5201)
    body = (
        b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        b"m=audio 6401 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
    )
    invite = carol.invite("201", body=body)
    await settle()
    desk.answer(desk.last_request("INVITE"), 200, sdp(6201))
    carol.confirm(invite, carol.responses(200)[-1])
    call = h.only_call()
    assert call.media is not None
    desk_rtp = MediaPhone(0xDE5C)
    try:
        desk_rtp.press("7", call.media.b.local_rtp)
        await wait_digits(h, 1)
        (info,) = carol.requests("INFO")
        assert b"Signal=7" in info.body
        assert (await call.media.b.fetch_stats()).dtmf_swallowed == 6
    finally:
        desk_rtp.close()
