"""The runner registers a SIP trunk with a provider stand-in: Kamailio as the provider's registrar
with digest authentication (``bench/_kamailio.py``).

Registration and refresh, a wrong password (one refused answer, then a long wait: the provider
must never see a burst), and recovery once an unreachable provider comes up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from .clients import HOST, free_port
from .conftest import StartPbx, users_from

pytestmark = pytest.mark.interop

PROVIDER_USER = "4930123456"


def trunk_yaml(port: int, password: str, *, transport: str = "udp") -> str:
    """A ``trunks`` section in the documented schema; the shortest interval the loader allows."""
    return (
        "trunks:\n"
        "  - name: provider\n"
        f"    host: {HOST}\n"
        f"    port: {port}\n"
        f"    transport: {transport}\n"
        f'    username: "{PROVIDER_USER}"\n'
        f'    password: "{password}"\n'
        "    register_interval: 60\n"
    )


def accepted(kam: Any) -> int:
    return str(kam.log_text()).count(f"REGISTER {PROVIDER_USER} from")


def refused(kam: Any) -> int:
    return str(kam.log_text()).count("rejected: bad credentials")


async def test_registers_and_refreshes_with_kamailio(
    start_pbx: StartPbx, start_kamailio: Callable[..., Any]
) -> None:
    # The provider grants at most 4 s, so the refresh comes after 2 s.
    kam = start_kamailio(
        {PROVIDER_USER: "provider-pw"}, realm="provider.test", min_expires=1, max_expires=4
    )
    pbx = await start_pbx(
        users_from({"201": "desk-secret"}), extra_yaml=trunk_yaml(kam.port, "provider-pw")
    )
    first = await pbx.wait_for_log(r"Trunk provider registered for 4 s")
    start = pbx.lines.index(first) + 1
    await pbx.wait_for_log(r"Trunk provider registered for 4 s", 10.0, start=start)
    log = kam.log_text()
    # Kamailio saw the REGISTERs from the PBX's own SIP port, and accepted them.
    assert f"REGISTER {PROVIDER_USER} from {HOST}:{pbx.port} accepted" in log
    assert log.count("accepted") >= 2
    assert "authentication failed" not in pbx.log()


async def test_a_wrong_password_is_not_retried_in_a_burst(
    start_pbx: StartPbx, start_kamailio: Callable[..., Any]
) -> None:
    kam = start_kamailio({PROVIDER_USER: "provider-pw"}, realm="provider.test")
    pbx = await start_pbx(
        users_from({"201": "desk-secret"}), extra_yaml=trunk_yaml(kam.port, "not-the-password")
    )
    await pbx.wait_for_log(
        r"Trunk provider: registration failed \(authentication failed\); attempt 1, next in 300 s"
    )
    # Watch for a while: no second attempt, and the provider saw exactly one refused answer.
    await asyncio.sleep(6)
    assert refused(kam) == 1
    assert "accepted" not in kam.log_text()
    assert pbx.log().count("registration failed") == 1


async def test_recovers_when_the_provider_comes_up(
    start_pbx: StartPbx, start_kamailio: Callable[..., Any]
) -> None:
    """Over TCP, nothing listening at first: connection refused, back-off, then registered."""
    port = free_port()
    pbx = await start_pbx(
        users_from({"201": "desk-secret"}),
        extra_yaml=trunk_yaml(port, "provider-pw", transport="tcp"),
    )
    await pbx.wait_for_log(
        r"Trunk provider: registration failed \(transport error.*attempt 1, next in 30 s"
    )
    kam = start_kamailio({PROVIDER_USER: "provider-pw"}, port=port, tcp=True, realm="p.test")
    await pbx.wait_for_log(r"Trunk provider registered for \d+ s", 45.0)
    assert accepted(kam) >= 1
    assert pbx.log().count("registration failed") == 1
