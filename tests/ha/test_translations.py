"""strings.json covers every key the code uses; translations/en.json is strings.json resolved."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from custom_components.callflip.transfer_options import TRANSFER_ERRORS
from sip_core.call_audio import PlaySide
from sip_core.config import TRANSFER_PRESETS

COMPONENT = Path(__file__).parents[2] / "custom_components" / "callflip"
STRINGS: dict[str, Any] = json.loads((COMPONENT / "strings.json").read_text())
ENGLISH: dict[str, Any] = json.loads((COMPONENT / "translations" / "en.json").read_text())
COMMON = {
    "common::config_flow::abort::single_instance_allowed": (
        "Already configured. Only a single configuration possible."
    ),
    "common::config_flow::abort::reconfigure_successful": "Re-configuration was successful",
}


def _resolve(node: Any) -> Any:
    if isinstance(node, dict):
        return {key: _resolve(value) for key, value in node.items()}
    match = re.fullmatch(r"\[%key:(.+)%\]", node)
    if match is None:
        return node
    path = match.group(1)
    if path in COMMON:
        return COMMON[path]
    parts = path.split("::")
    assert parts[:2] == ["component", "callflip"], path
    target: Any = STRINGS
    for part in parts[2:]:
        target = target[part]
    return _resolve(target)


def _source(name: str) -> str:
    return (COMPONENT / name).read_text()


def test_english_is_strings_resolved() -> None:
    assert _resolve(STRINGS) == ENGLISH


def test_every_error_and_step_is_translated() -> None:
    flow = _source("config_flow.py")
    server_part, options_part = flow.split("class CallflipOptionsFlow")
    users = _source("users.py")
    server_errors = set(re.findall(r'errors\[[A-Z_]+\] = "(\w+)"', server_part))
    server_errors |= set(re.findall(r'return "(\w+)"', server_part))
    server_errors |= set(re.findall(r'\{"base": "(\w+)"\}', server_part))
    option_errors = set(re.findall(r'errors\["\w+"\] = "(\w+)"', users))
    option_errors |= set(re.findall(r'\{"base": "(\w+)"\}', options_part))
    assert {"port_in_use", "address_not_available", "invalid_config"} <= server_errors
    assert {"weak_password", "duplicate_username", "duplicate_extension"} <= option_errors
    assert server_errors <= set(STRINGS["config"]["error"])
    assert option_errors <= set(STRINGS["options"]["error"])
    assert set(re.findall(r'step_id="(\w+)"', server_part)) <= set(STRINGS["config"]["step"])
    option_steps = set(re.findall(r'step_id="(\w+)"', options_part))
    # the flip settings' steps live in their own module
    flip_settings = _source("flip_settings.py")
    option_steps |= set(re.findall(r'step_id="(\w+)"', flip_settings))
    assert {"flip_settings", "user_flip"} <= option_steps
    assert option_steps <= set(STRINGS["options"]["step"])
    flip_errors = set(re.findall(r'\{CONF_\w+: "(\w+)"\}', flip_settings))
    assert flip_errors == {
        "invalid_flip_timeout",
        "label_tts_not_found",
        "label_tts_needed",
        "label_language_unsupported",
    }
    assert flip_errors <= set(STRINGS["options"]["error"])
    menu = set(
        re.findall(
            r'"((?:add|edit|remove)_(?:user|device|group)|flip_settings|security|transfer|trunks)"',
            options_part,
        )
    )
    assert menu == set(STRINGS["options"]["step"]["init"]["menu_options"])


def test_every_entity_and_exception_is_translated() -> None:
    for platform in ("binary_sensor", "button", "event", "select", "sensor", "switch"):
        keys = set(re.findall(r'translation_key="(\w+)"', _source(f"{platform}.py")))
        assert keys
        assert keys == set(STRINGS["entity"][platform])
    icons = json.loads((COMPONENT / "icons.json").read_text())
    assert {p: set(v) for p, v in icons["entity"].items()} == {
        p: set(v) for p, v in STRINGS["entity"].items()
    }
    raised = set(re.findall(r'translation_key="(\w+)"', _source("__init__.py")))
    for module in (
        "services.py",
        "button.py",
        "select.py",
        "switch.py",
        "play.py",
        "groups.py",
        "announce.py",
        "click_to_dial.py",
    ):
        raised |= set(re.findall(r'validation_error\(\s*"(\w+)"', _source(module)))
    # The announcement's audio names its failures' keys, which play.py raises as they are.
    announcement = _source("announcement_audio.py")
    raised |= set(re.findall(r'AnnouncementAudioError\(\s*"(\w+)"', announcement))
    raised |= set(re.findall(r': "(\w+)",', _source("services.py").split("FLIP_ERRORS")[1]))
    handoff = _source("handoff_services.py").split("HANDOFF_ERRORS")[1].split("}")[0]
    raised |= set(re.findall(r': "(\w+)",', handoff))
    raised |= set(re.findall(r'validation_error\(\s*"(\w+)"', _source("handoff_services.py")))
    # security.py names its repair issues the same way as its exceptions: leave the issues out.
    security = set(re.findall(r'translation_key="(\w+)"', _source("security.py")))
    raised |= security - set(STRINGS.get("issues", {}))
    raised |= set(re.findall(r': "(\w+)",', _source("services.py").split("TRANSFER_ERRORS")[1]))
    assert raised == set(STRINGS["exceptions"])
    assert set(TRANSFER_ERRORS) <= set(STRINGS["options"]["error"])
    assert set(STRINGS["selector"]["transfer_preset"]["options"]) == set(TRANSFER_PRESETS)
    sides = set(STRINGS["selector"]["play_side"]["options"])
    assert sides == {side.value for side in PlaySide}
    kinds = set(STRINGS["selector"]["device_type"]["options"])
    assert kinds == {"desk", "mobile", "softphone", "home", "conference"}


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    duplicated = sorted({key for key in keys if keys.count(key) > 1})
    assert not duplicated, f"keys given twice: {duplicated}"
    return dict(pairs)


def test_no_json_file_gives_a_key_twice() -> None:
    """json.loads keeps the last of two equal keys, so a section written twice (two "issues"
    objects, say) silently loses the first one's strings."""
    files = [*COMPONENT.glob("*.json"), *(COMPONENT / "translations").glob("*.json")]
    assert len(files) >= 4
    for path in files:
        json.loads(path.read_text(), object_pairs_hook=_refuse_duplicates)
    doubled = '{"issues": {"a": {}}, "issues": {"b": {}}}'
    with pytest.raises(AssertionError, match="issues"):
        json.loads(doubled, object_pairs_hook=_refuse_duplicates)
