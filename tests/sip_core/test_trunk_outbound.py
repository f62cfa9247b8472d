"""Calls out through a trunk, on the B2BUA harness: the dial plan's routes, the caller ID sent,
the provider's 407 and 401 answered with the trunk's credentials (checked by our own, separately
tested, digest server playing the provider), refused credentials, permission to call out and
emergency numbers."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from sip_core.clock import ManualClock
from sip_core.config import PbxConfig
from sip_core.digest import DeviceCredentials, DigestAuthenticator
from sip_core.message import Request, make_response
from sip_core.trunk.config import DialPlan, OutboundRoute, Trunk, Trunking

from .test_b2bua_harness import HOST, Harness, Phone, make_config, sdp, settle
from .test_guard_hops import hops

PROVIDER_PORT = 5999
PROVIDER_REALM = "provider.test"


def trunk_config(password: str = "trunk-pw") -> PbxConfig:
    provider = Trunk(
        "provider",
        HOST,
        "4930",
        password,
        port=PROVIDER_PORT,
        auth_username="auth4930",
        caller_id="+4930123",
    )
    plan = DialPlan(
        routes=(OutboundRoute("provider", "0", strip=True),),
        emergency=("112",),
        emergency_trunk="provider",
        call_out=("Alice",),
    )
    return replace(make_config(), trunking=Trunking((provider,), plan))


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness(trunk_config(), trunks=True)
    yield harness
    harness.close()


def provider_auth() -> DigestAuthenticator:
    return DigestAuthenticator(
        PROVIDER_REALM,
        ManualClock(),
        lambda name: DeviceCredentials(name, "trunk-pw") if name == "auth4930" else None,
    )


def challenge(provider: Phone, invite: Request, auth: DigestAuthenticator, status: int) -> None:
    response = make_response(invite, status, to_tag="prov")
    header = "Proxy-Authenticate" if status == 407 else "WWW-Authenticate"
    for value in auth.challenge():
        response.headers.add(header, value)
    provider.send(response)


def invites(phone: Phone) -> list[Request]:
    """The INVITEs sent to ``phone``, one per CSeq (retransmissions left out)."""
    seen: dict[tuple[str, int], Request] = {}
    for request in phone.requests("INVITE"):
        seen.setdefault((request.call_id, request.cseq.number), request)
    return list(seen.values())


@pytest.mark.parametrize("status", [407, 401])
async def test_a_prefixed_number_goes_out_with_the_trunks_credentials(
    h: Harness, status: int
) -> None:
    provider = h.phone("provider", PROVIDER_PORT, register=False)
    desk = h.phone("201", 5201)
    auth = provider_auth()
    invite = desk.invite("0301234")
    await settle()
    (first,) = invites(provider)
    assert str(first.uri) == f"sip:301234@{HOST}"
    assert str(first.from_.uri) == f"sip:+4930123@{HOST}"  # the trunk's caller ID
    assert str(first.to.uri) == f"sip:301234@{HOST}"
    assert "Proxy-Authorization" not in first.headers
    challenge(provider, first, auth, status)
    await settle()
    first_again, second = invites(provider)
    assert first_again is first
    assert second.call_id == first.call_id
    assert second.from_.tag == first.from_.tag
    assert second.cseq.number == first.cseq.number + 1
    header = "Proxy-Authorization" if status == 407 else "Authorization"
    assert auth.verify(second, header).ok
    assert auth.verify(second, header).username == "auth4930"
    provider.answer(second, 200, sdp(7999))
    await settle()
    ok = desk.responses(200)[-1]
    desk.confirm(invite, ok)
    call = h.only_call()
    assert call.callee is not None
    assert call.callee.device == "trunk:provider"
    assert call.callee_user is None


async def test_refused_credentials_end_the_call_with_503(h: Harness) -> None:
    h.config = trunk_config(password="wrong-pw")
    provider = h.phone("provider", PROVIDER_PORT, register=False)
    desk = h.phone("201", 5201)
    auth = provider_auth()
    desk.invite("0301234")
    await settle()
    challenge(provider, invites(provider)[0], auth, 407)
    await settle()
    second = invites(provider)[1]
    assert not auth.verify(second, "Proxy-Authorization").ok
    challenge(provider, second, auth, 407)
    await settle()
    assert len(invites(provider)) == 2  # not tried again
    assert [r.status for r in desk.responses() if r.status >= 200] == [503]


async def test_a_user_without_permission_gets_403_but_may_call_emergency(h: Harness) -> None:
    provider = h.phone("provider", PROVIDER_PORT, register=False)
    bob = h.phone("301", 5301)
    bob.invite("0301234")
    await settle()
    assert [r.status for r in bob.responses()] == [403]
    assert invites(provider) == []
    bob.invite("112")
    await settle()
    (emergency,) = invites(provider)
    assert str(emergency.uri) == f"sip:112@{HOST}"


async def test_a_number_no_route_takes_is_still_404(h: Harness) -> None:
    provider = h.phone("provider", PROVIDER_PORT, register=False)
    desk = h.phone("201", 5201)
    desk.invite("999")
    await settle()
    assert [r.status for r in desk.responses()] == [404]
    assert invites(provider) == []


async def test_a_feature_code_never_goes_out_by_an_external_route() -> None:
    """With a route for every external number, the flip code dialled from idle still stays
    inside (call control asks the features whether a number is a code): 404, nothing sent."""
    config = trunk_config()
    assert config.trunking is not None
    plan = replace(config.trunking.dialplan, routes=(OutboundRoute("provider"),))
    config = replace(config, trunking=replace(config.trunking, dialplan=plan))
    h = Harness(config, trunks=True)
    try:
        provider = h.phone("provider", PROVIDER_PORT, register=False)
        desk = h.phone("201", 5201)
        desk.invite(config.flip.code)
        await settle()
        assert [r.status for r in desk.responses()] == [404]
        assert invites(provider) == []
        desk.invite("4711")
        await settle()
        (out,) = invites(provider)
        assert str(out.uri) == f"sip:4711@{HOST}"
    finally:
        h.close()


@pytest.mark.parametrize(("incoming", "outgoing"), [(70, 69), (5, 4), (1, 0)])
async def test_the_invite_to_the_provider_never_has_more_hops_than_the_caller_left(
    h: Harness, incoming: int, outgoing: int
) -> None:
    provider = h.phone("provider", PROVIDER_PORT, register=False)
    desk = h.phone("201", 5201)
    hops(desk, incoming)
    desk.invite("0301234")
    await settle()
    (first,) = invites(provider)
    assert first.max_forwards == outgoing
    challenge(provider, first, provider_auth(), 407)
    await settle()
    assert invites(provider)[1].max_forwards == outgoing  # the answered challenge keeps it
