"""The media engine process: its control protocol, its life cycle, and what happens when it dies.

Real processes and real sockets on 127.0.0.1. Waits are bounded only so that a broken engine fails
instead of hanging; nothing is timed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from sip_core.calls import CallOutcome
from sip_core.clock import LoopClock
from sip_core.config import Device, PbxConfig, RtpSettings, SipSettings, User
from sip_core.media import MediaRelay, RelayError
from sip_core.media import protocol as p
from sip_core.media.engine import MediaEngine
from sip_core.media.fastpath import FastPathState
from sip_core.media.scheduling import Scheduling
from sip_core.pbx import Pbx
from sip_core.transport import Address

from .test_b2bua_udp import DOMAIN, PASSWORD, UdpPhone
from .test_flip_udp import audio_port, call_carol_to_desk, rtp_packet, rtp_socket, udp_phone
from .test_media_scheduling import allowed as _realtime_allowed
from .test_pbx import free_udp_port

# Every test here runs against an engine forwarding in Python and one forwarding in C.
pytestmark = pytest.mark.usefixtures("packet_path")

HOST = "127.0.0.1"
WAIT = 5.0
ROOT = Path(__file__).resolve().parents[2]


def _port_range(pairs: int) -> tuple[int, int]:
    """A random range below Linux's ephemeral ports; pairs in use are skipped anyway."""
    start = random.randrange(24000, 32000 - 2 * pairs, 2)
    return start, start + 2 * pairs - 1


def engine_children() -> set[int]:
    """Process ids of the media engines this test process has started and not yet reaped."""
    found: set[int] = set()
    for children in Path("/proc/self/task").glob("*/children"):
        for pid in children.read_text().split():
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"sip_core.media.engine" in command:
                found.add(int(pid))
    return found


def bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
        return True


async def until(check: Callable[[], bool], what: str, limit: float = WAIT) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not check():
        assert loop.time() < deadline, f"not in time: {what}"
        await asyncio.sleep(0.01)


# -- the protocol ------------------------------------------------------------------------------

SAMPLES: list[p.Message] = [
    p.OpenSession(1, "call-1", 2, 3),
    p.OpenSpare(1, 4, "b"),
    p.SetRemote(2, HOST, 6000, HOST, 6001, False),
    p.SetRemote(2, None, 0, None, 0, False),
    p.SetCodecs(2, ((0, "PCMU", 8000), (101, "telephone-event", 8000))),
    p.SetSwallow(2, True),
    p.SetPayloadMap(3, ((96, 101),)),
    p.SendDtmf(3, "*"),
    p.Switch(1, "b", 4, HOST, 7000, HOST, 7001, True, None, ((96, 101),), ()),
    p.CloseSession(1),
    p.DiscardSpare(1, 4),
    p.QueryStats(9, 2),
    p.Sync(10),
    p.Shutdown(),
    p.Hello(p.PROTOCOL_VERSION, 1234, "compiled", Scheduling.REALTIME.value),
    p.Digit(1, "a", "5", 1000, 400, 10, True),
    p.Digit(1, "b", "#", None, 0, 0, False),
    p.Latched(2, HOST, 6000),
    p.LegClosed(2),
    p.Stats(9, 2, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    p.Play(2, 11, "tone", ("beep",), None, 20),
    p.Play(2, 12, "silence", (), 400, 20),
    p.Play(2, 13, "sequence", ("prompt:press", "file:/labels/a.wav"), None, 20),
    p.Prepare("sequence", ("prompt:for", "file:/labels/a.wav"), 20),
    p.StopPlay(2, 11),
    p.SetMuted(3, True),
    p.PlayEnded(2, 11, "finished"),
    p.SetOnHold(3, True),
    p.MediaTimeout(1, "b", 60.0),
    p.Refused("no leg 99"),
    p.Synced(10),
]


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_every_message_survives_the_wire(message: p.Message) -> None:
    assert p.decode(p.encode(message), message.FDS) == message


@pytest.mark.parametrize(
    "message",
    [*SAMPLES, p.Play(2, 14, p.PlayKind.TONE, ("ring",), None, 20)],  # an enum as the kind
    ids=lambda m: type(m).__name__,
)
def test_the_wire_form_is_the_fields_as_a_json_array(message: p.Message) -> None:
    """The header, then every field in declaration order as one compact JSON array (tuples as
    arrays): the form both ends have always read, whatever builds it."""
    body = json.dumps(dataclasses.astuple(message), separators=(",", ":")).encode()
    assert p.encode(message) == bytes([p.PROTOCOL_VERSION, message.KIND]) + body


def test_every_kind_has_a_sample() -> None:
    assert {type(m).KIND for m in SAMPLES} == set(p.Kind)


@pytest.mark.parametrize(
    ("data", "fds", "reason"),
    [
        (b"\x01", 0, "no header"),
        (bytes([p.PROTOCOL_VERSION + 1, p.Kind.SHUTDOWN]) + b"[]", 0, "protocol version"),
        (bytes([p.PROTOCOL_VERSION, 63]) + b"[]", 0, "unknown message kind"),
        (bytes([p.PROTOCOL_VERSION, p.Kind.OPEN_SPARE]) + b'[1,2,"a"]', 0, "sockets"),
        (bytes([p.PROTOCOL_VERSION, p.Kind.SET_SWALLOW]) + b"{not json", 0, "not JSON"),
        (bytes([p.PROTOCOL_VERSION, p.Kind.SET_SWALLOW]) + b"[1]", 0, "expected 2 fields"),
        (bytes([p.PROTOCOL_VERSION, p.Kind.SET_SWALLOW]) + b'{"leg":1}', 0, "expected 2"),
    ],
)
def test_what_is_not_a_message_is_refused(data: bytes, fds: int, reason: str) -> None:
    with pytest.raises(p.ProtocolError, match=reason):
        p.decode(data, fds)


def test_a_batch_carries_each_message_with_its_own_sockets() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sent = [_udp() for _ in range(6)]
    try:
        messages = [p.OpenSession(1, "call-1", 2, 3), p.SetSwallow(2, True), p.OpenSpare(1, 4, "b")]
        batch = p.encode_batch([p.encode(m) for m in messages])
        socket.send_fds(ours, [batch], [sock.fileno() for sock in sent])
        ours.send(p.encode(p.Sync(5)))  # one message alone reads the same way
        theirs.settimeout(WAIT)
        received = p.receive_all(theirs)
        assert received is not None
        assert [message for message, _ in received] == messages
        ports = [[sock.getsockname() for sock in sockets] for _, sockets in received]
        names = [sock.getsockname() for sock in sent]
        assert ports == [names[:4], [], names[4:]]
        for _, sockets in received:
            for sock in sockets:
                sock.close()
        assert p.receive_all(theirs) == [(p.Sync(5), [])]
    finally:
        for sock in (ours, theirs, *sent):
            sock.close()


@pytest.mark.parametrize("read", [p.receive, p.receive_all])
def test_a_datagram_cut_short_is_refused(read: Callable[[socket.socket], object]) -> None:
    """Too long for the reader's buffer, or more sockets than it takes: never half-read."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sent = [_udp() for _ in range(p.MAX_BATCH_FDS + 1)]
    try:
        theirs.settimeout(WAIT)
        ours.send(p.encode(p.Refused("x" * p.MAX_MESSAGE)))
        with pytest.raises(p.ProtocolError, match="cut short"):
            read(theirs)
        socket.send_fds(ours, [p.encode(p.Sync(1))], [sock.fileno() for sock in sent])
        with pytest.raises(p.ProtocolError, match="cut short"):
            read(theirs)
    finally:
        for sock in (ours, theirs, *sent):
            sock.close()


def _batch(*parts: bytes) -> bytes:
    return bytes([p.PROTOCOL_VERSION, p.BATCH_KIND]) + b"".join(parts)


def _entry(data: bytes) -> bytes:
    return len(data).to_bytes(4) + data


@pytest.mark.parametrize(
    ("data", "fds", "reason"),
    [
        (_batch(), 0, "empty batch"),
        (_batch(b"\x00\x00"), 0, "inside a message's length"),
        (_batch(_entry(p.encode(p.Sync(1)))[:-1]), 0, "inside a message"),
        (_batch(_entry(b"\x02")), 0, "inside a message"),
        (_batch(_entry(p.encode(p.Sync(1))), _entry(b"\x02\x0b[1]")), 0, "expected 2 fields"),
        (_batch(_entry(p.encode(p.OpenSpare(1, 4, "b")))), 0, "0 sockets"),
        (_batch(_entry(p.encode(p.Sync(1)))), 2, "2 sockets"),
        (_batch(_entry(_batch(_entry(p.encode(p.Sync(1)))))), 0, "unknown message kind"),
        (bytes([p.PROTOCOL_VERSION + 1, p.BATCH_KIND]) + _entry(p.encode(p.Sync(1))), 0, "version"),
    ],
)
def test_a_bad_batch_is_refused_as_a_whole(data: bytes, fds: int, reason: str) -> None:
    with pytest.raises(p.ProtocolError, match=reason):
        p.decode_all(data, fds)


# -- the engine process on its own ----------------------------------------------------------------


def _start_engine() -> tuple[subprocess.Popen[bytes], socket.socket]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    process = subprocess.Popen(
        [sys.executable, "-m", "sip_core.media.engine", "--channel", str(theirs.fileno())],
        pass_fds=(theirs.fileno(),),
        env=env,
        stderr=subprocess.DEVNULL,
    )
    theirs.close()
    ours.settimeout(WAIT)
    return process, ours


def _next(channel: socket.socket) -> p.Message:
    received = p.receive(channel)
    assert received is not None
    message, sockets = received
    assert sockets == []
    return message


def test_the_engine_refuses_bad_commands_and_keeps_serving(packet_path: str) -> None:
    process, channel = _start_engine()
    try:
        hello = _next(channel)
        assert isinstance(hello, p.Hello)
        assert (hello.version, hello.pid) == (p.PROTOCOL_VERSION, process.pid)
        expected = "compiled" if packet_path == "compiled" else FastPathState.SWITCHED_OFF
        assert hello.packet_path == expected
        channel.send(bytes([p.PROTOCOL_VERSION, 63]) + b"[]")  # no such kind
        channel.send(p.encode(p.SetRemote(99, HOST, 6000, HOST, 6001, False)))  # no such leg
        channel.send(bytes([p.PROTOCOL_VERSION + 1, p.Kind.SHUTDOWN]) + b"[]")  # another version
        channel.send(p.encode(p.Sync(5)))
        replies = [_next(channel) for _ in range(4)]
        assert [type(r) for r in replies] == [p.Refused, p.Refused, p.Refused, p.Synced]
        assert "unknown message kind 63" in json.dumps(replies[0].reason)  # type: ignore[attr-defined]
        assert "no leg 99" in replies[1].reason  # type: ignore[attr-defined]
        assert "protocol version" in replies[2].reason  # type: ignore[attr-defined]
        assert replies[3] == p.Synced(5)
        assert process.poll() is None
    finally:
        channel.close()  # the end of the channel is the end of the engine
    assert process.wait(WAIT) == 0


def test_the_engine_exits_when_told_to() -> None:
    process, channel = _start_engine()
    try:
        assert isinstance(_next(channel), p.Hello)
        channel.send(p.encode(p.Shutdown()))
        assert process.wait(WAIT) == 0
    finally:
        channel.close()


def test_the_engine_carries_out_a_batch_in_order_and_nothing_after_a_shutdown() -> None:
    process, channel = _start_engine()
    sockets = [_udp() for _ in range(4)]
    try:
        assert isinstance(_next(channel), p.Hello)
        commands = [
            p.OpenSession(1, "call-1", 10, 11),
            p.SetRemote(10, HOST, 6000, HOST, 6001, True),
            p.SetSwallow(11, True),
            p.CloseSession(1),
            p.Sync(3),
        ]
        batch = p.encode_batch([p.encode(command) for command in commands])
        socket.send_fds(channel, [batch], [sock.fileno() for sock in sockets])
        replies = [_next(channel) for _ in range(3)]
        assert replies[-1] == p.Synced(3)  # after both legs closed: they came first
        assert set(replies[:2]) == {p.LegClosed(10), p.LegClosed(11)}
        channel.send(p.encode_batch([p.encode(p.Shutdown()), p.encode(p.Sync(4))]))
        assert process.wait(WAIT) == 0
        assert p.receive(channel) is None  # the channel's end, and no Synced(4) before it
    finally:
        channel.close()
        for sock in sockets:
            sock.close()


def test_legs_that_close_on_hold_leave_nothing_behind_without_an_rtp_timeout() -> None:
    """With ``rtp.timeout: 0`` no watch runs to prune the engine's set of held legs: each call
    that ends on hold must take its legs out of it when they close (in this process, to see it)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    engines: list[MediaEngine] = []

    def serve() -> None:  # the engine's loop belongs to the thread that made it
        engines.append(MediaEngine(theirs, HOST))  # no RTP timeout
        engines[0].run()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ours.settimeout(WAIT)
    try:
        assert isinstance(_next(ours), p.Hello)
        engine = engines[0]
        for session in range(1, 4):
            a, b = 10 * session, 10 * session + 1
            sockets = [_udp() for _ in range(4)]
            opened = p.OpenSession(session, f"call-{session}", a, b)
            socket.send_fds(ours, [p.encode(opened)], [sock.fileno() for sock in sockets])
            for sock in sockets:
                sock.close()  # the engine has its own copies
            ours.send(p.encode(p.SetOnHold(a, True)))
            ours.send(p.encode(p.SetOnHold(b, True)))
            ours.send(p.encode(p.CloseSession(session)))
        ours.send(p.encode(p.Sync(7)))
        closed: set[int] = set()
        synced = False
        while not synced or len(closed) < 6:
            message = _next(ours)
            assert not isinstance(message, p.Refused), message
            if isinstance(message, p.LegClosed):
                closed.add(message.leg)
            synced = synced or message == p.Synced(7)
        assert closed == {10, 11, 20, 21, 30, 31}
        assert engine._on_hold == set()
        assert engine._legs == {}
    finally:
        ours.send(p.encode(p.Shutdown()))
        thread.join(WAIT)
        ours.close()
    assert not thread.is_alive()


# -- the client: sessions through the engine -----------------------------------------------------

REALTIME_ALLOWED = _realtime_allowed()


@pytest.fixture
async def relay(packet_path: str) -> AsyncIterator[MediaRelay]:
    low, high = _port_range(20)
    media = MediaRelay(HOST, low, high, clock=LoopClock())
    yield media
    await media.stop()


def _udp() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    sock.setblocking(False)
    return sock


async def _receive(sock: socket.socket) -> bytes:
    loop = asyncio.get_running_loop()
    return await asyncio.wait_for(loop.sock_recv(sock, 2048), WAIT)


async def test_packets_flow_through_the_engine_and_latching_comes_back(
    relay: MediaRelay, packet_path: str
) -> None:
    session = relay.open_session("flow")
    caller, callee = _udp(), _udp()
    try:
        # The callee's far end is known from SDP; the caller's latches on its first packet.
        session.b.set_remote(None)
        caller.sendto(rtp_packet(1), (HOST, session.a.local_rtp.port))
        callee.sendto(rtp_packet(2), (HOST, session.b.local_rtp.port))
        assert (await _receive(caller))[2:4] == (2).to_bytes(2)  # callee -> caller
        caller.sendto(rtp_packet(3), (HOST, session.a.local_rtp.port))
        assert (await _receive(callee))[2:4] == (3).to_bytes(2)  # caller -> callee
        await relay.sync()
        assert session.a.latched
        assert session.a.remote_rtp == caller.getsockname()
        assert session.b.remote_rtp == callee.getsockname()
        stats = await session.a.fetch_stats()
        # The caller's first packet came before the callee's leg had anywhere to send to.
        assert (stats.received, stats.forwarded, stats.dropped_no_peer) == (2, 1, 1)
        assert relay.engine_pid in engine_children()
        # Both legs latched: from here on the compiled path forwards, where the engine has it.
        expected = "compiled" if packet_path == "compiled" else FastPathState.SWITCHED_OFF
        assert relay.packet_path == expected
        for number in range(4, 14):
            caller.sendto(rtp_packet(number), (HOST, session.a.local_rtp.port))
            assert (await _receive(callee))[2:4] == number.to_bytes(2)
        stats = await session.a.fetch_stats()
        assert (stats.received, stats.forwarded) == (12, 11)
        # The packet loop asked for real-time scheduling, the default, and has it where allowed.
        pid = relay.engine_pid
        assert pid is not None
        if REALTIME_ALLOWED:
            assert relay.scheduling == Scheduling.REALTIME
            assert os.sched_getscheduler(pid) == os.SCHED_RR
        else:
            assert relay.scheduling == Scheduling.NOT_PERMITTED
            assert os.sched_getscheduler(pid) == os.SCHED_OTHER
    finally:
        caller.close()
        callee.close()


async def test_an_engine_told_not_to_stays_normally_scheduled() -> None:
    low, high = _port_range(4)
    relay = MediaRelay(HOST, low, high, clock=LoopClock(), realtime=False)
    try:
        relay.start()
        await relay.sync()
        pid = relay.engine_pid
        assert pid is not None
        assert relay.scheduling == Scheduling.OFF
        assert os.sched_getscheduler(pid) == os.SCHED_OTHER
    finally:
        await relay.stop()


async def test_commands_of_one_turn_go_to_the_engine_as_one_datagram(
    relay: MediaRelay, monkeypatch: pytest.MonkeyPatch
) -> None:
    relay.start()
    await relay.sync()
    sent: list[tuple[list[p.Message], int]] = []
    send_fds = socket.send_fds

    def recording(sock: socket.socket, buffers: list[bytes], fds: list[int]) -> int:
        sent.append((p.decode_all(buffers[0], len(fds)), len(fds)))
        return send_fds(sock, buffers, fds)

    monkeypatch.setattr(socket, "send_fds", recording)
    session = relay.open_session("batched")
    session.a.set_remote(Address(HOST, 6000))
    session.a.swallow_dtmf = True
    assert sent == []  # at the end of this turn of the loop
    await asyncio.sleep(0)
    assert [[type(m) for m in messages] for messages, _ in sent] == [
        [p.OpenSession, p.SetRemote, p.SetSwallow]
    ]
    assert sent[0][1] == 4  # the session's sockets
    sent.clear()
    # Over the limit of sockets per datagram (16): a second datagram takes the rest, in order.
    sessions = [relay.open_session(f"many-{n}") for n in range(5)]
    await relay.sync()
    assert [fds for _, fds in sent] == [16, 4]
    opened = [m.call_id for messages, _ in sent for m in messages if isinstance(m, p.OpenSession)]
    assert opened == [f"many-{n}" for n in range(5)]
    assert isinstance(sent[-1][0][-1], p.Sync)
    assert all(s.a.local_rtp.port and not bindable(s.a.local_rtp.port) for s in sessions)
    for item in (session, *sessions):
        item.close()
    await relay.sync()


async def test_a_closed_session_gives_its_ports_back(relay: MediaRelay) -> None:
    available = relay.ports.available
    session = relay.open_session("ports")
    spare = session.open_spare("b")
    ports = [
        leg.local_rtp.port + offset for leg in (session.a, session.b, spare) for offset in (0, 1)
    ]
    await relay.sync()
    assert relay.ports.available == available - 3
    assert not any(bindable(port) for port in ports)  # the engine holds them
    session.close()  # the spare too: no switch took it
    await relay.sync()
    assert relay.ports.available == available
    assert all(bindable(port) for port in ports)
    assert relay.sessions == {}


async def test_a_command_for_a_closed_session_is_refused(relay: MediaRelay) -> None:
    session = relay.open_session("closed")
    session.close()
    with pytest.raises(RelayError, match="closed"):
        session.open_spare("b")
    with pytest.raises(RelayError, match="closed"):
        await session.switch_leg("b")
    assert not session.a.send_dtmf("5")


async def test_stop_ends_the_engine_and_frees_every_port() -> None:
    low, high = _port_range(10)
    relay = MediaRelay(HOST, low, high, clock=LoopClock())
    sessions = [relay.open_session(f"stop-{n}") for n in range(3)]
    sessions[0].open_spare("a")
    await relay.sync()
    pid = relay.engine_pid
    assert pid is not None
    assert pid in engine_children()
    assert not bindable(sessions[1].a.local_rtp.port)
    await relay.stop()
    assert relay.engine_pid is None
    assert pid not in engine_children()  # exited and reaped: no child left behind
    assert all(bindable(port) for port in range(low, high + 1))
    assert relay.ports.available == relay.ports.capacity


# -- the engine dies mid-call --------------------------------------------------------------------

RTP_MIN, RTP_MAX = 46000, 46999


@pytest.fixture
async def pbx() -> AsyncIterator[Pbx]:
    config = PbxConfig(
        sip=SipSettings(listen=HOST, port=0, domain=DOMAIN),
        rtp=RtpSettings(RTP_MIN, RTP_MAX),
        users=(
            User("Alice", "200", (Device("201", PASSWORD, "desk"),)),
            User("Carol", "400", (Device("401", PASSWORD, "desk"),)),
        ),
    )
    instance = Pbx(config)
    await instance.start()
    yield instance
    await instance.stop()


async def _talk(pbx: Pbx, carol: UdpPhone, desk: UdpPhone) -> tuple[socket.socket, socket.socket]:
    """A call from Carol to the desk with RTP both ways through the engine; the RTP sockets."""
    carol_rtp, desk_rtp = rtp_socket(), rtp_socket()
    ok = await call_carol_to_desk(pbx, carol, desk, carol_rtp.getsockname()[1])
    (call,) = pbx.calls()
    assert call.media is not None
    loop = asyncio.get_running_loop()
    desk_rtp.sendto(rtp_packet(1), (HOST, call.media.b.local_rtp.port))  # latches the desk's leg
    assert (await loop.run_in_executor(None, carol_rtp.recv, 2048))[2:4] == (1).to_bytes(2)
    carol_rtp.sendto(rtp_packet(2), (HOST, audio_port(ok.body)))
    assert (await loop.run_in_executor(None, desk_rtp.recv, 2048))[2:4] == (2).to_bytes(2)
    return carol_rtp, desk_rtp


async def test_a_killed_engine_ends_its_calls_and_a_new_one_serves_new_calls(pbx: Pbx) -> None:
    carol = await udp_phone(pbx, "401")
    desk = await udp_phone(pbx, "201")
    phones = [carol, desk]
    sockets: list[socket.socket] = []
    try:
        sockets += await _talk(pbx, carol, desk)
        (engine,) = engine_children()
        (call,) = pbx.calls()
        assert call.media is not None
        ports = [call.media.a.local_rtp.port, call.media.b.local_rtp.port]
        os.kill(engine, signal.SIGKILL)
        # Both sides hear the call end, and the record says why.
        carol_bye = await carol.request("BYE")
        desk_bye = await desk.request("BYE")
        assert carol_bye.call_id != desk_bye.call_id
        assert pbx.calls() == []
        (record,) = pbx.history()
        assert record.outcome is CallOutcome.FAILED
        assert "media engine was killed by signal 9" in record.reason
        assert all(bindable(port) for port in ports)  # died with the engine, released here
        # A new engine is started, and a new call has media again.
        await until(lambda: bool(engine_children() - {engine}), "a new engine")
        # A new caller phone: the old one's queue holds retransmissions of its first 407.
        phones.append(await udp_phone(pbx, "401"))
        sockets += await _talk(pbx, phones[-1], desk)
        assert engine not in engine_children()
    finally:
        for sock in sockets:
            sock.close()
        for phone in phones:
            assert phone.transport is not None
            phone.transport.close()


async def test_stopping_the_pbx_stops_the_engine_and_frees_its_ports() -> None:
    config = PbxConfig(
        sip=SipSettings(listen=HOST, port=0, domain=DOMAIN),
        rtp=RtpSettings(RTP_MIN, RTP_MAX),
        users=(
            User("Alice", "200", (Device("201", PASSWORD, "desk"),)),
            User("Carol", "400", (Device("401", PASSWORD, "desk"),)),
        ),
    )
    instance = Pbx(config)
    await instance.start()
    carol = await udp_phone(instance, "401")
    desk = await udp_phone(instance, "201")
    sockets: list[socket.socket] = []
    try:
        sockets += await _talk(instance, carol, desk)
        (engine,) = engine_children()
        (call,) = instance.calls()
        assert call.media is not None
        ports = [call.media.a.local_rtp.port, call.media.b.local_rtp.port]
        await instance.stop()  # mid-call
        assert engine not in engine_children()
        assert all(bindable(port) and bindable(port + 1) for port in ports)
        await carol.request("BYE")  # the call was ended properly first
    finally:
        for sock in sockets:
            sock.close()
        for phone in (carol, desk):
            assert phone.transport is not None
            phone.transport.close()


def _engines_of(pid: int) -> list[int]:
    result = subprocess.run(
        ["ps", "-o", "pid=,args=", "--ppid", str(pid)], capture_output=True, text=True, check=False
    )
    return [
        int(line.split()[0])
        for line in result.stdout.splitlines()
        if "sip_core.media.engine" in line
    ]


async def test_the_runner_starts_its_engine_and_stopping_it_stops_the_engine(
    tmp_path: Path,
) -> None:
    port = free_udp_port()  # free for TCP too, outside the kernel's ephemeral range
    config = tmp_path / "pbx.yaml"
    config.write_text(
        f"sip: {{listen: {HOST}, port: {port}, domain: {DOMAIN}}}\n"
        f"rtp: {{ports: {RTP_MIN}-{RTP_MAX}}}\n"
        "users:\n  - name: alice\n    extension: '200'\n    devices:\n"
        "      - {username: '201', password: desk-secret, label: Desk, type: desk}\n"
    )
    runner = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "sip_core", "--config", str(config)),
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stderr=subprocess.DEVNULL,
    )
    try:
        # A new interpreter importing sip_core, then the engine's: slow on a loaded machine.
        await until(
            lambda: len(_engines_of(runner.pid)) == 1, "the runner's media engine", limit=30.0
        )
        (engine,) = _engines_of(runner.pid)
        runner.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(runner.wait(), WAIT) == 0
        # The runner stopped its engine before exiting (not orphaned): the process is gone.
        await until(lambda: not Path(f"/proc/{engine}").exists(), "the engine to exit")
    finally:
        if runner.returncode is None:
            runner.kill()
            await runner.wait()


def test_the_engine_finds_a_source_checkout_but_never_puts_site_packages_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import site

    from sip_core.media import client

    assert client._engine_path("/elsewhere") == os.pathsep.join((str(ROOT), "/elsewhere"))
    installed = str(Path(site.getsitepackages()[0]).resolve())
    monkeypatch.setattr(client, "_SOURCE_ROOT", installed)
    assert client._engine_path("/elsewhere") == "/elsewhere"
    assert client._engine_path("") == ""
