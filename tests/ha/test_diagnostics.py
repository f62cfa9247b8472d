"""The diagnostics download hides every password and nonce."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest
from homeassistant.core import HomeAssistant
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.components.diagnostics import (
    get_diagnostics_for_config_entry,
)
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from custom_components.callflip.diagnostics import redact_contact_params
from sip_core.media.fastpath import FastPathState
from sip_core.media.scheduling import Scheduling

from .callflip_testing import DOMAIN_NAME, PASSWORDS
from .sip_client import SipPhone


async def test_diagnostics_redacts_secrets(
    hass: HomeAssistant,
    hass_client: ClientSessionGenerator,
    loaded_entry: MockConfigEntry,
    make_phone: Callable[..., SipPhone],
) -> None:
    phone = make_phone("alice-desk")
    await phone.open()
    assert (await phone.register()).status == 200
    await hass.async_block_till_done()
    # The engine says how it runs in its first message, once its process has started.
    pbx = loaded_entry.runtime_data.hub.pbx
    async with asyncio.timeout(10):
        while pbx.media_engine_status().scheduling is None:  # noqa: ASYNC110 (no event to await)
            await asyncio.sleep(0.05)

    diagnostics = await get_diagnostics_for_config_entry(hass, hass_client, loaded_entry)
    text = json.dumps(diagnostics)
    for password in PASSWORDS.values():
        assert password not in text
    assert "nonce" not in text.replace('"nonce": "**REDACTED**"', "")
    devices = [d for user in diagnostics["options"]["users"] for d in user["devices"]]
    assert {device["password"] for device in devices} == {"**REDACTED**"}
    assert diagnostics["data"]["port"] == loaded_entry.data["port"]
    assert [b["username"] for b in diagnostics["bindings"]] == ["alice-desk"]
    assert diagnostics["bindings"][0]["user_agent"] == "callflip-test-phone/1.0"
    # How the media engine runs: its packet path and its scheduling, from its own Hello.
    engine = diagnostics["media_engine"]
    assert engine["running"] is True
    assert engine["restarts"] == 0
    assert engine["packet_path"] in {state.value for state in FastPathState}
    assert engine["scheduling"] in {
        Scheduling.REALTIME.value,
        Scheduling.NOT_PERMITTED.value,
        Scheduling.UNAVAILABLE.value,
    }


async def test_diagnostics_show_active_calls(
    hass: HomeAssistant,
    hass_client: ClientSessionGenerator,
    loaded_entry: MockConfigEntry,
    make_phone: Callable[..., SipPhone],
) -> None:
    desk = make_phone("alice-desk")
    bob = make_phone("bob-soft")
    for phone in (desk, bob):
        await phone.open()
        assert (await phone.register()).status == 200
    outgoing = await bob.dial("alice-desk")
    await desk.answer(await desk.request("INVITE"))
    await outgoing.answered()
    await hass.async_block_till_done()

    diagnostics = await get_diagnostics_for_config_entry(hass, hass_client, loaded_entry)
    (call,) = diagnostics["calls"]
    assert call["state"] == "talking"
    assert (call["caller_user"], call["callee_user"]) == ("Bob", "Alice")
    assert call["caller"]["device"] == "bob-soft"
    assert call["callee"] == {"device": "alice-desk", "role": "callee", "state": "confirmed"}
    assert call["flip_to"] is None
    assert call["handoffs"] == []
    for password in PASSWORDS.values():
        assert password not in json.dumps(diagnostics)


PRID = "9f3c2a77d1b04e8ab0c1e5d6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6"
PUSH_PARAM = "ABCDE12345.org.example.phone.voip"
INSTANCE = "urn:uuid:3f2504e0-4f89-41d3-9a0c-0305e82c3301"


class PushPhone(SipPhone):
    """A mobile app registering with push notification parameters and an instance id."""

    __slots__ = ()

    @property
    def contact(self) -> str:
        return (
            f"<sip:{self.username}@127.0.0.1:{self.local_port};transport=udp;pn-provider=apns"
            f";pn-prid={PRID};pn-param={PUSH_PARAM}>"
            f';+sip.instance="<{INSTANCE}>";reg-id=1'
        )


async def test_diagnostics_redact_push_tokens_and_instance_ids(
    hass: HomeAssistant,
    hass_client: ClientSessionGenerator,
    loaded_entry: MockConfigEntry,
) -> None:
    phone = PushPhone(
        port=loaded_entry.data["port"],
        username="alice-mobile",
        password=PASSWORDS["alice-mobile"],
        domain=DOMAIN_NAME,
    )
    await phone.open()
    try:
        assert (await phone.register()).status == 200
        await hass.async_block_till_done()
        # The PBX did keep what the diagnostics must hide.
        records = json.dumps(loaded_entry.runtime_data.hub.pbx.binding_records())
        assert PRID in records
        assert "3f2504e0" in records
        diagnostics = await get_diagnostics_for_config_entry(hass, hass_client, loaded_entry)
        local_port = phone.local_port
    finally:
        phone.close()
    text = json.dumps(diagnostics)
    for secret in (PRID, PUSH_PARAM, "3f2504e0"):
        assert secret not in text
    (binding,) = diagnostics["bindings"]
    assert binding["username"] == "alice-mobile"
    assert binding["contact"] == (
        f"<sip:alice-mobile@127.0.0.1:{local_port};transport=udp"
        ";pn-provider=**REDACTED**;pn-prid=**REDACTED**;pn-param=**REDACTED**>"
        ";+sip.instance=**REDACTED**;reg-id=**REDACTED**"
    )
    assert binding["instance_id"] == "**REDACTED**"


@pytest.mark.parametrize(
    ("contact", "expected"),
    [
        (
            "<sip:a@192.0.2.1:5060;pn-provider=fcm;pn-prid=tok:en/1>;expires=60",
            "<sip:a@192.0.2.1:5060;pn-provider=**REDACTED**;pn-prid=**REDACTED**>;expires=60",
        ),
        (
            'sip:a@192.0.2.1;PN-TOK=abc;+sip.instance="<urn:uuid:1-2>";reg-id=2;q=0.5',
            "sip:a@192.0.2.1;PN-TOK=**REDACTED**;+sip.instance=**REDACTED**"
            ";reg-id=**REDACTED**;q=0.5",
        ),
        (
            "sip:a@192.0.2.1;app-id=org.example;pn-msg-str=x?pn-call-str=y",
            "sip:a@192.0.2.1;app-id=**REDACTED**;pn-msg-str=**REDACTED**?pn-call-str=**REDACTED**",
        ),
        ("sip:a@192.0.2.1:5060;transport=tcp", "sip:a@192.0.2.1:5060;transport=tcp"),
    ],
)
def test_contact_parameters_redacted(contact: str, expected: str) -> None:
    assert redact_contact_params(contact) == expected
