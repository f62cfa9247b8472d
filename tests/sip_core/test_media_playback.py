"""Generated audio through the media engine, over real sockets: tones, prompts, hold, digits.

A fake phone on each side of a session sends and receives RTP on 127.0.0.1. The receiving phone
decodes what the engine generated (its own G.711/G.722 decoders) and checks the tone's frequency
or the prompt's energy envelope, and that its stream stays one stream across "call audio ->
generated audio -> call audio". Waits are bounded only so that a broken engine fails; nothing is
timed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import random
import socket
import wave
from array import array
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sip_core.audio import (
    AudioCodec,
    CollectEnd,
    CollectResult,
    CollectSettings,
    FrameDecoder,
    PlayFile,
    PlayMusic,
    PlayPrompts,
    PlayTone,
    Tone,
    prompt,
)
from sip_core.clock import LoopClock
from sip_core.dtmf import DIGITS, TelephoneEvent, build_telephone_event
from sip_core.media import PLAY_FINISHED, MediaRelay, MediaSession
from sip_core.rtp import RtpPacket, parse_rtp
from sip_core.sdp import Codec
from sip_core.transport import Address

from .audio_signal import goertzel_share, rms, zero_crossing_frequency

# Every test here runs against an engine forwarding in Python and one forwarding in C.
pytestmark = pytest.mark.usefixtures("packet_path")

HOST = "127.0.0.1"
WAIT = 5.0
EVENT_PT = 101
CODECS = {
    AudioCodec.PCMU: Codec(0, "PCMU", 8000),
    AudioCodec.PCMA: Codec(8, "PCMA", 8000),
    AudioCodec.G722: Codec(9, "G722", 8000),
}


def _port_range(pairs: int) -> tuple[int, int]:
    start = random.randrange(24000, 32000 - 2 * pairs, 2)
    return start, start + 2 * pairs - 1


@dataclass
class Phone:
    """One far end: a socket, the stream it sends, and every packet it received."""

    sock: socket.socket
    ssrc: int
    sequence: int = 1000
    timestamp: int = 80_000
    received: list[RtpPacket] = field(default_factory=list)

    @property
    def address(self) -> Address:
        host, port = self.sock.getsockname()[:2]
        return Address(host, port)

    def audio(self, to: Address) -> None:
        packet = RtpPacket(0, self.sequence, self.timestamp, self.ssrc, b"\xd5" * 160)
        self.sequence += 1
        self.timestamp += 160
        self.sock.sendto(packet.to_bytes(), (to.host, to.port))

    def press(self, digit: str, to: Address) -> None:
        code = DIGITS.index(digit)
        for index in range(6):
            end = index >= 3
            payload = build_telephone_event(TelephoneEvent(code, end, 10, 400 * min(index + 1, 3)))
            packet = RtpPacket(
                EVENT_PT, self.sequence, self.timestamp, self.ssrc, payload, marker=index == 0
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

    async def until(self, check: object, what: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while True:
            self.drain()
            if callable(check) and check(self.received):
                return
            assert loop.time() < deadline, f"not received in time: {what}"
            await asyncio.sleep(0.005)


def _phone(ssrc: int) -> Phone:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    sock.setblocking(False)
    return Phone(sock, ssrc)


@pytest.fixture
async def relay() -> AsyncIterator[MediaRelay]:
    low, high = _port_range(10)
    media = MediaRelay(HOST, low, high, clock=LoopClock())
    yield media
    await media.stop()


@pytest.fixture
def phones() -> Iterator[tuple[Phone, Phone]]:
    a, b = _phone(0xA11CE), _phone(0xB0B)
    yield a, b
    a.sock.close()
    b.sock.close()


def _connect(relay: MediaRelay, a: Phone, b: Phone, codec: Codec) -> MediaSession:
    """A call whose both far ends use `codec` (plus telephone-event), addresses from SDP."""
    session = relay.open_session(f"call-{random.getrandbits(32):08x}")
    for leg, phone in ((session.a, a), (session.b, b)):
        leg.set_codecs([codec, Codec(EVENT_PT, "telephone-event", 8000)])
        leg.set_remote(phone.address)
    return session


@contextlib.asynccontextmanager
async def talking(phone: Phone, to: Address) -> AsyncIterator[None]:
    """The phone sends audio every 20 ms meanwhile (the pace is not measured)."""

    async def send() -> None:
        while True:
            phone.audio(to)
            await asyncio.sleep(0.02)

    task = asyncio.create_task(send())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def check_one_stream(packets: list[RtpPacket]) -> None:
    """What a receiver needs: one SSRC, every sequence number once and in order, timestamps
    never going back."""
    assert len({p.ssrc for p in packets}) == 1
    first = packets[0].sequence
    assert [p.sequence for p in packets] == [(first + i) & 0xFFFF for i in range(len(packets))]
    for before, after in itertools.pairwise(packets):
        assert 0 <= (after.timestamp - before.timestamp) & 0xFFFFFFFF < 0x80000000


def runs(packets: list[RtpPacket], generated_type: int) -> list[tuple[bool, list[RtpPacket]]]:
    """The stream cut into runs of forwarded (False) and generated (True) packets."""
    result: list[tuple[bool, list[RtpPacket]]] = []
    for packet in packets:
        generated = packet.payload_type == generated_type and packet.payload != b"\xd5" * 160
        if result and result[-1][0] == generated:
            result[-1][1].append(packet)
        else:
            result.append((generated, [packet]))
    return result


def decode(codec: AudioCodec, packets: list[RtpPacket]) -> list[int]:
    decoder = FrameDecoder(codec)
    samples: list[int] = []
    for packet in packets:
        samples.extend(decoder.decode(packet.payload))
    return samples


@pytest.mark.parametrize("codec", list(CODECS), ids=str)
async def test_a_tone_interrupts_the_call_audio_and_the_call_audio_comes_back(
    relay: MediaRelay, phones: tuple[Phone, Phone], codec: AudioCodec
) -> None:
    a, b = phones
    spec = CODECS[codec]
    session = _connect(relay, a, b, spec)
    async with talking(b, session.b.local_rtp):
        await a.until(lambda got: len(got) >= 3, "call audio before the tone")
        playing = session.a.play(PlayTone(Tone.BEEP))  # 200 ms of 1000 Hz
        assert await asyncio.wait_for(playing.done, WAIT) == PLAY_FINISHED
        await a.until(
            lambda got: len(runs(got, spec.payload_type)) >= 3 and len(runs(got, 0)[-1][1]) >= 3,
            "call audio after the tone",
        )
    stream = a.received
    check_one_stream(stream)
    parts = runs(stream, spec.payload_type)
    assert [generated for generated, _ in parts[:3]] == [False, True, False]
    tone = parts[1][1]
    assert len(tone) == 10  # 200 ms in 20 ms frames
    assert tone[0].marker  # the change to generated audio
    assert parts[2][1][0].marker  # and back to the call's
    assert not any(p.marker for p in tone[1:])
    assert {p.payload_type for p in tone} == {spec.payload_type}
    assert all(p.timestamp - q.timestamp == 160 for q, p in itertools.pairwise(tone))
    samples = decode(codec, tone)
    rate = codec.sample_rate
    steady = samples[rate // 50 : -rate // 50]  # leave out the codec's settling at both ends
    assert abs(zero_crossing_frequency(steady, rate) - 1000) < 10
    assert goertzel_share(steady, rate, 1000) > 0.9
    stats = await session.b.fetch_stats()
    assert stats.dropped_held > 0  # b's audio was received and dropped while the tone played
    assert (await session.a.fetch_stats()).generated == 10


@pytest.mark.parametrize("codec", list(CODECS), ids=str)
async def test_a_prompt_arrives_whole_with_its_energy_envelope(
    relay: MediaRelay, phones: tuple[Phone, Phone], codec: AudioCodec
) -> None:
    a, b = phones
    spec = CODECS[codec]
    session = _connect(relay, a, b, spec)
    playing = session.a.play(PlayPrompts(("press",)))
    assert await asyncio.wait_for(playing.done, WAIT) == PLAY_FINISHED
    clip = prompt("press", codec.sample_rate)
    frame = codec.samples_per_frame()
    frames = math.ceil(len(clip.samples) / frame)
    await a.until(lambda got: len(got) >= frames, "the whole prompt")
    check_one_stream(a.received)  # nothing sent before: the prompt starts the stream
    assert len(a.received) == frames
    assert a.received[0].marker
    decoded = decode(codec, a.received)
    # The energy of each 20 ms frame follows the prompt's (the codec's delay is under a frame).
    heard = [rms(decoded[n : n + frame]) for n in range(0, len(clip.samples) - frame, frame)]
    said = [rms(clip.samples[n : n + frame]) for n in range(0, len(clip.samples) - frame, frame)]
    assert max(heard) > 1000  # not silence
    mean_heard, mean_said = sum(heard) / len(heard), sum(said) / len(said)
    covariance = sum((h - mean_heard) * (s - mean_said) for h, s in zip(heard, said, strict=True))
    spread = math.sqrt(sum((h - mean_heard) ** 2 for h in heard)) * math.sqrt(
        sum((s - mean_said) ** 2 for s in said)
    )
    assert covariance / spread > 0.9


async def test_hold_plays_music_to_the_other_side_and_drops_the_held_audio(
    relay: MediaRelay, phones: tuple[Phone, Phone]
) -> None:
    a, b = phones
    session = _connect(relay, a, b, CODECS[AudioCodec.PCMU])
    async with talking(b, session.b.local_rtp):
        await a.until(lambda got: len(got) >= 3, "call audio before the hold")
        music = session.hold("b")  # b is held: a hears music, b's audio goes nowhere
        await a.until(
            lambda got: len(runs(got, 0)) >= 2 and len(runs(got, 0)[-1][1]) >= 25, "music"
        )
        assert (await session.b.fetch_stats()).dropped_held > 0
        assert not music.done.done()  # music on hold plays until resumed
        session.resume("b")
        assert await asyncio.wait_for(music.done, WAIT) == "stopped"
        await a.until(lambda got: len(runs(got, 0)) >= 3 and len(runs(got, 0)[-1][1]) >= 3, "b")
    check_one_stream(a.received)
    forwarded, generated, back = runs(a.received, 0)[:3]
    assert [forwarded[0], generated[0], back[0]] == [False, True, False]
    assert generated[1][0].marker
    assert back[1][0].marker
    assert rms(decode(AudioCodec.PCMU, generated[1])) > 100  # music, not silence
    assert not session.held("b")
    assert not session.b.muted


async def test_a_leg_without_a_codec_we_encode_gets_no_generated_audio(
    relay: MediaRelay, phones: tuple[Phone, Phone], caplog: pytest.LogCaptureFixture
) -> None:
    a, b = phones
    session = _connect(relay, a, b, Codec(111, "opus", 48000, 2))
    playing = session.a.play(PlayMusic())
    reason = await asyncio.wait_for(playing.done, WAIT)
    assert reason.startswith("no generated audio")
    assert "opus" in reason.lower()
    await relay.sync()
    a.drain()
    assert a.received == []


async def test_digits_are_collected_with_barge_in_and_do_not_reach_the_call(
    relay: MediaRelay, phones: tuple[Phone, Phone]
) -> None:
    a, b = phones
    session = _connect(relay, a, b, CODECS[AudioCodec.PCMU])
    session.b.swallow_dtmf = True
    passed_on: list[str] = []
    session.on_dtmf = lambda side, digit: passed_on.append(digit.digit)
    settings = CollectSettings(max_digits=3, terminator="#", first_digit_timeout=WAIT)
    result = session.collect("b", settings, prompt=PlayPrompts(("press", "for", "your")))
    await b.until(lambda got: len(got) >= 3, "the prompt")
    b.press("1", session.b.local_rtp)  # during the prompt: it stops, and "1" counts
    b.press("2", session.b.local_rtp)
    b.press("#", session.b.local_rtp)
    assert await asyncio.wait_for(result, WAIT) == CollectResult("12", CollectEnd.TERMINATOR)
    assert passed_on == []
    await relay.sync()
    b.drain()
    prompt_frames = len(b.received)
    full = sum(
        math.ceil(len(prompt(name, 8000).samples) / 160) for name in ("press", "for", "your")
    )
    assert prompt_frames < full  # barge-in cut the prompt short
    # After the collection, digits go to the call again.
    b.press("5", session.b.local_rtp)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while not passed_on:
        assert loop.time() < deadline
        await asyncio.sleep(0.005)
    assert passed_on == ["5"]


async def test_a_g722_playback_waiting_for_its_asset_can_be_stopped_or_replaced(
    relay: MediaRelay, phones: tuple[Phone, Phone]
) -> None:
    a, b = phones
    session = _connect(relay, a, b, CODECS[AudioCodec.G722])
    # The engine encodes a G.722 asset once, off its packet loop; these wait for that.
    first = session.a.play(PlayMusic())
    second = session.a.play(PlayTone(Tone.RINGBACK))
    assert await asyncio.wait_for(first.done, WAIT) == "replaced"
    second.stop()
    assert await asyncio.wait_for(second.done, WAIT) == "stopped"
    third = session.a.play(PlayTone(Tone.BEEP))
    assert await asyncio.wait_for(third.done, WAIT) == PLAY_FINISHED
    await a.until(lambda got: len(got) >= 10, "the beep")
    check_one_stream(a.received)
    assert len(a.received) == 10  # the beep alone: nothing of the music or the ringback


def _write_tone_wav(path: Path, frequency: float, seconds: float, rate: int) -> Path:
    count = int(seconds * rate)
    samples = array(
        "h", (int(8000 * math.sin(2 * math.pi * frequency * n / rate)) for n in range(count))
    )
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())
    return path


@pytest.mark.parametrize("codec", list(CODECS), ids=str)
async def test_a_wav_file_is_converted_off_the_loop_and_played_once(
    relay: MediaRelay, phones: tuple[Phone, Phone], codec: AudioCodec, tmp_path: Path
) -> None:
    """A 22.05 kHz file (an announcement) is resampled for the leg's codec by the engine's
    encoding thread, then played once at its length, in tune."""
    a, b = phones
    spec = CODECS[codec]
    session = _connect(relay, a, b, spec)
    path = _write_tone_wav(tmp_path / "announce.wav", 1700.0, 0.4, 22050)
    playing = session.a.play(PlayFile(str(path)))
    assert await asyncio.wait_for(playing.done, WAIT) == PLAY_FINISHED
    await a.until(lambda got: len(got) >= 20, "the whole file")
    assert len(a.received) == 20  # 0.4 s in 20 ms frames, once
    samples = decode(codec, a.received)
    rate = codec.sample_rate
    steady = samples[rate // 50 : -rate // 50]
    assert abs(zero_crossing_frequency(steady, rate) - 1700) < 15
    assert goertzel_share(steady, rate, 1700) > 0.9


async def test_a_file_that_cannot_be_played_ends_with_the_reason(
    relay: MediaRelay, phones: tuple[Phone, Phone], tmp_path: Path
) -> None:
    a, b = phones
    session = _connect(relay, a, b, CODECS[AudioCodec.PCMA])
    (tmp_path / "broken.wav").write_bytes(b"RIFF....WAVEjunk")
    playing = session.a.play(PlayFile(str(tmp_path / "broken.wav")))
    reason = await asyncio.wait_for(playing.done, WAIT)
    assert reason.startswith("cannot play: ")
    assert "broken.wav" in reason
    gone = session.a.play(PlayFile(str(tmp_path / "missing.wav")))
    assert "file not found" in await asyncio.wait_for(gone.done, WAIT)
