"""The media engine inside Home Assistant: the PBX the integration starts runs its calls' media in
a child process, and unloading the entry ends that process and frees every port it held."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

from homeassistant.core import HomeAssistant
from pytest_homeassistant_custom_component.common import MockConfigEntry

from .sip_client import SipPhone
from .test_calls import answered_call, registered


def engine_children() -> set[int]:
    """Media engine processes started by this (test) process and not yet reaped."""
    found: set[int] = set()
    for children in Path("/proc/self/task").glob("*/children"):
        for pid in children.read_text().split():
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"sip_core.media.engine" in command:
                found.add(int(pid))
    return found


def bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


async def test_unloading_the_entry_stops_the_media_engine_and_frees_its_ports(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    make_phone: Callable[..., SipPhone],
    socket_enabled: None,
) -> None:
    desk, bob = await registered(make_phone, "alice-desk", "bob-soft")
    await answered_call(hass, bob, desk)
    (call,) = loaded_entry.runtime_data.hub.pbx.calls()
    assert call.media is not None
    ports = [leg.local_rtp.port + n for leg in (call.media.a, call.media.b) for n in (0, 1)]
    engines = engine_children()
    assert len(engines) == 1  # the call's media runs in a child process of Home Assistant's
    assert not any(bindable(port) for port in ports)
    assert await hass.config_entries.async_unload(loaded_entry.entry_id)
    await hass.async_block_till_done()
    assert not engines & engine_children()  # it exited and was reaped
    assert all(bindable(port) for port in ports)
