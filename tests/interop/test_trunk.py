"""The runner and a SIP trunk, against independent software.

Kamailio (``bench/_kamailio.py``) is the provider's registrar with digest authentication:
registration and refresh, a wrong password (one refused answer, then a long wait: the provider
must never see a burst), and recovery once an unreachable provider comes up.

sipp is the provider's proxy delivering a call from the outside: sent from the trunk's address,
for a DID, it rings the DID's user (a sipp UAS registered as that user's device) with the outside
caller's number shown, without a challenge; an unknown DID gets 404.

Kamailio as the provider's proxy (``bench/_kamailio_proxy.py``: 407 on every INVITE, then relayed
to a registered contact) carries a call out: a device dials the outside-line prefix, the runner
answers the 407 with the trunk's credentials, and the "PSTN" party (a sipp UAS registered at
Kamailio) sees the trunk's caller ID.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .clients import (
    HOST,
    ClientError,
    free_port,
    read_sipp_outputs,
    run_process,
    run_sipp,
    sipp_uac_call_argv,
    sipp_uas_argv,
    write_sipp_callers,
)
from .conftest import DOMAIN, REPO, Device, StartPbx, User, users_from

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


async def test_an_inbound_call_for_a_did_rings_its_user(
    start_pbx: StartPbx, tmp_path: Path
) -> None:
    provider_port = free_port()
    uas_port = free_port(digits=5)
    trunk = (
        "trunks:\n"
        "  - name: provider\n"
        f"    host: {HOST}\n"
        f"    port: {provider_port}\n"
        '    username: "4930"\n'
        '    password: "provider-pw"\n'
        "    register: false\n"
        "    dids:\n"
        '      - {number: "+4930111", destination: bob}\n'
    )
    pbx = await start_pbx([User("bob", "300", [Device("501", "sipp-callee-pw")])], extra_yaml=trunk)
    registered = await run_sipp(
        "register", pbx.port, {"501": "sipp-callee-pw"}, local_port=uas_port
    )
    assert registered.returncode == 0, registered.describe()
    (tmp_path / "uas").mkdir()
    (tmp_path / "uac").mkdir()
    (tmp_path / "unknown").mkdir()
    uas = asyncio.create_task(
        run_process(
            sipp_uas_argv(uas_port, calls=1, time_limit=30, trace_messages=True),
            time_limit=40,
            cwd=tmp_path / "uas",
        )
    )
    try:
        await asyncio.sleep(0.3)
        callers = write_sipp_callers(
            tmp_path / "uac" / "callers.csv", [("+4989555", "none", "+4930111")], domain=DOMAIN
        )
        argv = sipp_uac_call_argv(
            pbx.port, callers, calls=1, rate=1, local_port=provider_port, trace_messages=True
        )
        result = await run_process(argv, time_limit=30, cwd=tmp_path / "uac")
        stats, _rtts, messages, errors = read_sipp_outputs(tmp_path / "uac")
        detail = f"{result.describe()}\n{errors[-2000:]}\n{messages[-3000:]}\n{pbx.log()[-2000:]}"
        assert result.returncode == 0, detail
        assert stats.get("SuccessfulCall(C)") == "1", detail
        assert "407 Proxy Authentication Required" not in messages, detail
        served = await asyncio.wait_for(uas, 15)
        assert served.returncode == 0, served.describe()
        delivered = read_sipp_outputs(tmp_path / "uas")[2]
        # The device saw the outside caller's number, in our domain.
        assert f"From: <sip:+4989555@{DOMAIN}>" in delivered, delivered[-3000:]
    finally:
        uas.cancel()
        with contextlib.suppress(asyncio.CancelledError, ClientError):
            await uas

    callers = write_sipp_callers(
        tmp_path / "unknown" / "callers.csv", [("+4989555", "none", "+4930999")], domain=DOMAIN
    )
    argv = sipp_uac_call_argv(
        pbx.port, callers, calls=1, rate=1, local_port=provider_port, trace_messages=True
    )
    result = await run_process(argv, time_limit=30, cwd=tmp_path / "unknown")
    messages = read_sipp_outputs(tmp_path / "unknown")[2]
    assert result.returncode != 0
    assert "SIP/2.0 404" in messages, messages[-3000:]


def _kamailio_proxy_class() -> Any:
    bench = str(REPO / "bench")
    if bench not in sys.path:
        sys.path.insert(0, bench)
    if importlib.import_module("_kamailio").kamailio_binary() is None:
        pytest.skip("kamailio not installed")
    return importlib.import_module("_kamailio_proxy").KamailioProxy


async def test_an_outbound_call_answers_the_providers_challenge(
    start_pbx: StartPbx, tmp_path: Path
) -> None:
    proxy = _kamailio_proxy_class()(
        users={PROVIDER_USER: "trunk-pw", "301234": "pstn-pw"},
        port=free_port(),
        min_expires=1,
        children=1,
    )
    proxy.start()
    uas: asyncio.Task[Any] | None = None
    try:
        uas_port = free_port(digits=5)
        registered = await run_sipp(
            "register", proxy.port, {"301234": "pstn-pw"}, local_port=uas_port
        )
        assert registered.returncode == 0, registered.describe()
        trunk = (
            trunk_yaml(proxy.port, "trunk-pw").replace("register_interval: 60", "register: false")
            + "dialplan:\n"
            + "  routes:\n"
            + '    - {prefix: "0", trunk: provider, strip: true}\n'
        )
        pbx = await start_pbx(
            [User("carol", "400", [Device("401", "sipp-caller-pw")])], extra_yaml=trunk
        )
        for name in ("uas", "uac"):
            (tmp_path / name).mkdir()
        uas = asyncio.create_task(
            run_process(
                sipp_uas_argv(uas_port, calls=1, time_limit=30, trace_messages=True),
                time_limit=40,
                cwd=tmp_path / "uas",
            )
        )
        await asyncio.sleep(0.3)
        callers = write_sipp_callers(
            tmp_path / "uac" / "callers.csv", [("401", "sipp-caller-pw", "0301234")], domain=DOMAIN
        )
        argv = sipp_uac_call_argv(
            pbx.port, callers, calls=1, rate=1, trace_messages=True,
            auth_uri=f"0301234@{DOMAIN}",
        )  # fmt: skip
        result = await run_process(argv, time_limit=30, cwd=tmp_path / "uac")
        stats, _rtts, messages, errors = read_sipp_outputs(tmp_path / "uac")
        detail = (
            f"{result.describe()}\n{errors[-2000:]}\n{messages[-3000:]}\n--- runner\n"
            f"{pbx.log()[-2000:]}\n--- kamailio\n{proxy.log_text()[-2000:]}"
        )
        assert result.returncode == 0, detail
        assert stats.get("SuccessfulCall(C)") == "1", detail
        served = await asyncio.wait_for(uas, 15)
        assert served.returncode == 0, served.describe()
        delivered = read_sipp_outputs(tmp_path / "uas")[2]
        # The outside party sees the trunk's number (Kamailio only relays what authenticated).
        assert f"From: <sip:{PROVIDER_USER}@{HOST}>" in delivered, delivered[-3000:]
        assert "refused our credentials" not in pbx.log()
    finally:
        if uas is not None:
            uas.cancel()
            with contextlib.suppress(asyncio.CancelledError, ClientError):
                await uas
        proxy.stop()
