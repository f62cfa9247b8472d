"""A SIP trunk over TLS, against a second instance of our own runner acting as the provider.

The provider runner listens for TLS with a certificate for 127.0.0.1 and localhost signed by a
CA the test makes; the trunk trusts that CA (``ca_file``) and checks the certificate's name.
The trunk registers over TLS (the provider sees the REGISTER arrive over TLS), a call from the
provider's "PSTN" party arrives on the connection the registration opened and rings bob's desk,
and the desk's call out goes through the same trunk; audio both ways, recorded at each end.

A certificate the trunk must refuse (signed by another CA, or for another name) leaves the trunk
failing with the reason in its log, never registered at the provider, and no call passes.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from tests.tls_certs import ServerFiles, TestCa

from . import audio
from .clients import HOST, ClientError, free_port
from .conftest import DOMAIN, StartPbx
from .test_trunk import (
    ACCOUNT,
    ACCOUNT_PASSWORD,
    DESK,
    DESK_HZ,
    DEVICE_PASSWORDS,
    PROVIDER_USER,
    PSTN_DEVICE,
    PSTN_HZ,
    PSTN_PASSWORD,
    PSTN_USER,
    _baresip,
    _bob,
    _heard,
    _received,
    _runner_provider_users,
    _runners_detail,
    tones,
)

pytestmark = pytest.mark.interop

__all__ = ["tones"]  # the fixture, imported to be used here


def _listener_yaml(files: ServerFiles, port: int) -> str:
    """The provider runner's TLS listener (the ``tls`` section)."""
    return f'tls:\n  certificate: "{files.certificate}"\n  key: "{files.key}"\n  port: {port}\n'


def _tls_trunk(provider_tls_port: int, ca_file: Path, host: str = HOST) -> str:
    """Our trunk at the provider runner over TLS, trusting the test's CA; otherwise the shipped
    defaults (verification on)."""
    return (
        "trunks:\n"
        "  - name: provider\n"
        f"    host: {host}\n"
        f"    port: {provider_tls_port}\n"
        "    transport: tls\n"
        f'    ca_file: "{ca_file}"\n'
        f'    username: "{ACCOUNT}"\n'
        f'    password: "{ACCOUNT_PASSWORD}"\n'
        "    dids:\n"
        f'      - {{number: "{ACCOUNT}", destination: bob}}\n'
        "dialplan:\n"
        "  routes:\n"
        '    - {prefix: "0", trunk: provider, strip: true}\n'
    )


@pytest.mark.parametrize("direction", ["inbound", "outbound"])
async def test_a_tls_trunk_registers_and_carries_calls_both_ways(
    start_pbx: StartPbx, tmp_path: Path, tones: dict[float, Path], direction: str
) -> None:
    ca = TestCa.create(tmp_path / "ca")
    tls_port = free_port()
    provider = await start_pbx(
        _runner_provider_users(),
        extra_yaml=_listener_yaml(ca.issue(tmp_path / "provider"), tls_port),
    )
    await provider.wait_for_log(rf"TLS on {HOST}:{tls_port}", 5.0)
    # By name: the certificate must name "localhost" as well as the address.
    pbx = await start_pbx(_bob(), extra_yaml=_tls_trunk(tls_port, ca.ca_file, "localhost"))
    await pbx.wait_for_log(r"Trunk provider registered for \d+ s", 15.0)
    # The provider saw the REGISTER with the account's credentials arrive over TLS.
    await provider.wait_for_log(
        rf"Registration of {ACCOUNT} \w+: <sip:{ACCOUNT}@[^>]*;transport=tls>.* from TLS {HOST}:",
        5.0,
    )
    inbound = direction == "inbound"
    async with (
        _baresip(DESK, DEVICE_PASSWORDS[DESK], pbx.port, tones[DESK_HZ], tmp_path / "desk",
                 answermode="auto" if inbound else "manual") as desk,
        _baresip(PSTN_DEVICE, PSTN_PASSWORD, provider.port, tones[PSTN_HZ], tmp_path / "pstn",
                 answermode="manual" if inbound else "auto") as pstn,
    ):  # fmt: skip
        caller, callee = (pstn, desk) if inbound else (desk, pstn)
        try:
            if inbound:
                await pstn.dial(f"sip:{PROVIDER_USER}@{DOMAIN}")
            else:
                await desk.dial(f"sip:0{PSTN_USER}@{DOMAIN}")
            await callee.wait_event("CALL_ESTABLISHED", 15)
            await caller.wait_event("CALL_ESTABLISHED", 15)
            await asyncio.sleep(3.0)
            await caller.hangup()
            await callee.wait_event("CALL_CLOSED", 10)
        except ClientError as error:
            pytest.fail(f"{error}\n{_runners_detail(pbx, provider, pstn, desk)}")
    (invite,) = _received(callee, "INVITE")
    if inbound:
        assert re.search(rf'^From: "pstn" <sip:{PSTN_USER}@', invite, re.MULTILINE), invite
    else:
        assert re.search(rf'^From: "line" <sip:{PROVIDER_USER}@', invite, re.MULTILINE), invite
    by_pstn, by_desk = _heard(pstn), _heard(desk)
    assert audio.tone_seconds(by_pstn, DESK_HZ) >= 2.0, audio.describe(by_pstn)
    assert audio.tone_seconds(by_desk, PSTN_HZ) >= 2.0, audio.describe(by_desk)
    assert audio.tone_seconds(by_pstn, PSTN_HZ) == 0, audio.describe(by_pstn)
    # One TLS connection carried it all: the trunk's registration never needed another, and
    # the provider reached us on it (we have no TLS listener to be reached on otherwise).
    assert "TLS on" not in pbx.log()
    assert "certificate verify failed" not in pbx.log()


@pytest.mark.parametrize("wrong", ["ca", "host"])
async def test_a_certificate_the_trunk_must_refuse_means_no_registration_and_no_call(
    start_pbx: StartPbx, tmp_path: Path, tones: dict[float, Path], wrong: str
) -> None:
    """The provider's certificate is signed by a CA the trunk does not trust, or names another
    host: the trunk fails with the reason (and backs off), the provider never sees a REGISTER,
    and neither a call in nor a call out gets through."""
    ca = TestCa.create(tmp_path / "ca")
    if wrong == "ca":
        other = TestCa.create(tmp_path / "other", "impostor CA")
        files = other.issue(tmp_path / "provider")
        expected = "unable to get local issuer certificate"
    else:
        files = ca.issue(tmp_path / "provider", ("sip.provider.example",))
        expected = "mismatch"
    tls_port = free_port()
    provider = await start_pbx(_runner_provider_users(), extra_yaml=_listener_yaml(files, tls_port))
    await provider.wait_for_log(rf"TLS on {HOST}:{tls_port}", 5.0)
    pbx = await start_pbx(_bob(), extra_yaml=_tls_trunk(tls_port, ca.ca_file))
    line = await pbx.wait_for_log(
        r"Trunk provider: registration failed \(certificate verify failed: .*; attempt 1, "
        r"next in 30 s",
        15.0,
    )
    assert expected in line.lower(), line
    assert f"Registration of {ACCOUNT}" not in provider.log()
    async with (
        _baresip(DESK, DEVICE_PASSWORDS[DESK], pbx.port, tones[DESK_HZ], tmp_path / "desk",
                 answermode="auto") as desk,
        _baresip(PSTN_DEVICE, PSTN_PASSWORD, provider.port, tones[PSTN_HZ], tmp_path / "pstn",
                 answermode="auto") as pstn,
    ):  # fmt: skip
        try:
            # In: the provider has no registration of ours to send the call to.
            await pstn.dial(f"sip:{PROVIDER_USER}@{DOMAIN}")
            await pstn.wait_event("CALL_CLOSED", 15)
            # Out: our side refuses the provider's certificate again; the call fails.
            await desk.dial(f"sip:0{PSTN_USER}@{DOMAIN}")
            await desk.wait_event("CALL_CLOSED", 20)
        except ClientError as error:
            pytest.fail(f"{error}\n{_runners_detail(pbx, provider, pstn, desk)}")
        assert desk.call_events("CALL_ESTABLISHED") == []
        assert pstn.call_events("CALL_ESTABLISHED") == []
    assert _received(desk, "INVITE") == []
    assert _received(pstn, "INVITE") == []
    assert f"Registration of {ACCOUNT}" not in provider.log()
