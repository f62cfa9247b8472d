"""A trunk's ``public_address`` (a PBX behind NAT): what the provider is told, and only it.

The REGISTER's Via and Contact, and in calls both ways the trunk leg's Via, Contact and SDP
connection address name the public address; the legs to our own devices keep the LAN address.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from sip_core.config import ConfigError, config_from_mapping
from sip_core.dialog import LocalEndpoint
from sip_core.message import Request, Response
from sip_core.transport import Address, Source, TransportKind
from sip_core.trunk.config import (
    DialPlan,
    Did,
    OutboundRoute,
    PublicAddress,
    Trunk,
    Trunking,
)
from sip_core.trunk.ingress import TrunkIngress
from sip_core.trunk.nat import advertised_endpoint

from .test_b2bua_harness import HOST, PBX, Harness, make_config, sdp, settle
from .test_trunk_registration import harness as registration_harness

PROVIDER_PORT = 5999
PUBLIC = "203.0.113.7"


def connection_address(body: bytes) -> str:
    match = re.search(rb"c=IN IP[46] (\S+)", body)
    assert match is not None, body
    return match.group(1).decode()


def trunk_mapping(**extra: Any) -> dict[str, Any]:
    return {
        "sip": {"listen": "127.0.0.1", "port": 5060, "domain": "home.arpa"},
        "users": [
            {
                "name": "Bob",
                "extension": "300",
                "devices": [{"username": "301", "password": "a-long-password-1"}],
            }
        ],
        "trunks": [
            {"name": "p", "host": "sip.example", "username": "4930", "password": "x", **extra}
        ],
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("203.0.113.7", PublicAddress("203.0.113.7", None)),
        ("203.0.113.7:5080", PublicAddress("203.0.113.7", 5080)),
        ("[2001:db8::7]:5062", PublicAddress("2001:db8::7", 5062)),
        ("2001:db8::7", PublicAddress("2001:db8::7", None)),
    ],
)
def test_public_address_is_read(value: str, expected: PublicAddress) -> None:
    config = config_from_mapping(trunk_mapping(public_address=value))
    assert config.trunking is not None
    (trunk,) = config.trunking.trunks
    assert trunk.public_address == expected
    # Written back (diagnostics, the runner's file) it reads the same.
    again = config_from_mapping(trunk_mapping(public_address=trunk.to_mapping()["public_address"]))
    assert again.trunking is not None
    assert again.trunking.trunks[0].public_address == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("router.example", "must be an IP address"),
        ("203.0.113.7:99999", "between 1 and 65535"),
        ("0.0.0.0", "the provider can send to"),
        ("224.0.0.1", "the provider can send to"),
        ("", "must not be empty"),
        (5060, "must be text"),
    ],
)
def test_a_bad_public_address_is_a_field_error(value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        config_from_mapping(trunk_mapping(public_address=value))
    assert info.value.key_path == ("trunks", 0, "public_address")


def test_advertised_endpoint() -> None:
    plain = Trunk("p", HOST, "u", "pw")
    assert advertised_endpoint(plain, 5060, TransportKind.UDP) is None
    behind = replace(plain, public_address=PublicAddress(PUBLIC))
    assert advertised_endpoint(behind, 5070, TransportKind.TCP) == LocalEndpoint(
        PUBLIC, 5070, TransportKind.TCP
    )
    forwarded = replace(plain, public_address=PublicAddress(PUBLIC, 15060))
    assert advertised_endpoint(forwarded, 5070, TransportKind.UDP) == LocalEndpoint(
        PUBLIC, 15060, TransportKind.UDP
    )


@pytest.mark.parametrize(
    ("public", "sent_by"),
    [
        (None, "192.0.2.5:5070"),
        (PublicAddress(PUBLIC), f"{PUBLIC}:5070"),
        (PublicAddress(PUBLIC, 15060), f"{PUBLIC}:15060"),
    ],
)
def test_the_register_names_the_public_address(public: PublicAddress | None, sent_by: str) -> None:
    h = registration_harness(public_address=public)
    h.registration.start()
    request = h.sender.last.request
    via = request.top_via
    assert f"{via.host}:{via.port}" == sent_by
    assert request.headers.get("Contact") == f"<sip:4930@{sent_by}>"
    # Still sent to the provider as before: only what it reads changes.
    assert h.sender.last.destination == Address("sip.example", 5060)


def test_the_ingress_knows_the_trunk_by_address_or_configured_name() -> None:
    trunk = Trunk("p", "sip.example", "u", "pw", public_address=PublicAddress(PUBLIC))
    config = replace(make_config(), trunking=Trunking((trunk,), DialPlan(emergency_trunk="p")))
    ingress = TrunkIngress(lambda: config)
    local = Address(HOST, 5060)
    outgoing = Source(TransportKind.UDP, Address("sip.example", 5060), local, None)
    assert ingress.endpoint_for(outgoing, 5060) == LocalEndpoint(PUBLIC, 5060)
    incoming = Source(TransportKind.UDP, Address("192.0.2.9", 5060), local, None)
    assert ingress.endpoint_for(incoming, 5060) is None  # not resolved: not the provider
    ingress.addresses["sip.example"] = frozenset({"192.0.2.9"})
    assert ingress.endpoint_for(incoming, 5060) == LocalEndpoint(PUBLIC, 5060)
    # A name is never taken for an incoming source (those are always addresses).
    assert ingress.trunk_for(outgoing) is None
    stranger = Source(TransportKind.UDP, Address("192.0.2.10", 5060), local, None)
    assert ingress.endpoint_for(stranger, 5060) is None


def nat_config() -> Any:
    provider = Trunk(
        "provider",
        HOST,
        "4930",
        "pw",
        port=PROVIDER_PORT,
        dids=(Did("+4930111", "Bob"),),
        public_address=PublicAddress(PUBLIC),
    )
    plan = DialPlan(
        routes=(OutboundRoute("provider", "0", strip=True),), emergency_trunk="provider"
    )
    return replace(make_config(), trunking=Trunking((provider,), plan))


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness(nat_config(), trunks=True)
    yield harness
    harness.close()


def _contact_host(message: Request | Response) -> str:
    contact = message.headers.get("Contact") or ""
    match = re.search(r"@([^:;>]+):(\d+)", contact)
    assert match is not None, contact
    return f"{match.group(1)}:{match.group(2)}"


async def test_an_inbound_call_answers_the_provider_with_the_public_address(h: Harness) -> None:
    pstn = h.phone("+4989555", PROVIDER_PORT, register=False)
    desk = h.phone("301", 5301)
    pstn.invite("+4930111", authenticate=False, body=sdp(7000))
    await settle()
    to_desk = desk.last_request("INVITE")
    # Our own device is told the LAN address.
    assert connection_address(to_desk.body) == HOST
    assert _contact_host(to_desk) == f"{HOST}:{PBX.port}"
    desk.answer(to_desk, 200, sdp(6301))
    await settle()
    ok = pstn.responses(200)[-1]
    assert connection_address(ok.body) == PUBLIC
    assert _contact_host(ok) == f"{PUBLIC}:{PBX.port}"
    assert f"IN IP4 {PUBLIC}" in ok.body.decode().split("\r\n")[1]  # the o= line too


async def test_an_outbound_call_offers_the_public_address(h: Harness) -> None:
    provider = h.phone("provider", PROVIDER_PORT, register=False)
    desk = h.phone("201", 5201)
    desk.invite("0301234", body=sdp(6201))
    await settle()
    (invite,) = provider.requests("INVITE")
    via = invite.top_via
    assert (via.host, via.port) == (PUBLIC, PBX.port)
    assert _contact_host(invite) == f"{PUBLIC}:{PBX.port}"
    assert connection_address(invite.body) == PUBLIC
    provider.answer(invite, 200, sdp(7999))
    await settle()
    ok = desk.responses(200)[-1]
    assert connection_address(ok.body) == HOST  # the device is on our side of the NAT
