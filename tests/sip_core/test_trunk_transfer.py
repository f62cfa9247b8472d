"""Blind transfers of a call to an outside number, through a trunk, on the B2BUA harness.

Carol (401) calls Alice's desk (201); Alice may call out, so her desk may pass Carol to a number
the dial plan sends out ("0" + number): the provider is rung with the trunk's caller ID and its
challenge answered, and when it answers it takes the desk's side. Bob may not call out: his
transfer to an outside number is refused before anything happens.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest

from sip_core.calls import LegRole
from sip_core.events import TransferEnded, TransferStarted
from sip_core.features.transfer import TransferNotAllowed
from sip_core.message import Request

from .test_b2bua_harness import DOMAIN, HOST, Harness, Phone, sdp, sdp_port, settle
from .test_refer import answer_to, notifies, refer
from .test_transfer import dial, requests_to
from .test_trunk_outbound import PROVIDER_PORT, challenge, invites, provider_auth, trunk_config


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    """Closed while the loop still runs (the transfer's prompts resolve their futures on it)."""
    harness = Harness(trunk_config(), trunks=True)
    yield harness
    harness.close()


async def answered(h: Harness, device: str, port: int) -> tuple[Phone, Phone]:
    """Carol (401) calls ``device`` directly; it answers."""
    carol = h.phone("401", 5401)
    phone = h.phone(device, port)
    invite = carol.invite(device)
    await settle()
    phone.answer(phone.last_request("INVITE"), 200, sdp(port + 1000))
    carol.confirm(invite, carol.responses(200)[-1])
    phone.seen = len(phone.inbox())
    carol.seen = len(carol.inbox())
    return carol, phone


def the_invite(provider: Phone) -> Request:
    (invite,) = invites(provider)
    return invite


async def test_a_keypad_transfer_to_an_outside_number_rings_the_provider(h: Harness) -> None:
    provider = h.phone("provider", PROVIDER_PORT, register=False)
    carol, desk = await answered(h, "201", 5201)
    call = h.only_call()
    assert call.media is not None
    old_port = call.media.b.local_rtp.port
    dial(desk, "*20301234#")
    await settle()
    assert requests_to(desk) == ["BYE"]
    first = the_invite(provider)
    assert str(first.uri) == f"sip:301234@{HOST}"
    assert str(first.from_.uri) == f"sip:+4930123@{HOST}"  # the trunk's caller ID, not Carol's
    assert sdp_port(first.body) != old_port  # the transfer's spare relay port
    assert h.events_of(TransferStarted)[0].target == "0301234"
    auth = provider_auth()
    challenge(provider, first, auth, 407)
    await settle()
    second = invites(provider)[1]
    assert auth.verify(second, "Proxy-Authorization").ok
    assert sdp_port(second.body) == sdp_port(first.body)
    provider.answer(second, 200, sdp(7999))
    await settle()
    assert call.callee is not None
    assert call.callee.device == "trunk:provider"
    assert call.callee.role is LegRole.CALLEE
    assert call.operation is None
    assert requests_to(carol) == []  # Carol's dialog never saw a request
    (ended,) = h.events_of(TransferEnded)
    assert ended.record.succeeded
    assert ended.record.target == "0301234"


async def test_a_user_who_may_not_call_out_cannot_transfer_out(h: Harness) -> None:
    provider = h.phone("provider", PROVIDER_PORT, register=False)
    carol, bob = await answered(h, "301", 5301)
    dial(bob, "*20301234#")
    await settle()
    assert invites(provider) == []
    assert h.events_of(TransferStarted) == []
    assert requests_to(bob) == []
    assert requests_to(carol) == []
    call = h.only_call()
    assert call.operation is None
    assert call.callee is not None
    assert call.callee.device == "301"
    with pytest.raises(TransferNotAllowed, match="may not call 0301234 outside"):
        h.b2bua.transfer(call.id, "0301234", device="301")
    # An emergency number always goes out, even for him.
    h.b2bua.transfer(call.id, "112", device="301")
    await settle()
    assert str(the_invite(provider).uri) == f"sip:112@{HOST}"


async def test_a_refer_to_an_outside_number_rings_the_provider(h: Harness) -> None:
    provider = h.phone("provider", PROVIDER_PORT, register=False)
    carol, desk = await answered(h, "201", 5201)
    request = refer(desk, f"<sip:0301234@{DOMAIN}>")
    assert answer_to(desk, request).status == 202
    await settle()
    invite = the_invite(provider)
    assert str(invite.uri) == f"sip:301234@{HOST}"
    provider.answer(invite, 200, sdp(7999))
    await settle()
    assert notifies(desk)[-1][0] == "SIP/2.0 200 OK"
    call = h.only_call()
    assert call.callee is not None
    assert call.callee.device == "trunk:provider"
    assert requests_to(carol) == []


async def test_a_refer_out_by_someone_who_may_not_call_out_is_refused(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    provider = h.phone("provider", PROVIDER_PORT, register=False)
    _carol, bob = await answered(h, "301", 5301)
    with caplog.at_level(logging.INFO, logger="sip_core.features.refer"):
        request = refer(bob, f"<sip:0301234@{DOMAIN}>")
    assert answer_to(bob, request).status == 403
    assert "refused with 403: Bob may not call 0301234 outside" in caplog.text
    await settle()
    assert invites(provider) == []
