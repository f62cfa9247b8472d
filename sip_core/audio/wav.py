"""Reading a user's WAV file (music on hold) into a :class:`Clip` at 8 or 16 kHz, once.

Accepted: uncompressed PCM WAV (``WAVE_FORMAT_PCM`` or its extensible form) with 8, 16, 24 or
32-bit samples, any number of channels (mixed down to mono) and any rate from 4 to 192 kHz
(converted with :func:`~sip_core.audio.resample.resample`), at most :data:`MAX_SECONDS` long.
Everything else gets a :class:`WavError` that says what the file is and what would work, e.g.
``music.wav: compressed or floating-point WAV is not supported; save it as 16-bit PCM``.
"""

from __future__ import annotations

import sys
import wave
from array import array
from os import PathLike
from pathlib import Path
from typing import Final

from .clip import SUPPORTED_RATES, Clip
from .resample import resample

__all__ = ["MAX_SECONDS", "WavError", "load_wav"]

#: Longest file accepted. Music on hold loops, so a minute or two is plenty, and the work is pure
#: Python: converting a minute takes about 10 s per rate, and encoding it in G.722 (for
#: ``AudioLibrary.prepare``) about 5 s more.
MAX_SECONDS: Final = 120
_MIN_RATE: Final = 4000
_MAX_RATE: Final = 192000
_MAX_CHANNELS: Final = 8
#: 2 minutes of 48 kHz stereo 24-bit is 35 MB: anything far beyond is not music on hold.
_MAX_BYTES: Final = 64 * 1024 * 1024


class WavError(ValueError):
    """The file cannot be used as audio; the message names it and says why."""


def load_wav(path: str | PathLike[str], rate: int) -> Clip:
    """The file as mono 16-bit PCM at ``rate`` (8000 or 16000)."""
    if rate not in SUPPORTED_RATES:
        raise ValueError(f"rate must be one of {SUPPORTED_RATES}, not {rate}")
    name = str(path)
    try:
        with wave.open(str(path), "rb") as reader:
            channels = reader.getnchannels()
            width = reader.getsampwidth()
            file_rate = reader.getframerate()
            frames = reader.getnframes()
            if not _MIN_RATE <= file_rate <= _MAX_RATE:
                raise WavError(f"{name}: a sample rate of {file_rate} Hz is not supported")
            if frames > MAX_SECONDS * file_rate:
                raise WavError(
                    f"{name}: {frames / file_rate:.0f} s is too long (at most {MAX_SECONDS} s)"
                )
            if channels > _MAX_CHANNELS:
                raise WavError(f"{name}: {channels} channels is too many (mono or stereo will do)")
            if frames * channels * width > _MAX_BYTES:
                raise WavError(f"{name}: the audio data is too large (at most 64 MiB)")
            data = reader.readframes(frames)
    except FileNotFoundError:
        raise WavError(f"{name}: file not found") from None
    except IsADirectoryError:
        raise WavError(f"{name}: is a directory, not a file") from None
    except wave.Error as err:
        raise WavError(f"{name}: {_explain(str(err))}") from None
    except EOFError:
        raise WavError(f"{name}: the file ends too early (truncated WAV header)") from None
    except OSError as err:
        raise WavError(f"{name}: cannot read: {err.strerror or err}") from None
    if channels < 1 or width not in (1, 2, 3, 4):
        raise WavError(f"{name}: {width * 8}-bit samples are not supported")
    mono = _to_mono(_to_int16(data, width), channels)
    if not mono:
        raise WavError(f"{name}: the file holds no audio")
    return Clip(Path(name).name, rate, resample(mono, file_rate, rate))


def _explain(message: str) -> str:
    if message.startswith("unknown format"):
        return "compressed or floating-point WAV is not supported; save it as 16-bit PCM"
    if "RIFF" in message or "WAVE" in message:
        return "not a WAV file"
    if "chunk" in message and "missing" in message:
        return "an incomplete WAV file (its format or data chunk is missing)"
    return f"not a usable WAV file ({message})"


def _to_int16(data: bytes, width: int) -> array[int]:
    """Little-endian PCM of ``width`` bytes per sample as 16-bit values (keeping the top bits)."""
    if width == 1:  # 8-bit WAV is unsigned
        return array("h", [(byte - 128) << 8 for byte in data])
    if width == 2:
        samples = array("h")
        samples.frombytes(data[: len(data) // 2 * 2])
        if sys.byteorder == "big":
            samples.byteswap()
        return samples
    usable = len(data) // width * width
    return array(
        "h",
        [
            int.from_bytes(data[i + width - 2 : i + width], "little", signed=True)
            for i in range(0, usable, width)
        ],
    )


def _to_mono(samples: array[int], channels: int) -> array[int]:
    if channels == 1:
        return samples
    count = len(samples) // channels
    return array(
        "h",
        [sum(samples[i * channels : (i + 1) * channels]) // channels for i in range(count)],
    )
