"""Device labels spoken by a TTS engine for the flip menu: the option, the rendering, the fallback.

The test engine (tone_tts) speaks "tone <Hz> for <s>" as a tone and fails on any other text, so
a device labelled "tone 700 for 0.5" gets a recording of 700 Hz and one labelled "Kitchen" a
failed rendering (the menu keeps its type prompt). The PBX is asked for what its flip menu would
use (`Flip.label_prompts`: device -> WAV file).
"""

from __future__ import annotations

import copy
import math
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from freezegun.api import FrozenDateTimeFactory
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_fire_time_changed
from pytest_homeassistant_custom_component.components.diagnostics import (
    get_diagnostics_for_config_entry,
)
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from custom_components.callflip.const import DOMAIN
from custom_components.callflip.label_speech import (
    RETRY_INTERVAL,
    LabelKey,
    LabelSpeech,
    LabelState,
)

from .callflip_testing import DOMAIN_NAME, household, server_data
from .tone_tts import TTS_ENTITY_ID, ToneTts, async_setup_tone_tts, tone_wav

DESK, MOBILE, SOFT = "alice-desk", "alice-mobile", "bob-soft"


@pytest.fixture
async def tone_tts(hass: HomeAssistant) -> ToneTts:
    return await async_setup_tone_tts(hass)


def _labelled(speech: dict[str, str] | None) -> list[dict[str, Any]]:
    users = household()
    alice = users[0]
    alice["devices"][0]["label"] = "tone 700 for 0.5"
    alice["devices"][1]["label"] = "Kitchen"  # the test engine fails on it
    if speech is not None:
        alice["label_speech"] = speech
    return users


@pytest.fixture
async def spoken_entry(
    hass: HomeAssistant, tone_tts: ToneTts, sip_port: int
) -> AsyncIterator[MockConfigEntry]:
    """Alice's labels spoken by the tone engine in English; Bob has no engine."""
    entry = MockConfigEntry(
        domain=DOMAIN,
        title=f"callflip {DOMAIN_NAME}",
        data=server_data(sip_port),
        options={"users": _labelled({"engine": TTS_ENTITY_ID, "language": "en"})},
        entry_id="01JCALLFLIPTESTENTRY0000001",
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    await _labels(entry).async_wait()
    yield entry
    if entry.state is ConfigEntryState.LOADED:
        await hass.config_entries.async_unload(entry.entry_id)
        await hass.async_block_till_done()


def _labels(entry: MockConfigEntry) -> LabelSpeech:
    labels = entry.runtime_data.labels
    assert labels is not None
    return labels


def _given(entry: MockConfigEntry) -> dict[str, str]:
    prompts: dict[str, str] = entry.runtime_data.hub.pbx.label_prompts
    return prompts


def _tone_of(path: str) -> tuple[int, float, float]:
    """Rate, seconds and the strongest of 700/900 Hz (by correlation) of a WAV file."""
    with wave.open(path, "rb") as reader:
        rate, frames = reader.getframerate(), reader.getnframes()
        data = reader.readframes(frames)
    samples = [
        int.from_bytes(data[i : i + 2], "little", signed=True) for i in range(0, len(data), 2)
    ]

    def power(hz: float) -> float:
        re = sum(s * math.cos(2 * math.pi * hz * n / rate) for n, s in enumerate(samples))
        im = sum(s * math.sin(2 * math.pi * hz * n / rate) for n, s in enumerate(samples))
        return re * re + im * im

    return rate, frames / rate, max((700.0, 900.0), key=power)


async def _set_users(hass: HomeAssistant, entry: MockConfigEntry, users: list[Any]) -> None:
    hass.config_entries.async_update_entry(entry, options={**entry.options, "users": users})
    await hass.async_block_till_done()
    await _labels(entry).async_wait()


async def test_labels_are_rendered_ahead_and_handed_to_the_menu(
    hass: HomeAssistant,
    spoken_entry: MockConfigEntry,
    tone_tts: ToneTts,
    hass_client: ClientSessionGenerator,
) -> None:
    labels = _labels(spoken_entry)
    given = _given(spoken_entry)
    assert set(given) == {DESK}  # the mobile's rendering failed, Bob has no engine
    assert labels.states == {DESK: LabelState.READY, MOBILE: LabelState.FAILED}
    assert MOBILE in labels.errors
    # the WAV format asked of the engine, in the configured language
    spoken = {request["message"]: request for request in tone_tts.requests}
    assert set(spoken) == {"tone 700 for 0.5", "Kitchen"}
    assert spoken["tone 700 for 0.5"]["language"] == "en"
    assert spoken["tone 700 for 0.5"]["preferred_format"] == "wav"
    assert spoken["tone 700 for 0.5"]["preferred_sample_rate"] == 16000
    rate, seconds, tone = _tone_of(given[DESK])
    assert (rate, tone) == (16000, 700.0)
    assert seconds == pytest.approx(0.5, abs=0.01)
    assert Path(given[DESK]).name == LabelKey("tone 700 for 0.5", TTS_ENTITY_ID, "en").file_name
    found = await get_diagnostics_for_config_entry(hass, hass_client, spoken_entry)
    assert found["label_speech"][DESK] == {"state": "ready"}
    assert found["label_speech"][MOBILE]["state"] == "failed"
    assert "Kitchen" in found["label_speech"][MOBILE]["error"]


async def test_a_label_change_is_rendered_again_and_the_old_file_goes(
    hass: HomeAssistant, spoken_entry: MockConfigEntry, tone_tts: ToneTts
) -> None:
    old = _given(spoken_entry)[DESK]
    users = copy.deepcopy(spoken_entry.options["users"])
    users[0]["devices"][0]["label"] = "tone 900 for 0.4"
    users[0]["devices"][1]["label"] = "tone 700 for 0.3"  # now the engine can speak it
    await _set_users(hass, spoken_entry, users)
    given = _given(spoken_entry)
    assert set(given) == {DESK, MOBILE}
    assert _labels(spoken_entry).errors == {}
    assert given[DESK] != old
    assert not await hass.async_add_executor_job(Path(old).exists)
    assert _tone_of(given[DESK])[1:] == (pytest.approx(0.4, abs=0.01), 900.0)
    assert _tone_of(given[MOBILE])[1:] == (pytest.approx(0.3, abs=0.01), 700.0)


async def test_recordings_are_kept_across_a_reload(
    hass: HomeAssistant, spoken_entry: MockConfigEntry, tone_tts: ToneTts
) -> None:
    asked = len(tone_tts.requests)
    assert await hass.config_entries.async_reload(spoken_entry.entry_id)
    await hass.async_block_till_done()
    await _labels(spoken_entry).async_wait()
    assert set(_given(spoken_entry)) == {DESK}
    # the desk's recording came from the cache; only the failed one was asked for again
    again = [request["message"] for request in tone_tts.requests[asked:]]
    assert again == ["Kitchen"]


async def test_an_engine_that_fails_leaves_the_type_prompts(
    hass: HomeAssistant, spoken_entry: MockConfigEntry, tone_tts: ToneTts
) -> None:
    users = copy.deepcopy(spoken_entry.options["users"])
    users[0]["label_speech"] = {"engine": "tts.gone"}  # no such engine (any more)
    await _set_users(hass, spoken_entry, users)
    assert _given(spoken_entry) == {}
    labels = _labels(spoken_entry)
    assert labels.states == {DESK: LabelState.FAILED, MOBILE: LabelState.FAILED}
    # and no engine at all: the type prompts, nothing pending
    users = copy.deepcopy(users)
    del users[0]["label_speech"]
    await _set_users(hass, spoken_entry, users)
    assert _given(spoken_entry) == {}
    assert labels.states == {}


async def test_removing_the_entry_deletes_its_recordings(
    hass: HomeAssistant, spoken_entry: MockConfigEntry
) -> None:
    folder = _labels(spoken_entry).folder
    assert await hass.async_add_executor_job(lambda: any(folder.iterdir()))
    assert await hass.config_entries.async_remove(spoken_entry.entry_id)
    await hass.async_block_till_done()
    assert not await hass.async_add_executor_job(folder.exists)


async def test_flip_settings_choose_the_engine_and_language(
    hass: HomeAssistant, tone_tts: ToneTts, loaded_entry: MockConfigEntry
) -> None:
    async def form() -> dict[str, Any]:
        result = await hass.config_entries.options.async_init(loaded_entry.entry_id)
        result = await hass.config_entries.options.async_configure(
            result["flow_id"], {"next_step_id": "flip_settings"}
        )
        return dict(
            await hass.config_entries.options.async_configure(
                result["flow_id"], {"user": "u-alice"}
            )
        )

    result = await form()
    assert {"label_tts", "label_language"} <= {str(key) for key in result["data_schema"].schema}
    settings = {"auto_hangup": True, "announcement": False, "simultaneous_ring": False}
    flow = result["flow_id"]
    for fields, errors in (
        ({"label_tts": "tts.gone"}, {"label_tts": "label_tts_not_found"}),
        (
            {"label_tts": TTS_ENTITY_ID, "label_language": "fr"},
            {"label_language": "label_language_unsupported"},
        ),
        ({"label_language": "de"}, {"label_tts": "label_tts_needed"}),
    ):
        result = await hass.config_entries.options.async_configure(flow, {**settings, **fields})
        assert result["errors"] == errors
    result = await hass.config_entries.options.async_configure(
        flow, {**settings, "label_tts": TTS_ENTITY_ID, "label_language": "de"}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    await _labels(loaded_entry).async_wait()
    alice = next(u for u in loaded_entry.options["users"] if u["id"] == "u-alice")
    assert alice["label_speech"] == {"engine": TTS_ENTITY_ID, "language": "de"}
    assert "label_speech" not in alice["flip_options"]
    # the household's labels are no tones: asked for in German, failed, type prompts kept
    assert {r["message"]: r["language"] for r in tone_tts.requests} == {
        "Alice desk phone": "de",
        "Alice mobile": "de",
    }
    assert _given(loaded_entry) == {}
    # the form suggests what is stored; clearing the engine removes it
    result = await form()
    suggested = {
        str(key): key.description["suggested_value"]
        for key in result["data_schema"].schema
        if key.description and "suggested_value" in key.description
    }
    assert suggested["label_tts"] == TTS_ENTITY_ID
    assert suggested["label_language"] == "de"
    result = await hass.config_entries.options.async_configure(result["flow_id"], settings)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    alice = next(u for u in loaded_entry.options["users"] if u["id"] == "u-alice")
    assert "label_speech" not in alice


def test_the_tone_reader_tells_the_tones_apart(tmp_path: Path) -> None:
    """The test's tone reader tells 700 from 900 Hz (so the assertions above can fail)."""
    for hz in (700, 900):
        path = tmp_path / f"{hz}.wav"
        path.write_bytes(tone_wav(hz, 0.2, 16000))
        assert _tone_of(str(path)) == (16000, pytest.approx(0.2), float(hz))


async def test_failed_labels_are_tried_again_later(
    hass: HomeAssistant, sip_port: int, freezer: FrozenDateTimeFactory
) -> None:
    """The engine is set up after callflip: the first pass fails, a later one finds it."""
    entry = MockConfigEntry(
        domain=DOMAIN,
        title=f"callflip {DOMAIN_NAME}",
        data=server_data(sip_port),
        options={"users": _labelled({"engine": TTS_ENTITY_ID})},
        entry_id="01JCALLFLIPTESTENTRY0000001",
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    await _labels(entry).async_wait()
    assert _labels(entry).states[DESK] is LabelState.FAILED
    assert _given(entry) == {}
    tone_tts = await async_setup_tone_tts(hass)
    freezer.tick(RETRY_INTERVAL)
    async_fire_time_changed(hass)
    await hass.async_block_till_done()
    await _labels(entry).async_wait()
    assert _labels(entry).states[DESK] is LabelState.READY
    assert set(_given(entry)) == {DESK}
    assert [r["message"] for r in tone_tts.requests] == ["tone 700 for 0.5", "Kitchen"]
    assert await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()
