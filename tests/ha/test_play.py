"""The ``callflip.play`` action on a real hass: every refusal, translated, and an announcement
spoken by a TTS entity into a call of fake SIP phones (the response, the file cleaned up)."""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import ServiceValidationError
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.callflip.const import DOMAIN
from custom_components.callflip.hub import device_identifier, hub_identifier, user_identifier

from . import sip_client
from .sip_client import SipPhone
from .test_calls import answered_call, registered
from .tone_tts import TTS_ENTITY_ID, ToneTts, async_setup_tone_tts, tone_wav


def ha_id(entry: MockConfigEntry, identifier: tuple[str, str]) -> str:
    found = entry.runtime_data.hub.ha_device_id(identifier)
    assert found is not None
    return found


async def play(hass: HomeAssistant, **data: Any) -> dict[str, Any] | None:
    return await hass.services.async_call(DOMAIN, "play", data, blocking=True, return_response=True)


async def refused(hass: HomeAssistant, key: str, **data: Any) -> ServiceValidationError:
    with pytest.raises(ServiceValidationError) as caught:
        await play(hass, **data)
    assert caught.value.translation_domain == DOMAIN
    assert caught.value.translation_key == key, caught.value
    return caught.value


@pytest.fixture
async def tone_tts(hass: HomeAssistant) -> ToneTts:
    return await async_setup_tone_tts(hass)


@pytest.fixture
def media_dir(hass: HomeAssistant, tmp_path: Path) -> Path:
    folder = tmp_path / "media"
    folder.mkdir()
    hass.config.media_dirs = {"local": str(folder)}
    return folder


def announcements() -> set[str]:
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "callflip-announcement-*.wav")))


async def test_who_and_what_must_be_given(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, tone_tts: ToneTts
) -> None:
    alice = ha_id(loaded_entry, user_identifier("u-alice"))
    hub = ha_id(loaded_entry, hub_identifier(loaded_entry.entry_id))
    tts = {"tts_entity_id": TTS_ENTITY_ID, "message": "tone 1700"}
    await refused(hass, "not_a_phone", device_id=hub, **tts)
    await refused(hass, "not_a_phone", device_id="no-such-device", **tts)
    await refused(hass, "one_call_only", device_id=[alice, hub], **tts)
    # Alice is in no call: said before any audio is made.
    error = await refused(hass, "no_call", device_id=alice, **tts)
    assert error.translation_placeholders == {"name": "Alice"}
    assert tone_tts.requests == []


async def test_an_unanswered_call_is_refused(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    make_phone: Callable[..., SipPhone],
    tone_tts: ToneTts,
) -> None:
    desk, bob = await registered(make_phone, "alice-desk", "bob-soft")
    await bob.dial("alice-desk")
    await desk.request("INVITE")
    await hass.async_block_till_done()
    desk_id = ha_id(loaded_entry, device_identifier("d-alice-desk"))
    error = await refused(
        hass, "call_not_answered", device_id=desk_id, tts_entity_id=TTS_ENTITY_ID, message="x"
    )
    assert error.translation_placeholders == {"name": "Alice desk phone"}


async def test_audio_must_be_a_message_with_its_engine_or_a_file(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    make_phone: Callable[..., SipPhone],
    tone_tts: ToneTts,
) -> None:
    desk, bob = await registered(make_phone, "alice-desk", "bob-soft")
    await answered_call(hass, bob, desk)
    alice = ha_id(loaded_entry, user_identifier("u-alice"))
    await refused(hass, "play_needs_audio", device_id=alice)
    await refused(hass, "play_needs_audio", device_id=alice, message="tone 1700")
    await refused(
        hass,
        "play_needs_audio",
        device_id=alice,
        tts_entity_id=TTS_ENTITY_ID,
        message="tone 1700",
        media_content_id="media-source://media_source/local/a.wav",
    )


async def test_text_to_speech_failures_are_refused(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    make_phone: Callable[..., SipPhone],
    tone_tts: ToneTts,
) -> None:
    desk, bob = await registered(make_phone, "alice-desk", "bob-soft")
    await answered_call(hass, bob, desk)
    alice = ha_id(loaded_entry, user_identifier("u-alice"))
    before = announcements()
    await refused(hass, "tts_failed", device_id=alice, tts_entity_id=TTS_ENTITY_ID, message="no")
    error = await refused(
        hass, "tts_failed", device_id=alice, tts_entity_id="tts.nobody", message="tone 1700"
    )
    assert error.translation_placeholders is not None
    assert "provider" in error.translation_placeholders["details"]
    await refused(
        hass,
        "tts_failed",
        device_id=alice,
        tts_entity_id=TTS_ENTITY_ID,
        message="tone 1700",
        language="xx",
    )
    assert announcements() == before  # nothing was written
    assert len(loaded_entry.runtime_data.hub.pbx.calls()) == 1  # the call goes on


async def test_a_leg_without_a_codec_we_generate_is_refused(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    make_phone: Callable[..., SipPhone],
    tone_tts: ToneTts,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Bob's phone offers Opus only (and the desk answers with it): no side can hear a playback,
    and the refusal names the phone and what it uses."""

    def opus(port: int, *, direction: str = "sendrecv") -> bytes:
        return (
            f"v=0\r\no=- {port} 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 96\r\na=rtpmap:96 opus/48000/2\r\na={direction}\r\n"
        ).encode()

    monkeypatch.setattr(sip_client, "sdp", opus)
    desk, bob = await registered(make_phone, "alice-desk", "bob-soft")
    outgoing = await bob.dial("alice-desk")
    invite = await desk.request("INVITE")
    await desk.answer(invite, body=opus(30100))
    await outgoing.answered()
    await hass.async_block_till_done()
    alice = ha_id(loaded_entry, user_identifier("u-alice"))
    error = await refused(
        hass,
        "no_generated_audio",
        device_id=alice,
        side="other",
        tts_entity_id=TTS_ENTITY_ID,
        message="tone 1700",
    )
    assert error.translation_placeholders == {"device": "Bob softphone", "codecs": "opus"}
    assert tone_tts.requests == []


async def test_unplayable_and_missing_files_are_refused(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    make_phone: Callable[..., SipPhone],
    media_dir: Path,
) -> None:
    assert await async_setup_component(hass, "media_source", {})
    desk, bob = await registered(make_phone, "alice-desk", "bob-soft")
    await answered_call(hass, bob, desk)
    alice = ha_id(loaded_entry, user_identifier("u-alice"))
    (media_dir / "notes.mp3").write_bytes(b"this is no audio at all")
    base = "media-source://media_source/local/"
    await refused(hass, "media_not_found", device_id=alice, media_content_id=f"{base}gone.wav")
    await refused(hass, "media_not_found", device_id=alice, media_content_id="/local/a.wav")
    # Not WAV, and no ffmpeg set up to convert it.
    error = await refused(
        hass, "unsupported_audio", device_id=alice, media_content_id=f"{base}notes.mp3"
    )
    assert "ffmpeg" in str(error.translation_placeholders)
    # With ffmpeg, it tries, and says what it found.
    assert await async_setup_component(hass, "ffmpeg", {})
    await refused(hass, "unsupported_audio", device_id=alice, media_content_id=f"{base}notes.mp3")
    (media_dir / "long.wav").write_bytes(tone_wav(440.0, 121.0, 8000))
    error = await refused(
        hass, "unsupported_audio", device_id=alice, media_content_id=f"{base}long.wav"
    )
    assert "121 s" in str(error.translation_placeholders)


async def test_a_message_is_played_into_the_call_and_the_file_removed(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    make_phone: Callable[..., SipPhone],
    tone_tts: ToneTts,
) -> None:
    desk, bob = await registered(make_phone, "alice-desk", "bob-soft")
    await answered_call(hass, bob, desk)
    before = announcements()
    response = await play(
        hass,
        device_id=ha_id(loaded_entry, user_identifier("u-alice")),
        tts_entity_id=TTS_ENTITY_ID,
        message="tone 1700 for 0.4",
        options={"voice": "low"},
    )
    (call,) = loaded_entry.runtime_data.hub.pbx.calls()
    assert response == {"call_id": call.id, "devices": ["Alice desk phone"], "duration": 0.4}
    (request,) = tone_tts.requests
    assert request["voice"] == "low"
    assert request["preferred_format"] == "wav"
    assert request["preferred_sample_rate"] == 16000
    assert request["preferred_sample_channels"] == 1
    assert request["preferred_sample_bytes"] == 2
    assert len(announcements() - before) == 1
    for _ in range(100):  # played (0.4 s), then removed
        if not announcements() - before:
            break
        await asyncio.sleep(0.1)
    assert not announcements() - before
    assert loaded_entry.runtime_data.hub.pbx.calls() == [call]  # not ended


async def test_a_wav_file_from_media_plays_to_both_sides(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    make_phone: Callable[..., SipPhone],
    media_dir: Path,
) -> None:
    assert await async_setup_component(hass, "media_source", {})
    (media_dir / "bell.wav").write_bytes(tone_wav(880.0, 0.3, 8000))
    desk, bob = await registered(make_phone, "alice-desk", "bob-soft")
    await answered_call(hass, bob, desk)
    response = await play(
        hass,
        device_id=ha_id(loaded_entry, device_identifier("d-bob-soft")),
        side="both",
        media_content_id="media-source://media_source/local/bell.wav",
    )
    assert response is not None
    assert response["devices"] == ["Bob softphone", "Alice desk phone"]
    assert response["duration"] == 0.3


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg binary")
async def test_a_compressed_file_is_converted_with_ffmpeg(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    make_phone: Callable[..., SipPhone],
    media_dir: Path,
) -> None:
    """A FLAC file from local media is converted by the ffmpeg integration's binary to the WAV
    the PBX plays; the response gives its length."""
    assert await async_setup_component(hass, "media_source", {})
    assert await async_setup_component(hass, "ffmpeg", {})
    (media_dir / "bell.wav").write_bytes(tone_wav(880.0, 0.6, 44100))
    process = await asyncio.create_subprocess_exec(
        "ffmpeg", "-loglevel", "error", "-i", str(media_dir / "bell.wav"),
        str(media_dir / "bell.flac"),
    )  # fmt: skip
    assert await process.wait() == 0
    desk, bob = await registered(make_phone, "alice-desk", "bob-soft")
    await answered_call(hass, bob, desk)
    response = await play(
        hass,
        device_id=ha_id(loaded_entry, user_identifier("u-alice")),
        side="other",
        media_content_id="media-source://media_source/local/bell.flac",
    )
    assert response is not None
    assert response["devices"] == ["Bob softphone"]
    assert response["duration"] == pytest.approx(0.6, abs=0.03)
