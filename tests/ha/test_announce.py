"""The ``callflip.announce`` action on a real hass: every refusal, translated, and an
announcement to fake SIP phones (who answered, the caller ID shown, the hang-up, the response)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import ServiceValidationError
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.callflip.const import DOMAIN
from custom_components.callflip.hub import device_identifier, hub_identifier, user_identifier

from .sip_client import SipPhone
from .test_calls import answered_call, registered
from .test_play import announcements, ha_id
from .tone_tts import TTS_ENTITY_ID, ToneTts, async_setup_tone_tts

TONE = {"tts_entity_id": TTS_ENTITY_ID, "message": "tone 1700 for 0.2"}


async def announce(hass: HomeAssistant, **data: Any) -> dict[str, Any] | None:
    return await hass.services.async_call(
        DOMAIN, "announce", data, blocking=True, return_response=True
    )


async def refused(hass: HomeAssistant, key: str, **data: Any) -> ServiceValidationError:
    with pytest.raises(ServiceValidationError) as caught:
        await announce(hass, **data)
    assert caught.value.translation_domain == DOMAIN
    assert caught.value.translation_key == key, caught.value
    return caught.value


@pytest.fixture
async def tone_tts(hass: HomeAssistant) -> ToneTts:
    return await async_setup_tone_tts(hass)


async def test_who_must_be_one_person_or_phone_with_something_registered(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, tone_tts: ToneTts
) -> None:
    alice = ha_id(loaded_entry, user_identifier("u-alice"))
    hub = ha_id(loaded_entry, hub_identifier(loaded_entry.entry_id))
    await refused(hass, "not_a_phone", device_id=hub, **TONE)
    await refused(hass, "not_a_phone", device_id="no-such-device", **TONE)
    await refused(hass, "one_target_only", device_id=[alice, hub], **TONE)
    # Nothing of Alice's is registered: said before any audio is made.
    error = await refused(hass, "nothing_registered", device_id=alice, **TONE)
    assert error.translation_placeholders == {"name": "Alice"}
    assert tone_tts.requests == []


async def test_audio_and_caller_id_are_checked(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    make_phone: Callable[..., SipPhone],
    tone_tts: ToneTts,
) -> None:
    await registered(make_phone, "bob-soft")
    bob = ha_id(loaded_entry, user_identifier("u-bob"))
    await refused(hass, "play_needs_audio", device_id=bob)
    await refused(hass, "play_needs_audio", device_id=bob, message="tone 1700")
    await refused(hass, "tts_failed", device_id=bob, tts_entity_id=TTS_ENTITY_ID, message="no")
    error = await refused(hass, "invalid_caller_id", device_id=bob, caller_number="1 2", **TONE)
    assert "caller ID" in str(error.translation_placeholders)
    assert loaded_entry.runtime_data.hub.pbx.calls() == []  # nothing rang


async def test_a_busy_phone_is_refused(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    make_phone: Callable[..., SipPhone],
    tone_tts: ToneTts,
) -> None:
    desk, bob = await registered(make_phone, "alice-desk", "bob-soft")
    await answered_call(hass, bob, desk)
    before = announcements()
    error = await refused(
        hass,
        "all_phones_busy",
        device_id=ha_id(loaded_entry, device_identifier("d-bob-soft")),
        **TONE,
    )
    assert error.translation_placeholders == {"name": "Bob softphone"}
    assert announcements() == before  # the file made for it is gone


async def test_an_announcement_rings_plays_and_hangs_up(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    make_phone: Callable[..., SipPhone],
    tone_tts: ToneTts,
) -> None:
    desk, mobile = await registered(make_phone, "alice-desk", "alice-mobile")
    before = announcements()
    task = hass.async_create_task(
        announce(
            hass,
            device_id=ha_id(loaded_entry, user_identifier("u-alice")),
            caller_id="Front door",
            caller_number="100",
            repeat=2,
            **TONE,
        )
    )
    to_desk, to_mobile = await desk.request("INVITE"), await mobile.request("INVITE")
    assert to_desk.get("From").startswith('"Front door" <sip:100@')
    desk.ring(to_desk)
    await mobile.answer(to_mobile)
    bye = await mobile.request("BYE")  # after the message, twice
    assert bye.method == "BYE"
    response = await asyncio.wait_for(task, 10)
    assert response is not None
    call_id = response.pop("call_id")
    assert response == {
        "answered": True,
        "device": "Alice mobile",
        "device_id": ha_id(loaded_entry, device_identifier("d-alice-mobile")),
        "played": 2,
        "duration": 0.2,
    }
    assert await desk.request("CANCEL")
    assert announcements() == before
    record = loaded_entry.runtime_data.hub.pbx.history()[-1]
    assert (record.call_id, record.outcome.value) == (call_id, "answered")
    assert record.caller == "pbx:announce"


async def test_nobody_answering_is_the_answer(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    make_phone: Callable[..., SipPhone],
    tone_tts: ToneTts,
) -> None:
    (desk,) = await registered(make_phone, "alice-desk")
    task = hass.async_create_task(
        announce(
            hass,
            device_id=ha_id(loaded_entry, device_identifier("d-alice-desk")),
            ring_timeout=1,
            **TONE,
        )
    )
    desk.ring(await desk.request("INVITE"))
    assert await desk.request("CANCEL")
    response = await asyncio.wait_for(task, 10)
    assert response is not None
    assert (response["answered"], response["device"], response["played"]) == (False, None, 0)
