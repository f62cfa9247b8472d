"""``callflip.announce`` end to end: Home Assistant rings a baresip phone that answers by itself,
a TTS engine speaks a known tone, the phone records what it decodes, and the PBX hangs up.

Alice's desk phone (baresip, auto-answer, sending a tone of its own) is rung by the action with
the message said twice: its recording holds the announcement's tone about twice its length, the
call is closed by the PBX (baresip reports the call closed without hanging up itself), and the
response says it was answered on that phone.
"""

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

from .test_play_e2e import WINDOW, heard, phone
from .tone_tts import TTS_ENTITY_ID, ToneTts, async_setup_tone_tts

pytestmark = pytest.mark.skipif(shutil.which("baresip") is None, reason="baresip is not installed")

ALICE_HZ, ANNOUNCEMENT_HZ = 440.0, 1700.0
ANNOUNCEMENT_SECONDS = 1.5


async def test_an_announcement_is_heard_then_the_pbx_hangs_up(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    sip_port: int,
    socket_enabled: None,
    tmp_path: Path,
) -> None:
    tts: ToneTts = await async_setup_tone_tts(hass)
    tone = audio.write_tone(tmp_path / "alice.wav", ALICE_HZ, 60.0)
    hub = loaded_entry.runtime_data.hub
    desk_id = hub.ha_device_id(device_identifier("d-alice-desk"))
    desk = phone("alice-desk", sip_port, tone, tmp_path / "desk", "auto")
    async with desk:
        try:
            assert (await desk.wait_registered()).ok
            response = await asyncio.wait_for(
                hass.services.async_call(
                    DOMAIN,
                    "announce",
                    {
                        "device_id": desk_id,
                        "tts_entity_id": TTS_ENTITY_ID,
                        "message": f"tone {ANNOUNCEMENT_HZ:.0f} for {ANNOUNCEMENT_SECONDS}",
                        "repeat": 2,
                        "ring_timeout": 15,
                    },
                    blocking=True,
                    return_response=True,
                ),
                30,
            )
            await desk.wait_event("CALL_CLOSED", 10)
        except ClientError as error:
            pytest.fail(f"{error}\n--- desk\n{desk.output[-2500:]}")
    assert response is not None
    assert response["answered"] is True
    assert response["device"] == "Alice desk phone"
    assert response["device_id"] == desk_id
    assert response["played"] == 2
    assert len(tts.requests) == 1
    assert hub.pbx.calls() == []  # the PBX hung up
    (record,) = hub.pbx.history()
    assert record.outcome.value == "answered"
    assert record.reason == "announcement played"
    assert record.answered_device == "alice-desk"
    by_desk = heard(desk)
    played = audio.tone_seconds(by_desk, ANNOUNCEMENT_HZ)
    wanted = 2 * ANNOUNCEMENT_SECONDS
    assert wanted * 0.7 <= played <= wanted + 4 * WINDOW, audio.describe(by_desk)
    # Nothing but the announcement (and the pauses): the PBX is the caller, it has no tone.
    assert audio.tone_seconds(by_desk, ALICE_HZ) == 0.0, audio.describe(by_desk)
