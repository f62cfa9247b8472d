"""G.711 µ-law (PCMU) and A-law (PCMA): 8-bit logarithmic companding of 16-bit linear PCM.

Why our own: Python 3.13 removed ``audioop``, and the codec is small enough to get right from the
recommendation. Both laws map a sample to a sign, a 3-bit segment (a power-of-two range) and a
4-bit position inside it; the tables are built once at import from those rules, so encoding a
frame is one table look-up per sample.

- µ-law works on 14-bit magnitudes: the value plus a bias of 33 (132 in 16-bit units) puts segment
  boundaries on powers of two; the code is transmitted inverted (silence is 0xFF).
- A-law works on 13-bit magnitudes: segment 0 is linear with the same step as segment 1; the
  even bits of the code are inverted (XOR 0x55) and the sign bit is 1 for positive values (silence
  is 0xD5).

Decoding gives the middle of the code's interval, so encode(decode(code)) == code for every code
(but µ-law's "negative zero" 0x7F, which decodes to 0 and comes back as 0xFF).
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from typing import Final

__all__ = [
    "ALAW_SILENCE",
    "ULAW_SILENCE",
    "alaw_decode",
    "alaw_encode",
    "ulaw_decode",
    "ulaw_encode",
]

ULAW_SILENCE: Final = 0xFF
ALAW_SILENCE: Final = 0xD5

_ULAW_BIAS: Final = 0x84  # 33 in 14-bit units, shifted to 16 bits
_ULAW_CLIP: Final = 32635  # largest magnitude that still fits once the bias is added


def _ulaw_code(sample: int) -> int:
    sign = 0x80 if sample < 0 else 0
    magnitude = min(-sample if sample < 0 else sample, _ULAW_CLIP) + _ULAW_BIAS
    segment = max(magnitude.bit_length() - 8, 0)  # biased magnitude is at least 2**7
    mantissa = (magnitude >> (segment + 3)) & 0x0F
    return ~(sign | (segment << 4) | mantissa) & 0xFF


def _ulaw_value(code: int) -> int:
    code = ~code & 0xFF
    segment = (code >> 4) & 0x07
    magnitude = ((((code & 0x0F) << 3) + _ULAW_BIAS) << segment) - _ULAW_BIAS
    return -magnitude if code & 0x80 else magnitude


def _alaw_code(sample: int) -> int:
    # 13-bit domain: the 16-bit sample's top 13 bits; negative values mirror -(x + 1).
    if sample >= 0:
        sign, magnitude = 0x80, sample >> 3
    else:
        sign, magnitude = 0x00, (-sample - 1) >> 3
    if magnitude < 32:
        code = magnitude >> 1  # segment 0: step 2 (in 13-bit units), like segment 1
    else:
        segment = magnitude.bit_length() - 5  # 1 for 32..63, ..., 7 for 2048..4095
        code = (segment << 4) | ((magnitude >> segment) & 0x0F)
    return (sign | code) ^ 0x55


def _alaw_value(code: int) -> int:
    code ^= 0x55
    segment = (code >> 4) & 0x07
    mantissa = code & 0x0F
    # Segment 0 is linear (step 2, like segment 1); the others double their step each time.
    magnitude = (mantissa << 1) + 1 if segment == 0 else ((mantissa << 1) + 33) << (segment - 1)
    magnitude <<= 3  # back to 16-bit units
    return magnitude if code & 0x80 else -magnitude


# µ-law ignores the two lowest bits of a 16-bit sample and A-law the three lowest; the encode
# tables are indexed by the sample shifted right by 2 (µ-law) or 3 (A-law), as unsigned indexes.
_ULAW_ENCODE: Final = bytes(_ulaw_code(((i ^ 0x2000) - 0x2000) << 2) for i in range(1 << 14))
_ALAW_ENCODE: Final = bytes(_alaw_code(((i ^ 0x1000) - 0x1000) << 3) for i in range(1 << 13))
_ULAW_DECODE: Final = array("h", (_ulaw_value(code) for code in range(256)))
_ALAW_DECODE: Final = array("h", (_alaw_value(code) for code in range(256)))


def ulaw_encode(samples: Sequence[int]) -> bytes:
    """µ-law codes for 16-bit samples (values outside -32768..32767 are not allowed)."""
    table = _ULAW_ENCODE
    return bytes([table[(sample >> 2) & 0x3FFF] for sample in samples])


def ulaw_decode(data: bytes) -> array[int]:
    """16-bit samples for µ-law codes."""
    table = _ULAW_DECODE
    return array("h", [table[code] for code in data])


def alaw_encode(samples: Sequence[int]) -> bytes:
    """A-law codes for 16-bit samples (values outside -32768..32767 are not allowed)."""
    table = _ALAW_ENCODE
    return bytes([table[(sample >> 3) & 0x1FFF] for sample in samples])


def alaw_decode(data: bytes) -> array[int]:
    """16-bit samples for A-law codes."""
    table = _ALAW_DECODE
    return array("h", [table[code] for code in data])
