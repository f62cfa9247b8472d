"""The audio of an announcement: spoken by a TTS entity, or a media-source file, as WAV bytes.

Text to speech goes through Home Assistant's TTS with a requested format, as its own ``voip``
satellite asks for it: WAV, 16 kHz, mono, 16-bit. 16 kHz serves G.722 legs as they are and G.711
legs after the media engine's conversion (sip_core converts and encodes, not Home Assistant).
A media-source file is used as it is when it is a PCM WAV; any other format is converted to the
same WAV by Home Assistant's ``ffmpeg`` integration when it is set up, and refused otherwise.

Every failure is an `AnnouncementAudioError` whose ``key`` names a translated message.
"""

from __future__ import annotations

import asyncio
import io
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers.aiohttp_client import async_get_clientsession

from sip_core.audio.wav import MAX_SECONDS

SAMPLE_RATE = 16000
"""The rate asked of TTS engines and ffmpeg (G.722's; G.711 legs get it converted)."""

TTS_FORMAT: dict[str, Any] = {
    "preferred_format": "wav",  # tts.ATTR_PREFERRED_FORMAT (tts is imported only when used)
    "preferred_sample_rate": SAMPLE_RATE,
    "preferred_sample_channels": 1,
    "preferred_sample_bytes": 2,
}

MAX_BYTES = 32 * 1024 * 1024
"""The largest file read (two minutes of 48 kHz stereo 32-bit PCM is 46 MB: far beyond speech)."""

FFMPEG_TIMEOUT = 60.0


class AnnouncementAudioError(Exception):
    """The audio cannot be had; ``key`` is the translation key, ``details`` says why."""

    def __init__(self, key: str, details: str) -> None:
        super().__init__(details)
        self.key = key
        self.details = details


@dataclass(frozen=True, slots=True)
class WavInfo:
    """What a WAV file holds, read from its header."""

    rate: int
    channels: int
    seconds: float


def wav_info(data: bytes) -> WavInfo | None:
    """The header of a PCM WAV, or None when ``data`` is not one (another format)."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    try:
        with wave.open(io.BytesIO(data), "rb") as reader:
            rate, channels = reader.getframerate(), reader.getnchannels()
            frames = reader.getnframes()
    except (wave.Error, EOFError):
        return None  # compressed or float WAV: ffmpeg may read it
    return WavInfo(rate, channels, frames / rate if rate else 0.0)


async def async_tts_audio(
    hass: HomeAssistant,
    entity_id: str,
    message: str,
    language: str | None,
    options: dict[str, Any] | None,
) -> bytes:
    """The message spoken by the TTS entity, as WAV bytes in the requested format."""
    if "tts" not in hass.config.components:
        raise AnnouncementAudioError("tts_failed", "text to speech is not set up")
    from homeassistant.components import tts  # noqa: PLC0415  (loaded: set up above)

    try:
        media_id = tts.generate_media_source_id(
            hass,
            message,
            engine=entity_id,
            language=language,
            options={**(options or {}), **TTS_FORMAT},
        )
        extension, data = await tts.async_get_media_source_audio(hass, media_id)
    except (HomeAssistantError, ValueError, KeyError) as err:
        raise AnnouncementAudioError("tts_failed", str(err) or type(err).__name__) from err
    if extension != "wav" or data[:4] != b"RIFF" or data.find(b"data", 12) < 0:
        raise AnnouncementAudioError("tts_failed", f"the engine gave {extension} audio, not WAV")
    # Newer Home Assistant converts TTS audio with ffmpeg, whose streamed WAV carries no sizes.
    data = _fix_wav_length(data)
    if wav_info(data) is None:
        raise AnnouncementAudioError("tts_failed", f"the engine gave {extension} audio, not WAV")
    return data


async def async_media_audio(hass: HomeAssistant, media_content_id: str) -> bytes:
    """A media-source item's audio as WAV bytes (converted by ffmpeg when it is another format)."""
    if "media_source" not in hass.config.components:
        raise AnnouncementAudioError("media_not_found", "media source is not set up")
    from homeassistant.components import media_source, tts  # noqa: PLC0415

    if not media_source.is_media_source_id(media_content_id):
        raise AnnouncementAudioError("media_not_found", "not a media-source ID")
    if media_content_id.startswith("media-source://tts/"):
        try:
            _extension, data = await tts.async_get_media_source_audio(hass, media_content_id)
        except (HomeAssistantError, ValueError, KeyError) as err:
            raise AnnouncementAudioError("tts_failed", str(err)) from err
    else:
        data = await _async_read_media(hass, media_content_id)
    if wav_info(data) is not None:
        return data
    return await async_convert(hass, data)


async def _async_read_media(hass: HomeAssistant, media_content_id: str) -> bytes:
    from homeassistant.components import media_source  # noqa: PLC0415

    try:
        resolved = await media_source.async_resolve_media(hass, media_content_id, None)
    except (media_source.Unresolvable, HomeAssistantError) as err:
        raise AnnouncementAudioError("media_not_found", str(err)) from err
    # Newer Home Assistant says which file a local item is; 2025.4 is asked through its source.
    local: Path | None = getattr(resolved, "path", None) or _local_path(hass, media_content_id)
    if local is not None:
        return await hass.async_add_executor_job(_read_file, local)
    if resolved.url.startswith(("http://", "https://")):
        return await _async_download(hass, resolved.url)
    raise AnnouncementAudioError("media_not_found", f"{resolved.url} cannot be fetched")


def _local_path(hass: HomeAssistant, media_content_id: str) -> Path | None:
    """The file behind a local media item (Home Assistant's own media folders)."""
    from homeassistant.components import media_source  # noqa: PLC0415

    item = media_source.MediaSourceItem.from_uri(hass, media_content_id, None)
    sources: dict[str, Any] = hass.data.get(media_source.DOMAIN, {})
    local = sources.get(media_source.DOMAIN)
    if item.domain != media_source.DOMAIN or local is None:
        return None
    source_dir_id, location = local.async_parse_identifier(item)
    path: Path = local.async_full_path(source_dir_id, location)
    return path


def _read_file(path: Path) -> bytes:
    try:
        with path.open("rb") as file:
            data = file.read(MAX_BYTES + 1)
    except OSError as err:
        raise AnnouncementAudioError("media_not_found", f"{path.name}: {err.strerror}") from err
    if len(data) > MAX_BYTES:
        raise AnnouncementAudioError("unsupported_audio", f"{path.name} is too large")
    return data


async def _async_download(hass: HomeAssistant, url: str) -> bytes:
    session = async_get_clientsession(hass)
    try:
        async with asyncio.timeout(30), session.get(url) as response:
            response.raise_for_status()
            data = await response.content.read(MAX_BYTES + 1)
    except (TimeoutError, aiohttp.ClientError) as err:
        raise AnnouncementAudioError("media_not_found", f"{url}: {err}") from err
    if len(data) > MAX_BYTES:
        raise AnnouncementAudioError("unsupported_audio", f"{url} is too large")
    return data


async def async_convert(hass: HomeAssistant, data: bytes) -> bytes:
    """Another format to 16 kHz mono 16-bit WAV with Home Assistant's ffmpeg, if set up."""
    if "ffmpeg" not in hass.config.components:
        raise AnnouncementAudioError(
            "unsupported_audio", "it is not a PCM WAV file, and ffmpeg is not set up to convert it"
        )
    from homeassistant.components.ffmpeg import get_ffmpeg_manager  # noqa: PLC0415

    binary = get_ffmpeg_manager(hass).binary
    # WAV to a pipe has no length in its header (the data size is unknown when it starts);
    # Python's wave reader takes that, and the frame count comes from the data read.
    command = [
        binary, "-hide_banner", "-loglevel", "error", "-i", "pipe:0", "-t", str(MAX_SECONDS),
        "-ac", "1", "-ar", str(SAMPLE_RATE), "-sample_fmt", "s16", "-f", "wav", "pipe:1",
    ]  # fmt: skip
    try:
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as err:
        raise AnnouncementAudioError("unsupported_audio", f"ffmpeg: {err}") from err
    try:
        async with asyncio.timeout(FFMPEG_TIMEOUT):
            out, err_text = await process.communicate(data)
    except TimeoutError as err:
        process.kill()
        await process.wait()
        raise AnnouncementAudioError("unsupported_audio", "ffmpeg took too long") from err
    if process.returncode != 0 or not out:
        reason = err_text.decode(errors="replace").strip().splitlines()
        raise AnnouncementAudioError(
            "unsupported_audio", reason[-1] if reason else "ffmpeg could not read it"
        )
    return _fix_wav_length(out)


def _fix_wav_length(data: bytes) -> bytes:
    """Rewrite a streamed WAV's header with the real sizes (ffmpeg writes 0 or 0xFFFFFFFF)."""
    index = data.find(b"data", 12)
    if data[:4] != b"RIFF" or index < 0:
        raise AnnouncementAudioError("unsupported_audio", "ffmpeg gave no WAV")
    body = index + 8
    size = len(data) - body
    size -= size % 2
    fixed = bytearray(data[: body + size])
    fixed[4:8] = (len(fixed) - 8).to_bytes(4, "little")
    fixed[index + 4 : body] = size.to_bytes(4, "little")
    return bytes(fixed)
