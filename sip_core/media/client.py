"""The SIP side of the media engine: `MediaRelay`, `MediaSession`, `MediaLeg` as calls use them.

Why this shape: the call code was written against an in-process relay, and the engine process
(`sip_core.media.engine`) keeps that API: a session has legs "a" and "b", a leg has its local
ports, `set_remote`, `set_codecs`, `send_dtmf`, `swallow_dtmf`, a flip switches a side to a spare.
Every method still returns at once, without a round trip: the ports are allocated and bound here
(an SDP body needs the port the moment it is written) and the bound sockets are handed to the
engine with the command (SCM_RIGHTS); what the engine must know goes as one message on the
control channel, in order. The state the call code reads (far end addresses, codecs, latching,
closed) is mirrored here and kept in step by the engine's events.

The engine is started with the first session (or by `start`), and this object owns it: a port
is released when the engine says the leg's sockets are closed, `stop`/`close` end the engine and
wait for it, and when the engine dies every session is told (`MediaSession.on_lost`: the B2BUA
ends those calls with a BYE to each side) and a new engine is started.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import site
import socket
import subprocess
import sys
import sysconfig
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from sip_core.audio import (
    DEFAULT_PTIME_MS,
    CollectResult,
    CollectSettings,
    DigitCollector,
    Playback,
    PlayFile,
    PlayMusic,
    PlayPrompts,
    PlaySequence,
    PlaySilence,
    PlayTone,
)
from sip_core.clock import Clock, TimerHandle
from sip_core.dtmf import DtmfDigit, event_for_digit
from sip_core.sdp import Codec
from sip_core.transport import Address

from . import protocol as p
from .ports import PortAllocator, PortsExhaustedError, RelayError, bind_pair
from .relay import PLAY_FINISHED, LegStats, Side
from .udp_peer import can_disconnect

__all__ = [
    "PLAY_FINISHED",
    "EngineLost",
    "EngineStatus",
    "LegStats",
    "MediaLeg",
    "MediaRelay",
    "MediaSession",
    "Playing",
    "PortsExhaustedError",
    "RelayError",
    "Side",
]

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EngineStatus:
    """What the media engine is and how it runs, as diagnostics show it.

    `packet_path` and `scheduling` come from the running engine's Hello (None before it spoke);
    `restarts` counts engines started again after one ended unasked."""

    running: bool
    pid: int | None
    packet_path: str | None
    scheduling: str | None
    restarts: int


STOP_WAIT: Final = 3.0
"""Seconds `stop` waits for the engine to exit after `Shutdown` before it kills it."""
RESTART_DELAYS: Final = (0.0, 0.5, 2.0, 10.0)
"""Waits before restarting an engine that died, by how many died young (< `STABLE_SECONDS`) in a
row: a crash at start-up is not retried in a tight loop."""
STABLE_SECONDS: Final = 5.0
EXIT_POLLS: Final = 100
EXIT_POLL_SECONDS: Final = 0.01
"""After the channel closes, how long (polls x seconds) to wait for the engine's exit status."""
_SOURCE_ROOT: Final = str(Path(__file__).resolve().parents[2])


def _engine_path(current: str) -> str:
    """PYTHONPATH for the engine: sip_core's own directory first, unless it is an installed
    package's (site-packages is on the child's path anyway, and must not go before the
    standard library, where PYTHONPATH entries go)."""
    installed = {
        str(Path(path).resolve())
        for path in (*site.getsitepackages(), sysconfig.get_paths()["purelib"])
    }
    if _SOURCE_ROOT in installed:
        return current
    return os.pathsep.join(item for item in (_SOURCE_ROOT, current) if item)


type DtmfCallback = Callable[[Side, DtmfDigit], None]


#: Playbacks `MediaRelay.prepare` keeps asking a (restarted) engine for: a few dozen labels.
PREPARED_KEPT = 64


class EngineLost(RelayError):
    """The media engine process is gone; the sessions it carried are over."""


def _codec_specs(codecs: Iterable[Codec]) -> tuple[p.CodecSpec, ...]:
    return tuple((c.payload_type, c.encoding, c.clock_rate) for c in codecs)


def _pairs(mapping: dict[int, int] | None) -> p.PayloadPairs:
    return tuple(sorted((mapping or {}).items()))


def _play_message(leg: int, number: int, play: Playback, ptime_ms: int) -> p.Play:
    kind = p.PlayKind
    match play:
        case PlaySilence(duration_ms):
            return p.Play(leg, number, kind.SILENCE, (), duration_ms, ptime_ms)
        case PlayTone(tone):
            return p.Play(leg, number, kind.TONE, (str(tone),), None, ptime_ms)
        case PlayPrompts(names):
            return p.Play(leg, number, kind.PROMPTS, tuple(names), None, ptime_ms)
        case PlayMusic():
            return p.Play(leg, number, kind.MUSIC, (), None, ptime_ms)
        case PlayFile(path):
            return p.Play(leg, number, kind.FILE, (path,), None, ptime_ms)
        case PlaySequence(parts):
            names = tuple(
                f"prompt:{part}" if isinstance(part, str) else f"file:{part.path}" for part in parts
            )
            return p.Play(leg, number, kind.SEQUENCE, names, None, ptime_ms)


class Playing:
    """Generated audio going to one leg's far end: `done` says why it ended, `stop()` ends it.

    `done` resolves to `PLAY_FINISHED` when a finite playback ran out, else to "stopped",
    "replaced" (another playback took the leg), "closed", or why none could start (the leg has no
    codec we can generate, such as Opus only; the engine logs it too).
    """

    __slots__ = ("done", "leg", "number")

    def __init__(self, leg: MediaLeg, number: int, done: asyncio.Future[str]) -> None:
        self.leg = leg
        self.number = number
        self.done = done

    def stop(self) -> None:
        """End it now (the other side's audio resumes); nothing once it has ended."""
        if not self.done.done():
            self.leg._command(p.StopPlay(self.leg.number, self.number))


class MediaLeg:
    """One side of a call as the SIP process sees it: our ports, the far end, its codecs.

    `remote_rtp`/`remote_rtcp` are where the leg sends: from SDP, then the latched source once
    the engine reports it. Changing anything sends one command to the engine.
    """

    __slots__ = (
        "_muted",
        "_number",
        "_on_hold",
        "_sdp_remote",
        "_swallow",
        "clock_rates",
        "closed",
        "dtmf_payload_type",
        "latched",
        "local_rtcp",
        "local_rtp",
        "payload_map",
        "remote_rtcp",
        "remote_rtp",
        "session",
        "side",
    )

    def __init__(self, session: MediaSession, side: Side, number: int, host: str, port: int):
        self.session = session
        self.side: Side = side
        self._number = number
        self.local_rtp = Address(host, port)
        self.local_rtcp = Address(host, port + 1)
        self.remote_rtp: tuple[str, int] | None = None
        self.remote_rtcp: tuple[str, int] | None = None
        self._sdp_remote: tuple[tuple[str, int], tuple[str, int]] | None = None
        self.latched = False
        self.dtmf_payload_type: int | None = None
        self.clock_rates: dict[int, int] = {}
        self.payload_map: dict[int, int] = {}  # renumbering of packets sent out of this leg
        self._swallow = False
        self._muted = False
        self._on_hold = False
        self.closed = False

    def __repr__(self) -> str:
        return f"<MediaLeg {self.side} {self.local_rtp} -> {self.remote_rtp}>"

    @property
    def number(self) -> int:
        """The leg's name on the control channel."""
        return self._number

    @property
    def other(self) -> MediaLeg:
        return self.session.b if self.side == "a" else self.session.a

    @property
    def swallow_dtmf(self) -> bool:
        """Telephone-events from this leg's far end stop at the relay (digits still reported)."""
        return self._swallow

    @swallow_dtmf.setter
    def swallow_dtmf(self, value: bool) -> None:
        if value != self._swallow:
            self._swallow = value
            self._command(p.SetSwallow(self._number, value))

    @property
    def muted(self) -> bool:
        """The far end is held by the PBX: what it sends is received and dropped (no SIP)."""
        return self._muted

    @muted.setter
    def muted(self, value: bool) -> None:
        if value != self._muted:
            self._muted = value
            self._command(p.SetMuted(self._number, value))

    @property
    def on_hold(self) -> bool:
        """The far end's SDP put the call on hold: the session may be silent without timing out."""
        return self._on_hold

    @on_hold.setter
    def on_hold(self, value: bool) -> None:
        if value != self._on_hold:
            self._on_hold = value
            self._command(p.SetOnHold(self._number, value))

    def play(self, play: Playback, *, ptime_ms: int = DEFAULT_PTIME_MS) -> Playing:
        """Send generated audio to this leg's far end instead of the other side's audio.

        The far end keeps one RTP stream (same SSRC, sequence and timestamps going on, marker at
        each change), encoded in its codec (PCMU, PCMA or G.722) and paced by the engine's clock;
        when the playback ends the other side's audio comes back without a gap. A new playback
        replaces the current one.
        """
        relay = self.session.relay
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        playing = Playing(self, next(relay._numbers), done)
        if self.closed:
            done.set_result("closed")
            return playing
        relay._playing[playing.number] = playing
        self._command(_play_message(self._number, playing.number, play, ptime_ms))
        return playing

    def set_remote(
        self, rtp: Address | None, rtcp: Address | None = None, *, latch: bool = False
    ) -> None:
        """Where to send before anything arrives (from SDP); RTCP defaults to the next port.

        With `latch`, the address is trusted at once; without, the first packet seen latches. The
        same SDP address again keeps what was latched (behind NAT that is not the SDP's address).
        """
        if rtp is None:
            self._sdp_remote = None
            self.remote_rtp = self.remote_rtcp = None
            self.latched = False
            self._command(p.SetRemote(self._number, None, 0, None, 0, False))
            return
        rtcp = rtcp or Address(rtp.host, rtp.port + 1)
        described = ((rtp.host, rtp.port), (rtcp.host, rtcp.port))
        if described == self._sdp_remote and self.latched and not latch:
            return  # the engine keeps its latch too (the same rule there)
        self._sdp_remote = described
        self.remote_rtp, self.remote_rtcp = described
        self.latched = latch
        self._command(p.SetRemote(self._number, rtp.host, rtp.port, rtcp.host, rtcp.port, latch))

    def set_codecs(self, codecs: Iterable[Codec]) -> None:
        """Tell the leg its far end's payload types (from its SDP): clock rates and DTMF type."""
        codecs = list(codecs)
        self._mirror_codecs(codecs)
        self._command(p.SetCodecs(self._number, _codec_specs(codecs)))

    def _mirror_codecs(self, codecs: Sequence[Codec]) -> None:
        events = [c.payload_type for c in codecs if c.encoding.lower() == "telephone-event"]
        self.clock_rates = {c.payload_type: c.clock_rate for c in codecs}
        self.dtmf_payload_type = events[0] if events else None

    def set_payload_map(self, mapping: dict[int, int] | None) -> None:
        """Renumber payload types of packets sent out of this leg (empty: no renumbering)."""
        self.payload_map = dict(mapping or {})
        self._command(p.SetPayloadMap(self._number, _pairs(mapping)))

    def send_dtmf(self, digit: str) -> bool:
        """Queue a key press for this leg's far end as RFC 4733 telephone-events.

        False when the far end takes no telephone-event (it must get the digit some other way,
        such as SIP INFO) or the leg is closed; the engine paces the events from its own clock.
        """
        event_for_digit(digit)  # ValueError for a key that is none, here rather than there
        if self.closed or self.dtmf_payload_type is None:
            return False
        self._command(p.SendDtmf(self._number, digit))
        return True

    async def fetch_stats(self) -> LegStats:
        """The leg's packet counters, as the engine has them now (one round trip)."""
        if self.closed:
            raise RelayError(f"leg {self.side} of {self.session.call_id} is closed")
        return await self.session.relay._query_stats(self._number)

    def _command(self, message: p.Message) -> None:
        if not self.closed:
            self.session.relay._send(message)


class MediaSession:
    """A call's media: leg "a" (the caller) and leg "b" (the callee, replaceable by a flip)."""

    def __init__(self, relay: MediaRelay, call_id: str, number: int) -> None:
        self.relay = relay
        self.call_id = call_id
        self.number = number
        self.on_dtmf: DtmfCallback | None = None
        self.on_lost: Callable[[str], None] | None = None
        #: A latched leg heard no RTP or RTCP for the relay's `rtp_timeout`: (side, seconds).
        self.on_timeout: Callable[[Side, float], None] | None = None
        self.closed = False
        self._a: MediaLeg | None = None
        self._b: MediaLeg | None = None
        self._spares: set[MediaLeg] = set()
        self._holds: dict[Side, Playing] = {}
        self._collectors: dict[Side, DigitCollector] = {}

    def __repr__(self) -> str:
        return f"<MediaSession {self.call_id} a={self._a} b={self._b}>"

    def hold(self, side: Side, play: Playback | None = None) -> Playing:
        """Hold one side without any SIP: its far end's audio is received and dropped, and the
        other side hears `play` (music on hold by default) until `resume`."""
        if self.closed:
            raise RelayError(f"media session {self.call_id} is closed")
        held = self.leg(side)
        held.muted = True
        previous = self._holds.pop(side, None)
        playing = held.other.play(play if play is not None else PlayMusic())
        if previous is not None:
            previous.stop()
        self._holds[side] = playing
        return playing

    def resume(self, side: Side) -> None:
        """End a `hold`: both sides hear each other again (the streams go on without a gap)."""
        playing = self._holds.pop(side, None)
        if playing is not None:
            playing.stop()
        if not self.closed:
            self.leg(side).muted = False

    def held(self, side: Side) -> bool:
        return side in self._holds

    def collect(
        self, side: Side, settings: CollectSettings, *, prompt: Playback | None = None
    ) -> asyncio.Future[CollectResult]:
        """Collect digits keyed on one side (RFC 4733, or SIP INFO through `offer_digit`),
        optionally while `prompt` plays to it: a digit during the prompt stops it and counts.
        While collecting, that side's digits go to the collector, not to `on_dtmf`."""
        if self.closed:
            raise RelayError(f"media session {self.call_id} is closed")
        loop = asyncio.get_running_loop()
        result: asyncio.Future[CollectResult] = loop.create_future()
        previous = self._collectors.pop(side, None)
        if previous is not None:
            previous.cancel()
        playing: list[Playing] = []

        def done(outcome: CollectResult) -> None:
            if self._collectors.get(side) is collector:
                del self._collectors[side]
            for prompt_playing in playing:
                prompt_playing.stop()
            if not result.done():
                result.set_result(outcome)

        def barge_in() -> None:
            for prompt_playing in playing:
                prompt_playing.stop()

        collector = DigitCollector(self.relay.clock, settings, done, on_barge_in=barge_in)
        self._collectors[side] = collector
        if prompt is not None:
            started = self.leg(side).play(prompt)
            playing.append(started)

            def prompt_ended(ended: asyncio.Future[str]) -> None:
                if not ended.cancelled():
                    collector.prompt_finished()

            started.done.add_done_callback(prompt_ended)
        collector.start(prompt_playing=prompt is not None)
        return result

    def offer_digit(self, side: Side, key: str) -> bool:
        """A digit from `side` that came another way (SIP INFO): True if a collector took it."""
        collector = self._collectors.get(side)
        if collector is None:
            return False
        collector.digit(key)
        return True

    def _stop_collecting(self) -> None:
        for collector in list(self._collectors.values()):
            collector.cancel()
        self._collectors.clear()

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
        """Replace a leg's far end with a new device: a new socket pair, a fresh latch.

        ``spare`` (from `open_spare`) is the pair to use when the new device already knows its
        port. The other leg's far end keeps receiving one stream (the engine continues SSRC,
        sequence and timestamps, marker on the first packet). Awaits nothing: it is a coroutine
        for the flip task that calls it.
        """
        if self.closed:
            raise RelayError(f"media session {self.call_id} is closed")
        old = self.leg(side)
        if spare is None:
            spare = self.open_spare(side)
        elif spare.closed or spare.side != side or spare not in self._spares:
            raise RelayError(f"spare leg {spare} cannot take side {side}")
        new = spare
        self._spares.discard(new)
        new._swallow = old._swallow
        if codecs is not None:
            new._mirror_codecs(list(codecs))
        else:
            new.dtmf_payload_type = old.dtmf_payload_type
            new.clock_rates = dict(old.clock_rates)
        rtcp = remote_rtcp
        if remote_rtp is not None:
            rtcp = rtcp or Address(remote_rtp.host, remote_rtp.port + 1)
            new._sdp_remote = ((remote_rtp.host, remote_rtp.port), (rtcp.host, rtcp.port))
            new.remote_rtp, new.remote_rtcp = new._sdp_remote
        else:
            new._sdp_remote = new.remote_rtp = new.remote_rtcp = None
        new.latched = latch and remote_rtp is not None
        new.payload_map = dict(payload_map_out or {})
        old.other.payload_map = dict(payload_map_in or {})
        self.relay._send(
            p.Switch(
                self.number,
                side,
                new.number,
                None if remote_rtp is None else remote_rtp.host,
                0 if remote_rtp is None else remote_rtp.port,
                None if rtcp is None else rtcp.host,
                0 if rtcp is None else rtcp.port,
                latch,
                None if codecs is None else _codec_specs(codecs),
                _pairs(payload_map_in),
                _pairs(payload_map_out),
            )
        )
        if side == "a":
            self._a = new
        else:
            self._b = new
        self.relay._forget_leg(old)  # its ports come back with the engine's LegClosed
        return new

    def open_spare(self, side: Side) -> MediaLeg:
        """A socket pair for a device that may take over ``side`` later (a flip target).

        Why before the switch: an SDP offer names the port its receiver must send to. Until
        `switch_leg` adopts it, the spare forwards nothing; `discard_spare` closes it.
        """
        if self.closed:
            raise RelayError(f"media session {self.call_id} is closed")
        spare = self.relay._new_leg(self, side)
        self._spares.add(spare)
        self.relay._send(
            p.OpenSpare(self.number, spare.number, side), self.relay._take_sockets(spare)
        )
        return spare

    def discard_spare(self, leg: MediaLeg) -> None:
        """Close a spare that was never switched in (idempotent)."""
        if leg in self._spares:
            self._spares.discard(leg)
            self.relay._forget_leg(leg)
            if not self.closed:
                self.relay._send(p.DiscardSpare(self.number, leg.number))

    def close(self) -> None:
        """Close both legs (and spares); their ports come back once the engine closed them."""
        if self.closed:
            return
        self.closed = True
        self._stop_collecting()
        self._holds.clear()
        for leg in (self._a, self._b, *self._spares):
            if leg is not None:
                self.relay._forget_leg(leg)
        self._spares.clear()
        self.relay._close_session(self)

    def _report(self, side: Side, digit: DtmfDigit) -> None:
        if self.offer_digit(side, digit.digit):
            return
        callback = self.on_dtmf
        if callback is None or self.closed:
            return
        try:
            callback(side, digit)
        except Exception:
            _LOGGER.exception("DTMF callback failed")

    def _timed_out(self, side: Side, seconds: float) -> None:
        callback = self.on_timeout
        if callback is None or self.closed:
            return
        try:
            callback(side, seconds)
        except Exception:
            _LOGGER.exception("media-timeout callback failed")

    def _lost(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self._stop_collecting()
        self._holds.clear()
        for leg in (self._a, self._b, *self._spares):
            if leg is not None:
                leg.closed = True
        callback = self.on_lost
        if callback is None:
            return
        try:
            callback(reason)
        except Exception:
            _LOGGER.exception("media-lost callback failed")


class MediaRelay:
    """The media engine process and the sessions it carries, for one host and port range.

    ``python`` is the interpreter that runs the engine (default: this one), ``cpu`` pins the
    engine to one CPU (benchmarks), ``log_level`` is the engine's (default: this logger's),
    ``music_file`` a WAV file the engine plays for `PlayMusic` (default: the bundled loop),
    ``rtp_timeout`` the seconds of silence after which a session's `on_timeout` is called
    (0, the default: never), ``realtime`` whether the engine's packet loop asks for real-time
    scheduling (`sip_core.media.scheduling`; default yes, where the system allows it).
    """

    def __init__(
        self,
        host: str,
        port_min: int,
        port_max: int,
        *,
        clock: Clock,
        connect_sockets: bool = True,
        python: str | None = None,
        cpu: int | None = None,
        log_level: str | None = None,
        music_file: str | None = None,
        rtp_timeout: float = 0.0,
        realtime: bool = True,
    ) -> None:
        self.host = host
        self.music_file = music_file
        self.rtp_timeout = rtp_timeout
        self.realtime = realtime
        self.clock = clock
        self.connect_sockets = connect_sockets and can_disconnect()
        self.ports = PortAllocator(port_min, port_max)
        self.restarts = 0
        self.on_engine_lost: Callable[[str], None] | None = None
        self._python = python or sys.executable
        self._cpu = cpu
        self._log_level = log_level
        self._process: subprocess.Popen[bytes] | None = None
        self._channel: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._outbox: deque[tuple[bytes, list[socket.socket]]] = deque()
        # Commands given in this turn of the event loop, sent together at its end (`_pack`).
        self._pending: list[tuple[bytes, list[socket.socket]]] = []
        self._pack_handle: asyncio.Handle | None = None
        self._writing = False
        self._broken: str | None = None  # the engine failed; `_lost` is on its way
        self._numbers = itertools.count(1)
        self._sessions: dict[str, MediaSession] = {}
        self._by_number: dict[int, MediaSession] = {}
        self._legs: dict[int, MediaLeg] = {}  # open legs, for the engine's events about them
        self._held: dict[int, int] = {}  # every leg the engine may hold sockets of: its port
        self._pending_sockets: dict[int, list[socket.socket]] = {}
        self._stats: dict[int, asyncio.Future[LegStats]] = {}
        self._syncs: dict[int, asyncio.Future[None]] = {}
        self._playing: dict[int, Playing] = {}
        self._started_at = 0.0
        self._young_deaths = 0
        self._restart_timer: TimerHandle | None = None
        self._stopped = False
        self._ever_started = False
        self.engine_version: int | None = None
        # How the running engine forwards plain RTP (`FastPathState`'s text) and how its
        # packet loop is scheduled (`Scheduling`'s text), from its Hello.
        self.packet_path: str | None = None
        self.scheduling: str | None = None
        self._prepared: OrderedDict[Playback, int] = OrderedDict()

    # -- life cycle ------------------------------------------------------------------------------

    @property
    def sessions(self) -> dict[str, MediaSession]:
        return dict(self._sessions)

    @property
    def engine_pid(self) -> int | None:
        """The running engine's process id (None when there is none)."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    @property
    def running(self) -> bool:
        return self.engine_pid is not None and self._broken is None

    def status(self) -> EngineStatus:
        """A snapshot of the engine (see `EngineStatus`)."""
        return EngineStatus(
            self.running, self.engine_pid, self.packet_path, self.scheduling, self.restarts
        )

    def start(self) -> None:
        """Start the engine now (otherwise the first session does); on the event loop."""
        self._stopped = False
        self._ensure_engine()

    def _ensure_engine(self) -> None:
        if self._channel is not None:
            if self._broken is not None:
                raise EngineLost(f"the media engine is gone ({self._broken})")
            return
        if self._restart_timer is not None:
            self._restart_timer.cancel()
            self._restart_timer = None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RelayError("the media engine is started from the event loop") from None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = dict(os.environ)
        # A source checkout is not on the child's default path: it imports sip_core from where
        # this process did.
        env["PYTHONPATH"] = _engine_path(env.get("PYTHONPATH", ""))
        level = self._log_level or logging.getLevelName(
            logging.getLogger("sip_core").getEffectiveLevel()
        )
        command = [
            self._python,
            "-m",
            "sip_core.media.engine",
            "--channel",
            str(theirs.fileno()),
            "--log-level",
            str(level).lower(),
        ]
        if self._cpu is not None:
            command += ["--cpu", str(self._cpu)]
        if self.music_file is not None:
            command += ["--music-file", self.music_file]
        if self.rtp_timeout > 0:
            command += ["--rtp-timeout", repr(float(self.rtp_timeout))]
        if self.realtime:
            command.append("--realtime")
        try:
            process = subprocess.Popen(
                command,
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                env=env,
            )
        except OSError as exc:
            ours.close()
            raise RelayError(f"cannot start the media engine: {exc}") from exc
        finally:
            theirs.close()
        ours.setblocking(False)
        if self._ever_started:
            self.restarts += 1
        self._ever_started = True
        self._process = process
        self._channel = ours
        self._loop = loop
        self._broken = None
        self._started_at = time.monotonic()
        self.engine_version = None
        self.packet_path = None
        self.scheduling = None
        loop.add_reader(ours.fileno(), self._on_channel)
        _LOGGER.debug("media engine started (pid %d)", process.pid)
        for play, ptime_ms in self._prepared.items():
            self._send_prepare(play, ptime_ms)

    def prepare(self, play: Playback, *, ptime_ms: int = DEFAULT_PTIME_MS) -> None:
        """Have the engine convert ``play``'s assets now (a sequence's files: a spoken label),
        for G.711 and G.722, so that its first playback starts at once. Remembered (the newest
        :data:`PREPARED_KEPT`) and asked again of a restarted engine; on the event loop."""
        self._prepared[play] = ptime_ms
        self._prepared.move_to_end(play)
        while len(self._prepared) > PREPARED_KEPT:
            self._prepared.popitem(last=False)
        if self._channel is not None and self._broken is None:
            self._send_prepare(play, ptime_ms)

    def _send_prepare(self, play: Playback, ptime_ms: int) -> None:
        message = _play_message(0, 0, play, ptime_ms)
        self._send(p.Prepare(message.kind, message.names, ptime_ms))

    def close(self) -> None:
        """End every session and the engine, waiting (blocking) until it has exited."""
        self._begin_stop()
        process = self._process
        if process is not None:
            try:
                process.wait(STOP_WAIT)
            except subprocess.TimeoutExpired:
                _LOGGER.warning("media engine did not stop in %.0f s: killed", STOP_WAIT)
                process.kill()
                process.wait()
        self._finish_stop()

    async def stop(self) -> None:
        """`close` without blocking the event loop while the engine exits."""
        self._begin_stop()
        process = self._process
        if process is not None:
            try:
                await asyncio.to_thread(process.wait, STOP_WAIT)
            except subprocess.TimeoutExpired:
                _LOGGER.warning("media engine did not stop in %.0f s: killed", STOP_WAIT)
                process.kill()
                await asyncio.to_thread(process.wait)
        self._finish_stop()

    def _begin_stop(self) -> None:
        self._stopped = True
        if self._restart_timer is not None:
            self._restart_timer.cancel()
            self._restart_timer = None
        for session in list(self._sessions.values()):
            session.close()
        if self._channel is not None and self._broken is None:
            # Whatever stays queued is dropped with the channel: the engine exits at its end
            # anyway, and its sockets close with it.
            self._send(p.Shutdown())
            self._pack()  # now: the channel closes before the loop turns again
        self._detach()

    def _finish_stop(self) -> None:
        self._process = None
        self._forget_everything()

    def _detach(self) -> None:
        """Stop reading and writing the channel and close it (the engine sees its end)."""
        channel = self._channel
        loop = self._loop
        if channel is None:
            return
        if loop is not None and not loop.is_closed():
            loop.remove_reader(channel.fileno())
            if self._writing:
                loop.remove_writer(channel.fileno())
        self._writing = False
        channel.close()
        self._channel = None
        if self._pack_handle is not None:
            self._pack_handle.cancel()
            self._pack_handle = None
        for _, sockets in (*self._outbox, *self._pending):
            for sock in sockets:
                sock.close()
        self._outbox.clear()
        self._pending.clear()

    def _forget_everything(self) -> None:
        """The engine is gone: every leg's ports are free again (its sockets died with it)."""
        for port in self._held.values():
            self.ports.release(port)
        self._held.clear()
        self._legs.clear()
        for sockets in self._pending_sockets.values():
            for sock in sockets:
                sock.close()
        self._pending_sockets.clear()
        self._sessions.clear()
        self._by_number.clear()
        for stats in self._stats.values():
            if not stats.done():
                stats.set_exception(EngineLost("the media engine stopped"))
        for synced in self._syncs.values():
            if not synced.done():
                synced.set_exception(EngineLost("the media engine stopped"))
        self._stats.clear()
        self._syncs.clear()
        for playing in self._playing.values():
            if not playing.done.done():
                playing.done.set_result("the media engine stopped")
        self._playing.clear()

    # -- sessions --------------------------------------------------------------------------------

    def open_session(self, call_id: str) -> MediaSession:
        """Two legs with a socket pair each; `PortsExhaustedError` if the range is used up.

        Not a coroutine: it binds and returns; the engine gets the sockets with the command.
        """
        if call_id in self._sessions:
            raise RelayError(f"media session {call_id} exists already")
        self._stopped = False
        self._ensure_engine()
        session = MediaSession(self, call_id, next(self._numbers))
        session._a = self._new_leg(session, "a")
        try:
            session._b = self._new_leg(session, "b")
        except BaseException:
            self._drop_leg(session._a)
            raise
        sockets = self._take_sockets(session._a) + self._take_sockets(session._b)
        self._sessions[call_id] = session
        self._by_number[session.number] = session
        self._send(
            p.OpenSession(session.number, call_id, session._a.number, session._b.number), sockets
        )
        return session

    def _new_leg(self, session: MediaSession, side: Side) -> MediaLeg:
        """A leg with a freshly bound pair; its sockets wait in `_pending_sockets` for a command."""
        if self._broken is not None:
            raise EngineLost(f"the media engine is restarting ({self._broken})")
        rtp, rtcp, port = bind_pair(self.ports, self.host)
        leg = MediaLeg(session, side, next(self._numbers), self.host, port)
        self._legs[leg.number] = leg
        self._held[leg.number] = port
        self._pending_sockets[leg.number] = [rtp, rtcp]
        return leg

    def _take_sockets(self, leg: MediaLeg) -> list[socket.socket]:
        return self._pending_sockets.pop(leg.number, [])

    def _drop_leg(self, leg: MediaLeg) -> None:
        """A leg the engine never heard of: close its sockets and free its ports here."""
        for sock in self._pending_sockets.pop(leg.number, []):
            sock.close()
        self._legs.pop(leg.number, None)
        self._held.pop(leg.number, None)
        self.ports.release(leg.local_rtp.port)

    def _forget_leg(self, leg: MediaLeg) -> None:
        """A leg the call is done with: no more events for it (its port waits for LegClosed)."""
        leg.closed = True
        self._legs.pop(leg.number, None)

    def _close_session(self, session: MediaSession) -> None:
        if self._sessions.get(session.call_id) is session:
            del self._sessions[session.call_id]
        self._by_number.pop(session.number, None)
        if self._channel is not None and self._broken is None:
            self._send(p.CloseSession(session.number))

    async def _query_stats(self, leg: int) -> LegStats:
        request = next(self._numbers)
        future: asyncio.Future[LegStats] = asyncio.get_running_loop().create_future()
        self._stats[request] = future
        self._send(p.QueryStats(request, leg))
        try:
            return await future
        finally:
            self._stats.pop(request, None)

    async def sync(self) -> None:
        """Wait until the engine has carried out every command sent so far, and reported it:
        after a session closed, its ports are free again here and on the host."""
        if self._channel is None or self._broken is not None:
            return
        request = next(self._numbers)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._syncs[request] = future
        self._send(p.Sync(request))
        try:
            await future
        finally:
            self._syncs.pop(request, None)

    # -- the channel -----------------------------------------------------------------------------

    def _send(self, message: p.Message, sockets: list[socket.socket] | None = None) -> None:
        """Queue one command, in order; the sockets it names travel with it.

        It goes out at the end of this turn of the event loop, with the others given meanwhile
        (`_pack`): every datagram wakes the engine, and a call's set-up gives several commands
        at once (a session, then each leg's far end, codecs and DTMF handling)."""
        sockets = sockets or []
        if self._channel is None or self._broken is not None:
            for sock in sockets:
                sock.close()
            return
        self._pending.append((p.encode(message), sockets))
        loop = self._loop
        if self._pack_handle is None and loop is not None and not loop.is_closed():
            self._pack_handle = loop.call_soon(self._pack)

    def _pack(self) -> None:
        """Move the pending commands into the outbox, as few datagrams as the protocol's limits
        allow (one command alone goes as itself), and send them."""
        self._pack_handle = None
        pending, self._pending = self._pending, []
        if not pending:
            return
        if self._channel is None or self._broken is not None:
            for _, sockets in pending:
                for sock in sockets:
                    sock.close()
            return
        was_empty = not self._outbox
        batch: list[bytes] = []
        batch_sockets: list[socket.socket] = []
        size = p.BATCH_OVERHEAD
        for data, sockets in pending:
            cost = p.BATCH_ENTRY_OVERHEAD + len(data)
            if batch and (
                size + cost > p.MAX_MESSAGE or len(batch_sockets) + len(sockets) > p.MAX_BATCH_FDS
            ):
                self._outbox.append(self._datagram(batch, batch_sockets))
                batch, batch_sockets, size = [], [], p.BATCH_OVERHEAD
            batch.append(data)
            batch_sockets += sockets
            size += cost
        self._outbox.append(self._datagram(batch, batch_sockets))
        if was_empty:  # else the writer is waiting for room, and sends these after the rest
            self._flush()

    @staticmethod
    def _datagram(
        batch: list[bytes], sockets: list[socket.socket]
    ) -> tuple[bytes, list[socket.socket]]:
        return (batch[0] if len(batch) == 1 else p.encode_batch(batch)), sockets

    def _flush(self) -> bool:
        """Send queued commands until the channel is full; True when the queue is empty."""
        channel = self._channel
        outbox = self._outbox
        while outbox and channel is not None:
            data, sockets = outbox[0]
            try:
                socket.send_fds(channel, [data], [sock.fileno() for sock in sockets])
            except BlockingIOError:
                if not self._writing and self._loop is not None:
                    self._loop.add_writer(channel.fileno(), self._flush)
                    self._writing = True
                return False
            except OSError as exc:
                self._fail(f"control channel: {exc}")
                return False
            outbox.popleft()
            for sock in sockets:
                sock.close()  # the engine has its own copies now
        if self._writing and channel is not None and self._loop is not None:
            self._loop.remove_writer(channel.fileno())
            self._writing = False
        return True

    def _on_channel(self) -> None:
        """Read every event waiting (the loop calls this when the channel is readable)."""
        channel = self._channel
        while channel is not None and self._channel is channel:
            try:
                received = p.receive(channel)
            except BlockingIOError:
                return
            except p.ProtocolError as exc:
                self._fail(f"it spoke another protocol: {exc}")
                return
            except OSError as exc:
                self._fail(f"control channel: {exc}")
                return
            if received is None:  # the engine's end of the channel closed: it is exiting
                if self._loop is not None:
                    self._loop.remove_reader(channel.fileno())
                self._fail_when_exited(EXIT_POLLS)
                return
            message, sockets = received
            for sock in sockets:  # the engine sends none; never keep what we did not ask for
                sock.close()
            self._on_event(message)

    def _on_event(self, message: p.Message) -> None:
        if isinstance(message, p.Digit):
            session = self._by_number.get(message.session)
            if session is not None and message.side in ("a", "b"):
                side: Side = "a" if message.side == "a" else "b"
                digit = DtmfDigit(
                    message.digit, message.timestamp, message.duration, message.volume, message.end
                )
                session._report(side, digit)
        elif isinstance(message, p.Latched):
            leg = self._legs.get(message.leg)
            if leg is not None and not leg.closed:
                leg.remote_rtp = (message.host, message.port)
                leg.latched = True
        elif isinstance(message, p.LegClosed):
            self._legs.pop(message.leg, None)
            port = self._held.pop(message.leg, None)
            if port is not None:
                self.ports.release(port)
        elif isinstance(message, p.Stats):
            future = self._stats.get(message.request)
            if future is not None and not future.done():
                future.set_result(
                    LegStats(
                        message.received,
                        message.forwarded,
                        message.dropped_source,
                        message.dropped_invalid,
                        message.dropped_no_peer,
                        message.dtmf_swallowed,
                        message.dtmf_sent,
                        message.dropped_held,
                        message.generated,
                    )
                )
        elif isinstance(message, p.PlayEnded):
            playing = self._playing.pop(message.play, None)
            if playing is not None and not playing.done.done():
                playing.done.set_result(message.reason)
        elif isinstance(message, p.MediaTimeout):
            timed_out = self._by_number.get(message.session)
            if timed_out is not None and message.side in ("a", "b"):
                timed_out._timed_out("a" if message.side == "a" else "b", message.seconds)
        elif isinstance(message, p.Synced):
            synced = self._syncs.get(message.request)
            if synced is not None and not synced.done():
                synced.set_result(None)
        elif isinstance(message, p.Hello):
            self.engine_version = message.version
            self.packet_path = message.packet_path
            if (
                self.realtime
                and self.scheduling is None
                and message.scheduling.startswith("normal")
            ):  # as an engine starts: what the system refused, and what that means for calls
                _LOGGER.info(
                    "media engine scheduling: %s; a busy host may delay call audio",
                    message.scheduling,
                )
            self.scheduling = message.scheduling
            _LOGGER.debug(
                "media engine %d speaks protocol %d, forwards RTP: %s, scheduling: %s",
                message.pid,
                message.version,
                message.packet_path,
                message.scheduling,
            )
        elif isinstance(message, p.Refused):
            _LOGGER.error("media engine refused a command: %s", message.reason)
        else:
            _LOGGER.error("media engine sent a command: %s", type(message).__name__)

    def _fail_when_exited(self, polls: int) -> None:
        """Fail once the engine's exit status is known (never waiting on the event loop)."""
        process = self._process
        loop = self._loop
        if process is not None and process.poll() is None and polls > 0 and loop is not None:
            loop.call_later(EXIT_POLL_SECONDS, self._fail_when_exited, polls - 1)
            return
        self._fail(self._exit_status())

    def _exit_status(self) -> str:
        process = self._process
        if process is None:
            return "the media engine stopped"
        code = process.poll()
        if code is None:
            return "the media engine closed its channel"
        if code < 0:
            return f"the media engine was killed by signal {-code}"
        return f"the media engine exited with status {code}"

    def _fail(self, reason: str) -> None:
        """The engine is unusable: end what it carried (on the next turn of the loop)."""
        if self._broken is not None or self._stopped:
            return
        self._broken = reason
        loop = self._loop
        if loop is not None:
            loop.call_soon(self._lost, reason)

    def _lost(self, reason: str) -> None:
        """Every session the engine carried is over; start another engine for new calls."""
        _LOGGER.error("%s: ending %d call(s) with media", reason, len(self._sessions))
        sessions = list(self._sessions.values())
        self._detach()
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            loop = self._loop
            if loop is not None:  # reaped off the loop: no zombie, no blocking wait here
                loop.run_in_executor(None, process.wait)
        self._process = None
        self._forget_everything()
        self._broken = None
        for session in sessions:
            session._lost(reason)
        if self.on_engine_lost is not None:
            self.on_engine_lost(reason)
        if self._stopped:
            return
        young = time.monotonic() - self._started_at < STABLE_SECONDS
        self._young_deaths = self._young_deaths + 1 if young else 0
        delay = RESTART_DELAYS[min(self._young_deaths, len(RESTART_DELAYS) - 1)]
        self._restart_timer = self.clock.call_later(delay, self._restart)

    def _restart(self) -> None:
        self._restart_timer = None
        if self._stopped or self._channel is not None:
            return
        try:
            self._ensure_engine()
        except RelayError as exc:
            _LOGGER.error("media engine restart failed: %s", exc)
