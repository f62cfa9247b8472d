"""Mixing two PCM frames: for a leg that hears generated audio *besides* the other party.

A beep over a conversation, say: the engine decodes the other party's payload, mixes the tone in,
and encodes the sum for the leg. Samples add with saturation (no wrap-around into a loud click);
the generated side can be attenuated first (``gain``), so that a tone sits under the voice.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence

__all__ = ["mix"]


def mix(voice: Sequence[int], added: Sequence[int], gain: float = 1.0) -> array[int]:
    """``voice + gain * added``, sample by sample, saturated to 16 bits; equal lengths only."""
    if len(voice) != len(added):
        raise ValueError(f"cannot mix {len(voice)} samples with {len(added)}")
    if not 0.0 <= gain <= 1.0:
        raise ValueError(f"gain must be between 0 and 1, not {gain}")
    if gain == 1.0:
        summed = [a + b for a, b in zip(voice, added, strict=True)]
    else:
        summed = [a + round(b * gain) for a, b in zip(voice, added, strict=True)]
    return array("h", [32767 if x > 32767 else -32768 if x < -32768 else x for x in summed])
