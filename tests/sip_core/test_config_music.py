"""``rtp.music_on_hold``: a user's WAV file is checked when the configuration loads."""

from __future__ import annotations

import math
import wave
from pathlib import Path

import pytest

from sip_core.config import ConfigError, config_from_mapping, parse_config


def write_tone(path: Path, frequency: float, *, rate: int = 8000, seconds: float = 1.0) -> Path:
    """A mono 16-bit PCM WAV file of one sine tone."""
    count = int(rate * seconds)
    samples = b"".join(
        int(12000 * math.sin(2 * math.pi * frequency * n / rate)).to_bytes(2, "little", signed=True)
        for n in range(count)
    )
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(samples)
    return path


def test_unset_means_the_bundled_loop() -> None:
    assert config_from_mapping({}).rtp.music_on_hold is None
    assert "music_on_hold" not in config_from_mapping({}).to_mapping()["rtp"]


def test_a_playable_file_is_kept_and_round_trips(tmp_path: Path) -> None:
    music = str(write_tone(tmp_path / "hold.wav", 700, rate=44100, seconds=0.5))
    config = config_from_mapping({"rtp": {"ports": "42000-42099", "music_on_hold": music}})
    assert config.rtp.music_on_hold == music
    assert (config.rtp.port_min, config.rtp.port_max) == (42000, 42099)
    assert config_from_mapping(config.to_mapping()) == config
    only_music = config_from_mapping({"rtp": {"music_on_hold": music}})
    assert only_music.rtp.music_on_hold == music
    assert only_music.rtp.port_min == 40000


def test_a_missing_file_is_refused_with_the_key_and_line(tmp_path: Path) -> None:
    missing = tmp_path / "nothing.wav"
    with pytest.raises(ConfigError) as caught:
        parse_config(f"rtp:\n  ports: 40000-40999\n  music_on_hold: {missing}\n", "t.yaml")
    assert str(caught.value) == f"t.yaml: rtp.music_on_hold: {missing}: file not found (line 3)"


def test_a_file_that_is_not_wav_is_refused(tmp_path: Path) -> None:
    song = tmp_path / "song.mp3"
    song.write_bytes(b"ID3\x03\x00\x00\x00" + bytes(200))
    with pytest.raises(ConfigError) as caught:
        config_from_mapping({"rtp": {"music_on_hold": str(song)}})
    message = str(caught.value)
    assert message.startswith(f"rtp.music_on_hold: {song}: ")
    assert caught.value.key_path == ("rtp", "music_on_hold")


def test_an_unsupported_wav_is_refused_with_the_readers_reason(tmp_path: Path) -> None:
    floats = tmp_path / "float.wav"
    # A WAVE_FORMAT_IEEE_FLOAT header (format 3) with a little data.
    fmt = (3).to_bytes(2, "little") + (1).to_bytes(2, "little") + (8000).to_bytes(4, "little")
    fmt += (32000).to_bytes(4, "little") + (4).to_bytes(2, "little") + (32).to_bytes(2, "little")
    body = b"WAVE" + b"fmt " + len(fmt).to_bytes(4, "little") + fmt + b"data"
    body += (400).to_bytes(4, "little") + bytes(400)
    floats.write_bytes(b"RIFF" + len(body).to_bytes(4, "little") + body)
    with pytest.raises(ConfigError, match=r"^rtp\.music_on_hold: .*float\.wav: .*16-bit PCM"):
        config_from_mapping({"rtp": {"music_on_hold": str(floats)}})


def test_a_directory_or_an_empty_value_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^rtp\.music_on_hold: .*is a directory"):
        config_from_mapping({"rtp": {"music_on_hold": str(tmp_path)}})
    with pytest.raises(ConfigError, match=r"^rtp\.music_on_hold: must be the path of a WAV file"):
        config_from_mapping({"rtp": {"music_on_hold": 5}})
    with pytest.raises(ConfigError, match=r"^rtp\.music_on_hold: must be the path of a WAV file"):
        config_from_mapping({"rtp": {"music_on_hold": "  "}})
