"""The payload formats the PBX can generate audio in, and per-stream encoders and decoders.

Generated audio (tones, prompts, music) is made as 16-bit PCM and encoded in the codec a leg
negotiated. Only PCMU, PCMA (8 kHz) and G.722 (16 kHz) are supported: they are what telephones
offer, and they are simple enough to encode here. Any other codec (Opus, G.729, ...) gets an
:class:`UnsupportedCodec` error saying so, so a caller can log one clear line and leave the leg
without generated audio.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from enum import StrEnum
from typing import Final

from .g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from .g722 import G722Decoder, G722Encoder

__all__ = [
    "DEFAULT_PTIME_MS",
    "AudioCodec",
    "FrameDecoder",
    "FrameEncoder",
    "UnsupportedCodec",
    "codec_for",
    "frame_samples",
]

#: The packetisation time used unless a leg's SDP asks for another (RFC 3551's default for these).
DEFAULT_PTIME_MS: Final = 20


class AudioCodec(StrEnum):
    """A codec we can encode, named as in SDP's rtpmap."""

    PCMU = "PCMU"
    PCMA = "PCMA"
    G722 = "G722"

    @property
    def sample_rate(self) -> int:
        """The PCM rate the codec carries (16 kHz for G.722, 8 kHz for G.711)."""
        return 16000 if self is AudioCodec.G722 else 8000

    @property
    def rtp_clock_rate(self) -> int:
        """The RTP timestamp rate: 8000 for all three (G.722's is 8000 by RFC 3551's mistake)."""
        return 8000

    @property
    def static_payload_type(self) -> int:
        """RFC 3551's payload type number (a leg may still use another through rtpmap)."""
        return _STATIC_PT[self]

    def samples_per_frame(self, ptime_ms: int = DEFAULT_PTIME_MS) -> int:
        """PCM samples in one frame of ``ptime_ms``."""
        return frame_samples(self.sample_rate, ptime_ms)

    def timestamp_step(self, ptime_ms: int = DEFAULT_PTIME_MS) -> int:
        """How far the RTP timestamp moves per frame of ``ptime_ms``."""
        return self.rtp_clock_rate * ptime_ms // 1000

    def payload_size(self, ptime_ms: int = DEFAULT_PTIME_MS) -> int:
        """Bytes of payload per frame: one per sample for G.711, one per two for G.722."""
        return 8000 * ptime_ms // 1000


_STATIC_PT: Final = {AudioCodec.PCMU: 0, AudioCodec.PCMA: 8, AudioCodec.G722: 9}
_BY_KEY: Final = {(codec.value.lower(), 8000, 1): codec for codec in AudioCodec}


class UnsupportedCodec(ValueError):
    """No audio can be generated in this codec; the message says which and what would do."""

    def __init__(self, encoding: str, clock_rate: int, channels: int = 1) -> None:
        self.encoding = encoding
        self.clock_rate = clock_rate
        self.channels = channels
        name = f"{encoding}/{clock_rate}" + (f"/{channels}" if channels != 1 else "")
        supported = ", ".join(f"{codec.value}/8000" for codec in AudioCodec)
        super().__init__(f"cannot generate audio in {name}: only {supported} are supported")


def codec_for(encoding: str, clock_rate: int, channels: int = 1) -> AudioCodec:
    """The codec an rtpmap names (``sip_core.sdp.Codec``'s fields), or :class:`UnsupportedCodec`.

    Names compare without case, as SDP says.
    """
    codec = _BY_KEY.get((encoding.lower(), clock_rate, channels))
    if codec is None:
        raise UnsupportedCodec(encoding, clock_rate, channels)
    return codec


def frame_samples(rate: int, ptime_ms: int) -> int:
    """Samples in ``ptime_ms`` at ``rate``; the frame must be a whole number of samples."""
    samples, remainder = divmod(rate * ptime_ms, 1000)
    if ptime_ms <= 0 or remainder:
        raise ValueError(f"a ptime of {ptime_ms} ms is not a whole number of samples at {rate} Hz")
    return samples


class FrameEncoder:
    """Encodes consecutive PCM frames of one RTP stream (G.722 keeps state between frames)."""

    __slots__ = ("_g722", "codec")

    def __init__(self, codec: AudioCodec) -> None:
        self.codec = codec
        self._g722 = G722Encoder() if codec is AudioCodec.G722 else None

    def encode(self, samples: Sequence[int]) -> bytes:
        """The payload for ``samples`` (16-bit PCM at ``codec.sample_rate``)."""
        if self._g722 is not None:
            return self._g722.encode(samples)
        if self.codec is AudioCodec.PCMU:
            return ulaw_encode(samples)
        return alaw_encode(samples)


class FrameDecoder:
    """Decodes consecutive payloads of one RTP stream back to 16-bit PCM."""

    __slots__ = ("_g722", "codec")

    def __init__(self, codec: AudioCodec) -> None:
        self.codec = codec
        self._g722 = G722Decoder() if codec is AudioCodec.G722 else None

    def decode(self, payload: bytes) -> array[int]:
        """PCM at ``codec.sample_rate`` for one payload."""
        if self._g722 is not None:
            return self._g722.decode(payload)
        if self.codec is AudioCodec.PCMU:
            return ulaw_decode(payload)
        return alaw_decode(payload)
