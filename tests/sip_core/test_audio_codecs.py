"""G.711 and G.722 as the recommendations define them, and the codec lookup for SDP names.

The G.722 bit stream is checked against an independent implementation (FFmpeg's): the golden
hashes below are of FFmpeg 5.1's encoding of `_golden_input()` and of its decoding of that
stream. When the `ffmpeg` program is installed the same comparison also runs live.
"""

from __future__ import annotations

import hashlib
import math
import shutil
import subprocess
from array import array
from pathlib import Path

import pytest

from sip_core.audio import AudioCodec, FrameDecoder, FrameEncoder, UnsupportedCodec, codec_for
from sip_core.audio.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from sip_core.audio.g722 import ILB, ILN, ILP, Q6, QM4, QM6, G722Decoder, G722Encoder

from .audio_signal import goertzel_share, sine, snr_db, zero_crossing_frequency

ALL_CODES = bytes(range(256))


# --- G.711 -----------------------------------------------------------------------------------


def test_ulaw_reference_points() -> None:
    assert ulaw_encode([0, 32767, -32768, 8, -8]) == bytes([0xFF, 0x80, 0x00, 0xFE, 0x7E])
    assert list(ulaw_decode(bytes([0xFF, 0x7F, 0x80, 0x00, 0xFE]))) == [0, 0, 32124, -32124, 8]


def test_alaw_reference_points() -> None:
    assert alaw_encode([0, -1, 32767, -32768]) == bytes([0xD5, 0x55, 0xAA, 0x2A])
    assert list(alaw_decode(bytes([0xD5, 0x55, 0xAA, 0x2A]))) == [8, -8, 32256, -32256]


# G.711 Table 2a (µ-law) in 14-bit units: where each segment ends, and its step.
ULAW_SEGMENTS = [(31, 2), (95, 4), (223, 8), (479, 16), (991, 32), (2015, 64), (4063, 128)]
# G.711 Table 1a (A-law) in 12-bit magnitude units (13-bit signed): segment start and step.
ALAW_SEGMENTS = [(0, 2), (32, 2), (64, 4), (128, 8), (256, 16), (512, 32), (1024, 64), (2048, 128)]


def _ulaw_interval(magnitude14: int) -> tuple[int, int]:
    """The decision interval [low, high) holding a 14-bit magnitude, from Table 2a's rules."""
    if magnitude14 < 1:
        return (0, 1)  # the zero level: -1..0 in 14-bit units
    low = 1
    for end, step in ULAW_SEGMENTS:
        if magnitude14 < end:
            index = (magnitude14 - low) // step
            return (low + index * step, low + (index + 1) * step)
        low = end
    step = 256
    index = min((magnitude14 - low) // step, 15)
    return (low + index * step, low + (index + 1) * step)


def test_ulaw_encoder_uses_the_decision_levels_of_g711() -> None:
    # Every 14-bit magnitude lands in the interval Table 2a gives, and decodes to its middle.
    for magnitude in range(8159):
        code = ulaw_encode([magnitude << 2])[0]
        low, high = _ulaw_interval(magnitude)
        decoded = ulaw_decode(bytes([code]))[0] >> 2
        assert low <= decoded < high or (low, high) == (0, 1), magnitude
        assert ulaw_encode([(low << 2)])[0] == code


def test_alaw_encoder_uses_the_decision_levels_of_g711() -> None:
    for magnitude in range(4096):
        start, step = next((s, st) for s, st in reversed(ALAW_SEGMENTS) if magnitude >= s)
        low = start + (magnitude - start) // step * step
        expected_middle = low + step // 2
        for sign, sample in ((1, magnitude << 3), (-1, -(magnitude << 3) - 1)):
            decoded = alaw_decode(alaw_encode([sample]))[0]
            assert decoded == sign * (expected_middle << 3), (magnitude, sign)


@pytest.mark.parametrize(
    ("encode", "decode"), [(ulaw_encode, ulaw_decode), (alaw_encode, alaw_decode)]
)
def test_g711_codes_survive_a_round_trip(encode, decode) -> None:  # type: ignore[no-untyped-def]
    back = encode(decode(ALL_CODES))
    # µ-law's negative zero (0x7F) decodes to 0, which encodes as 0xFF; every other code returns.
    assert [code for code in range(256) if back[code] != code] in ([], [0x7F])


@pytest.mark.parametrize("codec", [AudioCodec.PCMU, AudioCodec.PCMA])
def test_g711_carries_a_tone_at_toll_quality(codec: AudioCodec) -> None:
    tone = sine(1000, 7000, 8000, 1600)
    decoded = FrameDecoder(codec).decode(FrameEncoder(codec).encode(tone))
    assert snr_db(tone, decoded, max_delay=1) > 33  # G.711 is about 38 dB for such a level
    assert abs(zero_crossing_frequency(decoded, 8000) - 1000) < 1


# --- G.722 -----------------------------------------------------------------------------------


def test_g722_quantiser_tables_agree_with_each_other() -> None:
    """Each 6-bit output level is the middle of its decision interval (a check on the tables)."""
    assert len(Q6) == 30
    assert len(QM6) == 64
    codes = {ILP[i]: i for i in range(1, 31)} | {ILN[i]: -i for i in range(1, 31)}
    assert len(codes) == 60
    assert set(range(4, 64)) == set(codes)  # codes 0-3 are never sent
    for code, interval in codes.items():
        index = abs(interval)
        low = Q6[index - 1]
        high = Q6[index] if index < 30 else Q6[29] + (Q6[29] - Q6[28])
        level = QM6[code] / 8  # QM6 is scaled by 2**15, Q6 by 2**12
        middle = (low + high) / 2
        assert abs(abs(level) - middle) <= 1, (code, level, middle)
        assert (level > 0) == (interval > 0)
    # The 4-bit table holds the same kind of levels for the code's upper 4 bits.
    assert QM4[0] == QM4[15] == 0
    assert all(QM4[i] == -QM4[i + 7] for i in range(1, 8))


def test_g722_scale_factor_table_is_the_antilog() -> None:
    assert len(ILB) == 32
    for index, value in enumerate(ILB):
        assert abs(value - 2048 * 2 ** (index / 32)) < 1


def _golden_input() -> list[int]:
    """1 s at 16 kHz: a 440 Hz tone, a gated 5.2 kHz one (upper band), noise, and clipping."""
    state = 12345
    out = []
    for n in range(16000):
        state = (state * 1103515245 + 12345) & 0x7FFFFFFF
        noise = (state >> 16) % 2001 - 1000
        value = (
            9000 * math.sin(2 * math.pi * 440 * n / 16000)
            + 6000 * math.sin(2 * math.pi * 5200 * n / 16000) * (n % 4000 < 2000)
            + noise
        )
        if 8000 <= n < 9000:
            value *= 3
        out.append(max(-32768, min(32767, round(value))))
    return out


FFMPEG_CODES_SHA256 = "fea783895a2bf530464cc7a4ad9f3edd33c4b399dc18f08d33f7a5b5575a262f"
FFMPEG_DECODED_SHA256 = "3b33a4b3f11ee335cbe0c60a4e424a47c121e10727da180e076ea3c1eef927ca"


def test_g722_matches_an_independent_implementation_bit_for_bit() -> None:
    codes = G722Encoder().encode(_golden_input())
    assert len(codes) == 8000
    assert hashlib.sha256(codes).hexdigest() == FFMPEG_CODES_SHA256
    decoded = G722Decoder().decode(codes)
    assert hashlib.sha256(decoded.tobytes()).hexdigest() == FFMPEG_DECODED_SHA256


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
def test_g722_against_ffmpeg_live(tmp_path: Path) -> None:
    samples = array("h", sine(1234, 8000, 16000, 8000))
    raw = tmp_path / "in.raw"
    raw.write_bytes(samples.tobytes())
    coded = tmp_path / "out.g722"
    decoded = tmp_path / "out.raw"
    quiet = ["ffmpeg", "-loglevel", "error", "-y"]
    encode = ["-f", "s16le", "-ar", "16000", "-ac", "1", "-i", raw, "-c:a", "g722", "-f", "g722"]
    subprocess.run([*quiet, *encode, coded], check=True)
    subprocess.run([*quiet, "-f", "g722", "-i", coded, "-f", "s16le", decoded], check=True)
    ours = G722Encoder().encode(samples)
    assert ours == coded.read_bytes()
    theirs = array("h")
    theirs.frombytes(decoded.read_bytes())
    assert G722Decoder().decode(ours) == theirs


@pytest.mark.parametrize(("frequency", "min_snr"), [(300, 45), (1000, 40), (3000, 35), (6000, 15)])
def test_g722_round_trip_keeps_a_tone(frequency: int, min_snr: float) -> None:
    tone = sine(frequency, 10000, 16000, 8000)
    decoded = G722Decoder().decode(G722Encoder().encode(tone))
    assert len(decoded) == len(tone)
    assert snr_db(tone, decoded) > min_snr
    settled = decoded[800:]
    assert abs(zero_crossing_frequency(settled, 16000) - frequency) < 2
    assert goertzel_share(settled, 16000, frequency) > 0.9


def test_g722_encoder_takes_frames_of_any_length() -> None:
    tone = sine(700, 9000, 16000, 1000)
    whole = G722Encoder().encode(tone)
    encoder = G722Encoder()
    pieces = b"".join(
        encoder.encode(tone[a:b]) for a, b in [(0, 3), (3, 320), (320, 641), (641, 1000)]
    )
    assert pieces == whole


# --- codec lookup and frame sizes -----------------------------------------------------------


@pytest.mark.parametrize(
    ("encoding", "expected"),
    [("PCMU", AudioCodec.PCMU), ("pcma", AudioCodec.PCMA), ("G722", AudioCodec.G722)],
)
def test_codec_for_sdp_names(encoding: str, expected: AudioCodec) -> None:
    assert codec_for(encoding, 8000) is expected


@pytest.mark.parametrize(
    ("encoding", "rate", "channels"),
    [("opus", 48000, 2), ("G729", 8000, 1), ("PCMU", 16000, 1), ("telephone-event", 8000, 1)],
)
def test_other_codecs_are_refused_clearly(encoding: str, rate: int, channels: int) -> None:
    with pytest.raises(UnsupportedCodec) as caught:
        codec_for(encoding, rate, channels)
    message = str(caught.value)
    assert message.startswith(f"cannot generate audio in {encoding}/{rate}")
    assert "only PCMU/8000, PCMA/8000, G722/8000 are supported" in message
    assert caught.value.encoding == encoding


@pytest.mark.parametrize(
    ("codec", "ptime", "samples", "size", "step"),
    [
        (AudioCodec.PCMU, 20, 160, 160, 160),
        (AudioCodec.PCMA, 30, 240, 240, 240),
        (AudioCodec.G722, 20, 320, 160, 160),
        (AudioCodec.G722, 10, 160, 80, 80),
    ],
)
def test_frame_geometry(codec: AudioCodec, ptime: int, samples: int, size: int, step: int) -> None:
    assert codec.samples_per_frame(ptime) == samples
    assert codec.payload_size(ptime) == size
    assert codec.timestamp_step(ptime) == step
    payload = FrameEncoder(codec).encode([0] * samples)
    assert len(payload) == size
    assert len(FrameDecoder(codec).decode(payload)) == samples
    assert codec.static_payload_type == {"PCMU": 0, "PCMA": 8, "G722": 9}[codec.value]
