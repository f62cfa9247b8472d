"""A trunk's provider and the guard (#20): its addresses are never banned, and what the trunk
ingress recognises as the provider's passes the scope rule and the flood budget even from a
public address while ``allow_public`` is off. Anything else from there meets the usual rules."""

from __future__ import annotations

from dataclasses import replace

from sip_core.clock import ManualClock
from sip_core.config import PbxConfig, SecuritySettings
from sip_core.events import AddressBanned, BanEnded, BanEndReason, PbxEvent
from sip_core.guard import FLOOD_BURST, Guard, Refusal
from sip_core.transport import Address, Source, TransportKind
from sip_core.trunk.config import DialPlan, HostPort, Trunk, Trunking
from sip_core.trunk.ingress import TrunkIngress

from .test_b2bua_harness import make_config
from .test_guard import NONE, WRONG, request

PROVIDER = "88.198.0.20"  # a public address (documentation ranges count as private)
PROXY = "88.198.0.30"


def config() -> PbxConfig:
    trunk = Trunk(
        "provider",
        "sip.provider.example",
        "4930",
        "pw",
        outbound_proxy=HostPort(PROXY, 5080),
    )
    return replace(make_config(), trunking=Trunking((trunk,), DialPlan(emergency_trunk="provider")))


def guard(settings: SecuritySettings | None = None) -> tuple[Guard, list[PbxEvent]]:
    current = config()
    ingress = TrunkIngress(lambda: current)
    ingress.addresses["sip.provider.example"] = frozenset({PROVIDER})
    events: list[PbxEvent] = []
    return Guard(settings or SecuritySettings(), ManualClock(), events.append, ingress), events


def udp(host: str, port: int) -> Source:
    return Source(TransportKind.UDP, Address(host, port), Address("10.0.0.2", 5060), None)


def test_the_providers_calls_pass_the_scope_rule() -> None:
    g, _ = guard()
    assert g.admit(request("INVITE"), udp(PROVIDER, 5060)) is None
    assert g.admit(request("INVITE"), udp(PROXY, 5080)) is None  # its outbound proxy
    assert g.admit(request("OPTIONS"), udp(PROVIDER, 5060)) is None  # keep-alive
    assert g.admit(request("ACK"), udp(PROVIDER, 5060)) is None
    assert g.admit(request("CANCEL"), udp(PROVIDER, 5060)) is None
    assert g.admit(request("BYE", to_tag="t1"), udp(PROVIDER, 5060)) is None  # in a dialog
    assert g.admit(request("INFO", to_tag="t1"), udp(PROVIDER, 5060)) is None
    tcp = Source(TransportKind.TCP, Address(PROVIDER, 40000), Address("10.0.0.2", 5060), 3)
    assert g.admit(request("INVITE"), tcp) is None  # over TCP from any port


def test_what_the_ingress_does_not_recognise_is_out_of_scope() -> None:
    g, _ = guard()
    # Not a provider's request: a REGISTER or an out-of-dialog BYE from the provider's address.
    assert g.admit(request("REGISTER"), udp(PROVIDER, 5060)) is Refusal.OUT_OF_SCOPE
    assert g.admit(request("BYE"), udp(PROVIDER, 5060)) is Refusal.OUT_OF_SCOPE
    assert g.admit(request("SUBSCRIBE"), udp(PROVIDER, 5060)) is Refusal.OUT_OF_SCOPE
    # The provider's address but another UDP port: anyone on that host.
    assert g.admit(request("INVITE"), udp(PROVIDER, 5070)) is Refusal.OUT_OF_SCOPE
    # Another public address entirely.
    assert g.admit(request("INVITE"), udp("88.198.0.21", 5060)) is Refusal.OUT_OF_SCOPE
    # Scanners stay dropped, whoever they claim to be.
    scanner = request("INVITE", agent="friendly-scanner")
    assert g.admit(scanner, udp(PROVIDER, 5060)) is Refusal.SCANNER


def test_the_provider_is_never_banned() -> None:
    g, events = guard(SecuritySettings(max_failures=3))
    for port in (5060, 5070, 5080):  # any port of the provider's address
        for _ in range(10):
            g.authenticated(udp(PROVIDER, port), request("INVITE"), WRONG)
            g.authenticated(udp(PROXY, port), request("INVITE"), WRONG)
    assert g.bans() == []
    assert not [e for e in events if isinstance(e, AddressBanned)]
    assert g.admit(request("INVITE"), udp(PROVIDER, 5060)) is None
    # A stranger failing as often is banned as before.
    for _ in range(3):
        g.authenticated(udp("10.0.0.9", 5060), request("INVITE"), WRONG)
    assert [ban.address for ban in g.bans()] == ["10.0.0.9"]


def test_the_providers_calls_cost_no_flood_budget() -> None:
    g, _ = guard(SecuritySettings(allow_public=True))
    for _ in range(int(FLOOD_BURST) * 2):
        assert g.admit(request("INVITE"), udp(PROVIDER, 5060)) is None
    # Its REGISTERs (not the provider's business) are budgeted like anyone's.
    refusals = [g.admit(request("REGISTER"), udp(PROVIDER, 5060)) for _ in range(300)]
    assert Refusal.FLOODING in refusals
    g.authenticated(udp(PROVIDER, 5060), request("REGISTER"), NONE)


def test_without_trunks_nothing_changes() -> None:
    current = make_config()
    g = Guard(SecuritySettings(), ManualClock(), lambda _e: None, TrunkIngress(lambda: current))
    assert g.admit(request("INVITE"), udp(PROVIDER, 5060)) is Refusal.OUT_OF_SCOPE
    for _ in range(5):
        g.authenticated(udp("10.0.0.9", 5060), request("INVITE"), WRONG)
    assert len(g.bans()) == 1


def test_a_ban_from_before_the_trunk_existed_is_lifted() -> None:
    current = make_config()
    ingress = TrunkIngress(lambda: current)
    ingress.addresses["sip.provider.example"] = frozenset({PROVIDER})
    events: list[PbxEvent] = []
    g = Guard(SecuritySettings(allow_public=True), ManualClock(), events.append, ingress)
    for _ in range(5):
        g.authenticated(udp(PROVIDER, 5060), request("INVITE"), WRONG)
    assert g.admit(request("INVITE"), udp(PROVIDER, 5060)) is Refusal.BANNED
    current = config()  # the trunk is added: its provider is that address
    assert not g.drops_datagram(b"INVITE ...", udp(PROVIDER, 5060))
    assert g.admit(request("INVITE"), udp(PROVIDER, 5060)) is None
    assert g.bans() == []
    assert BanEnded(PROVIDER, BanEndReason.LIFTED) in events


def test_addresses_are_compared_in_their_canonical_form() -> None:
    """A trunk's address and a request's source match however each is written (an IPv6
    address in full or shortened), each time they are asked (the parse is cached)."""
    trunk = Trunk("v6", "2001:DB8:0:0:0:0:0:10", "4930", "pw")
    current = replace(make_config(), trunking=Trunking((trunk,), DialPlan(emergency_trunk="v6")))
    ingress = TrunkIngress(lambda: current)
    for _ in range(2):
        assert ingress.trunk_for(udp("2001:db8::10", 5060)) is trunk
        assert ingress.trunk_for(udp("2001:db8::10", 5070)) is None  # another port over UDP
        assert ingress.trunk_for(udp("2001:db8::11", 5060)) is None
        assert ingress.trunk_for(udp("sip.provider.example", 5060)) is None  # not an address
        assert ingress.is_provider("2001:0db8::0010")
        assert not ingress.is_provider("not-an-address")
