"""The media engine process: ``python -m sip_core.media.engine --channel FD``.

Why a process: the relay's packet loop needs the CPU within a millisecond of a packet arriving.
As a thread of the SIP process it waits for the GIL whenever that process's asyncio loop runs
Python (and in Home Assistant that loop runs all of Home Assistant); a process has a GIL of its
own, and on a host with several cores a core of its own. The SIP side (`sip_core.media.client`)
starts it, binds every socket and passes them over, and reads its events.

One thread does everything here: `RelayEngine.run` polls the relay's sockets and the control
channel in one epoll set and fires the engine's timers (`EngineClock`) between batches. A
command is carried out whole between two packets. The engine exits when told to (`Shutdown`) or
when the channel closes (the SIP process is gone): its sockets close with it, so no port outlives
the process that asked for it.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import queue
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Final

from sip_core.audio import (
    AudioCodec,
    AudioLibrary,
    Playback,
    PlayFile,
    PlayMusic,
    PlayPrompts,
    PlaySequence,
    PlaySilence,
    PlayTone,
    Tone,
    UnsupportedCodec,
    WavError,
)
from sip_core.dtmf import DtmfDigit
from sip_core.sdp import Codec
from sip_core.transport import Address

from . import protocol as p
from .packets import RelayEngine
from .relay import MediaLeg, MediaRelay, MediaSession, Side
from .scheduling import Scheduling, leave_realtime, use_realtime

__all__ = ["MediaEngine", "main"]

_LOGGER = logging.getLogger(__name__)

_SIDES: Final = ("a", "b")


def _side(value: str) -> Side:
    if value == "a":
        return "a"
    if value == "b":
        return "b"
    raise p.ProtocolError(f"no side {value!r}")


def _address(host: str | None, port: int) -> Address | None:
    return Address(host, port) if host is not None else None


def _codecs(specs: Sequence[p.CodecSpec]) -> list[Codec]:
    return [Codec(int(pt), str(encoding), int(rate)) for pt, encoding, rate in specs]


class _Drained(Exception):
    """No command is waiting on the channel."""


class MediaEngine:
    """The relay and the channel to the SIP process: commands in, events out."""

    def __init__(
        self,
        channel: socket.socket,
        host: str = "127.0.0.1",
        music_file: str | None = None,
        rtp_timeout: float = 0.0,
        scheduling: Scheduling = Scheduling.OFF,
    ) -> None:
        self._channel = channel
        self._scheduling = scheduling
        channel.setblocking(False)
        self._loop = RelayEngine(time.monotonic, name="callflip-media", fast=True)
        self._loop.prepare()
        self._relay = MediaRelay(host, None, None, clock=self._loop.clock, engine=self._loop)
        self._relay.on_latched = self._latched
        self._relay.on_leg_closed = self._leg_closed
        self._sessions: dict[int, MediaSession] = {}
        self._spares: dict[int, set[int]] = {}  # per session: spare legs not switched in yet
        self._legs: dict[int, MediaLeg] = {}
        self._leg_ids: dict[MediaLeg, int] = {}
        self._outbox: deque[bytes] = deque()
        with self._loop.lock:
            self._loop.register(channel, self._on_channel)
        self._handlers: dict[type[p.Message], Callable[[p.Message, list[socket.socket]], None]] = {
            p.OpenSession: self._open_session,
            p.OpenSpare: self._open_spare,
            p.SetRemote: self._set_remote,
            p.SetCodecs: self._set_codecs,
            p.SetSwallow: self._set_swallow,
            p.SetPayloadMap: self._set_payload_map,
            p.SendDtmf: self._send_dtmf,
            p.Switch: self._switch,
            p.CloseSession: self._close_session,
            p.DiscardSpare: self._discard_spare,
            p.QueryStats: self._query_stats,
            p.Shutdown: self._shutdown,
            p.Sync: self._sync,
            p.Play: self._play,
            p.StopPlay: self._stop_play,
            p.Prepare: self._prepare,
            p.SetMuted: self._set_muted,
            p.SetOnHold: self._set_on_hold,
        }
        # RTP inactivity: a latched leg that hears nothing for `rtp_timeout` seconds (0: never)
        # ends its call. Checked a few times per timeout from the engine's clock by comparing
        # packet counters, so the packet path does no extra work.
        self._rtp_timeout = rtp_timeout
        self._on_hold: set[int] = set()  # legs whose far end's SDP put the call on hold
        self._heard: dict[MediaLeg, tuple[int, float]] = {}  # packets counted, since when
        self._timed_out: set[int] = set()  # sessions reported (once each)
        if rtp_timeout > 0:
            self._loop.clock.call_later(_watch_interval(rtp_timeout), self._watch)
        self._audio = _library(music_file)
        self._playing: dict[int, int] = {}  # leg -> its current playback's number
        # G.722 assets are encoded once, on a thread of their own (pure Python: a music loop
        # takes about half a second, which on the loop would hold up every call's packets);
        # the plays that wait for one start when it is ready. Files (announcements) are read
        # and converted there too, whatever the codec: resampling is pure Python as well.
        self._encoded_assets: set[_AssetKey] = set()
        self._waiting: dict[_AssetKey, list[p.Play]] = {}
        self._done_encoding: queue.SimpleQueue[tuple[_AssetKey, str | None]] = queue.SimpleQueue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        with self._loop.lock:
            self._loop.register(self._wake_r, self._on_encoded)

    def run(self) -> None:
        """Say hello, then serve until `Shutdown` or the end of the channel."""
        self._send(
            p.Hello(
                p.PROTOCOL_VERSION,
                os.getpid(),
                self._loop.fast_state.value,
                self._scheduling.value,
            )
        )
        try:
            self._loop.run()
        finally:
            self._relay.on_leg_closed = None  # nobody to tell any more
            for number in list(self._sessions):
                self._end_session(number)
            self._channel.close()

    # -- the channel -----------------------------------------------------------------------------

    def _on_channel(self) -> None:
        """Every command waiting, in order: a change is in place before the next packet."""
        self._flush()
        with contextlib.suppress(_Drained):
            while not self._loop.stopping:
                self._command()

    def _command(self) -> None:
        """Read one datagram (one command, or a batch of them) and carry out what it says."""
        try:
            received = p.receive_all(self._channel)
        except BlockingIOError:
            raise _Drained from None
        except p.ProtocolError as exc:
            _LOGGER.error("media engine: %s", exc)
            self._send(p.Refused(str(exc)))
            return
        except OSError as exc:
            if exc.errno != errno.ECONNRESET:  # the SIP process is gone: nothing to say
                _LOGGER.error("media engine: control channel failed: %s", exc)
            self._loop.stop()
            return
        if received is None:  # the SIP process closed the channel or is gone
            self._loop.stop()
            return
        for index, (message, sockets) in enumerate(received):
            if self._loop.stopping:  # a Shutdown came first: what follows it is not done
                for _, rest in received[index:]:
                    for sock in rest:
                        sock.close()
                return
            self._carry_out(message, sockets)

    def _carry_out(self, message: p.Message, sockets: list[socket.socket]) -> None:
        handler = self._handlers[type(message)]
        try:
            handler(message, sockets)
        except Exception as exc:  # a bad command is refused; the calls go on
            for sock in sockets:
                sock.close()
            _LOGGER.exception("media engine: %s failed", type(message).__name__)
            self._send(p.Refused(f"{type(message).__name__}: {exc}"))

    def _send(self, message: p.Message) -> None:
        self._outbox.append(p.encode(message))
        self._flush()

    def _flush(self) -> None:
        """Send what is waiting; a full channel keeps the rest for the next turn of the loop."""
        outbox = self._outbox
        while outbox:
            try:
                self._channel.send(outbox[0])
            except BlockingIOError:
                self._loop.call_at(0.0, self._flush)  # try again after the next batch
                return
            except OSError as exc:
                if exc.errno not in (errno.EPIPE, errno.ECONNRESET):
                    _LOGGER.error("media engine: cannot report: %s", exc)
                outbox.clear()
                self._loop.stop()
                return
            outbox.popleft()

    # -- relay events ----------------------------------------------------------------------------

    def _latched(self, leg: MediaLeg) -> None:
        number = self._leg_ids.get(leg)
        remote = leg.remote_rtp
        if number is not None and remote is not None:
            self._send(p.Latched(number, str(remote[0]), int(remote[1])))

    def _leg_closed(self, leg: MediaLeg) -> None:
        number = self._leg_ids.pop(leg, None)
        if number is not None:
            self._legs.pop(number, None)
            # Pruned here, not only by the RTP timeout's watch: without a timeout there is no
            # watch, and every call that ended on hold would stay in the set for good.
            self._on_hold.discard(number)
            waiting = self._playing.pop(number, None)  # a play still waiting for its asset
            if waiting is not None:
                self._send(p.PlayEnded(number, waiting, "closed"))
            self._send(p.LegClosed(number))

    def _digit(self, session: int, side: Side, digit: DtmfDigit) -> None:
        self._send(
            p.Digit(
                session,
                side,
                digit.digit,
                digit.timestamp,
                digit.duration,
                digit.volume,
                digit.end,
            )
        )

    # -- commands --------------------------------------------------------------------------------

    def _adopt(self, number: int, leg: MediaLeg) -> None:
        self._legs[number] = leg
        self._leg_ids[leg] = number

    def _leg(self, number: int) -> MediaLeg:
        leg = self._legs.get(number)
        if leg is None:
            raise p.ProtocolError(f"no leg {number}")
        return leg

    def _session(self, number: int) -> MediaSession:
        session = self._sessions.get(number)
        if session is None:
            raise p.ProtocolError(f"no session {number}")
        return session

    def _open_session(self, message: p.Message, sockets: list[socket.socket]) -> None:
        assert isinstance(message, p.OpenSession)
        if message.session in self._sessions:
            raise p.ProtocolError(f"session {message.session} exists already")
        a_rtp, a_rtcp, b_rtp, b_rtcp = sockets
        session = self._relay.adopt_session(
            f"{message.call_id}#{message.session}", (a_rtp, a_rtcp), (b_rtp, b_rtcp)
        )
        number = message.session
        session.on_dtmf = lambda side, digit: self._digit(number, side, digit)
        self._sessions[number] = session
        self._adopt(message.a, session.a)
        self._adopt(message.b, session.b)

    def _open_spare(self, message: p.Message, sockets: list[socket.socket]) -> None:
        assert isinstance(message, p.OpenSpare)
        session = self._session(message.session)
        rtp, rtcp = sockets
        self._adopt(message.leg, session.adopt_spare(_side(message.side), rtp, rtcp))
        self._spares.setdefault(message.session, set()).add(message.leg)

    def _set_remote(self, message: p.Message, sockets: list[socket.socket]) -> None:
        assert isinstance(message, p.SetRemote)
        self._leg(message.leg).set_remote(
            _address(message.rtp_host, message.rtp_port),
            _address(message.rtcp_host, message.rtcp_port),
            latch=message.latch,
        )

    def _set_codecs(self, message: p.Message, sockets: list[socket.socket]) -> None:
        assert isinstance(message, p.SetCodecs)
        self._leg(message.leg).set_codecs(_codecs(message.codecs))

    def _set_swallow(self, message: p.Message, sockets: list[socket.socket]) -> None:
        assert isinstance(message, p.SetSwallow)
        leg = self._leg(message.leg)
        with self._loop.lock:
            leg.swallow_dtmf = bool(message.swallow)

    def _set_payload_map(self, message: p.Message, sockets: list[socket.socket]) -> None:
        assert isinstance(message, p.SetPayloadMap)
        self._leg(message.leg).set_payload_map(dict(message.pairs))

    def _send_dtmf(self, message: p.Message, sockets: list[socket.socket]) -> None:
        assert isinstance(message, p.SendDtmf)
        self._leg(message.leg).send_dtmf(message.digit)

    def _switch(self, message: p.Message, sockets: list[socket.socket]) -> None:
        assert isinstance(message, p.Switch)
        session = self._session(message.session)
        spare = self._leg(message.leg)
        session.switch(
            _side(message.side),
            _address(message.rtp_host, message.rtp_port),
            _address(message.rtcp_host, message.rtcp_port),
            latch=message.latch,
            codecs=None if message.codecs is None else _codecs(message.codecs),
            payload_map_in=dict(message.map_in),
            payload_map_out=dict(message.map_out),
            spare=spare,
        )
        self._spares.get(message.session, set()).discard(message.leg)

    def _close_session(self, message: p.Message, sockets: list[socket.socket]) -> None:
        assert isinstance(message, p.CloseSession)
        self._end_session(message.session)

    def _end_session(self, number: int) -> None:
        """Close a session and every spare opened for it that no switch took."""
        session = self._sessions.pop(number, None)
        for spare in self._spares.pop(number, set()):
            leg = self._legs.get(spare)
            if leg is not None:
                self._relay._close_leg(leg)
        if session is not None:
            session.on_dtmf = None
            session.close()

    def _discard_spare(self, message: p.Message, sockets: list[socket.socket]) -> None:
        assert isinstance(message, p.DiscardSpare)
        session = self._sessions.get(message.session)
        leg = self._legs.get(message.leg)
        self._spares.get(message.session, set()).discard(message.leg)
        if leg is None:
            return
        if session is not None:
            session.discard_spare(leg)
        else:
            self._relay._close_leg(leg)

    def _query_stats(self, message: p.Message, sockets: list[socket.socket]) -> None:
        assert isinstance(message, p.QueryStats)
        stats = self._leg(message.leg).stats
        self._send(
            p.Stats(
                message.request,
                message.leg,
                stats.received,
                stats.forwarded,
                stats.dropped_source,
                stats.dropped_invalid,
                stats.dropped_no_peer,
                stats.dtmf_swallowed,
                stats.dtmf_sent,
                stats.dropped_held,
                stats.generated,
            )
        )

    def _play(self, message: p.Message, sockets: list[socket.socket]) -> None:
        assert isinstance(message, p.Play)
        leg = self._leg(message.leg)
        number, number_leg = message.play, message.leg
        try:
            play = _playback(message)
        except (ValueError, p.ProtocolError) as exc:  # an unknown prompt, tone or kind
            self._send(p.PlayEnded(number_leg, number, f"cannot play: {exc}"))
            return
        previous = self._playing.get(number_leg)
        if previous is not None and previous != number and not leg.playing:
            del self._playing[number_leg]  # it was waiting for its asset: never started
            self._send(p.PlayEnded(number_leg, previous, "replaced"))
        try:
            codec, payload_type = leg.generated_codec()
        except UnsupportedCodec as exc:
            _LOGGER.warning("leg %s gets no generated audio: %s", leg.side, exc)
            self._send(p.PlayEnded(number_leg, number, f"no generated audio: {exc}"))
            return
        key = (play, message.ptime_ms, codec)
        if isinstance(play, (PlayFile, PlaySequence)):  # files; a sequence's G.722 prompts too
            prepared = self._audio.ready(play, codec, message.ptime_ms)
        else:
            prepared = codec is not AudioCodec.G722 or key in self._encoded_assets
        if not prepared:
            self._playing[number_leg] = number
            waiting = self._waiting.get(key)
            if waiting is not None:
                waiting.append(message)
                return
            self._waiting[key] = [message]
            threading.Thread(
                target=self._encode, args=(key,), name="callflip-g722", daemon=True
            ).start()
            return
        try:
            stream = self._audio.stream(play, codec, message.ptime_ms)
        except (KeyError, ValueError, OSError) as exc:  # an unknown prompt, an unreadable file
            self._send(p.PlayEnded(number_leg, number, f"cannot play: {exc}"))
            return

        def ended(reason: str) -> None:
            if self._playing.get(number_leg) == number:
                del self._playing[number_leg]
            self._send(p.PlayEnded(number_leg, number, reason))

        self._playing[number_leg] = number
        leg.play(stream, codec, payload_type, ptime_ms=message.ptime_ms, on_end=ended)

    def _prepare(self, message: p.Message, sockets: list[socket.socket]) -> None:
        """Convert a playback's assets now, on the encoding thread, for G.711 and G.722."""
        assert isinstance(message, p.Prepare)
        try:
            play = _playback(p.Play(0, 0, message.kind, message.names, None, message.ptime_ms))
        except (ValueError, p.ProtocolError) as exc:
            _LOGGER.warning("cannot prepare %s %s: %s", message.kind, message.names, exc)
            return
        for codec in (AudioCodec.PCMU, AudioCodec.G722):
            key = (play, message.ptime_ms, codec)
            if key in self._waiting or self._audio.ready(play, codec, message.ptime_ms):
                continue
            self._waiting[key] = []  # a play of the same thing meanwhile waits for it
            threading.Thread(
                target=self._encode, args=(key,), name="callflip-prepare", daemon=True
            ).start()

    def _stop_play(self, message: p.Message, sockets: list[socket.socket]) -> None:
        assert isinstance(message, p.StopPlay)
        leg = self._legs.get(message.leg)
        if leg is None or self._playing.get(message.leg) != message.play:
            return
        if leg.playing:
            leg.stop_playing()  # its end callback reports it
        else:  # still waiting for its asset
            del self._playing[message.leg]
            self._send(p.PlayEnded(message.leg, message.play, "stopped"))

    def _encode(self, key: _AssetKey) -> None:
        """On its own thread: encode a G.722 asset (or read and convert a file), then wake the
        loop."""
        leave_realtime()  # long work: never ahead of the packet loop (see media.scheduling)
        error: str | None = None
        try:
            self._audio.prepare(key[0], key[2], key[1])
        except Exception as exc:  # an unknown prompt, an unreadable file
            error = str(exc)
        self._done_encoding.put((key, error))
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def _on_encoded(self) -> None:
        """On the loop: start the plays that waited for an asset now encoded."""
        with contextlib.suppress(OSError):
            self._wake_r.recv(64)
        while True:
            try:
                key, error = self._done_encoding.get_nowait()
            except queue.Empty:
                return
            if error is not None and not self._waiting.get(key):  # a Prepare of its own
                _LOGGER.warning("cannot prepare %s: %s", key[0], error)
            if error is None and not isinstance(key[0], PlayFile):  # files: the library's cache
                # (a sequence's prompts stay encoded; its files are looked up again each time)
                self._encoded_assets.add(key)
            for message in self._waiting.pop(key, []):
                if self._playing.get(message.leg) != message.play:
                    continue  # stopped, replaced or closed meanwhile (and said so)
                if error is not None or message.leg not in self._legs:
                    del self._playing[message.leg]
                    self._send(p.PlayEnded(message.leg, message.play, f"cannot play: {error}"))
                    continue
                try:
                    self._play(message, [])
                except Exception as exc:
                    self._playing.pop(message.leg, None)
                    self._send(p.PlayEnded(message.leg, message.play, f"cannot play: {exc}"))

    def _set_muted(self, message: p.Message, sockets: list[socket.socket]) -> None:
        assert isinstance(message, p.SetMuted)
        self._leg(message.leg).set_muted(bool(message.muted))

    def _set_on_hold(self, message: p.Message, sockets: list[socket.socket]) -> None:
        assert isinstance(message, p.SetOnHold)
        self._leg(message.leg)
        if message.on_hold:
            self._on_hold.add(message.leg)
        else:
            self._on_hold.discard(message.leg)

    def _exempt(self, leg: MediaLeg) -> bool:
        """A call on hold may be silent on both sides: either leg held by the PBX (muted), or
        either side's SDP is a hold (who holds may stop sending as well as who is held)."""
        if leg.muted or leg.other.muted:
            return True
        on_hold = self._on_hold
        return self._leg_ids.get(leg) in on_hold or self._leg_ids.get(leg.other) in on_hold

    def _watch(self) -> None:
        """Report every session with a latched leg that has heard nothing for the timeout."""
        now = self._loop.clock.monotonic()
        heard: dict[MediaLeg, tuple[int, float]] = {}
        for number, session in self._sessions.items():
            if number in self._timed_out:
                continue
            for leg in (session.a, session.b):
                if leg.closed or not leg.latched:
                    continue
                count = leg.packets_heard()
                before = self._heard.get(leg)
                if before is None or before[0] != count or self._exempt(leg):
                    heard[leg] = (count, now)
                    continue
                heard[leg] = before
                if now - before[1] >= self._rtp_timeout:
                    _LOGGER.info(
                        "session %s: leg %s heard nothing for %g s",
                        number,
                        leg.side,
                        now - before[1],
                    )
                    self._timed_out.add(number)
                    self._send(p.MediaTimeout(number, leg.side, self._rtp_timeout))
                    break
        self._heard = heard
        self._timed_out &= set(self._sessions)
        self._on_hold &= set(self._legs)
        self._loop.clock.call_later(_watch_interval(self._rtp_timeout), self._watch)

    def _sync(self, message: p.Message, sockets: list[socket.socket]) -> None:
        assert isinstance(message, p.Sync)
        self._send(p.Synced(message.request))

    def _shutdown(self, message: p.Message, sockets: list[socket.socket]) -> None:
        self._loop.stop()


type _AssetKey = tuple[Playback, int, AudioCodec]
"""What a play waits for: the playback, its ptime and the codec it goes out in."""


def _watch_interval(timeout: float) -> float:
    """How often silence is looked for: a quarter of the timeout, at most once a second."""
    return min(timeout / 4, 1.0)


def _library(music_file: str | None) -> AudioLibrary:
    """The engine's audio, with the user's music converted once, now (at both rates), so that no
    hold waits for it; a file that went bad since the configuration was checked is logged, and
    the bundled loop plays instead."""
    if music_file is None:
        return AudioLibrary()
    library = AudioLibrary(music_file)
    try:
        library.check()
    except WavError as exc:
        _LOGGER.error("music on hold: %s; playing the bundled music instead", exc)
        return AudioLibrary()
    return library


def _playback(message: p.Play) -> Playback:
    """The `sip_core.audio` value a `Play` command names; ProtocolError for a bad one."""
    try:
        kind = p.PlayKind(message.kind)
    except ValueError:
        raise p.ProtocolError(f"no playback kind {message.kind!r}") from None
    if message.ptime_ms not in (10, 20, 30, 40, 60):
        raise p.ProtocolError(f"unusable ptime {message.ptime_ms} ms")
    if kind is p.PlayKind.SILENCE:
        return PlaySilence(message.duration_ms)
    if kind is p.PlayKind.MUSIC:
        return PlayMusic()
    if kind is p.PlayKind.TONE:
        if len(message.names) != 1:
            raise p.ProtocolError("a tone has one name")
        try:
            return PlayTone(Tone(message.names[0]))
        except ValueError:
            raise p.ProtocolError(f"no tone {message.names[0]!r}") from None
    if kind is p.PlayKind.FILE:
        if len(message.names) != 1 or not message.names[0]:
            raise p.ProtocolError("a file playback names one file")
        return PlayFile(message.names[0])
    if kind is p.PlayKind.SEQUENCE:
        return PlaySequence(tuple(_part(name) for name in message.names))
    if not message.names:
        raise p.ProtocolError("no prompt named")
    return PlayPrompts(tuple(message.names))


def _part(name: str) -> str | PlayFile:
    """One part of a SEQUENCE `Play`: ``prompt:<name>`` or ``file:<path>``."""
    kind, _, value = name.partition(":")
    if kind == "prompt" and value:
        return value
    if kind == "file" and value:
        return PlayFile(value)
    raise p.ProtocolError(f"a sequence part is prompt:<name> or file:<path>, not {name!r}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the engine process (started by `sip_core.media.client`, not by hand)."""
    parser = argparse.ArgumentParser(prog="python -m sip_core.media.engine")
    parser.add_argument("--channel", type=int, required=True, help="the control socket's fd")
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--cpu", type=int, default=None, help="run on this CPU only")
    parser.add_argument("--music-file", default=None, help="a WAV file for music on hold")
    parser.add_argument(
        "--rtp-timeout", type=float, default=0.0, help="end a call silent this long (0: never)"
    )
    parser.add_argument(
        "--realtime", action="store_true", help="schedule the packet loop real-time if allowed"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Ctrl-C in a terminal reaches the whole process group: the SIP process decides when the
    # engine stops (it closes the channel), not the keyboard.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {args.cpu})
    # Before any thread starts: threads inherit it, and the workers leave it again.
    scheduling = use_realtime(args.realtime)
    if scheduling is not Scheduling.REALTIME and args.realtime:
        _LOGGER.info("media engine scheduling: %s", scheduling)
    channel = socket.socket(fileno=args.channel)
    MediaEngine(
        channel,
        music_file=args.music_file,
        rtp_timeout=args.rtp_timeout,
        scheduling=scheduling,
    ).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
