"""Audio the PBX puts into calls: codecs, tone/prompt/music sources, and digit collection.

Pure modules (no sockets, no threads, no clock reads): the media engine paces and sends, these
only make the bytes. The public API, stable for the engine:

- codecs: :class:`AudioCodec` (PCMU, PCMA, G722), :func:`codec_for` (an SDP rtpmap's name and
  clock rate to a codec, or :class:`UnsupportedCodec` for anything else such as Opus),
  :class:`FrameEncoder` / :class:`FrameDecoder` per RTP stream;
- sources of 16-bit PCM frames (:class:`Source`): silence, tones (:class:`Tone`), one prompt, a
  playlist, music on hold looping; :class:`EncodedStream` / :func:`precode` /
  :class:`PrecodedStream` turn them into payloads;
- what to play as picklable values (:data:`Playback`: :class:`PlaySilence`, :class:`PlayTone`,
  :class:`PlayPrompts`, :class:`PlayMusic`, :class:`PlayFile`,
  :class:`PlaySequence`) and :class:`AudioLibrary`, which
  makes the payload stream for a leg's codec with G.722 assets encoded once and cached;
- bundled prompts (:data:`PROMPT_NAMES`, :func:`prompt`) and music (:func:`bundled_music`), and
  :func:`load_wav` for a user's music file;
- :func:`mix` for generated audio heard besides the other party (a beep over the call);
- :class:`DigitCollector`: up to N digits with timeouts, a terminator and barge-in.
"""

from .assets import PROMPT_NAMES, PROMPT_TEXTS, bundled_music, prompt
from .clip import SUPPORTED_RATES, Clip
from .codecs import (
    DEFAULT_PTIME_MS,
    AudioCodec,
    FrameDecoder,
    FrameEncoder,
    UnsupportedCodec,
    codec_for,
    frame_samples,
)
from .collector import CollectEnd, CollectResult, CollectSettings, DigitCollector
from .mix import mix
from .playback import (
    AudioLibrary,
    PayloadStream,
    Playback,
    PlayFile,
    PlayMusic,
    PlayPrompts,
    PlaySequence,
    PlaySilence,
    PlayTone,
)
from .sources import (
    ClipSource,
    EncodedStream,
    LoopSource,
    PlaylistSource,
    PrecodedStream,
    SilenceSource,
    Source,
    ToneSource,
    precode,
)
from .tones import TONES, Tone, TonePattern, ToneSegment
from .wav import WavError, load_wav

__all__ = [
    "DEFAULT_PTIME_MS",
    "PROMPT_NAMES",
    "PROMPT_TEXTS",
    "SUPPORTED_RATES",
    "TONES",
    "AudioCodec",
    "AudioLibrary",
    "Clip",
    "ClipSource",
    "CollectEnd",
    "CollectResult",
    "CollectSettings",
    "DigitCollector",
    "EncodedStream",
    "FrameDecoder",
    "FrameEncoder",
    "LoopSource",
    "PayloadStream",
    "PlayFile",
    "PlayMusic",
    "PlayPrompts",
    "PlaySequence",
    "PlaySilence",
    "PlayTone",
    "Playback",
    "PlaylistSource",
    "PrecodedStream",
    "SilenceSource",
    "Source",
    "Tone",
    "TonePattern",
    "ToneSegment",
    "ToneSource",
    "UnsupportedCodec",
    "WavError",
    "bundled_music",
    "codec_for",
    "frame_samples",
    "load_wav",
    "mix",
    "precode",
    "prompt",
]
