"""INVITEs from a trunk, on the B2BUA harness: recognised by source (not challenged), routed by
DID to a user or a device with the outside caller's ID shown; unknown DIDs get 404; a stranger on
the trunk's host but another port is challenged; an outside caller's keys never make a feature
code."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace

import pytest

from sip_core.config import PbxConfig
from sip_core.events import CallStateChanged, DtmfReceived
from sip_core.message import Request, parse_message
from sip_core.transport import Address, Source, TransportKind
from sip_core.trunk.config import DialPlan, Did, Trunk, Trunking
from sip_core.trunk.ingress import TrunkIngress

from .test_b2bua_harness import HOST, PBX, Harness, Phone, make_config, sdp, settle

PROVIDER_PORT = 5999


def trunk_config() -> PbxConfig:
    provider = Trunk(
        "provider",
        HOST,
        "4930",
        "pw",
        port=PROVIDER_PORT,
        dids=(Did("+4930111", "Bob"), Did("+4930222", "401")),
    )
    return replace(
        make_config(), trunking=Trunking((provider,), DialPlan(emergency_trunk="provider"))
    )


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness(trunk_config(), trunks=True)
    yield harness
    harness.close()


def provider(h: Harness, port: int = PROVIDER_PORT) -> Phone:
    """The provider's proxy, sending as the PSTN caller +4989555 (never registered)."""
    return h.phone("+4989555", port, register=False)


def invites(phone: Phone) -> list[Request]:
    return phone.requests("INVITE")


async def test_a_did_rings_its_user_with_the_outside_callers_id(h: Harness) -> None:
    pstn = provider(h)
    desk, mobile = h.phone("301", 5301), h.phone("302", 5302)
    pstn.invite(
        "+4930111",
        authenticate=False,
        extra=(("P-Asserted-Identity", '"Pat Smith" <sip:+4989777@provider.example>'),),
    )
    await settle()
    assert [r.status for r in pstn.responses()] == [100]
    (to_desk,) = invites(desk)
    (to_mobile,) = invites(mobile)
    for invite in (to_desk, to_mobile):
        assert invite.from_.display_name == "Pat Smith"
        assert str(invite.from_.uri) == "sip:+4989777@home.arpa"
    call = h.only_call()
    assert call.callee_user == "Bob"
    assert call.dialled == "+4930111"
    assert call.caller is not None
    assert call.caller.device == "trunk:provider"
    assert h.events_of(CallStateChanged)[0].caller == "trunk:provider"


async def test_without_an_asserted_identity_the_from_header_is_shown(h: Harness) -> None:
    pstn = provider(h)
    carol = h.phone("401", 5401)
    h.phone("201", 5201)
    pstn.invite("+4930222", authenticate=False)
    await settle()
    (ringing,) = invites(carol)  # a DID for one device rings only that device
    assert str(ringing.from_.uri) == "sip:+4989555@home.arpa"
    assert h.phones["201:5201"].requests("INVITE") == []


async def test_the_did_may_come_in_the_to_header(h: Harness) -> None:
    pstn = provider(h)
    carol = h.phone("401", 5401)
    # To our registered Contact's user, with the DID in To, as some providers send.
    text = (
        f"INVITE sip:4930@{HOST}:{PBX.port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {HOST}:{PROVIDER_PORT};branch=z9hG4bK-to-did;rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:+4989555@provider.example>;tag=p1\r\n"
        "To: <sip:+4930222@provider.example>\r\n"
        f"Call-ID: to-did@{HOST}\r\n"
        "CSeq: 1 INVITE\r\n"
        f"Contact: <sip:+4989555@{HOST}:{PROVIDER_PORT}>\r\n"
        "Content-Type: application/sdp\r\n"
    )
    body = sdp(7000)
    message = parse_message(text.encode() + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    pstn.send(message)
    await settle()
    assert len(invites(carol)) == 1


async def test_an_unknown_did_gets_404_not_a_challenge(h: Harness) -> None:
    pstn = provider(h)
    pstn.invite("+4930999", authenticate=False)
    await settle()
    assert [r.status for r in pstn.responses()] == [404]
    assert h.b2bua.calls() == []


async def test_a_stranger_on_the_trunks_host_is_challenged(h: Harness) -> None:
    stranger = provider(h, port=PROVIDER_PORT - 1)
    h.phone("301", 5301)
    stranger.invite("+4930111", authenticate=False)
    await settle()
    assert [r.status for r in stranger.responses()] == [407]


async def test_an_outside_caller_cannot_dial_the_flip_code(h: Harness) -> None:
    pstn = provider(h)
    desk = h.phone("301", 5301)
    mobile = h.phone("302", 5302)
    invite = pstn.invite("+4930111", authenticate=False)
    await settle()
    offered = desk.last_request("INVITE")
    desk.answer(offered, 200, sdp(6301))
    ok = pstn.responses(200)[-1]
    pstn.confirm(invite, ok)
    await settle()
    rung = {r.call_id for r in invites(mobile)}  # the mobile rang with the desk, once
    for digit in "*0":
        pstn.request(
            "INFO", body=f"Signal={digit}\r\n".encode(), content_type="application/dtmf-relay"
        )
    h.clock.advance(3)
    await settle()
    # Both keys reach Bob's desk at once, and nothing else rings.
    # (Deduplicated by CSeq: the desk never answers, so the INFOs are retransmitted.)
    infos = {r.cseq.number: r.body.split(b"\r\n")[0] for r in desk.requests("INFO")}
    assert [infos[cseq] for cseq in sorted(infos)] == [b"Signal=*", b"Signal=0"]
    assert {r.call_id for r in invites(mobile)} == rung  # no flip to the mobile
    assert [e.digit for e in h.events_of(DtmfReceived)] == ["*", "0"]


def test_trunk_recognition_by_address() -> None:
    config = trunk_config()
    ingress = TrunkIngress(lambda: config)
    udp = TransportKind.UDP
    local = Address(HOST, 5060)
    assert ingress.trunk_for(Source(udp, Address(HOST, PROVIDER_PORT), local, None)) is not None
    assert ingress.trunk_for(Source(udp, Address(HOST, 5000), local, None)) is None
    tcp = Source(TransportKind.TCP, Address(HOST, 40123), local, 7)
    assert ingress.trunk_for(tcp) is not None  # over TCP the provider's port is anyone's
    assert ingress.trunk_for(Source(udp, Address("127.0.0.2", PROVIDER_PORT), local, None)) is None
    named = replace(
        config,
        trunking=Trunking(
            (Trunk("p", "sip.example", "u", "pw", dids=()),), DialPlan(emergency_trunk="p")
        ),
    )
    by_name = TrunkIngress(lambda: named)
    assert by_name.hosts_to_resolve() == ["sip.example"]
    source = Source(udp, Address("192.0.2.7", 5060), local, None)
    assert by_name.trunk_for(source) is None
    by_name.addresses["sip.example"] = frozenset({"192.0.2.7"})
    assert by_name.trunk_for(source) is not None


async def test_an_inbound_trunk_call_flips_without_touching_the_provider(h: Harness) -> None:
    """Flip from Bob's desk to his mobile: the outside party is never re-INVITEd nor BYEd."""
    pstn = provider(h)
    desk, mobile = h.phone("301", 5301), h.phone("302", 5302)
    invite = pstn.invite("+4930111", authenticate=False)
    await settle()
    to_mobile = mobile.last_request("INVITE")
    mobile.answer(to_mobile, 180)
    desk.answer(desk.last_request("INVITE"), 200, sdp(6301))
    mobile.reply(mobile.last_request("CANCEL"), 200)
    mobile.answer(to_mobile, 487)
    pstn.confirm(invite, pstn.responses(200)[-1])
    mobile.seen = len(mobile.inbox())
    before = len(pstn.requests())
    call = h.only_call()
    future = h.b2bua.flip(call.id, "302")
    (ringing,) = [m for m in mobile.new() if getattr(m, "method", None) == "INVITE"]
    assert "+4989555" in (ringing.headers.get("From") or "")  # the outside caller, still
    mobile.answer(ringing, 200, sdp(6302))
    await settle()
    record = await asyncio.wait_for(future, 5)
    assert record.succeeded
    assert call.callee is not None
    assert call.callee.device == "302"
    assert len(pstn.requests()) == before  # nothing sent to the provider
    assert len(desk.requests("BYE")) == 1
    assert h.b2bua.hangup(call.id)
    (record,) = h.b2bua.history.records()
    assert record.caller == "trunk:provider"
    assert record.caller_party == "<sip:+4989555@home.arpa>"  # the caller ID, kept
    assert record.callee_device == "302"
