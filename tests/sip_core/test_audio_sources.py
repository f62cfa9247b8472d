"""Sources and payload streams: every tone on every codec decodes to its frequency and cadence,
finite sources end on the right frame, playlists and loops run on without gaps."""

from __future__ import annotations

from array import array

import pytest

from sip_core.audio import (
    AudioCodec,
    AudioLibrary,
    Clip,
    ClipSource,
    EncodedStream,
    FrameDecoder,
    LoopSource,
    PlaylistSource,
    PlaySilence,
    PlayTone,
    PrecodedStream,
    SilenceSource,
    Tone,
    ToneSource,
    precode,
)
from sip_core.audio.tones import TONES, ToneSegment, level_amplitude

from .audio_signal import goertzel_share, rms, sine, zero_crossing_frequency

LIBRARY = AudioLibrary()


def _decode_stream(play: PlayTone | PlaySilence, codec: AudioCodec, frames: int) -> list[int]:
    stream = LIBRARY.stream(play, codec)
    decoder = FrameDecoder(codec)
    out: list[int] = []
    for _ in range(frames):
        payload = stream.next_payload()
        if payload is None:
            break
        assert len(payload) == codec.payload_size()
        out.extend(decoder.decode(payload))
    return out


# What each tone must sound like, written out independently of sip_core.audio.tones (the
# telephony conventions its docstring cites): (milliseconds, frequencies) per segment, repeats.
EXPECTED: dict[Tone, tuple[list[tuple[int, tuple[float, ...]]], bool]] = {
    Tone.BEEP: ([(200, (1000.0,))], False),
    Tone.ERROR: ([(330, (950.0,)), (330, (1400.0,)), (330, (1800.0,)), (1000, ())], False),
    Tone.RINGBACK: ([(1000, (425.0,)), (4000, ())], True),
    Tone.RINGBACK_US: ([(2000, (440.0, 480.0)), (4000, ())], True),
    Tone.BUSY: ([(500, (425.0,)), (500, ())], True),
    Tone.COMFORT: ([(250, (440.0,)), (4750, ())], True),
    Tone.CONFIRM: (
        [(160, (1200.0,)), (100, ()), (160, (1200.0,)), (100, ()), (160, (1200.0,)), (400, ())],
        False,
    ),
}


def _segments(tone: Tone) -> list[tuple[int, int, ToneSegment]]:
    """(start ms, end ms, segment) of the pattern, checked against EXPECTED on the way."""
    expected, repeats = EXPECTED[tone]
    assert tone.pattern.repeat is repeats
    assert [(s.duration_ms, s.frequencies) for s in tone.pattern.segments] == expected
    start = 0
    out = []
    for segment in tone.pattern.segments:
        out.append((start, start + segment.duration_ms, segment))
        start += segment.duration_ms
    return out


@pytest.mark.parametrize("codec", list(AudioCodec))
@pytest.mark.parametrize("tone", list(Tone))
def test_each_tone_decodes_to_its_frequencies_and_cadence(tone: Tone, codec: AudioCodec) -> None:
    rate = codec.sample_rate
    segments = _segments(tone)
    period_ms = tone.pattern.period_ms
    frames = period_ms // 20 + (25 if tone.pattern.repeat else 5)
    decoded = _decode_stream(PlayTone(tone), codec, frames)
    if tone.pattern.repeat:
        assert len(decoded) == frames * codec.samples_per_frame()
    else:
        assert len(decoded) == -(-period_ms // 20) * codec.samples_per_frame()
    per_ms = rate // 1000
    for start_ms, end_ms, segment in segments:
        # Look inside the segment, away from its edges (and the codec's settling at the start).
        inner = decoded[(start_ms + 40) * per_ms : (end_ms - 20) * per_ms]
        if not segment.frequencies:
            assert rms(inner) < 30, (start_ms, rms(inner))
            continue
        expected_rms = level_amplitude(segment.level_dbm0) / 2**0.5
        assert 0.8 * expected_rms < rms(inner) < 1.2 * expected_rms
        if len(segment.frequencies) == 1:
            (frequency,) = segment.frequencies
            assert abs(zero_crossing_frequency(inner, rate) - frequency) < 2
            assert goertzel_share(inner, rate, frequency) > 0.9
        else:
            shares = [goertzel_share(inner, rate, f) for f in segment.frequencies]
            assert all(share > 0.4 for share in shares), shares
            assert sum(shares) > 0.9
    if tone.pattern.repeat:
        # The second period starts like the first: the cadence repeats on time.
        first = decoded[40 * per_ms : 100 * per_ms]
        again = decoded[(period_ms + 40) * per_ms : (period_ms + 100) * per_ms]
        assert rms(again) > 0.8 * rms(first)


def test_a_tone_is_rendered_once_per_rate_and_shared() -> None:
    first = ToneSource(Tone.RINGBACK, 8000).read()
    second = ToneSource(Tone.RINGBACK, 8000).read()
    assert first == second
    assert TONES[Tone.BEEP].period_ms == 200


def test_silence_for_a_duration_then_done() -> None:
    source = SilenceSource(8000, 20, 50)  # 2.5 frames: the last is padded
    frames = []
    while (frame := source.read()) is not None:
        frames.append(frame)
    assert len(frames) == 3
    assert all(len(frame) == 160 and not any(frame) for frame in frames)
    assert source.done
    assert source.read() is None


def test_endless_silence_never_ends() -> None:
    source = SilenceSource(16000)
    for _ in range(500):
        frame = source.read()
        assert frame is not None
        assert len(frame) == 320
    assert not source.done


def _clip(name: str, values: list[int], rate: int = 8000) -> Clip:
    return Clip(name, rate, array("h", values))


def test_a_clip_ends_on_the_frame_with_its_last_sample() -> None:
    clip = _clip("x", list(range(1, 321)))  # exactly two frames
    source = ClipSource(clip)
    assert source.read() == array("h", range(1, 161))
    assert not source.done
    assert source.read() == array("h", range(161, 321))
    assert source.done  # known before another read: the engine switches back without a gap
    assert source.read() is None


def test_a_short_last_frame_is_padded_with_silence() -> None:
    source = ClipSource(_clip("x", [5] * 170))
    assert source.read() == array("h", [5] * 160)
    assert source.read() == array("h", [5] * 10 + [0] * 150)
    assert source.done


def test_a_playlist_runs_prompts_together_sample_by_sample() -> None:
    clips = [
        _clip(name, [value] * count)
        for name, value, count in [("a", 1, 100), ("b", 2, 250), ("c", 3, 30)]
    ]
    source = PlaylistSource(clips, ptime_ms=20)
    out = array("h")
    while (frame := source.read()) is not None:
        assert len(frame) == 160
        out.extend(frame)
    expected = [1] * 100 + [2] * 250 + [3] * 30
    assert list(out[: len(expected)]) == expected  # no gap and nothing repeated at the seams
    assert list(out[len(expected) :]) == [0] * (480 - len(expected))  # padding only at the end
    assert source.done


def test_a_playlist_refuses_mixed_rates_and_emptiness() -> None:
    with pytest.raises(ValueError, match="at 16000 Hz, not 8000 Hz"):
        PlaylistSource([_clip("a", [1] * 10), _clip("b", [1] * 10, rate=16000)])
    with pytest.raises(ValueError, match="at least one prompt"):
        PlaylistSource([])


def test_music_loops_without_a_seam() -> None:
    clip = _clip("music", list(range(1, 401)))  # 2.5 frames: the loop crosses frame edges
    source = LoopSource(clip)
    out = array("h")
    for _ in range(10):
        frame = source.read()
        assert frame is not None
        out.extend(frame)
    assert list(out) == (list(range(1, 401)) * 4)[:1600]
    assert not source.done


@pytest.mark.parametrize("ptime", [10, 20, 30, 40])
def test_sources_follow_the_ptime(ptime: int) -> None:
    for rate in (8000, 16000):
        frame = ToneSource(Tone.BUSY, rate, ptime).read()
        assert frame is not None
        assert len(frame) == rate * ptime // 1000


def test_bad_geometry_is_refused() -> None:
    with pytest.raises(ValueError, match="not one of"):
        SilenceSource(44100)
    with pytest.raises(ValueError, match="whole number of samples"):
        SilenceSource(8000, ptime_ms=0)
    with pytest.raises(ValueError, match="rate 11025"):
        Clip("x", 11025, array("h"))
    with pytest.raises(ValueError, match="empty and cannot loop"):
        LoopSource(_clip("x", []))


def test_an_encoded_stream_needs_the_codecs_rate() -> None:
    with pytest.raises(ValueError, match="G722 needs audio at 16000 Hz"):
        EncodedStream(SilenceSource(8000), AudioCodec.G722)


def test_precode_guards_against_endless_sources() -> None:
    with pytest.raises(ValueError, match="endless"):
        precode(SilenceSource(8000), AudioCodec.PCMU, max_frames=10)


def test_precoded_payloads_equal_live_encoding_and_loop() -> None:
    source = ToneSource(TONES[Tone.BEEP], 16000)
    payloads = precode(source, AudioCodec.G722)
    assert len(payloads) == 10
    live = EncodedStream(ToneSource(Tone.BEEP, 16000), AudioCodec.G722)
    assert [live.next_payload() for _ in range(10)] == list(payloads)
    assert live.done
    looping = PrecodedStream(payloads, loop=True)
    assert [looping.next_payload() for _ in range(25)] == (list(payloads) * 3)[:25]
    once = PrecodedStream(payloads)
    assert [once.next_payload() for _ in range(10)] == list(payloads)
    assert once.done
    assert once.next_payload() is None


@pytest.mark.parametrize("codec", list(AudioCodec))
def test_timed_silence_on_every_codec(codec: AudioCodec) -> None:
    decoded = _decode_stream(PlaySilence(110), codec, 100)
    assert len(decoded) == 6 * codec.samples_per_frame()
    assert rms(decoded) < 10
    endless = LIBRARY.stream(PlaySilence(), codec)
    assert all(endless.next_payload() is not None for _ in range(100))
    assert not endless.done


def test_sine_helper_is_what_the_checks_assume() -> None:
    # The measuring helpers, on a known signal: a check that cannot fail is no check.
    tone = sine(425, 5000, 8000, 1600)
    assert abs(zero_crossing_frequency(tone, 8000) - 425) < 0.5
    assert goertzel_share(tone, 8000, 425) > 0.99
    assert goertzel_share(tone, 8000, 475) < 0.01


def test_prepare_encodes_ahead_and_stream_reuses_it() -> None:
    library = AudioLibrary()
    play = PlayTone(Tone.BUSY)
    library.prepare(play, AudioCodec.PCMU)  # G.711 encodes live: nothing to store
    assert library._precoded == {}
    library.prepare(play, AudioCodec.G722)
    (stored,) = library._precoded.values()
    stream = library.stream(play, AudioCodec.G722)
    assert [stream.next_payload() for _ in range(len(stored))] == list(stored)
    assert len(library._precoded) == 1


def test_playback_values_cross_a_process_boundary() -> None:
    """The SIP side sends these to the media engine's process: they pickle and compare equal."""
    import pickle

    from sip_core.audio import PlayMusic, PlayPrompts

    values = [PlaySilence(), PlaySilence(300), PlayTone(Tone.COMFORT), PlayPrompts(("press", "1"))]
    values.append(PlayMusic())
    for value in values:
        assert pickle.loads(pickle.dumps(value)) == value


def test_mixing_adds_with_saturation_and_gain() -> None:
    from sip_core.audio import mix

    assert list(mix([100, -100, 30000, -30000], [50, 50, 10000, -10000])) == [
        150,
        -50,
        32767,
        -32768,
    ]
    assert list(mix([0, 1000], [1000, 1000], gain=0.25)) == [250, 1250]
    beep = ToneSource(Tone.BEEP, 8000).read()
    assert beep is not None
    voice = sine(300, 3000, 8000, 160)
    mixed = mix(voice, beep, gain=0.5)
    assert goertzel_share(list(mixed), 8000, 1000) > 0.2  # the beep is in
    assert goertzel_share(list(mixed), 8000, 300) > 0.2  # and the voice still
    with pytest.raises(ValueError, match="cannot mix 2 samples with 1"):
        mix([0, 0], [0])
    with pytest.raises(ValueError, match="gain"):
        mix([0], [0], gain=2)


def test_playback_values_are_checked_where_they_are_made() -> None:
    from sip_core.audio import PlayPrompts

    assert PlayPrompts(["press", "1"]).names == ("press", "1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no prompt 'hello', 'x'; known: 0, 1"):
        PlayPrompts(("press", "hello", "x"))
    with pytest.raises(ValueError, match="at least one prompt"):
        PlayPrompts(())
    with pytest.raises(ValueError, match="positive time"):
        PlaySilence(0)
