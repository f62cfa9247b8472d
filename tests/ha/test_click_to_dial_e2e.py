"""``callflip.call`` end to end: Home Assistant rings one baresip phone, and when it answers,
calls another for it; both answer by themselves, each sends a tone of its own and records what it
decodes, and each must hear the other's tone (media relayed both ways)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from homeassistant.core import HomeAssistant
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.callflip.const import DOMAIN
from custom_components.callflip.hub import device_identifier
from tests.interop import audio
from tests.interop.clients import ClientError

from .test_play_e2e import heard, phone

pytestmark = pytest.mark.skipif(shutil.which("baresip") is None, reason="baresip is not installed")

ALICE_HZ, BOB_HZ = 440.0, 1000.0
TALK_SECONDS = 3.0


async def test_click_to_dial_connects_two_phones_that_hear_each_other(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    sip_port: int,
    socket_enabled: None,
    tmp_path: Path,
) -> None:
    tones = {
        hz: audio.write_tone(tmp_path / f"{hz:.0f}.wav", hz, 60.0) for hz in (ALICE_HZ, BOB_HZ)
    }
    hub = loaded_entry.runtime_data.hub
    desk = phone("alice-desk", sip_port, tones[ALICE_HZ], tmp_path / "desk", "auto")
    bob = phone("bob-soft", sip_port, tones[BOB_HZ], tmp_path / "bob", "auto")
    async with desk, bob:
        try:
            assert (await desk.wait_registered()).ok
            assert (await bob.wait_registered()).ok
            response = await hass.services.async_call(
                DOMAIN,
                "call",
                {
                    "device_id": hub.ha_device_id(device_identifier("d-alice-desk")),
                    "number": "bob-soft",
                },
                blocking=True,
                return_response=True,
            )
            assert response is not None
            await desk.wait_event("CALL_ESTABLISHED", 15)
            await bob.wait_event("CALL_ESTABLISHED", 15)
            await asyncio.sleep(TALK_SECONDS)
            (call,) = hub.pbx.calls()
            assert call.id == response["call_id"]
            assert call.state.value == "talking"
            await desk.hangup()
            await bob.wait_event("CALL_CLOSED", 10)
        except ClientError as error:
            pytest.fail(f"{error}\n--- desk\n{desk.output[-2500:]}\n--- bob\n{bob.output[-2500:]}")
    (record,) = hub.pbx.history()
    assert (record.caller, record.dialled, record.answered_device) == (
        "alice-desk",
        "bob-soft",
        "bob-soft",
    )
    by_desk, by_bob = heard(desk), heard(bob)
    assert audio.tone_seconds(by_desk, BOB_HZ) >= TALK_SECONDS * 0.6, audio.describe(by_desk)
    assert audio.tone_seconds(by_bob, ALICE_HZ) >= TALK_SECONDS * 0.6, audio.describe(by_bob)
    # Neither heard itself.
    assert audio.tone_seconds(by_desk, ALICE_HZ) == 0.0, audio.describe(by_desk)
    assert audio.tone_seconds(by_bob, BOB_HZ) == 0.0, audio.describe(by_bob)
