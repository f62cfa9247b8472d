"""Shared data and helpers of the Home Assistant tests (a household, free loopback ports)."""

from __future__ import annotations

import random
import socket
from typing import Any

from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr

DOMAIN_NAME = "test.home.arpa"
PASSWORDS = {
    "alice-desk": "Desk-Phone-Secret-1",
    "alice-mobile": "Mobile-App-Secret-2",
    "bob-soft": "Soft-Phone-Secret-3",
}


def find_free_port() -> int:
    """Return a port free for both UDP and TCP on 127.0.0.1 right now, outside the RTP ranges."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            if 40000 <= port < 46000:  # the RTP ranges the tests configure
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port


def household() -> list[dict[str, Any]]:
    """Two users: Alice with a desk phone and a mobile, Bob with a softphone."""
    return [
        {
            "id": "u-alice",
            "name": "Alice",
            "extension": "101",
            "devices": [
                {
                    "id": "d-alice-desk",
                    "username": "alice-desk",
                    "password": PASSWORDS["alice-desk"],
                    "label": "Alice desk phone",
                    "type": "desk",
                    "priority": 10,
                },
                {
                    "id": "d-alice-mobile",
                    "username": "alice-mobile",
                    "password": PASSWORDS["alice-mobile"],
                    "label": "Alice mobile",
                    "type": "mobile",
                    "priority": 20,
                },
            ],
        },
        {
            "id": "u-bob",
            "name": "Bob",
            "extension": "102",
            "devices": [
                {
                    "id": "d-bob-soft",
                    "username": "bob-soft",
                    "password": PASSWORDS["bob-soft"],
                    "label": "Bob softphone",
                    "type": "softphone",
                    "priority": 10,
                }
            ],
        },
    ]


def _rtp_block() -> tuple[int, int]:
    """200 RTP ports of this test run's own, picked at random once per process.

    Every PBX of a run takes its pairs from the bottom of the range, and tests check that the
    ports of a call are free after it: two runs of these tests side by side (scripts/test runs
    two Home Assistant releases at once) must not share a range.
    """
    low = random.SystemRandom().randrange(20000, 32000, 200)
    return low, low + 199


RTP_PORT_MIN, RTP_PORT_MAX = _rtp_block()


def server_data(port: int) -> dict[str, Any]:
    return {
        "listen": "127.0.0.1",
        "port": port,
        "domain": DOMAIN_NAME,
        "rtp_port_min": RTP_PORT_MIN,
        "rtp_port_max": RTP_PORT_MAX,
    }


def find_free_short_port() -> int:
    """A free port with four digits: sipsak mangles five-digit ports in the Request-URI."""
    for port in range(5070, 9999):
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
            socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp,
        ):
            try:
                udp.bind(("127.0.0.1", port))
                tcp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free four-digit port on 127.0.0.1")


def find_device(hass: HomeAssistant, entry_id: str, identifier: str) -> dr.DeviceEntry | None:
    """The entry's device with this callflip identifier.

    Looked up among the entry's devices: DeviceRegistry.async_get_device is deprecated in
    newer Home Assistant (identifiers are unique per config entry only), and its replacement
    does not exist in 2025.4.
    """
    registry = dr.async_get(hass)
    for device in dr.async_entries_for_config_entry(registry, entry_id):
        if ("callflip", identifier) in device.identifiers:
            return device
    return None
