"""What to play, as plain values, and the library that turns them into payload streams.

The media engine runs in its own process: the SIP side says *what* a leg should hear with a small
picklable value (:data:`Playback`), and the engine's :class:`AudioLibrary` makes the stream of RTP
payloads in the leg's codec. The library loads prompts and music once and, for G.722 (whose
pure-Python encoder costs over a millisecond per frame), encodes each asset once per packetisation
time and replays the stored payloads (see :meth:`AudioLibrary.prepare` to do that ahead of the
first playback); G.711 is cheap enough to encode frame by frame.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from os import PathLike
from typing import Protocol

from .assets import PROMPT_TEXTS, bundled_music, prompt
from .clip import Clip
from .codecs import DEFAULT_PTIME_MS, AudioCodec
from .sources import (
    EncodedStream,
    LoopSource,
    PlaylistSource,
    PrecodedStream,
    SilenceSource,
    Source,
    ToneSource,
    precode,
)
from .tones import Tone, TonePattern
from .wav import WavError, load_wav

__all__ = [
    "AudioLibrary",
    "PayloadStream",
    "PlayFile",
    "PlayMusic",
    "PlayPrompts",
    "PlaySequence",
    "PlaySilence",
    "PlayTone",
    "Playback",
]


@dataclass(frozen=True, slots=True)
class PlaySilence:
    """Silence for ``duration_ms``, or until replaced if None."""

    duration_ms: int | None = None

    def __post_init__(self) -> None:
        if self.duration_ms is not None and self.duration_ms <= 0:
            raise ValueError(f"a silence lasts a positive time, not {self.duration_ms} ms")


@dataclass(frozen=True, slots=True)
class PlayTone:
    """A tone pattern; repeating ones play until replaced."""

    tone: Tone


@dataclass(frozen=True, slots=True)
class PlayPrompts:
    """Bundled prompts by name, in order (one name is a single prompt).

    Checked when made, on the side that asks for the playback: an unknown name is a ValueError
    there, not a failure in the engine's process.
    """

    names: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(self.names))
        if not self.names:
            raise ValueError("a prompt playlist needs at least one prompt")
        unknown = [name for name in self.names if name not in PROMPT_TEXTS]
        if unknown:
            raise ValueError(
                f"no prompt {', '.join(map(repr, unknown))}; known: {', '.join(PROMPT_TEXTS)}"
            )


@dataclass(frozen=True, slots=True)
class PlayMusic:
    """Music on hold (the user's file if the library has one, else the bundled loop); endless."""


@dataclass(frozen=True, slots=True)
class PlayFile:
    """A WAV file played once (an announcement: text to speech, a recording).

    The engine reads and converts it off its packet loop (:meth:`AudioLibrary.prepare`), so the
    file must stay readable until the playback has started; a file that cannot be played ends
    the playback with the :class:`~.wav.WavError` text.
    """

    path: str

    def __post_init__(self) -> None:
        if not self.path:
            raise ValueError("a file playback needs the path of a WAV file")


@dataclass(frozen=True, slots=True)
class PlaySequence:
    """Bundled prompts (by name) and short WAV files, in order, played once: a menu that speaks
    some of its lines with recorded audio ("press 1 for" + a device's label as text to speech).

    The files are read and converted off the engine's packet loop on first use and kept
    (:data:`PART_CACHE_SIZE` of them), so a menu that plays again starts at once; a file longer
    than :data:`MAX_PART_SECONDS`, or one that cannot be read, ends the playback with the
    reason (the caller may then play the bundled prompts instead).
    """

    parts: tuple[str | PlayFile, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "parts", tuple(self.parts))
        if not self.parts:
            raise ValueError("a sequence needs at least one part")
        for part in self.parts:
            if isinstance(part, str) and part not in PROMPT_TEXTS:
                raise ValueError(f"no prompt {part!r}; known: {', '.join(PROMPT_TEXTS)}")
            if not isinstance(part, (str, PlayFile)):
                raise ValueError(f"a sequence part is a prompt name or a PlayFile, not {part!r}")

    @property
    def files(self) -> tuple[PlayFile, ...]:
        """The file parts."""
        return tuple(part for part in self.parts if isinstance(part, PlayFile))


type Playback = PlaySilence | PlayTone | PlayPrompts | PlayMusic | PlayFile | PlaySequence

#: Announcement files kept converted (per rate, codec and ptime): a few, since each is played
#: once or to both sides of a call at about the same time, and a minute of G.722 is 480 kB.
FILE_CACHE_SIZE = 4
#: Files of sequences (spoken labels) kept converted: one per device label and codec, short.
PART_CACHE_SIZE = 64
#: The longest file a sequence plays: a spoken label is a second or two.
MAX_PART_SECONDS = 15


class PayloadStream(Protocol):
    """RTP payloads, one per ptime; None (and ``done``) once a finite playback has ended."""

    @property
    def done(self) -> bool: ...

    def next_payload(self) -> bytes | None: ...


class AudioLibrary:
    """Prompts, music and tones for one process, with their G.722 payloads cached.

    ``music_file``: a user's WAV file for music on hold, converted once per rate on first use
    (call :meth:`check` at start-up to surface a bad file as a :class:`~.wav.WavError` early).
    """

    def __init__(self, music_file: str | PathLike[str] | None = None) -> None:
        self.music_file = music_file
        self._music: dict[int, Clip] = {}
        self._precoded: dict[tuple[object, AudioCodec, int], tuple[bytes, ...]] = {}
        self._files: OrderedDict[tuple[object, ...], Clip | tuple[bytes, ...]] = OrderedDict()
        self._parts: OrderedDict[tuple[object, ...], Clip | tuple[bytes, ...]] = OrderedDict()

    def check(self) -> None:
        """Load everything that can fail (the music file) now, at both rates."""
        for rate in (8000, 16000):
            self.music(rate)

    def prepare(self, play: Playback, codec: AudioCodec, ptime_ms: int = DEFAULT_PTIME_MS) -> None:
        """Do now the encoding a first :meth:`stream` of ``play`` would do (G.722 only).

        Pure-Python G.722 takes over a millisecond per frame, so the first playback of an asset
        (the music loop: 400 frames, about half a second) would stall whoever calls
        :meth:`stream`. An engine
        calls this at start-up, or off its packet loop, for what it expects to play; afterwards
        :meth:`stream` only looks the payloads up.
        """
        if isinstance(play, PlayFile):
            self._file(play, codec, ptime_ms)
        elif isinstance(play, PlaySequence):
            for part in play.files:
                self._part(part, codec, ptime_ms)
            if codec is AudioCodec.G722:
                self.stream(play, codec, ptime_ms)
        elif codec is AudioCodec.G722:
            self.stream(play, codec, ptime_ms)

    def ready(self, play: Playback, codec: AudioCodec, ptime_ms: int = DEFAULT_PTIME_MS) -> bool:
        """Whether :meth:`stream` of a file or a sequence would find it converted (no reading,
        no encoding: a sequence's files, and for G.722 its prompts' payloads)."""
        if isinstance(play, PlaySequence):
            if codec is AudioCodec.G722 and not all(
                (("prompt", part), codec, ptime_ms) in self._precoded
                for part in play.parts
                if isinstance(part, str)
            ):
                return False
            return all(_file_key(part, codec, ptime_ms) in self._parts for part in play.files)
        if not isinstance(play, PlayFile):
            return True
        return _file_key(play, codec, ptime_ms) in self._files

    def music(self, rate: int) -> Clip:
        """The music-on-hold clip at ``rate``."""
        clip = self._music.get(rate)
        if clip is None:
            clip = load_wav(self.music_file, rate) if self.music_file else bundled_music(rate)
            self._music[rate] = clip
        return clip

    def source(self, play: Playback, rate: int, ptime_ms: int = DEFAULT_PTIME_MS) -> Source:
        """The PCM source for ``play`` at ``rate``."""
        match play:
            case PlaySilence(duration_ms):
                return SilenceSource(rate, ptime_ms, duration_ms)
            case PlayTone(tone):
                return ToneSource(tone, rate, ptime_ms)
            case PlayPrompts(names):
                return PlaylistSource([prompt(name, rate) for name in names], ptime_ms)
            case PlayMusic():
                return LoopSource(self.music(rate), ptime_ms)
            case PlayFile(path):
                return _once(load_wav(path, rate), ptime_ms)
            case PlaySequence(parts):
                return PlaylistSource(
                    [
                        prompt(part, rate) if isinstance(part, str) else _short(part, rate)
                        for part in parts
                    ],
                    ptime_ms,
                )

    def stream(
        self, play: Playback, codec: AudioCodec, ptime_ms: int = DEFAULT_PTIME_MS
    ) -> PayloadStream:
        """Payloads of ``play`` in ``codec``, one per ``ptime_ms``."""
        rate = codec.sample_rate
        if isinstance(play, PlayFile):
            converted = self._file(play, codec, ptime_ms)
            if isinstance(converted, Clip):
                return EncodedStream(_once(converted, ptime_ms), codec)
            return PrecodedStream(converted)
        if isinstance(play, PlaySequence):
            return self._sequence(play, codec, ptime_ms)
        if codec is not AudioCodec.G722:
            return EncodedStream(self.source(play, rate, ptime_ms), codec)
        match play:
            case PlaySilence(duration_ms):
                frame = self._silent_frame(codec, ptime_ms)
                if duration_ms is None:
                    return PrecodedStream(frame, loop=True)
                return PrecodedStream(frame * -(-duration_ms // ptime_ms))
            case PlayTone(tone):
                pattern = tone.pattern
                once = TonePattern(pattern.name, pattern.segments, repeat=False)
                tone_payloads = self._cached(
                    ("tone", tone), codec, ptime_ms, ToneSource(once, rate, ptime_ms)
                )
                return PrecodedStream(tone_payloads, loop=pattern.repeat)
            case PlayPrompts(names):
                payloads: list[bytes] = []
                for name in names:
                    clip = prompt(name, rate)
                    payloads.extend(
                        self._cached(("prompt", name), codec, ptime_ms, _once(clip, ptime_ms))
                    )
                return PrecodedStream(payloads)
            case PlayMusic():
                clip = self.music(rate)
                music_payloads = self._cached(
                    ("music", self.music_file), codec, ptime_ms, _once(clip, ptime_ms)
                )
                return PrecodedStream(music_payloads, loop=True)

    def _file(self, play: PlayFile, codec: AudioCodec, ptime_ms: int) -> Clip | tuple[bytes, ...]:
        """A file converted for ``codec``: its clip (G.711 encodes live), or its G.722 payloads;
        the newest :data:`FILE_CACHE_SIZE` are kept."""
        key = _file_key(play, codec, ptime_ms)
        found = self._files.get(key)
        if found is None:
            clip = load_wav(play.path, codec.sample_rate)
            found = precode(_once(clip, ptime_ms), codec) if codec is AudioCodec.G722 else clip
            self._files[key] = found
            while len(self._files) > FILE_CACHE_SIZE:
                self._files.popitem(last=False)
        else:
            self._files.move_to_end(key)
        return found

    def _sequence(self, play: PlaySequence, codec: AudioCodec, ptime_ms: int) -> PayloadStream:
        rate = codec.sample_rate
        if codec is not AudioCodec.G722:
            clips: list[Clip] = []
            for part in play.parts:
                if isinstance(part, str):
                    clips.append(prompt(part, rate))
                else:
                    found = self._part(part, codec, ptime_ms)
                    assert isinstance(found, Clip)  # G.711: kept as PCM
                    clips.append(found)
            return EncodedStream(PlaylistSource(clips, ptime_ms), codec)
        payloads: list[bytes] = []
        for part in play.parts:
            if isinstance(part, str):
                clip = prompt(part, rate)
                payloads.extend(
                    self._cached(("prompt", part), codec, ptime_ms, _once(clip, ptime_ms))
                )
            else:
                encoded = self._part(part, codec, ptime_ms)
                assert not isinstance(encoded, Clip)  # G.722: kept encoded
                payloads.extend(encoded)
        return PrecodedStream(payloads)

    def _part(self, play: PlayFile, codec: AudioCodec, ptime_ms: int) -> Clip | tuple[bytes, ...]:
        """A sequence's file converted for ``codec`` (as `_file`), kept among the newest
        :data:`PART_CACHE_SIZE`; longer than :data:`MAX_PART_SECONDS` is a WavError."""
        key = _file_key(play, codec, ptime_ms)
        found = self._parts.get(key)
        if found is None:
            clip = _short(play, codec.sample_rate)
            found = precode(_once(clip, ptime_ms), codec) if codec is AudioCodec.G722 else clip
            self._parts[key] = found
            while len(self._parts) > PART_CACHE_SIZE:
                self._parts.popitem(last=False)
        else:
            self._parts.move_to_end(key)
        return found

    def _silent_frame(self, codec: AudioCodec, ptime_ms: int) -> tuple[bytes, ...]:
        # A frame of the encoder's steady state for silence (after it has settled).
        frames = self._cached(
            ("silence-steady",),
            codec,
            ptime_ms,
            SilenceSource(codec.sample_rate, ptime_ms, 5 * ptime_ms),
        )
        return frames[-1:]

    def _cached(
        self, key: tuple[object, ...], codec: AudioCodec, ptime_ms: int, source: Source
    ) -> tuple[bytes, ...]:
        full = (key, codec, ptime_ms)
        payloads = self._precoded.get(full)
        if payloads is None:
            payloads = self._precoded[full] = precode(source, codec)
        return payloads


def _file_key(play: PlayFile, codec: AudioCodec, ptime_ms: int) -> tuple[object, ...]:
    # The file as it is now (a path written again is another file); G.711 keeps the clip at
    # 8 kHz whatever the law, G.722 keeps payloads per ptime.
    try:
        status = os.stat(play.path)
        stamp: tuple[int, int] | None = (status.st_mtime_ns, status.st_size)
    except OSError:
        stamp = None  # not cached under this key: reading it says what is wrong
    if codec is AudioCodec.G722:
        return (play.path, stamp, codec, ptime_ms)
    return (play.path, stamp, codec.sample_rate)


def _short(play: PlayFile, rate: int) -> Clip:
    clip = load_wav(play.path, rate)
    if clip.duration > MAX_PART_SECONDS:
        raise WavError(
            f"{clip.name}: {clip.duration:.0f} s is too long for a sequence part "
            f"(at most {MAX_PART_SECONDS} s)"
        )
    return clip


def _once(clip: Clip, ptime_ms: int) -> Source:
    return PlaylistSource([clip], ptime_ms)
