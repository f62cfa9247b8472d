"""Test tones for the call interop tests: write them as WAV files, find them again in recordings.

baresip's ``aufile`` source plays a WAV file as the microphone, and its ``sndfile`` filter writes
what it decodes from the far end into ``dump-...-dec.wav``. Each party plays a different pure
tone, so a recording tells whose audio came through: the strongest spectral line of a short window
must be the far end's frequency, and that line must carry most of the window's energy (a tone mixed
with another party's tone or with noise does not).

G.711 at 8 kHz mono, 16-bit little-endian: the only format ``aufile`` accepts for a PCMU call.
"""

from __future__ import annotations

import math
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

RATE = 8000
AMPLITUDE = 0.25  # of full scale: far from clipping after G.711 companding


def write_tone(path: Path, frequency: float, seconds: float, *, rate: int = RATE) -> Path:
    """A mono 16-bit WAV of one sine tone, ``seconds`` long."""
    if not 20 <= frequency < rate / 2:
        raise ValueError(f"{frequency} Hz cannot be carried at {rate} Hz")
    count = int(seconds * rate)
    phase = 2 * math.pi * frequency * np.arange(count) / rate
    samples = (AMPLITUDE * 32767 * np.sin(phase)).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())
    return path


def read_wav(path: Path) -> tuple[NDArray[np.float64], int]:
    """The samples of a 16-bit WAV (first channel) as floats in [-1, 1], and the sample rate."""
    with wave.open(str(path), "rb") as source:
        if source.getsampwidth() != 2:
            raise ValueError(f"{path}: {8 * source.getsampwidth()}-bit samples, expected 16")
        channels = source.getnchannels()
        rate = source.getframerate()
        raw = np.frombuffer(source.readframes(source.getnframes()), dtype="<i2")
    samples = (raw[::channels] / 32768.0).astype(np.float64)
    return samples, rate


@dataclass(frozen=True, slots=True)
class Window:
    """What one stretch of a recording holds."""

    start: float  # seconds from the beginning of the recording
    dominant: float  # Hz, the strongest spectral line
    share: float  # fraction of the window's energy within +-25 Hz of ``dominant``
    rms: float  # level, 0..1 of full scale

    def is_tone(self, frequency: float, *, tolerance: float = 15.0, min_share: float = 0.8) -> bool:
        """A clean, audible tone at ``frequency``: not silence, not a mix."""
        return (
            abs(self.dominant - frequency) <= tolerance
            and self.share >= min_share
            and self.rms >= 0.01
        )


def windows(samples: NDArray[np.float64], rate: int, *, length: float = 0.2) -> list[Window]:
    """Split the recording into ``length``-second windows and describe each."""
    size = int(length * rate)
    found: list[Window] = []
    taper = np.hanning(size)
    freqs = np.fft.rfftfreq(size, 1 / rate)
    for offset in range(0, len(samples) - size + 1, size):
        chunk = samples[offset : offset + size]
        power = np.abs(np.fft.rfft(chunk * taper)) ** 2
        power[0] = 0.0  # DC
        total = float(power.sum())
        peak = int(power.argmax())
        near = np.abs(freqs - freqs[peak]) <= 25.0
        share = float(power[near].sum()) / total if total > 0 else 0.0
        rms = float(np.sqrt(np.mean(chunk**2)))
        found.append(Window(offset / rate, float(freqs[peak]), share, rms))
    return found


def describe(found: list[Window]) -> str:
    """One line per window, for assertion messages."""
    return "\n".join(
        f"{w.start:7.2f}s {w.dominant:7.1f} Hz share {w.share:.2f} rms {w.rms:.3f}" for w in found
    )


def tone_seconds(found: list[Window], frequency: float, *, length: float = 0.2) -> float:
    """How many seconds of the recording are a clean tone at ``frequency``."""
    return sum(length for w in found if w.is_tone(frequency))


def goertzel_power(samples: NDArray[np.float64], rate: int, frequency: float) -> float:
    """Relative power of one frequency (Goertzel), normalised by the signal's own power.

    A pure tone at ``frequency`` gives about 0.5; another tone or silence gives about 0.
    """
    if len(samples) == 0:
        return 0.0
    coefficient = 2 * math.cos(2 * math.pi * frequency / rate)
    s_prev = s_prev2 = 0.0
    for value in samples:
        s = float(value) + coefficient * s_prev - s_prev2
        s_prev2, s_prev = s_prev, s
    power = s_prev**2 + s_prev2**2 - coefficient * s_prev * s_prev2
    energy = float(np.sum(samples**2))
    return power / (energy * len(samples)) if energy > 0 else 0.0
