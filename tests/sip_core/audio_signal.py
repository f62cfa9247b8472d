"""Measuring decoded audio in tests without numpy: tone frequency, power at a frequency, SNR.

The frequency of a tone is counted from zero crossings (interpolated between samples), and its
purity is the share of the signal's power that a Goertzel filter finds at that frequency; together
they say "this is a clean tone of f Hz" without an FFT.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def rms(samples: Sequence[int | float]) -> float:
    """Root mean square (0 for no samples)."""
    return math.sqrt(sum(x * x for x in samples) / len(samples)) if samples else 0.0


def zero_crossing_frequency(samples: Sequence[int | float], rate: int) -> float:
    """The frequency of a single tone, from the times of its upward zero crossings."""
    crossings: list[float] = []
    for n in range(1, len(samples)):
        a, b = samples[n - 1], samples[n]
        if a < 0 <= b:
            crossings.append(n - 1 + (-a) / (b - a))
    if len(crossings) < 2:
        return 0.0
    return rate * (len(crossings) - 1) / (crossings[-1] - crossings[0])


def goertzel_share(samples: Sequence[int | float], rate: int, frequency: float) -> float:
    """The share (0..1) of the samples' power that lies at ``frequency`` (Hann-windowed)."""
    count = len(samples)
    window = [0.5 - 0.5 * math.cos(2 * math.pi * n / (count - 1)) for n in range(count)]
    coefficient = 2 * math.cos(2 * math.pi * frequency / rate)
    s1 = s2 = 0.0
    for n, x in enumerate(samples):
        s1, s2 = x * window[n] + coefficient * s1 - s2, s1
    power_at = s1 * s1 + s2 * s2 - coefficient * s1 * s2
    # A windowed sine of amplitude A gives power_at = (A * sum(window) / 2) ** 2; its mean power
    # is A**2 / 2. Normalise so that a pure tone scores 1.
    total = sum((x * w) ** 2 for x, w in zip(samples, window, strict=True))
    if total == 0:
        return 0.0
    scale = sum(w * w for w in window) * 2 / (sum(window) ** 2)
    return power_at * scale / total


def snr_db(reference: Sequence[int], decoded: Sequence[int], max_delay: int = 40) -> float:
    """Signal-to-noise ratio of ``decoded`` against ``reference`` at the best codec delay."""
    start, end = max_delay, len(reference) - max_delay
    signal = sum(reference[n] ** 2 for n in range(start, end))
    best = 0.0
    for delay in range(max_delay):
        noise = sum((reference[n] - decoded[n + delay]) ** 2 for n in range(start, end))
        best = max(best, 10 * math.log10(signal / max(noise, 1)))
    return best


def sine(frequency: float, amplitude: float, rate: int, count: int) -> list[int]:
    """A sine as 16-bit samples."""
    return [round(amplitude * math.sin(2 * math.pi * frequency * n / rate)) for n in range(count)]
