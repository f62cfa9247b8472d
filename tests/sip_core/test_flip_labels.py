"""The flip menu with label recordings: which line uses one, the fallback, and the audio library.

With the injected clock and a recorded player (test_flip_rules' harness): a device with a
recording is said with it, the others with their type; a recording that cannot be played makes
the menu play the bundled prompts instead, and a key still barges in. Then the library's
`PlaySequence`: prompts and a short WAV file in order, in G.711 and G.722, and its refusals.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest

from sip_core.audio import AudioLibrary, PlayFile, PlayPrompts, PlaySequence, prompt
from sip_core.audio.codecs import AudioCodec
from sip_core.audio.g711 import ulaw_decode, ulaw_encode
from sip_core.audio.playback import MAX_PART_SECONDS
from sip_core.audio.wav import WavError
from sip_core.features.flip_menu import MenuEntry, label_prompt_assets, menu_prompt
from sip_core.media import protocol as p
from sip_core.media.client import _play_message
from sip_core.media.engine import MediaEngine, _playback

from .audio_signal import goertzel_share, sine
from .test_flip_rules import ENTRIES, Harness3, harness3, invites, key, talking


def write_tone(path: Path, seconds: float, rate: int = 16000) -> None:
    samples = sine(1000, 8000, rate, int(rate * seconds))
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"".join(s.to_bytes(2, "little", signed=True) for s in samples))


@pytest.fixture
def h() -> Iterator[Harness3]:
    yield from harness3()


def test_menu_prompt_uses_a_recording_where_there_is_one() -> None:
    first, second = ENTRIES[0], ENTRIES[1]
    labels = {first.device.username: "/labels/one.wav"}
    assert menu_prompt([first, second], labels) == (
        *("press", "1", "for", PlayFile("/labels/one.wav")),
        *("press", "2", "for", "your", second.device.type.value),
    )
    assert menu_prompt([first, second], {}) == menu_prompt([first, second])
    assert menu_prompt([MenuEntry(3, first.device)], {first.device.username: ""})[-2:] == (
        "your",
        first.device.type.value,
    )


async def test_menu_plays_the_mobiles_recording_and_the_softphones_type(h: Harness3) -> None:
    h.b2bua.flip_feature.set_label_prompt("202", "/labels/mobile.wav")
    assert h.b2bua.flip_feature.label_prompts == {"202": "/labels/mobile.wav"}
    carol, desk, mobile, soft = await talking(h)
    key(desk, "*0")
    assert h.heard("201") == [
        PlaySequence(
            (
                *("press", "1", "for", PlayFile("/labels/mobile.wav")),
                *("press", "2", "for", "your", "softphone"),
            )
        )
    ]
    assert h.heard("401") == []  # the other party hears nothing of the menu
    h.b2bua.flip_feature.set_label_prompt("202", None)
    assert h.b2bua.flip_feature.label_prompts == {}
    key(desk, "1")  # a choice while the recording plays: it stops, the mobile rings
    assert h.played[0].stopped
    (ringing,) = invites(mobile)
    assert ringing.method == "INVITE"
    assert invites(soft) == []
    del carol


async def test_a_recording_that_cannot_play_gives_the_bundled_prompts(h: Harness3) -> None:
    h.b2bua.flip_feature.set_label_prompt("203", "/labels/gone.wav")
    _carol, desk, mobile, _soft = await talking(h)
    key(desk, "*0")
    (labelled,) = h.played
    assert isinstance(labelled.play, PlaySequence)
    labelled.done.set_result("cannot play: /labels/gone.wav: file not found")
    await _settled()
    assert [p.play for p in h.played[1:]] == [
        PlayPrompts(
            (
                *("press", "1", "for", "your", "mobile"),
                *("press", "2", "for", "your", "softphone"),
            )
        )
    ]
    key(desk, "1")  # the bundled prompt is the menu's now: a key stops it
    assert h.played[1].stopped
    assert len(invites(mobile)) == 1
    assert len(h.played) == 2  # no third playback after the fallback ended


async def test_a_stopped_recording_is_not_replaced(h: Harness3) -> None:
    h.b2bua.flip_feature.set_label_prompt("202", "/labels/mobile.wav")
    _carol, desk, _mobile, _soft = await talking(h)
    key(desk, "*")  # keys after *0 ...
    key(desk, "0")
    key(desk, "*")  # ... and * cancels while the recording plays
    assert h.played[0].stopped
    await _settled()
    assert all(not isinstance(p.play, PlayPrompts) or "press" not in p.play.names for p in h.played)


async def _settled() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


# -- the audio library ---------------------------------------------------------------------------


def test_sequence_in_g711_is_the_prompts_and_the_file_in_order(tmp_path: Path) -> None:
    label = tmp_path / "label.wav"
    write_tone(label, 0.5)
    library = AudioLibrary()
    play = PlaySequence(("press", PlayFile(str(label)), "softphone"))
    assert not library.ready(play, AudioCodec.PCMU)
    library.prepare(play, AudioCodec.PCMU)
    assert library.ready(play, AudioCodec.PCMU)
    stream = library.stream(play, AudioCodec.PCMU)
    sent = b"".join(iter(stream.next_payload, None))
    head = ulaw_encode(prompt("press", 8000).samples)
    tail = ulaw_encode(prompt("softphone", 8000).samples)
    assert sent.startswith(head)
    middle = sent[len(head) : len(head) + 4000]
    assert sent[len(head) + 4000 :].startswith(tail)
    assert goertzel_share(ulaw_decode(middle), 8000, 1000) > 0.9


def test_sequence_in_g722_lasts_as_long_as_its_parts(tmp_path: Path) -> None:
    label = tmp_path / "label.wav"
    write_tone(label, 0.4)
    library = AudioLibrary()
    play = PlaySequence(("press", PlayFile(str(label))))
    library.prepare(play, AudioCodec.G722)
    assert library.ready(play, AudioCodec.G722)
    frames = list(iter(library.stream(play, AudioCodec.G722).next_payload, None))
    expected = prompt("press", 16000).duration + 0.4
    assert len(frames) == -(-round(expected * 1000) // 20)
    assert all(len(frame) == 160 for frame in frames)


def test_sequence_refuses_bad_parts_and_long_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one part"):
        PlaySequence(())
    with pytest.raises(ValueError, match="no prompt 'hello'"):
        PlaySequence(("press", "hello"))
    long = tmp_path / "long.wav"
    write_tone(long, MAX_PART_SECONDS + 1, rate=8000)
    with pytest.raises(WavError, match="too long for a sequence part"):
        AudioLibrary().prepare(PlaySequence((PlayFile(str(long)),)), AudioCodec.PCMU)
    with pytest.raises(WavError, match="file not found"):
        AudioLibrary().prepare(PlaySequence((PlayFile(str(tmp_path / "no.wav")),)), AudioCodec.PCMA)


def test_sequence_crosses_to_the_engine_and_back() -> None:
    play = PlaySequence(("press", PlayFile("/labels/a:b.wav"), "1"))
    message = _play_message(3, 7, play, 20)
    assert message.kind == p.PlayKind.SEQUENCE
    assert message.names == ("prompt:press", "file:/labels/a:b.wav", "prompt:1")
    assert _playback(message) == play
    bad = p.Play(3, 7, p.PlayKind.SEQUENCE.value, ("press",), None, 20)
    with pytest.raises(p.ProtocolError, match="prompt:<name> or file:<path>"):
        _playback(bad)


def test_the_engine_prepares_a_label_ahead_for_g711_and_g722(tmp_path: Path) -> None:
    """`Prepare` (what `Pbx.set_label_prompt` sends): the engine converts the recording and the
    menu words off its loop, so the first menu finds them ready (`AudioLibrary.ready`)."""
    label = tmp_path / "label.wav"
    write_tone(label, 0.3)
    play = label_prompt_assets(str(label))
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    engines: list[MediaEngine] = []

    def serve() -> None:  # the engine's loop belongs to the thread that made it
        engines.append(MediaEngine(theirs, "127.0.0.1"))
        engines[0].run()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ours.settimeout(5)
    try:
        assert isinstance(p.decode(ours.recv(65536)), p.Hello)
        library = engines[0]._audio
        assert not library.ready(play, AudioCodec.PCMU)
        message = _play_message(0, 0, play, 20)
        ours.send(p.encode(p.Prepare(message.kind, message.names, 20)))
        bad = p.Prepare(p.PlayKind.SEQUENCE.value, ("file:" + str(tmp_path / "no.wav"),), 20)
        ours.send(p.encode(bad))  # logged, nothing else: the engine keeps serving
        deadline = time.monotonic() + 30
        while not (library.ready(play, AudioCodec.PCMU) and library.ready(play, AudioCodec.G722)):
            assert time.monotonic() < deadline, "not prepared in time"
            time.sleep(0.02)
        assert library.ready(play, AudioCodec.PCMA)  # G.711 keeps one clip for both laws
        menu = PlaySequence(("press", "1", "for", PlayFile(str(label))))
        assert library.ready(menu, AudioCodec.G722)
        ours.send(p.encode(p.Sync(3)))
        assert p.decode(ours.recv(65536)) == p.Synced(3)
    finally:
        ours.send(p.encode(p.Shutdown()))
        thread.join(5)
        ours.close()
    assert not thread.is_alive()
