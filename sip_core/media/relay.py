"""The media relay's core: every call's RTP and RTCP flow through a pair of legs on our own address.

This is what the media engine process runs (`sip_core.media.engine`); the SIP side drives it
through `sip_core.media.client`, which keeps the same shape of API. It can also run inside the
calling process on a thread of its own (`MediaRelay(host, port_min, port_max, clock=...)`): the
way it ran before the engine process, kept as the reference `bench/relay` compares against.

Why relay at all: a flip moves a call from one device to another in mid-conversation. If media
went device to device, the caller would have to be re-INVITEd and would see a new stream (many
phones mishandle that). With the relay in the path, the caller's side never changes: `switch_leg`
gives the other side a new socket pair for the new device, and the stream towards the caller goes
on as one stream, with the SSRC, sequence numbers and timestamps it had, offset at the switch from
the last packet forwarded and the time since. Receivers such as baresip drop packets whose
timestamp goes backwards, so the timestamp jump is always forward: at least one 20 ms frame.

Symmetric RTP (for devices behind NAT): a leg sends to the address its far end's packets come from,
latched on the first packet seen; until then to the address from SDP, if the B2BUA gave one. Once
latched, packets from anywhere else are dropped (someone guessing our ports cannot inject audio):
the RTP socket is connected to the latched source (`sip_core.media.udp_peer`), so the kernel
drops them before they reach us, and the leg reads with `recv_into` and sends with `send`, with
no address to build, compare or route per packet. A new address in the far end's SDP unties the
socket and latches afresh; the same SDP again (a re-INVITE for hold, a session refresh) keeps the
latch, which behind NAT is not the SDP's address.

Hot path (`sip_core.media.packets`): one thread with its own epoll over every socket of the relay;
per ready socket one read into a preallocated buffer, two byte looks for version and payload type,
and a send straight from the buffer (a premade memoryview of the packet's length). Per forwarded
packet the header (12 bytes) is kept for continuity, and nothing else is copied. Only while a
rewrite is active (after a flip, around DTMF we swallowed or generated, or with a payload type map)
are SSRC, sequence number and timestamp patched, in place, with `struct.pack_into`. RFC 4733
packets (one byte compare of the payload type) are tapped on the way through, reported once per
key press to the session's owner, and can be swallowed per leg (so a feature code never reaches the
far end); `send_dtmf` puts the digits that were not a code back on the stream.

Compiled forwarding (`sip_core.media.fastpath`, in the engine process where it was built): a
leg whose packets would take that common case registers its socket with the packet loop
(`_fast_update`), which then forwards them in C. The counts and the last header sent stay there
until Python needs them: every method that reads them or changes what makes a leg eligible
settles first and updates after, under the lock, so the two paths never see different states.

Threads: the public methods here take the engine's lock, which the packet loop holds while it
handles a batch; so every change is whole before the next packet. In the engine process the loop
and the control channel share one thread, and the lock is never contended.
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

from sip_core.audio import AudioCodec, PayloadStream, UnsupportedCodec, codec_for
from sip_core.clock import Clock, LoopClock, TimerHandle
from sip_core.dtmf import (
    DtmfDecoder,
    DtmfDigit,
    TelephoneEvent,
    build_telephone_event,
    event_for_digit,
)
from sip_core.rtp import RTP_HEADER, RtpPacket, rewrite_rtcp, rewrite_rtp_into
from sip_core.sdp import Codec
from sip_core.transport import Address

from .packets import RelayEngine

if TYPE_CHECKING:
    from ._fastpath import Taken
from .ports import PortAllocator, PortsExhaustedError, RelayError, bind_pair
from .udp_peer import can_disconnect, disconnect

__all__ = [
    "LegStats",
    "MediaLeg",
    "MediaRelay",
    "MediaSession",
    "PortAllocator",
    "PortsExhaustedError",
    "RelayError",
    "Side",
]

_LOGGER = logging.getLogger(__name__)

Side = Literal["a", "b"]
DEFAULT_CLOCK_RATE: Final = 8000
# After a flip, the first packet of the new stream comes at least one frame after the last one.
MIN_FRAME_SECONDS: Final = 0.02
# A regenerated RFC 4733 event: 100 ms of tone (long enough for every receiver we know), an update
# every 50 ms (RFC 4733 §2.5.1.2's suggested rate), three end packets, 50 ms of pause before the
# next queued event (a pause receivers need to tell two presses of one key apart).
DTMF_UPDATE_SECONDS: Final = 0.05
DTMF_UPDATES: Final = 2
DTMF_PAUSE_SECONDS: Final = 0.05
DTMF_END_PACKETS: Final = 3
DTMF_VOLUME: Final = 10  # -10 dBm0

type _Peer = tuple[str, int] | tuple[str, int, int, int]
type DtmfCallback = Callable[[Side, DtmfDigit], None]


class _Rewrite:
    """How packets leaving one leg are patched: continuation offsets and/or a payload type map."""

    __slots__ = (
        "marker",
        "payload_map",
        "pending",
        "sequence_offset",
        "source_bytes",
        "source_ssrc",
        "ssrc",
        "timestamp_offset",
    )

    def __init__(self, payload_map: dict[int, int]) -> None:
        self.payload_map = payload_map
        self.pending = False  # waiting for the new stream's first packet to fix the offsets
        self.ssrc: int | None = None  # the SSRC the receiver knows; None = leave packets' own
        self.source_ssrc = 0
        self.source_bytes = b""
        self.sequence_offset = 0
        self.timestamp_offset = 0
        self.marker = False


@dataclass(frozen=True, slots=True)
class LegStats:
    received: int
    forwarded: int
    dropped_source: int
    dropped_invalid: int
    dropped_no_peer: int
    dtmf_swallowed: int
    dtmf_sent: int
    dropped_held: int = 0  # from a held far end, or towards a leg that plays generated audio
    generated: int = 0  # generated audio packets sent to this leg's far end


type PlayEnded = Callable[[str], None]
"""Told once why a playback ended: "finished", "stopped", "replaced", "closed", or why it could
not start (no codec we can generate)."""

PLAY_FINISHED: Final = "finished"


class _Player:
    """Generated audio going out of one leg: its payloads, numbering and pacing."""

    __slots__ = (
        "codec",
        "due",
        "first",
        "on_end",
        "payload_type",
        "period",
        "step",
        "stream",
        "timer",
    )

    def __init__(
        self,
        stream: PayloadStream,
        codec: AudioCodec,
        payload_type: int,
        ptime_ms: int,
        on_end: PlayEnded | None,
    ) -> None:
        self.stream = stream
        self.codec = codec
        self.payload_type = payload_type
        self.period = ptime_ms / 1000
        self.step = codec.timestamp_step(ptime_ms)
        self.on_end = on_end
        self.first = True
        self.due = 0.0
        self.timer: TimerHandle | None = None


class _OutgoingEvent:
    """An RFC 4733 event being sent: its code, start timestamp, and how many updates went."""

    __slots__ = ("code", "steps", "timestamp")

    def __init__(self, code: int, timestamp: int) -> None:
        self.code = code
        self.timestamp = timestamp
        self.steps = 0


class MediaLeg:
    """One side of a call: an RTP and an RTCP socket on our address, facing one far end.

    `remote_rtp`/`remote_rtcp` are where this leg sends (latched or from SDP); `swallow_dtmf` keeps
    telephone-event packets from this leg's far end from reaching the other side.
    """

    # Slots: 38 attributes are more than CPython shares in a key-sharing instance dict, and the
    # packet thread reads about ten of them per packet.
    __slots__ = (
        "_buffer",
        "_connected",
        "_decoder",
        "_dtmf_event",
        "_dtmf_queue",
        "_dtmf_timer",
        "_engine",
        "_fast_from",
        "_fast_to",
        "_lock",
        "_now",
        "_out_header",
        "_out_last",
        "_out_time",
        "_peer",
        "_player",
        "_rewrite",
        "_rtcp",
        "_rtcp_locked",
        "_rtp",
        "_rtp_locked",
        "_sdp_remote",
        "_slices",
        "_view",
        "clock_rates",
        "closed",
        "codecs",
        "dropped_held",
        "dropped_invalid",
        "dropped_no_peer",
        "dropped_source",
        "dtmf_payload_type",
        "dtmf_sent",
        "dtmf_swallowed",
        "forwarded",
        "generated",
        "local_rtcp",
        "local_rtp",
        "muted",
        "received",
        "remote_rtcp",
        "remote_rtp",
        "rtcp_received",
        "session",
        "side",
        "swallow_dtmf",
    )

    def __init__(
        self,
        session: MediaSession,
        side: Side,
        host: str,
        port: int,
    ) -> None:
        self.session = session
        self.side: Side = side
        self.local_rtp = Address(host, port)
        self.local_rtcp = Address(host, port + 1)
        self.remote_rtp: _Peer | None = None
        self.remote_rtcp: _Peer | None = None
        self._rtp_locked = False
        self._rtcp_locked = False
        # the far end's addresses as its SDP gave them (latching may replace remote_rtp/rtcp)
        self._sdp_remote: tuple[_Peer, _Peer] | None = None
        # the RTP socket is connected to remote_rtp (only ever while latched)
        self._connected = False
        self.swallow_dtmf = False
        self.dtmf_payload_type: int | None = None
        self.clock_rates: dict[int, int] = {}
        self.codecs: list[Codec] = []  # the far end's, in its SDP's order of preference
        self.muted = False  # the far end is held: what it sends is received and dropped
        self._player: _Player | None = None
        self._decoder = DtmfDecoder()
        self._rtp: socket.socket | None = None
        self._rtcp: socket.socket | None = None
        engine = session.relay.engine
        self._engine = engine
        self._lock = engine.lock
        self._buffer = engine.buffer
        self._view = engine.view
        self._slices = engine.slices
        # the session's other leg, kept by `MediaSession._link` (read per packet: one attribute)
        self._peer: MediaLeg | None = None
        self._now = session.clock.monotonic
        # the stream leaving this leg towards its far end: the last RTP header sent, and when
        self._out_last: bytes | bytearray | None = None
        # where a forwarded packet's header is copied (no new object per packet): `_out_last`
        # then refers to it, until generated audio or DTMF puts a header of its own there
        self._out_header = bytearray(12)
        self._out_time = 0.0
        self._rewrite: _Rewrite | None = None
        # The compiled path forwards this leg's packets out of `_fast_to`; `_fast_from` is the
        # leg whose packets it forwards out of this one (see `_fast_update`).
        self._fast_to: MediaLeg | None = None
        self._fast_from: MediaLeg | None = None
        # RFC 4733 events we generate on the stream leaving this leg (digits passed on)
        self._dtmf_queue: deque[int] = deque()
        self._dtmf_event: _OutgoingEvent | None = None
        self._dtmf_timer: TimerHandle | None = None
        self.closed = False
        self.received = 0
        self.forwarded = 0
        self.dropped_source = 0
        self.dropped_invalid = 0
        self.dropped_no_peer = 0
        self.dtmf_swallowed = 0
        self.dtmf_sent = 0
        self.dropped_held = 0
        self.generated = 0
        self.rtcp_received = 0  # accepted RTCP packets (the far end is alive even if silent)

    def __repr__(self) -> str:
        return f"<MediaLeg {self.side} {self.local_rtp} -> {self.remote_rtp}>"

    @property
    def stats(self) -> LegStats:
        """The counters as of the end of the packet thread's current batch (a packet already
        received by the far end is counted: the thread counts it after sending it)."""
        with self._lock:
            self._fast_settle()
            return LegStats(
                self.received,
                self.forwarded,
                self.dropped_source,
                self.dropped_invalid,
                self.dropped_no_peer,
                self.dtmf_swallowed,
                self.dtmf_sent,
                self.dropped_held,
                self.generated,
            )

    def packets_heard(self) -> int:
        """Every accepted packet from the far end so far, RTP and RTCP (it is alive)."""
        with self._lock:
            self._fast_settle()
            return self.received - self.dropped_source - self.dropped_invalid + self.rtcp_received

    @property
    def latched(self) -> bool:
        return self._rtp_locked

    @property
    def other(self) -> MediaLeg:
        return self.session.b if self.side == "a" else self.session.a

    def set_remote(
        self, rtp: Address | None, rtcp: Address | None = None, *, latch: bool = False
    ) -> None:
        """Where to send before anything arrives (from SDP); RTCP defaults to the next port.

        With `latch`, the address is trusted at once: only packets from it are accepted (for a
        far end known not to be behind NAT). Without, the first packet seen latches as usual.
        """
        with self._lock:
            self._set_remote(rtp, rtcp, latch)
            self.session._fast_update()

    def _set_remote(self, rtp: Address | None, rtcp: Address | None, latch: bool) -> None:
        if rtp is None:
            self._sdp_remote = None
            self.remote_rtp = self.remote_rtcp = None
            self._rtp_locked = self._rtcp_locked = False
            self._untie()
            return
        rtcp = rtcp or Address(rtp.host, rtp.port + 1)
        described: tuple[_Peer, _Peer] = ((rtp.host, rtp.port), (rtcp.host, rtcp.port))
        if described == self._sdp_remote and self._rtp_locked and not latch:
            return  # the media it described before: what was latched stays (see the module doc)
        self._sdp_remote = described
        self.remote_rtp, self.remote_rtcp = described
        self._rtp_locked = self._rtcp_locked = latch
        self._untie()
        if latch:
            self._tie(self.remote_rtp)

    def _tie(self, peer: _Peer) -> None:
        """Connect the RTP socket to the latched source; its packets then take the fast handler."""
        sock = self._rtp
        if sock is None or not self.session.relay.connect_sockets:
            return
        try:
            sock.connect(peer)
        except OSError as exc:  # it stays unconnected: the checks happen in Python instead
            _LOGGER.debug("leg %s cannot connect to %s: %s", self.side, peer, exc)
            return
        self._connected = True
        self._engine.set_handler(sock, self._rtp_from_peer)
        self.session._fast_update()

    def _untie(self) -> None:
        """Take datagrams from anyone again (the latch was dropped)."""
        sock = self._rtp
        if not self._connected or sock is None:
            return
        self._connected = False
        try:
            disconnect(sock)
        except OSError as exc:  # not seen where can_disconnect() held; stay whole if it happens
            with contextlib.suppress(OSError):
                self.remote_rtp = sock.getpeername()
                self._rtp_locked = self._connected = True
            _LOGGER.warning("leg %s stays latched to %s: %s", self.side, self.remote_rtp, exc)
            return
        self._engine.set_handler(sock, self._rtp_from_anyone)
        self.session._fast_update()

    def set_codecs(self, codecs: Iterable[Codec]) -> None:
        """Tell the leg its far end's payload types (from its SDP): clock rates and DTMF type."""
        codecs = list(codecs)
        events = [c.payload_type for c in codecs if c.encoding.lower() == "telephone-event"]
        with self._lock:
            self.codecs = codecs
            self.clock_rates = {c.payload_type: c.clock_rate for c in codecs}
            self.dtmf_payload_type = events[0] if events else None
            self._fast_update()

    def set_payload_map(self, mapping: dict[int, int] | None) -> None:
        """Renumber payload types of packets sent out of this leg (after a flip to a device that
        numbers a codec differently). An empty map removes the renumbering."""
        with self._lock:
            self._settle_out()
            if self._rewrite is None:
                if mapping:
                    self._rewrite = _Rewrite(dict(mapping))
            else:
                self._rewrite.payload_map = dict(mapping or {})
                self._maybe_drop_rewrite()
            self.session._fast_update()

    def _maybe_drop_rewrite(self) -> None:
        rewrite = self._rewrite
        if (
            rewrite is not None
            and not rewrite.payload_map
            and rewrite.ssrc is None
            and not rewrite.pending
        ):
            self._rewrite = None

    # sockets

    def _attach(self, rtp: socket.socket, rtcp: socket.socket) -> None:
        """Hand the sockets to the packet loop."""
        with self._lock:
            self._rtp = rtp
            self._rtcp = rtcp
            self._engine.register(rtp, self._rtp_from_anyone)
            self._engine.register(rtcp, self._rtcp_ready)

    def _close(self) -> None:
        with self._lock:
            self.closed = True
            # Out of the compiled path before the sockets go: both ways (its counts and last
            # header come back, the header to the leg that goes on after a switch).
            self._fast_update()
            if self._fast_from is not None:
                self._fast_from._fast_update()
            self._connected = False
            if self._dtmf_timer is not None:
                self._dtmf_timer.cancel()
                self._dtmf_timer = None
            self._dtmf_queue.clear()
            self._dtmf_event = None
            self._end_player("closed", resume=False)
            for sock in (self._rtp, self._rtcp):
                if sock is not None:
                    self._engine.unregister(sock)
                    sock.close()  # at once: the ports can be bound again as soon as this returns
            self._rtp = self._rtcp = None

    # the hot path

    def _rtp_from_anyone(self) -> None:
        """RTP while the socket is unconnected (engine thread, lock held): check the source.

        When a packet latches the leg, the socket is connected; what was already queued may still
        come from anyone, so it is read this way until the queue is empty, and the connected
        handler takes the rest.
        """
        sock = self._rtp
        buffer = self._buffer
        while sock is not None:
            try:
                size, addr = sock.recvfrom_into(buffer)
            except OSError:  # nothing waiting, or an ICMP error: nothing to forward
                return
            self.received += 1
            # Validate before latching: junk from a port scanner must not capture the leg.
            payload_type = buffer[1] & 0x7F
            if size < 12 or buffer[0] & 0xC0 != 0x80 or 72 <= payload_type <= 95:
                self.dropped_invalid += 1
            elif (addr != self.remote_rtp or not self._rtp_locked) and not self._accept_source(
                addr, rtcp=False
            ):
                self.dropped_source += 1
            else:
                self._forward(size, payload_type)
            if not self._connected:
                return

    def _rtp_from_peer(self) -> None:
        """RTP on a socket connected to the latched source: the kernel checked its source."""
        sock = self._rtp
        if sock is None:
            return
        buffer = self._buffer
        try:
            size = sock.recv_into(buffer)
        except OSError:  # nothing waiting, or the far end's ICMP port unreachable
            return
        self.received += 1
        payload_type = buffer[1] & 0x7F
        if size < 12 or buffer[0] & 0xC0 != 0x80 or 72 <= payload_type <= 95:
            self.dropped_invalid += 1
            return
        other = self._peer
        if (
            other is None
            or not other._connected
            or other._rewrite is not None
            or other._player is not None
            or self.muted
            or payload_type == self.dtmf_payload_type
        ):
            self._forward(size, payload_type)
            return
        # The common case, `_forward` without a call: plain audio between two latched far ends.
        # A connected socket has its far end (see `_tie`), so there is no address to check.
        try:
            other._rtp.send(self._slices[size])  # type: ignore[union-attr]
        except OSError:
            self.dropped_no_peer += 1
            return
        header = other._out_header
        header[:] = self._slices[12]
        other._out_last = header
        other._out_time = self._engine.now
        self.forwarded += 1

    def _rtp_packet(self, data: bytes) -> None:
        """A telephone-event packet the compiled path read from this leg's socket (and counted)."""
        self._fast_settle()  # what `_forward` reads (the other leg's last header) is current
        size = len(data)
        self._buffer[:size] = data
        self._forward(size, data[1] & 0x7F)
        self.session._fast_update()  # swallowing it may have begun a renumbering

    def _forward(self, size: int, payload_type: int) -> None:
        """The valid packet in the buffer, from this leg's far end, to the other leg's."""
        other = self._peer
        buffer = self._buffer
        if payload_type == self.dtmf_payload_type:
            self._tap_dtmf(bytes(self._view[:size]))
            if self.swallow_dtmf:
                self.dtmf_swallowed += 1
                if other is not None:
                    # The receiver must not see a hole in the sequence numbers where it was.
                    other._shift_sequence(-1)
                return
        if other is None:
            self.dropped_no_peer += 1
            return
        if self.muted or other._player is not None:
            self.dropped_held += 1  # held, or the other side hears generated audio meanwhile
            return
        if other._rewrite is not None:
            other._rewrite_into(buffer, self)
        transport = other._rtp
        destination = other.remote_rtp
        if transport is None or destination is None:
            self.dropped_no_peer += 1
            return
        try:
            if other._connected:
                transport.send(self._slices[size])
            else:
                transport.sendto(self._slices[size], destination)
        except OSError:  # a full socket buffer or an unreachable far end: RTP is lossy anyway
            self.dropped_no_peer += 1
            return
        header = other._out_header
        header[:] = self._slices[12]
        other._out_last = header
        other._out_time = self._engine.now  # the clock at this batch of packets
        self.forwarded += 1

    def _rtcp_ready(self) -> None:
        sock = self._rtcp
        if sock is None:
            return
        try:
            data, addr = sock.recvfrom(2048)
        except OSError:
            return
        self._on_rtcp(data, addr)

    def _accept_source(self, addr: _Peer, *, rtcp: bool) -> bool:
        """Latch on the first source; afterwards accept only the latched one."""
        locked = self._rtcp_locked if rtcp else self._rtp_locked
        current = self.remote_rtcp if rtcp else self.remote_rtp
        if locked:
            # IPv6 sources carry flow info and scope id: compare host and port only.
            return current is not None and (addr[0], addr[1]) == (current[0], current[1])
        if rtcp:
            self.remote_rtcp = addr
            self._rtcp_locked = True
        else:
            self.remote_rtp = addr
            self._rtp_locked = True
            _LOGGER.debug("leg %s latched RTP to %s", self.side, addr)
            self._tie(addr)
            on_latched = self.session.relay.on_latched
            if on_latched is not None:
                on_latched(self)
        return True

    def _tap_dtmf(self, data: bytes) -> None:
        offset = 12 + 4 * (data[0] & 0x0F)
        if data[0] & 0x10:
            if len(data) < offset + 4:
                return
            offset += 4 + 4 * int.from_bytes(data[offset + 2 : offset + 4])
        timestamp = int.from_bytes(data[4:8])
        digit = self._decoder.feed(data[offset:], timestamp)
        if digit is not None:
            self._engine.post(self._report_dtmf, digit)

    def _report_dtmf(self, digit: DtmfDigit) -> None:
        """On the owner's side (see `RelayEngine.post`): tell the session's owner of a key press."""
        callback = self.session.on_dtmf
        if callback is None or self.closed:
            return
        try:
            callback(self.side, digit)
        except Exception:
            _LOGGER.exception("DTMF callback failed")

    def _rewrite_into(self, buffer: bytearray, source: MediaLeg) -> None:
        """Patch a packet leaving this leg in place (only called while a rewrite is active)."""
        rewrite = self._rewrite
        assert rewrite is not None
        source_type = buffer[1] & 0x7F  # the sender's numbering: its clock rates are keyed by it
        if rewrite.payload_map:
            mapped = rewrite.payload_map.get(buffer[1] & 0x7F)
            if mapped is not None:
                buffer[1] = (buffer[1] & 0x80) | mapped
        if rewrite.pending or (rewrite.ssrc is not None and buffer[8:12] != rewrite.source_bytes):
            # The first packet after a flip, or the new device restarted its stream.
            self._continue_stream(rewrite, buffer, source.clock_rates.get(source_type))
        if rewrite.ssrc is None:
            return
        rewrite_rtp_into(
            buffer, rewrite.ssrc, rewrite.sequence_offset, rewrite.timestamp_offset, rewrite.marker
        )
        rewrite.marker = False

    def _continue_stream(self, rewrite: _Rewrite, buffer: bytearray, rate: int | None) -> None:
        """Fix the offsets so that this new stream continues the one the receiver had."""
        rewrite.pending = False
        last = self._out_last
        _, _, sequence, timestamp, ssrc = RTP_HEADER.unpack_from(buffer)
        if last is None or len(last) < 12:
            # Nothing was sent before: the new stream can go as it is.
            rewrite.ssrc = None
            self._maybe_drop_rewrite()
            return
        _, _, anchor_seq, anchor_ts, anchor_ssrc = RTP_HEADER.unpack_from(last)
        rate = rate or DEFAULT_CLOCK_RATE
        elapsed = max(self._now() - self._out_time, MIN_FRAME_SECONDS)
        advance = round(elapsed * rate)
        rewrite.ssrc = anchor_ssrc
        rewrite.source_ssrc = ssrc
        rewrite.source_bytes = ssrc.to_bytes(4)
        rewrite.sequence_offset = (anchor_seq + 1 - sequence) & 0xFFFF
        rewrite.timestamp_offset = (anchor_ts + advance - timestamp) & 0xFFFFFFFF
        rewrite.marker = True
        _LOGGER.debug(
            "leg %s continues stream %08x: seq +%d ts +%d",
            self.side,
            anchor_ssrc,
            rewrite.sequence_offset,
            rewrite.timestamp_offset,
        )

    def _begin_continuation(self) -> None:
        """The far end of the other leg is being replaced: the stream out of here must go on."""
        rewrite = self._rewrite or _Rewrite({})
        rewrite.pending = True
        self._rewrite = rewrite

    def _shift_sequence(self, delta: int) -> None:
        """Packets added to (+) or taken from (-) the stream leaving this leg: later ones move.

        Without a continuation yet, one is set up on the stream as the receiver knows it (its SSRC,
        no offsets), so that the following packets can be renumbered.
        """
        rewrite = self._rewrite
        if rewrite is not None and rewrite.pending:
            return  # the offsets are fixed at the new stream's first packet, from the last sent
        if rewrite is None or rewrite.ssrc is None:
            last = self._out_last
            if last is None or len(last) < 12:
                return  # nothing sent yet: the receiver has no sequence to see a hole in
            ssrc = int.from_bytes(last[8:12])
            rewrite = rewrite or _Rewrite({})
            rewrite.ssrc = rewrite.source_ssrc = ssrc
            rewrite.source_bytes = bytes(last[8:12])
            rewrite.sequence_offset = rewrite.timestamp_offset = 0
            self._rewrite = rewrite
        rewrite.sequence_offset = (rewrite.sequence_offset + delta) & 0xFFFF

    # the compiled path (see the module doc)

    def _fast_target(self) -> MediaLeg | None:
        """The leg this leg's packets may go out of unchanged in compiled code, if any: both
        sockets connected to their latched far ends, nothing to renumber or play, not held."""
        other = self._peer
        if (
            other is None
            or self.closed
            or other.closed
            or not self._connected
            or not other._connected
            or self.muted
            or other._rewrite is not None
            or other._player is not None
            or self._rtp is None
            or other._rtp is None
        ):
            return None
        return other

    def _fast_update(self) -> None:
        """Register this leg's socket with the compiled path, or take it back, as its state now
        allows (lock held). What it counted comes back on the way out."""
        engine = self._engine
        if engine.fast is None:
            return
        target = self._fast_target()
        current = self._fast_to
        sock = self._rtp
        if current is not None and target is not current:
            assert sock is not None
            self._fast_apply(engine.fast_remove(sock), current)
            current._fast_from = None
            self._fast_to = current = None
        if target is not None:
            assert sock is not None
            assert target._rtp is not None
            # Again when registered: the telephone-event payload type may have changed.
            engine.fast_forward(sock, target._rtp, self.dtmf_payload_type, self._rtp_packet)
            self._fast_to = target
            target._fast_from = self

    def _fast_settle(self) -> None:
        """Bring what the compiled path counted for this leg's packets into Python (lock held)."""
        target = self._fast_to
        if target is not None and self._rtp is not None:
            self._fast_apply(self._engine.fast_take(self._rtp), target)

    def _settle_out(self) -> None:
        """Bring the last header the compiled path sent out of this leg into Python (lock held)."""
        source = self._fast_from
        if source is not None:
            source._fast_settle()

    def _fast_apply(self, taken: Taken | None, target: MediaLeg) -> None:
        if taken is None:
            return
        received, forwarded, invalid, no_peer, header, when = taken
        self.received += received
        self.forwarded += forwarded
        self.dropped_invalid += invalid
        self.dropped_no_peer += no_peer
        if header is not None:
            target._out_header[:] = header
            target._out_last = target._out_header
            target._out_time = when

    # generated audio

    def generated_codec(self) -> tuple[AudioCodec, int]:
        """The codec (and this far end's payload type for it) generated audio goes out in.

        The one the stream to the far end is using now, else the far end's first in its SDP that
        we can encode; `UnsupportedCodec` when there is none (Opus only, say).
        """
        preferred: list[Codec] = []
        with self._lock:
            self._settle_out()
        last = self._out_last
        if last is not None and len(last) >= 12:
            current = last[1] & 0x7F
            preferred = [c for c in self.codecs if c.payload_type == current]
        refused: UnsupportedCodec | None = None
        for candidate in (*preferred, *self.codecs):
            if candidate.encoding.lower() in ("telephone-event", "cn"):
                continue
            try:
                return (
                    codec_for(candidate.encoding, candidate.clock_rate, candidate.channels),
                    candidate.payload_type,
                )
            except UnsupportedCodec as exc:
                refused = refused or exc
        if refused is not None:
            raise refused
        raise UnsupportedCodec("(no audio codec)", 0)

    def play(
        self,
        stream: PayloadStream,
        codec: AudioCodec,
        payload_type: int,
        *,
        ptime_ms: int = 20,
        on_end: PlayEnded | None = None,
    ) -> None:
        """Send `stream`'s payloads to this leg's far end instead of the other side's audio.

        One stream as the far end sees it: the SSRC it knows, sequence numbers and timestamps
        going on from the last packet it got (the first generated one with the marker bit),
        paced every `ptime_ms` by the relay's clock. When the payloads run out (or `stop_playing`)
        the other side's audio comes back the same way, continuing the stream.
        """
        with self._lock:
            self._settle_out()
            self._end_player("replaced", resume=False)
            if self.closed:
                if on_end is not None:
                    on_end("closed")
                return
            player = _Player(stream, codec, payload_type, ptime_ms, on_end)
            self._player = player
            self.session._fast_update()
            player.due = self._now()
            self._play_step()

    def stop_playing(self) -> None:
        """End the playback now (its `on_end` hears "stopped"); nothing when none plays."""
        with self._lock:
            self._settle_out()
            self._end_player("stopped", resume=True)
            self.session._fast_update()

    @property
    def playing(self) -> bool:
        return self._player is not None

    def set_muted(self, muted: bool) -> None:
        """Hold (True) or resume this leg's far end: while held, what it sends is dropped."""
        with self._lock:
            self.muted = muted
            self._fast_update()

    def _play_tick(self) -> None:
        with self._lock:
            player = self._player
            if player is not None:
                player.timer = None
                self._play_step()

    def _play_step(self) -> None:
        """Send the frame that is due and schedule the next (lock held)."""
        player = self._player
        if player is None or self.closed:
            return
        payload = player.stream.next_payload()
        if payload is None:
            self._end_player(PLAY_FINISHED, resume=True)
            return
        self._send_generated(player, payload)
        now = self._now()
        player.due += player.period
        if player.due < now - player.period:
            player.due = now  # the loop stalled: go on from now rather than send a burst
        player.timer = self.session.clock.call_later(player.due - now, self._play_tick)

    def _send_generated(self, player: _Player, payload: bytes) -> None:
        last = self._out_last
        now = self._now()
        if last is None or len(last) < 12:
            # Nothing sent yet: the generated audio starts the stream.
            sequence = random.getrandbits(16)
            timestamp = random.getrandbits(32)
            ssrc = random.getrandbits(32)
        else:
            _, _, anchor_seq, anchor_ts, ssrc = RTP_HEADER.unpack_from(last)
            sequence = (anchor_seq + 1) & 0xFFFF
            if player.first:
                # On from the last packet the far end got, by the time since (a frame at least).
                elapsed = max(now - self._out_time, MIN_FRAME_SECONDS)
                advance = round(elapsed * player.codec.rtp_clock_rate)
            else:
                advance = player.step
            timestamp = (anchor_ts + advance) & 0xFFFFFFFF
        marker = 0x80 if player.first else 0
        player.first = False
        header = RTP_HEADER.pack(0x80, marker | player.payload_type, sequence, timestamp, ssrc)
        self._out_last = header
        self._out_time = now
        sock = self._rtp
        if sock is None or self.remote_rtp is None:
            return
        try:
            if self._connected:
                sock.send(header + payload)
            else:
                sock.sendto(header + payload, self.remote_rtp)
        except OSError:
            return
        self.generated += 1

    def _end_player(self, reason: str, *, resume: bool) -> None:
        """Stop the player (lock held); with `resume`, the other side's audio continues the
        stream the far end has (the next forwarded packet is renumbered after the last sent)."""
        player = self._player
        if player is None:
            return
        self._player = None
        if player.timer is not None:
            player.timer.cancel()
            player.timer = None
        if resume and not player.first:
            self._begin_continuation()
        if player.on_end is not None:
            try:
                player.on_end(reason)
            except Exception:
                _LOGGER.exception("playback end callback failed")

    # DTMF we generate

    def send_dtmf(self, digit: str) -> bool:
        """Queue a key press for this leg's far end as RFC 4733 telephone-events.

        The event goes on the stream the far end receives from us: the next sequence numbers
        (later audio is renumbered after it), a timestamp where the stream is now, the telephone-
        event payload type of this leg's far end, sent in real time (start with the marker,
        updates, three end packets). False when the far end takes no telephone-event (it must
        get the digit some other way, such as SIP INFO) or the leg is closed.
        """
        code = event_for_digit(digit)
        with self._lock:
            if self.closed or self.dtmf_payload_type is None:
                return False
            self._settle_out()
            self._dtmf_queue.append(code)
            if self._dtmf_event is None and self._dtmf_timer is None:
                self._dtmf_step()
            self.session._fast_update()  # the digit renumbers the stream: out of compiled code
            return True

    def _dtmf_tick(self) -> None:
        with self._lock:
            self._dtmf_timer = None
            self._dtmf_step()

    def _dtmf_step(self) -> None:
        if self.closed or self.dtmf_payload_type is None:
            return
        event = self._dtmf_event
        if event is None:
            if not self._dtmf_queue:
                return
            event = self._dtmf_event = _OutgoingEvent(self._dtmf_queue.popleft(), 0)
            event.timestamp = self._start_event()
        rate = self.clock_rates.get(self.dtmf_payload_type, DEFAULT_CLOCK_RATE)
        step = round(DTMF_UPDATE_SECONDS * rate)
        clock = self.session.clock
        if event.steps < DTMF_UPDATES:
            event.steps += 1
            self._send_event(event, step * event.steps, end=False, marker=event.steps == 1)
            self._dtmf_timer = clock.call_later(DTMF_UPDATE_SECONDS, self._dtmf_tick)
            return
        for _ in range(DTMF_END_PACKETS):
            self._send_event(event, step * DTMF_UPDATES, end=True, marker=False)
        self._dtmf_event = None
        self.dtmf_sent += 1
        if self._dtmf_queue:
            self._dtmf_timer = clock.call_later(DTMF_PAUSE_SECONDS, self._dtmf_tick)

    def _start_event(self) -> int:
        """The timestamp of an event starting now, on the stream the far end receives."""
        last = self._out_last
        now = self._now()
        if last is None or len(last) < 12:
            # Nothing sent yet: we start the stream, and the first audio packet continues it.
            timestamp = random.getrandbits(32)
            before_first = random.getrandbits(16)  # the first event packet takes the next one
            ssrc = random.getrandbits(32)
            self._out_last = RTP_HEADER.pack(0x80, 0, before_first, timestamp, ssrc)
            self._out_time = now
            self._begin_continuation()
            return timestamp
        assert self.dtmf_payload_type is not None
        rate = self.clock_rates.get(self.dtmf_payload_type, DEFAULT_CLOCK_RATE)
        timestamp = (int.from_bytes(last[4:8]) + round((now - self._out_time) * rate)) & 0xFFFFFFFF
        # From now on the stream's clock is read from the event's start.
        self._out_last = bytes(last[:4]) + timestamp.to_bytes(4) + bytes(last[8:12])
        self._out_time = now
        return timestamp

    def _send_event(self, event: _OutgoingEvent, duration: int, *, end: bool, marker: bool) -> None:
        last = self._out_last
        assert last is not None
        assert self.dtmf_payload_type is not None
        sequence = (int.from_bytes(last[2:4]) + 1) & 0xFFFF
        ssrc = int.from_bytes(last[8:12])
        payload = build_telephone_event(TelephoneEvent(event.code, end, DTMF_VOLUME, duration))
        packet = RtpPacket(self.dtmf_payload_type, sequence, event.timestamp, ssrc, payload, marker)
        # Audio that follows moves one number up; the stream's clock reading stays as it was.
        self._shift_sequence(1)
        self._out_last = bytes(last[:2]) + sequence.to_bytes(2) + bytes(last[4:12])
        if self.remote_rtp is None or self._rtp is None:
            return
        with contextlib.suppress(OSError):
            if self._connected:  # some systems refuse an address on a connected socket
                self._rtp.send(packet.to_bytes())
            else:
                self._rtp.sendto(packet.to_bytes(), self.remote_rtp)

    def _on_rtcp(self, data: bytes, addr: _Peer) -> None:
        if len(data) < 8 or data[0] & 0xC0 != 0x80 or not 192 <= data[1] <= 223:
            self.dropped_invalid += 1
            return
        if (addr != self.remote_rtcp or not self._rtcp_locked) and not self._accept_source(
            addr, rtcp=True
        ):
            self.dropped_source += 1
            return
        self.rtcp_received += 1
        other = self.session.b if self.side == "a" else self.session.a
        destination = other.remote_rtcp
        transport = other._rtcp
        if destination is None or transport is None:
            return
        packet: bytes | bytearray | None = data
        towards = other._rewrite
        if towards is not None and towards.ssrc is not None:
            # Reports from the new device about its stream, to the receiver of the continued one.
            packet = rewrite_rtcp(
                data,
                sender_from=towards.source_ssrc,
                sender_to=towards.ssrc,
                timestamp_offset=towards.timestamp_offset,
            )
        elif towards is not None and towards.pending:
            return  # the offsets are not known before the new stream's first RTP packet
        back = self._rewrite
        if packet is not None and back is not None and back.ssrc is not None:
            # Reports about the continued stream go back to its real source in its numbering.
            packet = rewrite_rtcp(
                packet,
                report_from=back.ssrc,
                report_to=back.source_ssrc,
                sequence_offset=back.sequence_offset,
            )
        if packet is None:
            self.dropped_invalid += 1
            return
        with contextlib.suppress(OSError):
            transport.sendto(packet, destination)


class MediaSession:
    """A call's media: leg "a" (the caller) and leg "b" (the callee, replaceable by a flip)."""

    def __init__(self, relay: MediaRelay, call_id: str, a: MediaLeg | None = None) -> None:
        self.relay = relay
        self.call_id = call_id
        self.clock = relay.clock
        self.on_dtmf: DtmfCallback | None = None
        self.closed = False
        self._a: MediaLeg | None = a
        self._b: MediaLeg | None = None

    def __repr__(self) -> str:
        return f"<MediaSession {self.call_id} a={self._a} b={self._b}>"

    @property
    def a(self) -> MediaLeg:
        assert self._a is not None
        return self._a

    @property
    def b(self) -> MediaLeg:
        assert self._b is not None
        return self._b

    def leg(self, side: Side) -> MediaLeg:
        return self.a if side == "a" else self.b

    def _link(self) -> None:
        """Tell each leg which leg is its other side (after the legs changed; lock held)."""
        with self.relay.engine.lock:
            if self._a is not None:
                self._a._peer = self._b
            if self._b is not None:
                self._b._peer = self._a
            self._fast_update()

    def _fast_update(self) -> None:
        """Both legs into or out of the compiled path as their states now allow (lock held)."""
        for leg in (self._a, self._b):
            if leg is not None:
                leg._fast_update()

    async def switch_leg(
        self,
        side: Side,
        remote_rtp: Address | None = None,
        remote_rtcp: Address | None = None,
        *,
        latch: bool = False,
        codecs: Sequence[Codec] | None = None,
        payload_map_in: dict[int, int] | None = None,
        payload_map_out: dict[int, int] | None = None,
        spare: MediaLeg | None = None,
    ) -> MediaLeg:
        """`switch` for callers that await it (the B2BUA's flip runs as a task)."""
        return self.switch(
            side,
            remote_rtp,
            remote_rtcp,
            latch=latch,
            codecs=codecs,
            payload_map_in=payload_map_in,
            payload_map_out=payload_map_out,
            spare=spare,
        )

    def switch(
        self,
        side: Side,
        remote_rtp: Address | None = None,
        remote_rtcp: Address | None = None,
        *,
        latch: bool = False,
        codecs: Sequence[Codec] | None = None,
        payload_map_in: dict[int, int] | None = None,
        payload_map_out: dict[int, int] | None = None,
        spare: MediaLeg | None = None,
    ) -> MediaLeg:
        """Replace a leg's far end with a new device: a new socket pair, a fresh latch.

        ``spare`` (from `open_spare`) is the socket pair to use when the new device already knows
        its port (it was in the offer that made it ring).

        The other leg's far end keeps receiving one stream (same SSRC, sequence and timestamps
        continued, marker set on the first packet). `payload_map_in` renumbers the new device's
        payload types into the ones the other side knows, `payload_map_out` the other way.
        The old sockets are closed and their ports released.
        """
        if self.closed:
            raise RelayError(f"media session {self.call_id} is closed")
        old = self.leg(side)
        if spare is not None:
            if spare.closed or spare.side != side:
                raise RelayError(f"spare leg {spare} cannot take side {side}")
            new = spare
        else:
            new = self.relay._open_leg(self, side)
        with self.relay.engine.lock:  # one step for the packet thread: old leg or new, no mix
            old.other._settle_out()  # the header the stream to the other side continues from
            new.session = self
            new.swallow_dtmf = old.swallow_dtmf
            if codecs is not None:
                new.set_codecs(codecs)
            else:
                new.dtmf_payload_type = old.dtmf_payload_type
                new.clock_rates = dict(old.clock_rates)
            new.set_remote(remote_rtp, remote_rtcp, latch=latch)
            other = old.other
            if side == "a":
                self._a = new
            else:
                self._b = new
            self._link()
            other._begin_continuation()
            assert other._rewrite is not None
            other._rewrite.payload_map = dict(payload_map_in or {})
            new.set_payload_map(payload_map_out)
            self.relay._close_leg(old)
            self._fast_update()
        return new

    def open_spare(self, side: Side) -> MediaLeg:
        """A socket pair for a device that may take over ``side`` later (a flip target).

        Why before the switch: an SDP offer names the port its receiver must send to, so the port
        must exist when the offer goes out, while the old device still has the call. Until
        `switch_leg` adopts it, the spare forwards nothing (it belongs to a session of its own
        with no peer): early packets from the new device reach nobody. `discard_spare` closes it.
        """
        if self.closed:
            raise RelayError(f"media session {self.call_id} is closed")
        holding = MediaSession(self.relay, f"{self.call_id}/spare")
        return self._hold_spare(holding, self.relay._open_leg(holding, side))

    def adopt_spare(self, side: Side, rtp: socket.socket, rtcp: socket.socket) -> MediaLeg:
        """`open_spare` over a socket pair bound elsewhere (the engine process gets it bound)."""
        if self.closed:
            rtp.close()
            rtcp.close()
            raise RelayError(f"media session {self.call_id} is closed")
        holding = MediaSession(self.relay, f"{self.call_id}/spare")
        return self._hold_spare(holding, self.relay._leg_from(holding, side, rtp, rtcp))

    def _hold_spare(self, holding: MediaSession, spare: MediaLeg) -> MediaLeg:
        side = spare.side
        # The peer of a spare is a leg without sockets: what arrives counts as dropped_no_peer.
        peer = MediaLeg(holding, "b" if side == "a" else "a", self.relay.host, 0)
        holding._a, holding._b = (spare, peer) if side == "a" else (peer, spare)
        holding._link()
        return spare

    def discard_spare(self, leg: MediaLeg) -> None:
        """Close a spare that was never switched in (idempotent)."""
        if leg.session is not self:
            self.relay._close_leg(leg)

    def close(self) -> None:
        """Close both legs' sockets and release their ports (idempotent)."""
        if self.closed:
            return
        self.closed = True
        for leg in (self._a, self._b):
            if leg is not None:
                self.relay._close_leg(leg)
        self.relay._sessions.pop(self.call_id, None)


def _packet_thread_clock(clock: Clock) -> Callable[[], float]:
    """`clock.monotonic` as the packet thread reads it, once per batch of packets.

    A `LoopClock` looks up the running loop at each reading; on the packet thread there is none,
    so each reading would raise and catch a RuntimeError before falling back to
    `time.monotonic()`. Its time is `loop.time()`, which asyncio's loops take from
    `time.monotonic()`: the thread reads that directly. Other clocks (a test's manual clock) are
    read as they are.
    """
    if isinstance(clock, LoopClock):
        return time.monotonic
    return clock.monotonic


class MediaRelay:
    """Opens `MediaSession`s on `host`.

    In process (the reference): ports from `port_min`-`port_max`, bound here, packets on a thread
    started with the first session. In the engine process (`engine` given, no port range): the
    sockets arrive bound (`adopt_session`, `MediaSession.adopt_spare`) and the engine's own loop
    runs everything; `on_latched` and `on_leg_closed` tell the SIP side what it mirrors.
    """

    def __init__(
        self,
        host: str,
        port_min: int | None,
        port_max: int | None,
        *,
        clock: Clock,
        connect_sockets: bool = True,
        engine: RelayEngine | None = None,
        fast_path: bool = False,
    ) -> None:
        self.host = host
        self.clock = clock
        # Connect RTP sockets to latched sources (see the module doc); never where a socket
        # could not be untied again, and False keeps every check in Python (for comparison).
        self.connect_sockets = connect_sockets and can_disconnect()
        self.ports: PortAllocator | None = (
            PortAllocator(port_min, port_max)
            if port_min is not None and port_max is not None
            else None
        )
        self.engine = (
            engine
            if engine is not None
            else RelayEngine(_packet_thread_clock(clock), fast=fast_path)
        )
        self.on_latched: Callable[[MediaLeg], None] | None = None
        self.on_leg_closed: Callable[[MediaLeg], None] | None = None
        self._sessions: dict[str, MediaSession] = {}

    @property
    def sessions(self) -> dict[str, MediaSession]:
        return dict(self._sessions)

    def open_session(self, call_id: str) -> MediaSession:
        """Two legs with a socket pair each; `PortsExhaustedError` if the range is used up.

        Not a coroutine: it binds and returns, so a caller sets up a call without yielding to the
        loop (a task would wait behind the loop's current batch of datagrams)."""
        if call_id in self._sessions:
            raise RelayError(f"media session {call_id} exists already")
        self.engine.start()
        session = MediaSession(self, call_id)
        session._a = self._open_leg(session, "a")
        try:
            session._b = self._open_leg(session, "b")
        except BaseException:
            self._close_leg(session._a)
            raise
        session._link()
        self._sessions[call_id] = session
        return session

    def adopt_session(
        self,
        call_id: str,
        a: tuple[socket.socket, socket.socket],
        b: tuple[socket.socket, socket.socket],
    ) -> MediaSession:
        """A session over socket pairs bound elsewhere (the engine process gets them bound)."""
        if call_id in self._sessions:
            raise RelayError(f"media session {call_id} exists already")
        session = MediaSession(self, call_id)
        session._a = self._leg_from(session, "a", *a)
        session._b = self._leg_from(session, "b", *b)
        session._link()
        self._sessions[call_id] = session
        return session

    def close(self) -> None:
        """Close every session and stop the packet thread."""
        for session in list(self._sessions.values()):
            session.close()
        self.engine.stop()

    def _open_leg(self, session: MediaSession, side: Side) -> MediaLeg:
        if self.ports is None:
            raise RelayError("this relay binds no ports: its sockets come bound")
        rtp_sock, rtcp_sock, port = bind_pair(self.ports, self.host)
        try:
            return self._leg_from(session, side, rtp_sock, rtcp_sock)
        except BaseException:
            self.ports.release(port)
            raise

    def _leg_from(
        self, session: MediaSession, side: Side, rtp: socket.socket, rtcp: socket.socket
    ) -> MediaLeg:
        host, port = rtp.getsockname()[:2]
        leg = MediaLeg(session, side, host, port)
        try:
            rtp.setblocking(False)
            rtcp.setblocking(False)
            leg._attach(rtp, rtcp)
        except BaseException:
            leg._close()
            rtp.close()
            rtcp.close()
            raise
        return leg

    def _close_leg(self, leg: MediaLeg) -> None:
        if leg.closed:
            return
        leg._close()
        if self.ports is not None:
            self.ports.release(leg.local_rtp.port)
        if self.on_leg_closed is not None and leg.local_rtp.port:
            self.on_leg_closed(leg)
