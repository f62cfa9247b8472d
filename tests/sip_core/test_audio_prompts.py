"""The bundled prompts and music: all there at both rates, speech where speech should be, and
shipped in the wheel (the package-data patterns cover every file)."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

import pytest

from sip_core.audio import (
    PROMPT_NAMES,
    AudioCodec,
    AudioLibrary,
    FrameDecoder,
    PlayMusic,
    PlayPrompts,
    bundled_music,
    prompt,
)
from sip_core.config import DeviceType

from .audio_signal import rms

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "sip_core" / "audio" / "data"
WINDOW_MS = 20


def _envelope(samples: list[int] | object, rate: int) -> list[float]:
    values = list(samples)  # type: ignore[call-overload]
    size = rate * WINDOW_MS // 1000
    return [rms(values[i : i + size]) for i in range(0, len(values) - size + 1, size)]


def test_the_prompt_set_is_the_one_the_menus_need() -> None:
    expected = {str(digit) for digit in range(10)} | {
        "press",
        "for",
        "your",
        "flip_cancelled",
        "not_available",
        "please_hold",
        "transferring",
    }
    expected |= {device_type.value for device_type in DeviceType}
    assert set(PROMPT_NAMES) == expected


@pytest.mark.parametrize("name", PROMPT_NAMES)
def test_each_prompt_is_speech_framed_by_short_silence(name: str) -> None:
    narrow, wide = prompt(name, 8000), prompt(name, 16000)
    assert 0.3 < narrow.duration < 2.0
    assert abs(narrow.duration - wide.duration) < 0.01  # the same recording at two rates
    for clip in (narrow, wide):
        envelope = _envelope(clip.samples, clip.rate)
        loud = max(envelope)
        assert loud > 2000  # normalised near -3 dBFS peak: clearly audible
        assert envelope[0] < loud / 30  # quiet lead-in
        assert envelope[-1] < loud / 30  # and tail
        voiced = [level for level in envelope if level > loud / 10]
        assert len(voiced) * WINDOW_MS >= 150  # at least 150 ms of speech energy
        assert max(abs(x) for x in clip.samples) < 32767  # no clipping


def test_prompts_are_loaded_once() -> None:
    assert prompt("press", 8000) is prompt("press", 8000)
    with pytest.raises(KeyError, match="no prompt 'hello'; known: 0, 1"):
        prompt("hello", 8000)
    with pytest.raises(ValueError, match="rate must be one of"):
        prompt("press", 44100)


@pytest.mark.parametrize("codec", list(AudioCodec))
def test_a_prompt_playlist_through_each_codec_keeps_its_envelope(codec: AudioCodec) -> None:
    names = ("press", "1", "for", "your", "mobile")
    stream = AudioLibrary().stream(PlayPrompts(names), codec)
    decoder = FrameDecoder(codec)
    decoded: list[int] = []
    while (payload := stream.next_payload()) is not None:
        decoded.extend(decoder.decode(payload))
    rate = codec.sample_rate
    reference: list[int] = []
    for name in names:
        reference.extend(prompt(name, rate).samples)
    # The playlist lasts as long as its prompts (G.722 pads each prompt to whole frames).
    slack = len(names) * rate // 50 if codec is AudioCodec.G722 else rate // 50
    assert len(reference) <= len(decoded) <= len(reference) + slack
    heard = _envelope(decoded, rate)
    loud = max(heard)
    assert loud > 2000
    # Every word is heard: the decoded envelope has as many bursts of speech as there are words
    # (a burst = windows above a tenth of the peak, separated by the prompts' own pauses).
    # With hysteresis: a burst starts above a tenth of the peak and ends below a thirtieth.
    bursts = 0
    inside = False
    for level in heard:
        if not inside and level > loud / 10:
            bursts += 1
            inside = True
        elif inside and level < loud / 30:
            inside = False
    assert bursts >= len(names)
    if codec is not AudioCodec.G722:
        expected = _envelope(reference, rate)
        assert len(heard) >= len(expected)
        for got, want in zip(heard, expected, strict=False):
            assert abs(got - want) <= 0.1 * want + 50


def test_the_music_loop_is_gentle_and_loops_cleanly() -> None:
    for rate in (8000, 16000):
        music = bundled_music(rate)
        assert 4 <= music.duration <= 20
        envelope = _envelope(music.samples, rate)
        assert min(envelope) > 300  # it plays throughout: the chords cross-fade
        assert max(abs(x) for x in music.samples) < 0.3 * 32767  # background level
        # No click at the loop's seam: the step from the last sample to the first is no bigger
        # than the steps inside the music.
        samples = music.samples
        largest_step = max(abs(samples[i + 1] - samples[i]) for i in range(len(samples) - 1))
        assert abs(samples[0] - samples[-1]) <= largest_step
    stream = AudioLibrary().stream(PlayMusic(), AudioCodec.PCMU)
    frames = int(bundled_music(8000).duration * 50) + 10
    assert all(stream.next_payload() is not None for _ in range(frames))
    assert not stream.done


def test_package_data_patterns_ship_every_data_file() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["sip_core.audio"]
    files = [path.relative_to(DATA.parent).as_posix() for path in DATA.rglob("*") if path.is_file()]
    assert len(files) == 2 * len(PROMPT_NAMES) + 2
    for file in files:
        assert any(fnmatch.fnmatch(file, pattern) for pattern in patterns), file


def test_bundled_audio_stays_small() -> None:
    total = sum(path.stat().st_size for path in DATA.rglob("*") if path.is_file())
    assert total < 512 * 1024
