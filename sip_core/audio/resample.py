"""Sample-rate conversion for audio loaded once (a user's music file): windowed-sinc, polyphase.

Quality matters more than speed here (it runs once, at load, never per packet), but it is still
pure Python, so the filter is as short as does the job: 8 zero crossings each side of a Blackman-
windowed sinc whose cutoff sits at 90 % of the lower rate's Nyquist frequency. That keeps images
and aliases far below what G.711 can carry (its own noise floor is about -38 dB).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from operator import mul
from typing import Final

__all__ = ["resample"]

_ZERO_CROSSINGS: Final = 8
_CUTOFF: Final = 0.9


def _kernel(offset: float, cutoff: float, half_width: int) -> list[float]:
    """Taps for input samples at ``-half_width + 1 - offset ... half_width - offset``."""
    taps: list[float] = []
    for n in range(-half_width + 1, half_width + 1):
        x = n - offset
        arg = math.pi * cutoff * x
        sinc = cutoff if x == 0 else cutoff * math.sin(arg) / arg
        window_x = (x / half_width + 1) / 2  # 0..1 across the window
        window = 0.0
        if 0 <= window_x <= 1:
            window = (
                0.42
                - 0.5 * math.cos(2 * math.pi * window_x)
                + 0.08 * math.cos(4 * math.pi * window_x)
            )
        taps.append(sinc * window)
    return taps


def resample(samples: Sequence[int], from_rate: int, to_rate: int) -> array[int]:
    """``samples`` (16-bit) at ``to_rate``, band-limited to the lower of the two rates."""
    if from_rate <= 0 or to_rate <= 0:
        raise ValueError("sample rates must be positive")
    if from_rate == to_rate:
        return array("h", samples)
    common = math.gcd(from_rate, to_rate)
    up, down = to_rate // common, from_rate // common
    cutoff = _CUTOFF * min(1.0, to_rate / from_rate)  # as a fraction of the input's Nyquist
    half_width = math.ceil(_ZERO_CROSSINGS / cutoff)
    phases = [_kernel(phase / up, cutoff, half_width) for phase in range(up)]
    padded = [0] * half_width + list(samples) + [0] * half_width
    count = len(samples) * up // down
    out = array("h", bytes(2 * count))
    for k in range(count):
        base, phase = divmod(k * down, up)
        # input position base + phase/up; window covers base - half_width + 1 ... base + half_width
        start = base + 1  # = (base - half_width + 1) + half_width in padded indexes
        value = round(sum(map(mul, phases[phase], padded[start : start + 2 * half_width])))
        out[k] = 32767 if value > 32767 else -32768 if value < -32768 else value
    return out
