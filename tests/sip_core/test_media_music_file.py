"""Music on hold from the user's WAV file, through the engine process, on real sockets."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from sip_core.audio import AudioCodec
from sip_core.clock import LoopClock
from sip_core.media import MediaRelay

from .audio_signal import goertzel_share, zero_crossing_frequency
from .test_config_music import write_tone
from .test_media_playback import (
    CODECS,
    HOST,
    WAIT,
    Phone,
    _connect,
    _phone,
    _port_range,
    decode,
    runs,
    talking,
)


@pytest.fixture
def phones() -> Iterator[tuple[Phone, Phone]]:
    a, b = _phone(0xA11CE), _phone(0xB0B)
    yield a, b
    a.sock.close()
    b.sock.close()


async def test_hold_plays_the_users_music_file(tmp_path: Path, phones: tuple[Phone, Phone]) -> None:
    music = write_tone(tmp_path / "hold.wav", 700, rate=22050, seconds=0.6)
    low, high = _port_range(4)
    relay = MediaRelay(HOST, low, high, clock=LoopClock(), music_file=str(music))
    try:
        a, b = phones
        session = _connect(relay, a, b, CODECS[AudioCodec.PCMU])
        async with talking(b, session.b.local_rtp):
            await a.until(lambda got: len(got) >= 3, "call audio before the hold")
            playing = session.hold("b")
            await a.until(
                lambda got: len(runs(got, 0)) >= 2 and len(runs(got, 0)[-1][1]) >= 40, "music"
            )
            session.resume("b")
            assert await asyncio.wait_for(playing.done, WAIT) == "stopped"
        generated = runs(a.received, 0)[1]
        assert generated[0]
        samples = decode(AudioCodec.PCMU, generated[1][:40])  # 0.8 s: the file loops
        assert abs(zero_crossing_frequency(samples, 8000) - 700) < 15
        assert goertzel_share(samples, 8000, 700) > 0.8
    finally:
        await relay.stop()


async def test_a_file_gone_bad_after_the_check_falls_back_to_the_bundled_loop(
    tmp_path: Path, phones: tuple[Phone, Phone]
) -> None:
    gone = tmp_path / "gone.wav"  # never written: the engine logs it and plays its own loop
    low, high = _port_range(4)
    relay = MediaRelay(HOST, low, high, clock=LoopClock(), music_file=str(gone))
    try:
        a, b = phones
        session = _connect(relay, a, b, CODECS[AudioCodec.PCMU])
        async with talking(b, session.b.local_rtp):
            await a.until(lambda got: len(got) >= 3, "call audio before the hold")
            session.hold("b")
            await a.until(
                lambda got: len(runs(got, 0)) >= 2 and len(runs(got, 0)[-1][1]) >= 40, "music"
            )
        samples = decode(AudioCodec.PCMU, runs(a.received, 0)[1][1][:40])
        assert goertzel_share(samples, 8000, 700) < 0.5  # not a 700 Hz tone: the bundled music
        assert relay.running
    finally:
        await relay.stop()
