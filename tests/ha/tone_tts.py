"""A text-to-speech engine for the tests that speaks tones: "tone 1700" is 1.5 s of 1700 Hz,
"tone 1700 for 0.5" half a second; "fail" fails. It honours the requested WAV format (rate,
mono, 16-bit), as an engine that supports the preferred format options does, and records the
options it was asked for."""

from __future__ import annotations

import io
import math
import wave
from typing import Any

from homeassistant.components import tts
from homeassistant.components.tts.const import DATA_COMPONENT
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_component import EntityComponent
from homeassistant.setup import async_setup_component

TTS_ENTITY_ID = "tts.tone"
AMPLITUDE = 0.25


def tone_wav(frequency: float, seconds: float, rate: int) -> bytes:
    count = int(seconds * rate)
    samples = bytearray()
    for n in range(count):
        value = int(AMPLITUDE * 32767 * math.sin(2 * math.pi * frequency * n / rate))
        samples += value.to_bytes(2, "little", signed=True)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(bytes(samples))
    return buffer.getvalue()


class ToneTts(tts.TextToSpeechEntity):
    """Speaks "tone <Hz> [for <seconds>]" as a sine tone."""

    _attr_name = "Tone"
    _attr_unique_id = "tone-tts"

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    @property
    def default_language(self) -> str:
        return "en"

    @property
    def supported_languages(self) -> list[str]:
        return ["en", "de"]

    @property
    def supported_options(self) -> list[str]:
        return [
            tts.ATTR_PREFERRED_FORMAT,
            tts.ATTR_PREFERRED_SAMPLE_RATE,
            tts.ATTR_PREFERRED_SAMPLE_CHANNELS,
            tts.ATTR_PREFERRED_SAMPLE_BYTES,
            "voice",
        ]

    def get_tts_audio(
        self, message: str, language: str, options: dict[str, Any]
    ) -> tts.TtsAudioType:
        self.requests.append({"message": message, "language": language, **options})
        words = message.split()
        if len(words) < 2 or words[0] != "tone":
            return None, None  # the engine failed
        seconds = float(words[3]) if len(words) >= 4 else 1.5
        rate = int(options.get(tts.ATTR_PREFERRED_SAMPLE_RATE, 22050))
        return "wav", tone_wav(float(words[1]), seconds, rate)


async def async_setup_tone_tts(hass: HomeAssistant) -> ToneTts:
    """Set up the tts component and add the tone engine to it as an entity."""
    entity = ToneTts()
    assert await async_setup_component(hass, tts.DOMAIN, {})
    component: EntityComponent[tts.TextToSpeechEntity] = hass.data[DATA_COMPONENT]
    await component.async_add_entities([entity])
    await hass.async_block_till_done()
    assert hass.states.get(TTS_ENTITY_ID) is not None
    return entity
