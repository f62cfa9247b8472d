"""``callflip.play`` end to end: two baresip phones in a call through the PBX Home Assistant
runs, a TTS engine that speaks a known tone, and the recordings of what each phone heard.

Bob (softphone) calls Alice's desk phone, each phone sending its own tone and recording what it
decodes. The action speaks a 1700 Hz tone to Alice's side only: her recording holds it where
Bob's tone was, Bob's never does, and afterwards each hears the other again.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from homeassistant.core import HomeAssistant
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.callflip.const import DOMAIN
from custom_components.callflip.hub import user_identifier
from tests.interop import audio
from tests.interop.clients import Baresip, ClientError

from .callflip_testing import DOMAIN_NAME, PASSWORDS
from .tone_tts import TTS_ENTITY_ID, ToneTts, async_setup_tone_tts

pytestmark = pytest.mark.skipif(shutil.which("baresip") is None, reason="baresip is not installed")

BOB_HZ, ALICE_HZ, ANNOUNCEMENT_HZ = 1000.0, 440.0, 1700.0
ANNOUNCEMENT_SECONDS = 2.0
WINDOW = 0.2  # audio.windows' length


def heard(ua: Baresip) -> list[audio.Window]:
    found: list[audio.Window] = []
    for path in ua.recordings("dec"):
        samples, rate = audio.read_wav(path)
        found += audio.windows(samples, rate)
    assert found, f"{ua.user} recorded nothing"
    return found


def phone(user: str, port: int, tone: Path, workdir: Path, answermode: str) -> Baresip:
    return Baresip(
        user,
        PASSWORDS[user],
        port,
        domain=DOMAIN_NAME,
        tone=tone,
        record=True,
        answermode=answermode,
        workdir=workdir,
    )


async def test_a_message_played_to_one_side_is_heard_by_that_side_alone(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    sip_port: int,
    socket_enabled: None,
    tmp_path: Path,
) -> None:
    tts: ToneTts = await async_setup_tone_tts(hass)
    tones = {
        hz: audio.write_tone(tmp_path / f"{hz:.0f}.wav", hz, 60.0) for hz in (BOB_HZ, ALICE_HZ)
    }
    alice_id = loaded_entry.runtime_data.hub.ha_device_id(user_identifier("u-alice"))
    bob = phone("bob-soft", sip_port, tones[BOB_HZ], tmp_path / "bob", "manual")
    desk = phone("alice-desk", sip_port, tones[ALICE_HZ], tmp_path / "desk", "auto")
    async with bob, desk:
        try:
            assert (await bob.wait_registered()).ok
            assert (await desk.wait_registered()).ok
            await bob.dial(f"sip:alice-desk@{DOMAIN_NAME}")
            await desk.wait_event("CALL_ESTABLISHED", 15)
            await bob.wait_event("CALL_ESTABLISHED", 15)
            await asyncio.sleep(1.5)
            response = await hass.services.async_call(
                DOMAIN,
                "play",
                {
                    "device_id": alice_id,
                    "side": "own",
                    "tts_entity_id": TTS_ENTITY_ID,
                    "message": f"tone {ANNOUNCEMENT_HZ:.0f} for {ANNOUNCEMENT_SECONDS}",
                },
                blocking=True,
                return_response=True,
            )
            assert response is not None
            assert response["devices"] == ["Alice desk phone"]
            assert len(tts.requests) == 1
            await asyncio.sleep(ANNOUNCEMENT_SECONDS + 2.5)
            assert len(loaded_entry.runtime_data.hub.pbx.calls()) == 1  # the call went on
            await bob.hangup()
            await desk.wait_event("CALL_CLOSED", 10)
        except ClientError as error:
            pytest.fail(f"{error}\n--- bob\n{bob.output[-2500:]}\n--- desk\n{desk.output[-2500:]}")

    by_bob, by_desk = heard(bob), heard(desk)
    # Alice's desk phone heard the announcement (about its length) where Bob's tone was ...
    played = audio.tone_seconds(by_desk, ANNOUNCEMENT_HZ)
    assert ANNOUNCEMENT_SECONDS * 0.7 <= played <= ANNOUNCEMENT_SECONDS + 2 * WINDOW, (
        audio.describe(by_desk)
    )
    first = min(w.start for w in by_desk if w.is_tone(ANNOUNCEMENT_HZ))
    last = max(w.start for w in by_desk if w.is_tone(ANNOUNCEMENT_HZ))
    before = [w for w in by_desk if w.start < first]
    after = [w for w in by_desk if w.start > last]
    assert sum(WINDOW for w in before if w.is_tone(BOB_HZ)) >= 0.8, audio.describe(by_desk)
    # ... and Bob again afterwards.
    assert sum(WINDOW for w in after if w.is_tone(BOB_HZ)) >= 1.5, audio.describe(by_desk)
    # Bob never heard it: only Alice's tone, all along.
    assert audio.tone_seconds(by_bob, ANNOUNCEMENT_HZ) == 0.0, audio.describe(by_bob)
    assert audio.tone_seconds(by_bob, ALICE_HZ) >= 4.0, audio.describe(by_bob)
