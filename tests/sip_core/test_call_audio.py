"""Playing a file into a call: the library's conversion of a WAV file, and finding the call and
the legs a playback goes to, with the refusals (`sip_core.call_audio`)."""

from __future__ import annotations

import math
import wave
from array import array
from pathlib import Path

import pytest

from sip_core.audio import (
    AudioCodec,
    AudioLibrary,
    FrameDecoder,
    PlayFile,
    WavError,
)
from sip_core.audio.playback import FILE_CACHE_SIZE
from sip_core.call_audio import (
    CallNotAnswered,
    NoCallInProgress,
    NoGeneratedAudio,
    PlaySide,
    UnknownParty,
    _check_codecs,
    _chosen_legs,
    find_call,
    play_into_call,
)
from sip_core.calls import Call, CallState, Leg, LegRole
from sip_core.config import Device, User
from sip_core.sdp import SessionDescription


def write_wav(path: Path, frequency: float, seconds: float, rate: int = 16000) -> Path:
    count = int(seconds * rate)
    samples = array(
        "h", (int(8000 * math.sin(2 * math.pi * frequency * n / rate)) for n in range(count))
    )
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())
    return path


def payloads(library: AudioLibrary, play: PlayFile, codec: AudioCodec) -> list[bytes]:
    stream = library.stream(play, codec)
    found: list[bytes] = []
    while (payload := stream.next_payload()) is not None:
        found.append(payload)
    return found


@pytest.mark.parametrize("codec", list(AudioCodec))
def test_a_file_plays_once_in_every_codec_at_its_length(tmp_path: Path, codec: AudioCodec) -> None:
    play = PlayFile(str(write_wav(tmp_path / "a.wav", 1000.0, 0.5)))
    library = AudioLibrary()
    assert not library.ready(play, codec)
    library.prepare(play, codec)
    assert library.ready(play, codec)
    frames = payloads(library, play, codec)
    assert len(frames) == 25  # 0.5 s in 20 ms frames
    decoder = FrameDecoder(codec)
    decoded = array("h")
    for frame in frames:
        decoded.extend(decoder.decode(frame))
    rate = codec.sample_rate
    middle = decoded[len(decoded) // 4 : 3 * len(decoded) // 4]
    # Goertzel power at 1 kHz against the total: a clean tone puts nearly all its energy there.
    k = 2 * math.cos(2 * math.pi * 1000.0 / rate)
    s1 = s2 = 0.0
    for sample in middle:
        s1, s2 = sample + k * s1 - s2, s1
    tone = s1 * s1 + s2 * s2 - k * s1 * s2
    total = sum(float(x) * x for x in middle) * len(middle) / 2
    assert tone / total > 0.8


def test_converted_files_are_bounded(tmp_path: Path) -> None:
    library = AudioLibrary()
    plays = [
        PlayFile(str(write_wav(tmp_path / f"{n}.wav", 500.0, 0.1)))
        for n in range(FILE_CACHE_SIZE + 1)
    ]
    for play in plays:
        library.prepare(play, AudioCodec.PCMU)
    assert not library.ready(plays[0], AudioCodec.PCMU)
    assert all(library.ready(play, AudioCodec.PCMU) for play in plays[1:])


def test_an_unreadable_file_is_a_wav_error(tmp_path: Path) -> None:
    (tmp_path / "bad.wav").write_bytes(b"not a wav")
    with pytest.raises(WavError, match=r"bad\.wav"):
        AudioLibrary().prepare(PlayFile(str(tmp_path / "bad.wav")), AudioCodec.PCMA)
    with pytest.raises(ValueError, match="path"):
        PlayFile("")


USERS = [
    User(
        "alice",
        "200",
        (Device("201", "pw-201-long", "Desk"), Device("202", "pw-202-long", "Mobile")),
    ),
    User("bob", "300", (Device("301", "pw-301-long", "Soft"),)),
]

SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 4000 RTP/AVP {pts}\r\n{maps}"
)


def sdp(*codecs: tuple[int, str]) -> SessionDescription:
    maps = "".join(f"a=rtpmap:{pt} {name}\r\n" for pt, name in codecs)
    text = SDP.format(pts=" ".join(str(pt) for pt, _ in codecs), maps=maps)
    return SessionDescription.parse(text.encode())


def a_call(state: CallState = CallState.TALKING) -> Call:
    call = Call("c1", caller_user="bob", dialled="200", callee_user="alice", started_at=0.0)
    call.caller = Leg(call, LegRole.CALLER, "a", "301", "<sip:301@x>")
    callee = Leg(call, LegRole.CALLEE, "b", "202", "<sip:202@x>")
    call.branches.append(callee)
    for leg in (call.caller, callee):
        leg.remote_sdp = sdp((0, "PCMU/8000"), (101, "telephone-event/8000"))
    if state is not CallState.RINGING:
        call.callee = callee
    call.state = state
    return call


def test_the_call_of_a_device_or_user_is_found_with_their_leg() -> None:
    call = a_call()
    assert find_call([call], USERS, device="301") == (call, call.caller)
    assert find_call([call], USERS, user="alice") == (call, call.callee)
    ringing = a_call(CallState.RINGING)
    assert find_call([ringing], USERS, device="202") == (ringing, None)
    assert find_call([ringing, call], USERS, user="alice")[0] is call  # the answered one


def test_unknown_parties_and_idle_ones_are_refused() -> None:
    call = a_call()
    with pytest.raises(UnknownParty):
        find_call([call], USERS, device="999")
    with pytest.raises(UnknownParty):
        find_call([call], USERS, user="carol")
    with pytest.raises(NoCallInProgress, match="201"):
        find_call([call], USERS, device="201")
    call.state = CallState.ENDING
    with pytest.raises(NoCallInProgress):
        find_call([call], USERS, user="bob")
    with pytest.raises(ValueError, match="device or a user"):
        find_call([call], USERS)


def test_sides_name_who_hears_it() -> None:
    call = a_call()
    caller, callee = call.caller, call.callee
    assert _chosen_legs(call, caller, PlaySide.OWN) == [caller]
    assert _chosen_legs(call, caller, PlaySide.OTHER) == [callee]
    assert _chosen_legs(call, callee, PlaySide.CALLER) == [caller]
    assert _chosen_legs(call, caller, PlaySide.CALLEE) == [callee]
    assert _chosen_legs(call, None, PlaySide.BOTH) == [caller, callee]


def test_an_unanswered_call_or_a_leg_without_our_codecs_is_refused() -> None:
    ringing = a_call(CallState.RINGING)
    with pytest.raises(CallNotAnswered, match="ringing"):
        play_into_call(ringing, None, PlayFile("x.wav"))
    call = a_call()  # no media session: not answered as far as audio goes
    with pytest.raises(CallNotAnswered):
        play_into_call(call, call.caller, PlayFile("x.wav"))
    assert call.callee is not None
    call.callee.remote_sdp = sdp((96, "opus/48000/2"), (101, "telephone-event/8000"))
    with pytest.raises(NoGeneratedAudio, match="202 uses opus") as refused:
        _check_codecs(call.callee)
    assert refused.value.encodings == ("opus",)
    call.callee.remote_sdp = sdp((96, "opus/48000/2"), (9, "G722/8000"))
    _check_codecs(call.callee)  # G.722 is there too


def test_a_file_written_again_is_converted_again(tmp_path: Path) -> None:
    library = AudioLibrary()
    play = PlayFile(str(write_wav(tmp_path / "a.wav", 1000.0, 0.2)))
    library.prepare(play, AudioCodec.PCMU)
    assert len(payloads(library, play, AudioCodec.PCMU)) == 10
    write_wav(tmp_path / "a.wav", 1000.0, 0.4)  # the same path, another announcement
    assert not library.ready(play, AudioCodec.PCMU)
    library.prepare(play, AudioCodec.PCMU)
    assert len(payloads(library, play, AudioCodec.PCMU)) == 20
