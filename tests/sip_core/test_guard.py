"""The guard alone, on a manual clock: bans, scope, scanner User-Agents, flood budgets."""

from __future__ import annotations

import pytest

from sip_core.clock import ManualClock
from sip_core.config import ConfigError, SecuritySettings, config_from_mapping
from sip_core.digest import AuthFailure, AuthResult
from sip_core.events import AddressBanned, BanEnded, BanEndReason, PbxEvent
from sip_core.guard import (
    FLOOD_BURST,
    FLOOD_RATE,
    TRUST_TIME,
    Guard,
    Refusal,
    in_default_scope,
    scanner_agent,
)
from sip_core.message import Request, Response, parse_message
from sip_core.transport import Address, Source, TransportKind

WRONG = AuthResult(False, "201", False, AuthFailure.WRONG_PASSWORD)
UNKNOWN = AuthResult(False, "999", False, AuthFailure.UNKNOWN_USER)
STALE = AuthResult(False, "201", True, AuthFailure.STALE_NONCE)
OK = AuthResult(True, "201", False, AuthFailure.OK)
NONE = AuthResult(False, None, False, AuthFailure.NO_CREDENTIALS)


def source(host: str, port: int = 5070) -> Source:
    return Source(TransportKind.UDP, Address(host, port), Address("127.0.0.1", 5060), None)


def request(
    method: str = "REGISTER", *, agent: str = "Yealink SIP-T46U", to_tag: str = ""
) -> Request:
    tag = f";tag={to_tag}" if to_tag else ""
    text = (
        f"{method} sip:home.arpa SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 10.0.0.5:5070;branch=z9hG4bKabc\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:201@home.arpa>;tag=f1\r\n"
        f"To: <sip:201@home.arpa>{tag}\r\n"
        "Call-ID: c1\r\n"
        f"CSeq: 1 {method}\r\n"
        f"User-Agent: {agent}\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    return message


class Harness:
    def __init__(self, settings: SecuritySettings | None = None) -> None:
        self.clock = ManualClock()
        self.events: list[PbxEvent] = []
        self.guard = Guard(settings or SecuritySettings(), self.clock, self.events.append)

    def fail(self, host: str, times: int = 1, result: AuthResult = WRONG) -> None:
        for _ in range(times):
            self.guard.authenticated(source(host), request(), result)

    def bans(self) -> list[AddressBanned]:
        return [event for event in self.events if isinstance(event, AddressBanned)]


def test_five_failures_within_the_window_ban_the_address_once() -> None:
    h = Harness()
    h.fail("10.0.0.9", 4)
    assert h.guard.admit(request(), source("10.0.0.9")) is None
    h.fail("10.0.0.9")
    assert h.guard.admit(request(), source("10.0.0.9")) is Refusal.BANNED
    assert h.guard.drops_datagram(b"REGISTER ...", source("10.0.0.9"))
    # Responses from it are ignored too, and the right password changes nothing.
    assert h.guard.admit(Response(200, "OK"), source("10.0.0.9")) is Refusal.BANNED
    h.fail("10.0.0.9", 3, OK)
    assert h.guard.is_banned("10.0.0.9")
    assert h.bans() == [AddressBanned("10.0.0.9", "201", 5, h.clock.wall() + 1800)]
    [ban] = h.guard.bans()
    assert (ban.address, ban.username, ban.failures) == ("10.0.0.9", "201", 5)
    # Other addresses are untouched.
    assert h.guard.admit(request(), source("10.0.0.10")) is None
    assert not h.guard.drops_datagram(b"REGISTER ...", source("10.0.0.10"))


def test_failures_older_than_the_window_do_not_count() -> None:
    h = Harness()
    for _ in range(10):
        h.fail("10.0.0.9", 2)
        h.clock.advance(200)  # never five within 300 s
    assert not h.guard.is_banned("10.0.0.9")
    assert h.bans() == []


def test_unknown_user_and_wrong_password_count_alike_stale_and_challenges_not_at_all() -> None:
    h = Harness()
    h.fail("10.0.0.9", 3, UNKNOWN)
    h.fail("10.0.0.9", 50, STALE)  # a phone retrying with a fresh nonce: it knows the password
    h.fail("10.0.0.9", 50, NONE)  # the routine first challenge
    h.fail("10.0.0.9", 1, AuthResult(False, "201", False, AuthFailure.URI_MISMATCH))
    assert not h.guard.is_banned("10.0.0.9")
    h.fail("10.0.0.9", 2, WRONG)
    assert h.guard.is_banned("10.0.0.9")


def test_ban_ends_after_ban_time_and_is_published() -> None:
    h = Harness(SecuritySettings(max_failures=2, failure_window=60, ban_time=100))
    h.fail("10.0.0.9", 2)
    h.clock.advance(99)
    assert h.guard.is_banned("10.0.0.9")
    h.clock.advance(1)
    assert not h.guard.is_banned("10.0.0.9")
    assert h.guard.admit(request(), source("10.0.0.9")) is None
    assert h.events[-1] == BanEnded("10.0.0.9", BanEndReason.EXPIRED)
    assert h.guard.bans() == []


def test_unban_lifts_a_ban_and_forgets_the_failures() -> None:
    h = Harness()
    h.fail("10.0.0.9", 5)
    assert h.guard.unban("10.0.0.9") is True
    assert h.events[-1] == BanEnded("10.0.0.9", BanEndReason.LIFTED)
    assert h.guard.admit(request(), source("10.0.0.9")) is None
    h.fail("10.0.0.9", 4)  # a fresh count: four more failures are not yet a ban
    assert not h.guard.is_banned("10.0.0.9")
    assert h.guard.unban("10.0.0.9") is False
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
        h.guard.unban("not-an-address")


def test_never_ban_networks_are_never_banned() -> None:
    h = Harness(SecuritySettings(never_ban=("10.0.0.0/24", "fd00::/8")))
    h.fail("10.0.0.9", 50)
    h.fail("fd00::5", 50)
    assert h.bans() == []
    h.fail("10.0.1.9", 5)
    assert [ban.address for ban in h.bans()] == ["10.0.1.9"]


def test_scope_only_loopback_private_and_link_local_by_default() -> None:
    for host in ("127.0.0.1", "127.0.0.2", "::1", "10.1.2.3", "192.168.1.20", "172.16.0.1",
                 "169.254.1.1", "fe80::1", "fd12::1", "::ffff:192.168.1.2"):  # fmt: skip
        assert in_default_scope(host), host
    for host in ("8.8.8.8", "2001:4860::8888", "::ffff:8.8.8.8", "100.64.0.1"):
        assert not in_default_scope(host), host
    h = Harness()
    assert h.guard.admit(request(), source("8.8.8.8")) is Refusal.OUT_OF_SCOPE
    opened = Harness(SecuritySettings(allow_public=True))
    assert opened.guard.admit(request(), source("8.8.8.8")) is None


@pytest.mark.parametrize(
    "agent",
    [
        "friendly-scanner",
        "sipvicious",
        "SIPVicious 0.3",
        "sipcli/v1.8",
        "VaxSIPUserAgent/3.1",
        "Sundayddr",
        "iWar",
    ],
)
def test_scanner_user_agents_are_dropped(agent: str) -> None:
    assert scanner_agent(request(agent=agent)) is not None
    h = Harness()
    assert h.guard.admit(request("OPTIONS", agent=agent), source("127.0.0.5")) is Refusal.SCANNER


@pytest.mark.parametrize(
    "agent", ["Linphone/5.2", "baresip v3.10", "sipsak 0.9.8", "Yealink SIP-T46U", "smapper-phone"]
)
def test_ordinary_user_agents_pass(agent: str) -> None:
    assert scanner_agent(request(agent=agent)) is None


def test_unauthenticated_flood_is_limited_per_source_and_others_are_served() -> None:
    h = Harness()
    flood = source("10.0.0.66")
    admitted = sum(h.guard.admit(request("OPTIONS"), flood) is None for _ in range(1000))
    assert admitted == int(FLOOD_BURST)
    assert h.guard.admit(request("OPTIONS"), source("10.0.0.7")) is None
    h.clock.advance(1.0)
    admitted = sum(h.guard.admit(request("OPTIONS"), flood) is None for _ in range(1000))
    assert admitted == int(FLOOD_RATE)
    # In-dialog requests and ACKs are not charged.
    assert h.guard.admit(request("BYE", to_tag="t9"), flood) is None
    assert h.guard.admit(request("ACK"), flood) is None
    assert h.guard.dropped[Refusal.FLOODING] == 2000 - int(FLOOD_BURST) - int(FLOOD_RATE)


def test_authenticating_clients_never_run_out_however_fast() -> None:
    """A benchmark client: thousands of challenges outstanding at once from one address, then
    their credentials, never limited."""
    h = Harness()
    phone = source("127.0.0.1")
    for _ in range(50):  # its first logins, one at a time
        assert h.guard.admit(request(), phone) is None  # no credentials: challenged
        assert h.guard.admit(request(), phone) is None  # with credentials
        h.guard.authenticated(phone, request(), OK)
    for _ in range(10):
        for _ in range(5000):  # a server behind by seconds: every challenge first...
            assert h.guard.admit(request(), phone) is None
        for index in range(5000):  # ...then every answer
            assert h.guard.admit(request(), phone) is None
            h.guard.authenticated(phone, request(), STALE if index % 7 else OK)
    assert h.guard.dropped[Refusal.FLOODING] == 0


def test_trust_ends_and_failures_count_all_the_same() -> None:
    h = Harness()
    phone = source("10.0.0.5")
    h.guard.authenticated(phone, request(), OK)
    assert sum(h.guard.admit(request("OPTIONS"), phone) is None for _ in range(1000)) == 1000
    h.clock.advance(TRUST_TIME)
    assert sum(h.guard.admit(request("OPTIONS"), phone) is None for _ in range(1000)) == int(
        FLOOD_BURST
    )
    h.guard.authenticated(phone, request(), OK)
    h.fail("10.0.0.5", 5)
    assert h.guard.is_banned("10.0.0.5")


def test_stale_answers_give_back_what_their_challenges_cost() -> None:
    h = Harness()
    phone = source("10.0.0.5")
    for _ in range(5000):
        assert h.guard.admit(request(), phone) is None
        assert h.guard.admit(request(), phone) is None
        h.guard.authenticated(phone, request(), STALE)
    assert h.guard.dropped[Refusal.FLOODING] == 0


def test_security_settings_load_and_refuse_bad_values() -> None:
    base = {"users": []}
    config = config_from_mapping(
        {
            **base,
            "security": {"max_failures": 3, "never_ban": ["192.168.1.7/24"], "allow_public": True},
        }
    )
    assert config.security == SecuritySettings(3, 300, 1800, ("192.168.1.0/24",), True)
    assert config_from_mapping(config.to_mapping()) == config
    assert config_from_mapping(base).security == SecuritySettings()
    for bad, key in (
        ({"max_failures": 0}, "max_failures"),
        ({"ban_time": "long"}, "ban_time"),
        ({"never_ban": ["the kitchen"]}, "never_ban"),
        ({"never_ban": "10.0.0.0/8"}, "never_ban"),
        ({"allow_public": "yes"}, "allow_public"),
        ({"max_failure": 3}, "max_failure"),
    ):
        with pytest.raises(ConfigError) as caught:
            config_from_mapping({**base, "security": bad})
        assert key in str(caught.value)


def test_settings_change_live_and_bans_in_force_stay() -> None:
    h = Harness()
    h.fail("10.0.0.9", 5)
    h.guard.update(SecuritySettings(max_failures=2, never_ban=("10.0.0.0/8",), allow_public=True))
    assert h.guard.is_banned("10.0.0.9")
    h.fail("10.0.0.10", 10)
    assert not h.guard.is_banned("10.0.0.10")
    h.fail("192.168.0.9", 2)
    assert h.guard.is_banned("192.168.0.9")
    assert h.guard.admit(request(), source("8.8.8.8")) is None
