"""Sources of generated audio: consecutive frames of 16-bit PCM, one per packetisation time.

A :class:`Source` is pulled by whoever paces the stream (the media engine, every ptime, from its
own clock): ``read()`` gives the next frame, exactly ``frame_size`` samples at ``rate``, or None
once a finite source is finished. ``done`` says the same without reading: it becomes true with the
read that returned the last samples (a short last frame is padded with silence), so the engine
can switch the leg back to the other party's audio for the very next frame, without a gap.

Sources are pure: no clock, no sockets, no threads. They are cheap to make (tone periods are
rendered once per rate and shared) and belong to one stream each.

- silence, :class:`SilenceSource`: ends after ``duration_ms``, or never;
- a tone pattern, :class:`ToneSource`: ends once played, or never for repeating patterns;
- a prompt, :class:`ClipSource`: ends at its end;
- a playlist of prompts, :class:`PlaylistSource`: prompts follow each other sample by sample,
  ends after the last;
- music on hold, :class:`LoopSource`: loops, never ends.
"""

from __future__ import annotations

import functools
from array import array
from collections.abc import Sequence
from typing import Protocol

from .clip import SUPPORTED_RATES, Clip
from .codecs import DEFAULT_PTIME_MS, AudioCodec, FrameEncoder, frame_samples
from .tones import Tone, TonePattern

__all__ = [
    "ClipSource",
    "EncodedStream",
    "LoopSource",
    "PlaylistSource",
    "PrecodedStream",
    "SilenceSource",
    "Source",
    "ToneSource",
    "precode",
]


class Source(Protocol):
    """Consecutive PCM frames of ``frame_size`` samples at ``rate`` Hz."""

    @property
    def rate(self) -> int: ...

    @property
    def frame_size(self) -> int: ...

    @property
    def done(self) -> bool: ...

    def read(self) -> array[int] | None: ...


class _ChunkSource:
    """Plays chunks of samples one after another (then again from the first, if ``loop``).

    The common engine of every source here: a cursor over a list of shared sample arrays.
    """

    __slots__ = ("_chunk", "_chunks", "_loop", "_offset", "frame_size", "rate")

    def __init__(
        self, chunks: Sequence[array[int]], rate: int, ptime_ms: int, *, loop: bool
    ) -> None:
        if rate not in SUPPORTED_RATES:
            raise ValueError(f"rate {rate} Hz is not one of {SUPPORTED_RATES}")
        self.rate = rate
        self.frame_size = frame_samples(rate, ptime_ms)
        self._chunks = [chunk for chunk in chunks if len(chunk)]
        if loop and not self._chunks:
            raise ValueError("a looping source needs some audio")
        self._loop = loop
        self._chunk = 0
        self._offset = 0

    @property
    def done(self) -> bool:
        return self._chunk >= len(self._chunks)

    def read(self) -> array[int] | None:
        if self.done:
            return None
        frame = array("h")
        wanted = self.frame_size
        chunks = self._chunks
        while wanted:
            chunk = chunks[self._chunk]
            piece = chunk[self._offset : self._offset + wanted]
            frame.extend(piece)
            wanted -= len(piece)
            self._offset += len(piece)
            if self._offset >= len(chunk):
                self._offset = 0
                self._chunk += 1
                if self._chunk >= len(chunks):
                    if not self._loop:
                        break
                    self._chunk = 0
        if wanted:
            frame.extend(array("h", bytes(2 * wanted)))
        return frame


class SilenceSource(_ChunkSource):
    """Digital silence, for ``duration_ms`` (rounded up to whole frames) or, if None, forever."""

    __slots__ = ()

    def __init__(
        self, rate: int, ptime_ms: int = DEFAULT_PTIME_MS, duration_ms: int | None = None
    ) -> None:
        if duration_ms is None:
            chunk = array("h", bytes(2 * frame_samples(rate, ptime_ms)))
            super().__init__([chunk], rate, ptime_ms, loop=True)
        else:
            chunk = array("h", bytes(2 * (rate * duration_ms // 1000)))
            super().__init__([chunk], rate, ptime_ms, loop=False)


@functools.cache
def _rendered(pattern: TonePattern, rate: int) -> array[int]:
    return array("h", pattern.render(rate))


class ToneSource(_ChunkSource):
    """A tone pattern (a :class:`Tone` name or a :class:`TonePattern`), at ``rate``."""

    __slots__ = ("pattern",)

    def __init__(
        self, tone: Tone | TonePattern, rate: int, ptime_ms: int = DEFAULT_PTIME_MS
    ) -> None:
        self.pattern = tone.pattern if isinstance(tone, Tone) else tone
        super().__init__([_rendered(self.pattern, rate)], rate, ptime_ms, loop=self.pattern.repeat)


def _checked(clips: Sequence[Clip], rate: int) -> list[array[int]]:
    for clip in clips:
        if clip.rate != rate:
            raise ValueError(f"clip {clip.name!r} is at {clip.rate} Hz, not {rate} Hz")
    return [clip.samples for clip in clips]


class ClipSource(_ChunkSource):
    """One prompt, played once."""

    __slots__ = ("clip",)

    def __init__(self, clip: Clip, ptime_ms: int = DEFAULT_PTIME_MS) -> None:
        self.clip = clip
        super().__init__(_checked([clip], clip.rate), clip.rate, ptime_ms, loop=False)


class PlaylistSource(_ChunkSource):
    """Prompts played one after the other with nothing added between them, then done.

    Prompts carry their own short lead-in and tail of silence, which is the pause a listener
    hears between words; frames are cut across prompt boundaries, so no padding creeps in.
    """

    __slots__ = ("clips",)

    def __init__(self, clips: Sequence[Clip], ptime_ms: int = DEFAULT_PTIME_MS) -> None:
        if not clips:
            raise ValueError("a playlist needs at least one prompt")
        self.clips = tuple(clips)
        rate = clips[0].rate
        super().__init__(_checked(clips, rate), rate, ptime_ms, loop=False)


class LoopSource(_ChunkSource):
    """A clip played over and over (music on hold); never done."""

    __slots__ = ("clip",)

    def __init__(self, clip: Clip, ptime_ms: int = DEFAULT_PTIME_MS) -> None:
        if not len(clip.samples):
            raise ValueError(f"clip {clip.name!r} is empty and cannot loop")
        self.clip = clip
        super().__init__([clip.samples], clip.rate, ptime_ms, loop=True)


class EncodedStream:
    """A source's frames as payloads of one codec: what the engine puts in each RTP packet.

    Encodes as it goes (one encoder state for the whole stream). G.711 costs little per frame;
    pure-Python G.722 over a millisecond per 20 ms frame (see ``bench/codecs``), so for assets
    played often use :func:`precode` once and a :class:`PrecodedStream` per playback.
    """

    __slots__ = ("_encoder", "_source", "codec")

    def __init__(self, source: Source, codec: AudioCodec) -> None:
        if source.rate != codec.sample_rate:
            raise ValueError(
                f"{codec.value} needs audio at {codec.sample_rate} Hz, the source is {source.rate}"
            )
        self.codec = codec
        self._source = source
        self._encoder = FrameEncoder(codec)

    @property
    def done(self) -> bool:
        return self._source.done

    def next_payload(self) -> bytes | None:
        """The next frame's payload, or None once the source is finished."""
        frame = self._source.read()
        return None if frame is None else self._encoder.encode(frame)


def precode(source: Source, codec: AudioCodec, *, max_frames: int = 30_000) -> tuple[bytes, ...]:
    """Every payload of a finite source (or one period's worth: pass a finite one), encoded once.

    ``max_frames`` (10 minutes at 20 ms) guards against an endless source passed by mistake.
    """
    stream = EncodedStream(source, codec)
    payloads: list[bytes] = []
    while (payload := stream.next_payload()) is not None:
        payloads.append(payload)
        if len(payloads) > max_frames:
            raise ValueError(f"the source gave more than {max_frames} frames: is it endless?")
    return tuple(payloads)


class PrecodedStream:
    """Payloads made by :func:`precode`, played once or looped; shares the tuple, copies nothing.

    Each payload was encoded in sequence from a fresh encoder, so within the asset the G.722
    predictor is continuous; at the start (and at a loop's seam) the phone's decoder adapts within
    a few milliseconds, and assets start and end quietly so nothing is heard.
    """

    __slots__ = ("_index", "_loop", "_payloads")

    def __init__(self, payloads: Sequence[bytes], *, loop: bool = False) -> None:
        if loop and not payloads:
            raise ValueError("a looping stream needs some payloads")
        self._payloads = payloads
        self._loop = loop
        self._index = 0

    @property
    def done(self) -> bool:
        return self._index >= len(self._payloads)

    def next_payload(self) -> bytes | None:
        """The next payload, or None once a non-looping stream is finished."""
        if self.done:
            return None
        payload = self._payloads[self._index]
        self._index += 1
        if self._loop and self._index >= len(self._payloads):
            self._index = 0
        return payload
