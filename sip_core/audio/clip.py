"""A piece of recorded audio (a prompt, a music loop) as 16-bit mono PCM at one rate."""

from __future__ import annotations

from array import array
from dataclasses import dataclass

__all__ = ["SUPPORTED_RATES", "Clip"]

#: The PCM rates sources produce: 8 kHz for G.711 legs, 16 kHz for G.722 legs.
SUPPORTED_RATES = (8000, 16000)


@dataclass(frozen=True, slots=True, eq=False)
class Clip:
    """``samples`` (16-bit mono PCM) at ``rate`` Hz, named for logs and errors.

    Clips are shared between every leg that plays them: nobody may change ``samples``.
    """

    name: str
    rate: int
    samples: array[int]

    def __post_init__(self) -> None:
        if self.rate not in SUPPORTED_RATES:
            raise ValueError(f"clip {self.name!r}: rate {self.rate} Hz is not 8000 or 16000")
        if self.samples.typecode != "h":
            raise ValueError(f"clip {self.name!r}: samples must be an array of 16-bit ints")

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return len(self.samples) / self.rate
