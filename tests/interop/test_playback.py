"""A prompt the PBX plays into a call, as real baresip phones hear it.

The PBX runs in this process (its media in its engine process, as always) so the test can reach
the call's media session; the phones are baresip, each playing its own tone and recording what it
decodes (see test_calls). During the call the PBX plays prompts to the callee only: the callee's
recording holds speech for about the prompts' length where the caller's tone was, the caller's
recording holds nothing but the callee's tone, and afterwards each hears the other again.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from sip_core.audio import PlayFile, PlayPrompts, prompt
from sip_core.call_audio import PlaySide
from sip_core.config import parse_config
from sip_core.media import PLAY_FINISHED
from sip_core.pbx import Pbx

from . import audio
from .clients import ClientError, free_port
from .conftest import DOMAIN, pbx_yaml
from .test_calls import (
    _EXTENSION,
    CALLEE_HZ,
    CALLER_HZ,
    CallTarget,
    _failure,
    _users,
    heard,
    phone,
    tones,  # noqa: F401  (a fixture)
)

pytestmark = pytest.mark.interop

PROMPTS = ("please_hold", "transferring", "not_available")
WINDOW = 0.2  # seconds: audio.windows' length


def speech_seconds(found: list[audio.Window], tone_hz: float) -> float:
    """How long the recording holds something audible that is not the far end's tone."""
    return WINDOW * sum(1 for w in found if w.rms >= 0.01 and not w.is_tone(tone_hz))


async def test_a_prompt_played_to_the_callee_reaches_the_callee_alone(
    tones: dict[float, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    port = free_port()
    low = random.randrange(41000, 44000, 2)
    config = parse_config(pbx_yaml(_users(), port=port, rtp_ports=f"{low}-{low + 99}"))
    pbx = Pbx(config)
    await pbx.start()
    target = CallTarget("callflip", port, lambda device: _EXTENSION[device], lambda: "")
    length = sum(len(prompt(name, 8000).samples) for name in PROMPTS) / 8000
    try:
        async with (
            phone(target, "301", tones[CALLER_HZ], tmp_path / "caller") as caller,
            phone(
                target, "201", tones[CALLEE_HZ], tmp_path / "callee", answermode="auto"
            ) as callee,
        ):
            try:
                await caller.dial(f"sip:{target.dial('201')}@{DOMAIN}")
                await callee.wait_event("CALL_ESTABLISHED", 15)
                await caller.wait_event("CALL_ESTABLISHED", 15)
                await asyncio.sleep(1.5)
                (call,) = pbx.calls()
                assert call.media is not None
                playing = call.media.b.play(PlayPrompts(PROMPTS))  # b: towards the callee
                assert await asyncio.wait_for(playing.done, length + 5) == PLAY_FINISHED
                await asyncio.sleep(2.0)
                await caller.hangup()
                await callee.wait_event("CALL_CLOSED", 10)
            except ClientError as error:
                pytest.fail(f"{error}\n{_failure(target, caller, callee)}")
    finally:
        await pbx.stop()

    by_caller, by_callee = heard(caller), heard(callee)
    # The callee heard the prompts (speech, about as long as they are) where the caller's tone
    # was, and the caller's tone before and after them.
    spoken = speech_seconds(by_callee, CALLER_HZ)
    assert length * 0.6 <= spoken <= length + 2 * WINDOW, audio.describe(by_callee)
    assert audio.tone_seconds(by_callee, CALLER_HZ) >= 2.0, audio.describe(by_callee)
    last_speech = max(w.start for w in by_callee if w.rms >= 0.01 and not w.is_tone(CALLER_HZ))
    after = [w for w in by_callee if w.start > last_speech]
    assert sum(WINDOW for w in after if w.is_tone(CALLER_HZ)) >= 1.0, audio.describe(by_callee)
    # The caller never heard them: only the callee's tone.
    assert speech_seconds(by_caller, CALLEE_HZ) <= 2 * WINDOW, audio.describe(by_caller)
    assert audio.tone_seconds(by_caller, CALLEE_HZ) >= 4.0, audio.describe(by_caller)


ANNOUNCEMENT_HZ = 1700.0


async def test_a_file_played_into_the_call_of_a_device_reaches_that_side_alone(
    tones: dict[float, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    """`Pbx.play` with a WAV file (at 16 kHz, converted by the engine for the G.711 legs), to
    the callee's own side, found by the callee's device: the callee hears the file's tone where
    the caller's was, the caller never does, and afterwards each hears the other again."""
    port = free_port()
    low = random.randrange(41000, 44000, 2)
    config = parse_config(pbx_yaml(_users(), port=port, rtp_ports=f"{low}-{low + 99}"))
    pbx = Pbx(config)
    await pbx.start()
    target = CallTarget("callflip", port, lambda device: _EXTENSION[device], lambda: "")
    announcement = audio.write_tone(tmp_path / "announce.wav", ANNOUNCEMENT_HZ, 2.0, rate=16000)
    try:
        async with (
            phone(target, "301", tones[CALLER_HZ], tmp_path / "caller") as caller,
            phone(
                target, "201", tones[CALLEE_HZ], tmp_path / "callee", answermode="auto"
            ) as callee,
        ):
            try:
                await caller.dial(f"sip:{target.dial('201')}@{DOMAIN}")
                await callee.wait_event("CALL_ESTABLISHED", 15)
                await caller.wait_event("CALL_ESTABLISHED", 15)
                await asyncio.sleep(1.5)
                playback = pbx.play(PlayFile(str(announcement)), device="201", side=PlaySide.OWN)
                assert playback.devices == ("201",)
                assert await asyncio.wait_for(playback.wait(), 15) == (PLAY_FINISHED,)
                assert len(pbx.calls()) == 1  # the call goes on
                await asyncio.sleep(2.0)
                await caller.hangup()
                await callee.wait_event("CALL_CLOSED", 10)
            except ClientError as error:
                pytest.fail(f"{error}\n{_failure(target, caller, callee)}")
    finally:
        await pbx.stop()

    by_caller, by_callee = heard(caller), heard(callee)
    played = audio.tone_seconds(by_callee, ANNOUNCEMENT_HZ)
    assert 1.4 <= played <= 2.0 + 2 * WINDOW, audio.describe(by_callee)
    last = max(w.start for w in by_callee if w.is_tone(ANNOUNCEMENT_HZ))
    after = [w for w in by_callee if w.start > last]
    assert sum(WINDOW for w in after if w.is_tone(CALLER_HZ)) >= 1.0, audio.describe(by_callee)
    assert audio.tone_seconds(by_caller, ANNOUNCEMENT_HZ) == 0.0, audio.describe(by_caller)
    assert audio.tone_seconds(by_caller, CALLEE_HZ) >= 4.0, audio.describe(by_caller)
