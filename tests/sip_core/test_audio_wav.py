"""A user's WAV file for music on hold: converted once to mono 8/16 kHz, or refused clearly."""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import pytest

from sip_core.audio import AudioCodec, AudioLibrary, FrameDecoder, PlayMusic, WavError, load_wav
from sip_core.audio.resample import resample

from .audio_signal import goertzel_share, rms, sine, zero_crossing_frequency


def _write_wav(path: Path, rate: int, channels: int, width: int, frames: list[list[int]]) -> Path:
    """``frames``: per channel, 16-bit values (scaled to ``width`` bytes)."""
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(width)
        writer.setframerate(rate)
        data = bytearray()
        for values in zip(*frames, strict=True):
            for value in values:
                if width == 1:
                    data.append((value >> 8) + 128)
                else:
                    data += (value << (8 * (width - 2))).to_bytes(width, "little", signed=True)
        writer.writeframes(bytes(data))
    return path


@pytest.mark.parametrize("target", [8000, 16000])
@pytest.mark.parametrize(
    ("rate", "channels", "width"),
    [(44100, 2, 2), (48000, 1, 2), (22050, 1, 1), (8000, 1, 3), (32000, 2, 4), (16000, 1, 2)],
)
def test_a_tone_survives_conversion(
    tmp_path: Path, rate: int, channels: int, width: int, target: int
) -> None:
    seconds = 0.5
    tone = sine(1000, 12000, rate, int(rate * seconds))
    frames = [tone] * channels
    path = _write_wav(tmp_path / "music.wav", rate, channels, width, frames)
    clip = load_wav(path, target)
    assert clip.rate == target
    assert clip.name == "music.wav"
    assert abs(len(clip.samples) - target * seconds) <= 1
    middle = list(clip.samples[target // 10 : -target // 10])
    assert abs(zero_crossing_frequency(middle, target) - 1000) < 1
    assert goertzel_share(middle, target, 1000) > 0.95
    assert 0.9 * 12000 / 2**0.5 < rms(middle) < 1.1 * 12000 / 2**0.5


def test_downsampling_removes_what_the_lower_rate_cannot_carry() -> None:
    # 6 kHz at 48 kHz has no place at 8 kHz (Nyquist 4 kHz): it must not alias down to 2 kHz.
    converted = resample(sine(6000, 12000, 48000, 24000), 48000, 8000)
    assert rms(list(converted[400:-400])) < 12000 / 2**0.5 / 100  # at least 40 dB down


def test_stereo_is_mixed_down(tmp_path: Path) -> None:
    left = sine(500, 10000, 8000, 4000)
    silent = [0] * 4000
    clip = load_wav(_write_wav(tmp_path / "s.wav", 8000, 2, 2, [left, silent]), 8000)
    assert abs(rms(list(clip.samples)) - 5000 / 2**0.5) < 100


def _riff(fmt_tag: int, *, rate: int = 8000, bits: int = 16, data: bytes = b"\0\0" * 100) -> bytes:
    fmt = struct.pack("<HHIIHH", fmt_tag, 1, rate, rate * bits // 8, bits // 8, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"this is not audio at all", "not a WAV file"),
        (_riff(3, bits=32), "compressed or floating-point WAV is not supported"),
        (_riff(85), "compressed or floating-point WAV is not supported"),  # MP3 in WAV
        (_riff(1, rate=1000), "a sample rate of 1000 Hz is not supported"),
        (_riff(1, data=b""), "the file holds no audio"),
        (b"RIFF\x10\x00\x00\x00WAVEfm", "format or data chunk is missing"),
        (b"", "truncated"),
    ],
)
def test_unusable_files_are_refused_with_a_reason(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(WavError) as caught:
        load_wav(path, 8000)
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)


def test_a_file_that_is_too_long_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "long.wav"
    data_size = 8000 * 2 * 121  # 121 s of 16-bit audio at 8 kHz, announced...
    fmt = struct.pack("<HHIIHH", 1, 1, 8000, 16000, 2, 16)
    header = b"WAVEfmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", data_size)
    path.write_bytes(b"RIFF" + struct.pack("<I", 4 + len(header) + data_size) + header + b"\0" * 64)
    with pytest.raises(WavError, match=r"121 s is too long \(at most 120 s\)"):
        load_wav(path, 8000)


def test_too_many_channels_or_bytes_are_refused_before_reading(tmp_path: Path) -> None:
    def header(channels: int, rate: int, frames: int) -> bytes:
        fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * channels * 4, channels * 4, 32)
        size = frames * channels * 4
        body = b"WAVEfmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", size)
        return b"RIFF" + struct.pack("<I", 4 + len(body) + size) + body + b"\0" * 64

    many = tmp_path / "many.wav"
    many.write_bytes(header(12, 8000, 100))
    with pytest.raises(WavError, match="12 channels is too many"):
        load_wav(many, 8000)
    large = tmp_path / "large.wav"
    large.write_bytes(header(8, 192000, 192000 * 20))  # 20 s, 8 channels of 32-bit at 192 kHz
    with pytest.raises(WavError, match="too large"):
        load_wav(large, 8000)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(WavError, match=r"nope\.wav: file not found"):
        load_wav(tmp_path / "nope.wav", 8000)
    with pytest.raises(WavError, match="is a directory"):
        load_wav(tmp_path, 8000)
    with pytest.raises(ValueError, match="rate must be one of"):
        load_wav(tmp_path / "x.wav", 44100)


def test_the_library_plays_the_users_music_and_checks_it_early(tmp_path: Path) -> None:
    tone = sine(700, 9000, 44100, 44100)
    library = AudioLibrary(_write_wav(tmp_path / "hold.wav", 44100, 1, 2, [tone]))
    library.check()
    for codec in (AudioCodec.PCMU, AudioCodec.G722):
        stream = library.stream(PlayMusic(), codec)
        decoder = FrameDecoder(codec)
        decoded: list[int] = []
        for _ in range(75):  # 1.5 s: the 1 s file loops
            payload = stream.next_payload()
            assert payload is not None
            decoded.extend(decoder.decode(payload))
        rate = codec.sample_rate
        assert abs(zero_crossing_frequency(decoded[rate // 10 : rate], rate) - 700) < 2
        assert rms(decoded[rate + rate // 10 :]) > 5000  # still playing after the loop point
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"nonsense")
    with pytest.raises(WavError, match=r"broken\.wav: not a WAV file"):
        AudioLibrary(broken).check()
