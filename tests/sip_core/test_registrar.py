"""The registrar, RFC 3261 §10.3 step by step, with real parsed messages and a ManualClock.

Each REGISTER goes through the full digest round trip: a first request without credentials, the
401's challenge, then the request again with a response computed here with hashlib.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from email.utils import parsedate_to_datetime

import pytest

from sip_core.clock import ManualClock
from sip_core.digest import DeviceCredentials, DigestAlgorithm, DigestAuthenticator
from sip_core.events import EventBus, RegistrationChanged, RegistrationReason
from sip_core.message import Request, Response, parse_message
from sip_core.registrar import (
    Binding,
    BindingStore,
    Registrar,
    RegistrarSettings,
    route_to_contact,
)
from sip_core.transport import Address, Source, TransportKind
from sip_core.uri import SipUri

DOMAIN = "home.example"
MD5 = DigestAlgorithm.MD5
SHA256 = DigestAlgorithm.SHA256

DEVICES = {
    "alice": DeviceCredentials("alice", "wonderland"),
    "bob": DeviceCredentials("bob", "b0b", (MD5,)),
    "carol": DeviceCredentials("carol", "c4rol", (SHA256, MD5)),
}
SOURCE = Source(TransportKind.UDP, Address("192.0.2.10", 5062), Address("192.0.2.1", 5060), None)
LOOPBACK = Source(TransportKind.TCP, Address("127.0.0.1", 40000), Address("127.0.0.1", 5060), 7)


def h(algorithm: str, text: str) -> str:
    function = hashlib.md5 if algorithm == "MD5" else hashlib.sha256
    return function(text.encode()).hexdigest()


class Harness:
    """A registrar with a ManualClock, the events it published, and a phone-like client."""

    def __init__(self, **settings: object) -> None:
        self.clock = ManualClock()
        self.auth = DigestAuthenticator(DOMAIN, self.clock, DEVICES.get)
        self.events: list[RegistrationChanged] = []
        self.registrar = Registrar(
            RegistrarSettings(DOMAIN, **settings),  # type: ignore[arg-type]
            self.auth,
            self.clock,
            publish=self.events.append,
        )
        self.cseq = 0

    def request(
        self,
        *,
        user: str = "alice",
        contacts: list[str] | None = None,
        expires: int | str | None = None,
        call_id: str = "call-1@phone",
        cseq: int | None = None,
        request_uri: str = f"sip:{DOMAIN}",
        to_uri: str | None = None,
        extra: list[str] | None = None,
        authorization: str | None = None,
    ) -> Request:
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        to_uri = to_uri or f"sip:{user}@{DOMAIN}"
        lines = [
            f"REGISTER {request_uri} SIP/2.0",
            f"Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK-{cseq}-{len(call_id)}",
            "Max-Forwards: 70",
            f"From: <{to_uri}>;tag=from1",
            f"To: <{to_uri}>",
            f"Call-ID: {call_id}",
            f"CSeq: {cseq} REGISTER",
            "User-Agent: TestPhone/1.0",
        ]
        lines += [f"Contact: {c}" for c in contacts or []]
        if expires is not None:
            lines.append(f"Expires: {expires}")
        lines += extra or []
        if authorization is not None:
            lines.append(f"Authorization: {authorization}")
        data = ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()
        message = parse_message(data)
        assert isinstance(message, Request)
        return message

    def register(
        self,
        *,
        user: str = "alice",
        password: str | None = None,
        algorithm: str | None = None,
        source: Source = SOURCE,
        nc: str = "00000001",
        **kwargs: object,
    ) -> Response:
        """The whole round trip; returns the final response."""
        first = self.registrar.handle_register(
            self.request(user=user, **kwargs),  # type: ignore[arg-type]
            source,
        )
        if first.status != 401:
            return first
        challenge = (
            challenges(first)[0]
            if algorithm is None
            else next(c for c in challenges(first) if c["algorithm"] == algorithm)
        )
        password = DEVICES[user].password if password is None and user in DEVICES else password
        value = authorization_for(
            user, password or "x", challenge, kwargs.get("request_uri", f"sip:{DOMAIN}"), nc
        )  # type: ignore[arg-type]
        return self.registrar.handle_register(
            self.request(user=user, authorization=value, **kwargs),  # type: ignore[arg-type]
            source,
        )


def challenges(response: Response) -> list[dict[str, str]]:
    result = []
    for value in response.headers.get_all("WWW-Authenticate"):
        assert value.startswith("Digest ")
        params = dict(re.findall(r'(\w+)="?([^",]*)"?', value[7:]))
        result.append(params)
    return result


def authorization_for(
    user: str, password: str, challenge: dict[str, str], uri: str, nc: str = "00000001"
) -> str:
    algorithm = challenge["algorithm"]
    nonce = challenge["nonce"]
    ha1 = h(algorithm, f"{user}:{DOMAIN}:{password}")
    ha2 = h(algorithm, f"REGISTER:{uri}")
    response = h(algorithm, f"{ha1}:{nonce}:{nc}:abcdef:auth:{ha2}")
    return (
        f'Digest username="{user}", realm="{DOMAIN}", nonce="{nonce}", uri="{uri}", '
        f'response="{response}", algorithm={algorithm}, cnonce="abcdef", nc={nc}, qop=auth, '
        f'opaque="{challenge["opaque"]}"'
    )


def contact_expires(response: Response) -> dict[str, int]:
    """Contact URI -> expires, from a 200."""
    result = {}
    for value in response.headers.get_all("Contact"):
        uri = value[value.index("<") + 1 : value.index(">")]
        result[uri] = int(re.search(r";expires=(\d+)", value).group(1))  # type: ignore[union-attr]
    return result


PHONE = "<sip:alice@192.0.2.10:5062>"
MOBILE = "<sip:alice@198.51.100.7:40123;transport=tcp>"


@pytest.fixture
def hx() -> Harness:
    return Harness()


# -- step 1: the Request-URI --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_uri", "source", "status"),
    [
        (f"sip:{DOMAIN}", SOURCE, 200),
        ("sip:HOME.Example", SOURCE, 200),
        ("sip:192.0.2.1:5060", SOURCE, 200),  # the address it arrived on
        ("sip:127.0.0.1", LOOPBACK, 200),
        ("sip:localhost", LOOPBACK, 200),
        ("sip:localhost", SOURCE, 404),  # localhost is ours only over loopback
        ("sip:elsewhere.example", SOURCE, 404),
        ("sip:192.0.2.99", SOURCE, 404),
        (f"sip:alice@{DOMAIN}", SOURCE, 200),  # a user part is tolerated
    ],
)
def test_request_uri_domain(hx: Harness, request_uri: str, source: Source, status: int) -> None:
    response = hx.register(contacts=[PHONE], request_uri=request_uri, source=source)
    assert response.status == status


def test_configured_local_hosts_are_ours() -> None:
    hx = Harness(local_hosts=frozenset({"pbx.lan", "[2001:db8::1]"}))
    assert hx.register(contacts=[PHONE], request_uri="sip:pbx.lan").status == 200
    assert hx.register(contacts=[PHONE], request_uri="sip:[2001:DB8:0::1]").status == 200


# -- step 2: Require ----------------------------------------------------------------------------


def test_unsupported_require_gets_420(hx: Harness) -> None:
    response = hx.registrar.handle_register(
        hx.request(contacts=[PHONE], extra=["Require: path, foo"]), SOURCE
    )
    assert response.status == 420
    assert response.headers.get("Unsupported") == "path, foo"
    assert not hx.events


def test_supported_require_passes() -> None:
    hx = Harness(supported_extensions=frozenset({"path"}))
    assert hx.register(contacts=[PHONE], extra=["Require: Path"]).status == 200


# -- step 3: authentication ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "order"),
    [
        ("alice", ["MD5"]),  # the default
        ("bob", ["MD5"]),
        ("carol", ["SHA-256", "MD5"]),  # the per-device option
        ("mallory", ["MD5"]),  # unknown: the default, like any device
    ],
)
def test_challenge_in_device_order(hx: Harness, user: str, order: list[str]) -> None:
    response = hx.registrar.handle_register(hx.request(user=user, contacts=[PHONE]), SOURCE)
    assert response.status == 401
    found = challenges(response)
    assert [c["algorithm"] for c in found] == order
    assert all(c["realm"] == DOMAIN and c["qop"] == "auth" for c in found)
    assert not hx.events


@pytest.mark.parametrize(
    ("user", "algorithm"), [("alice", "MD5"), ("carol", "SHA-256"), ("carol", "MD5")]
)
def test_both_algorithms_register(hx: Harness, user: str, algorithm: str) -> None:
    contact = f"<sip:{user}@192.0.2.10:5062>"
    response = hx.register(user=user, algorithm=algorithm, contacts=[contact])
    assert response.status == 200
    assert hx.registrar.store.get(user)[0].username == user


def _normalised(response: Response) -> list[tuple[str, str]]:
    items = []
    for name, raw in response.headers:
        value = re.sub(r'nonce="[^"]*"', 'nonce="N"', raw)
        items.append((name, re.sub(r";tag=[^;,]*", ";tag=T", value)))
    return [(str(response.status), response.reason), *items]


def test_unknown_user_and_wrong_password_get_identical_answers(
    hx: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "sip_core")
    common = {"contacts": [PHONE], "cseq": 5, "to_uri": f"sip:alice@{DOMAIN}"}
    unknown = hx.register(user="mallory", password="guess", **common)  # type: ignore[arg-type]
    wrong = hx.register(user="alice", password="guess", **common)  # type: ignore[arg-type]
    assert unknown.status == wrong.status == 401
    assert _normalised(unknown) == _normalised(wrong)
    assert not hx.events
    # ...but the log tells them apart.
    messages = [r.getMessage() for r in caplog.records]
    assert any("unknown user" in m for m in messages)
    assert any("wrong password" in m for m in messages)


def test_unknown_user_gets_the_challenge_of_a_device_on_the_defaults(hx: Harness) -> None:
    """No enumeration by challenge set: each registering its own AOR, an unknown user and a
    device on the default settings get the same 401, header for header (the nonce aside)."""
    unknown = hx.registrar.handle_register(
        hx.request(user="mallory", contacts=[PHONE], cseq=1), SOURCE
    )
    known = hx.registrar.handle_register(hx.request(user="alice", contacts=[PHONE], cseq=1), SOURCE)
    assert unknown.status == known.status == 401

    def challenge_only(response: Response) -> list[str]:
        return [
            re.sub(r'nonce="[^"]*"', 'nonce="N"', value)
            for value in response.headers.get_all("WWW-Authenticate")
        ]

    assert challenge_only(unknown) == challenge_only(known)
    assert [c["algorithm"] for c in challenges(known)] == ["MD5"]


def test_stale_nonce_gets_stale_challenge(hx: Harness) -> None:
    first = hx.registrar.handle_register(hx.request(contacts=[PHONE]), SOURCE)
    challenge = challenges(first)[0]
    hx.clock.advance(301)
    value = authorization_for("alice", "wonderland", challenge, f"sip:{DOMAIN}")
    response = hx.registrar.handle_register(
        hx.request(contacts=[PHONE], authorization=value), SOURCE
    )
    assert response.status == 401
    assert all("stale=true" in v for v in response.headers.get_all("WWW-Authenticate"))
    assert not hx.events


def test_replayed_request_is_refused(hx: Harness) -> None:
    first = hx.registrar.handle_register(hx.request(contacts=[PHONE]), SOURCE)
    value = authorization_for("alice", "wonderland", challenges(first)[0], f"sip:{DOMAIN}")
    replay = hx.request(contacts=[PHONE], authorization=value)
    assert hx.registrar.handle_register(replay, SOURCE).status == 200
    again = hx.request(contacts=[PHONE], authorization=value, cseq=hx.cseq + 5)
    assert hx.registrar.handle_register(again, SOURCE).status == 401
    assert len(hx.events) == 1


def test_digest_uri_other_than_request_uri_is_400(hx: Harness) -> None:
    first = hx.registrar.handle_register(hx.request(contacts=[PHONE]), SOURCE)
    value = authorization_for("alice", "wonderland", challenges(first)[0], "sip:other.example")
    response = hx.registrar.handle_register(
        hx.request(contacts=[PHONE], authorization=value), SOURCE
    )
    assert response.status == 400
    assert not hx.events


@pytest.mark.parametrize(
    ("digest_uri", "status"),
    [
        (f"sip:{DOMAIN}:5060", 200),  # sipp's default: the address it sent to; 5060 is ours
        (f"sip:{DOMAIN}", 200),
        (f"sip:{DOMAIN}:5070", 400),  # not the port the request arrived on
        ("sip:other.example:5060", 400),
        (f"sip:alice@{DOMAIN}", 400),
    ],
)
def test_digest_uri_naming_our_port_is_the_same_target(
    hx: Harness, digest_uri: str, status: int
) -> None:
    first = hx.registrar.handle_register(hx.request(contacts=[PHONE]), SOURCE)
    value = authorization_for("alice", "wonderland", challenges(first)[0], digest_uri)
    response = hx.registrar.handle_register(
        hx.request(contacts=[PHONE], authorization=value), SOURCE
    )
    assert response.status == status
    assert len(hx.events) == (1 if status == 200 else 0)


# -- steps 4 and 5: whose AOR -------------------------------------------------------------------


def test_device_may_register_only_its_own_aor(hx: Harness) -> None:
    response = hx.register(user="alice", contacts=[PHONE], to_uri=f"sip:bob@{DOMAIN}")
    assert response.status == 403
    assert not hx.registrar.store.get("bob")
    assert not hx.registrar.store.get("alice")


def test_aor_in_another_domain_is_404(hx: Harness) -> None:
    response = hx.register(contacts=[PHONE], to_uri="sip:alice@elsewhere.example")
    assert response.status == 404


# -- step 6: contacts and expiry values ---------------------------------------------------------


@pytest.mark.parametrize(
    ("contact", "header", "expected"),
    [
        (PHONE, None, 3600),  # default
        (PHONE, 120, 120),  # Expires header
        (PHONE + ";expires=300", 120, 300),  # the Contact parameter wins
        (PHONE + ";expires=300", None, 300),
        (PHONE, 7200, 3600),  # clamped to the maximum
        (PHONE + ";expires=99999999999", None, 3600),
        (PHONE + ";expires=soon", 120, 3600),  # malformed: the default
        (PHONE, 60, 60),  # exactly the minimum
    ],
)
def test_expires_sources(hx: Harness, contact: str, header: int | None, expected: int) -> None:
    response = hx.register(contacts=[contact], expires=header)
    assert response.status == 200
    assert contact_expires(response) == {"sip:alice@192.0.2.10:5062": expected}
    binding = hx.registrar.store.get("alice")[0]
    assert binding.expires_at == hx.clock.monotonic() + expected
    assert "expires" not in binding.contact


@pytest.mark.parametrize(
    ("contacts", "header"),
    [([PHONE + ";expires=59"], None), ([PHONE], 1), ([PHONE, MOBILE + ";expires=30"], 600)],
)
def test_too_brief_gets_423_with_min_expires(
    hx: Harness, contacts: list[str], header: int | None
) -> None:
    response = hx.register(contacts=contacts, expires=header)
    assert response.status == 423
    assert response.headers.get("Min-Expires") == "60"
    assert not hx.registrar.store.get("alice")  # atomic: not even the good contact
    assert not hx.events


@pytest.mark.parametrize(("contacts", "expires"), [(["*"], None), (["*"], 60)])
def test_bad_wildcard_is_400(hx: Harness, contacts: list[str], expires: int | None) -> None:
    assert hx.register(contacts=[PHONE]).status == 200
    response = hx.register(contacts=contacts, expires=expires)
    assert response.status == 400
    assert len(hx.registrar.store.get("alice")) == 1


def test_wildcard_with_another_contact_is_400(hx: Harness) -> None:
    # The parser already refuses this on the wire; a request built in code reaches the registrar.
    assert hx.register(contacts=[PHONE]).status == 200
    first = hx.registrar.handle_register(hx.request(contacts=["*"], expires=0), SOURCE)
    value = authorization_for("alice", "wonderland", challenges(first)[0], f"sip:{DOMAIN}")
    request = hx.request(contacts=["*"], expires=0, authorization=value)
    request.headers.add("Contact", PHONE)
    response = hx.registrar.handle_register(request, SOURCE)
    assert response.status == 400
    assert len(hx.registrar.store.get("alice")) == 1


def test_wildcard_removes_every_binding(hx: Harness) -> None:
    assert hx.register(contacts=[PHONE, MOBILE]).status == 200
    response = hx.register(contacts=["*"], expires=0)
    assert response.status == 200
    assert response.headers.get_all("Contact") == []
    assert hx.registrar.store.get("alice") == ()
    assert hx.events[-1].reason is RegistrationReason.UNREGISTERED
    assert hx.events[-1].bindings == ()
    assert len(hx.events[-1].changed) == 2


def test_query_without_contact_lists_bindings_and_changes_nothing(hx: Harness) -> None:
    hx.register(contacts=[PHONE], expires=600)
    hx.clock.advance(100)
    response = hx.register(contacts=[])
    assert response.status == 200
    assert contact_expires(response) == {"sip:alice@192.0.2.10:5062": 500}
    assert len(hx.events) == 1


# -- step 7: Call-ID and CSeq -------------------------------------------------------------------


def test_refresh_same_call_id_higher_cseq(hx: Harness) -> None:
    hx.register(contacts=[PHONE], expires=600)
    registered_at = hx.registrar.store.get("alice")[0].registered_at
    hx.clock.advance(300)
    response = hx.register(contacts=[PHONE], expires=600)
    assert response.status == 200
    assert contact_expires(response) == {"sip:alice@192.0.2.10:5062": 600}
    [binding] = hx.registrar.store.get("alice")
    assert binding.registered_at == registered_at
    assert binding.cseq == hx.cseq
    assert [e.reason for e in hx.events] == [
        RegistrationReason.REGISTERED,
        RegistrationReason.REFRESHED,
    ]


def test_same_call_id_lower_cseq_is_refused_with_500(hx: Harness) -> None:
    hx.cseq = 10
    hx.register(contacts=[PHONE], expires=600)
    before = hx.registrar.store.get("alice")
    response = hx.register(contacts=[PHONE, MOBILE], expires=900, cseq=5)
    assert response.status == 500
    assert hx.registrar.store.get("alice") == before
    assert len(hx.events) == 1


def test_out_of_order_wildcard_is_refused(hx: Harness) -> None:
    hx.cseq = 10
    hx.register(contacts=[PHONE])
    assert hx.register(contacts=["*"], expires=0, cseq=3).status == 500
    assert len(hx.registrar.store.get("alice")) == 1


def test_different_call_id_replaces_binding(hx: Harness) -> None:
    hx.cseq = 50
    hx.register(contacts=[PHONE], call_id="before-reboot")
    hx.clock.advance(10)
    response = hx.register(contacts=[PHONE], call_id="after-reboot", cseq=1)
    assert response.status == 200
    [binding] = hx.registrar.store.get("alice")
    assert (binding.call_id, binding.cseq) == ("after-reboot", 1)
    assert binding.registered_at == hx.clock.wall()
    assert hx.events[-1].reason is RegistrationReason.REGISTERED


def test_unregister_one_contact_by_expires_zero(hx: Harness) -> None:
    hx.register(contacts=[PHONE, MOBILE])
    response = hx.register(contacts=[MOBILE + ";expires=0"])
    assert response.status == 200
    assert list(contact_expires(response)) == ["sip:alice@192.0.2.10:5062"]
    event = hx.events[-1]
    assert event.reason is RegistrationReason.UNREGISTERED
    assert [b.contact for b in event.changed] == [MOBILE]
    # Removing a contact that is not registered is no change.
    assert hx.register(contacts=[MOBILE], expires=0).status == 200
    assert len(hx.events) == 2


# -- several contacts, instance ids, the limit ----------------------------------------------------


def test_several_contacts_and_full_list_in_200(hx: Harness) -> None:
    hx.register(contacts=[PHONE], expires=600, call_id="desk")
    hx.clock.advance(100)
    response = hx.register(contacts=[MOBILE], expires=300, call_id="mobile", cseq=1)
    assert contact_expires(response) == {
        "sip:alice@192.0.2.10:5062": 500,
        "sip:alice@198.51.100.7:40123;transport=tcp": 300,
    }
    date = parsedate_to_datetime(response.headers.get("Date") or "")
    assert date.timestamp() == pytest.approx(hx.clock.wall(), abs=1)
    assert len(hx.registrar.store.get("alice")) == 2


def test_equivalent_contact_uri_is_the_same_binding(hx: Harness) -> None:
    hx.register(contacts=["<sip:alice@192.0.2.10:5062;Transport=UDP>"])
    hx.register(contacts=["<sip:alice@192.0.2.10:5062;transport=udp;ob>"])
    assert len(hx.registrar.store.get("alice")) == 1


def test_instance_id_identifies_the_binding(hx: Harness) -> None:
    instance = ';+sip.instance="<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>"'
    hx.register(contacts=["<sip:alice@192.0.2.10:5062>" + instance], call_id="a")
    hx.register(contacts=["<sip:alice@192.0.2.10:6000>" + instance], call_id="b", cseq=1)
    [binding] = hx.registrar.store.get("alice")
    assert binding.instance_id == "urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF"
    assert "6000" in binding.contact


def test_max_contacts_evicts_the_one_expiring_first() -> None:
    hx = Harness(max_contacts=2)
    hx.register(contacts=["<sip:alice@192.0.2.1:1>"], expires=900, call_id="one")
    hx.register(contacts=["<sip:alice@192.0.2.1:2>"], expires=300, call_id="two", cseq=1)
    response = hx.register(
        contacts=["<sip:alice@192.0.2.1:3>"], expires=600, call_id="three", cseq=1
    )
    assert response.status == 200
    assert set(contact_expires(response)) == {"sip:alice@192.0.2.1:1", "sip:alice@192.0.2.1:3"}
    assert hx.registrar.store._live == 2


def test_more_contacts_in_one_request_than_allowed_is_503() -> None:
    hx = Harness(max_contacts=2)
    contacts = [f"<sip:alice@192.0.2.1:{port}>" for port in (1, 2, 3)]
    assert hx.register(contacts=contacts).status == 503
    assert hx.registrar.store.get("alice") == ()


def test_binding_fields(hx: Harness) -> None:
    hx.register(contacts=[PHONE + ";q=0.7"], expires=600)
    [binding] = hx.registrar.store.get("alice")
    assert binding.username == "alice"
    assert binding.q == 0.7
    assert binding.user_agent == "TestPhone/1.0"
    assert binding.source == SOURCE
    assert binding.call_id == "call-1@phone"
    assert binding.expires_at_wall == hx.clock.wall() + 600
    assert str(binding.contact_uri) == "sip:alice@192.0.2.10:5062"


# -- expiry ---------------------------------------------------------------------------------------


def test_expiry_with_manual_clock(hx: Harness) -> None:
    hx.register(contacts=[PHONE], expires=600, call_id="desk")
    hx.register(contacts=[MOBILE], expires=300, call_id="mobile", cseq=1)
    registrar = hx.registrar
    start = hx.clock.monotonic()
    assert registrar.next_expiry() == start + 300

    fired: list[float | None] = []

    def on_timer() -> None:
        fired.append(registrar.expire())

    hx.clock.call_later(registrar.next_expiry() - start, on_timer)  # type: ignore[operator]
    hx.clock.advance(299)
    assert not fired
    hx.clock.advance(1)
    assert fired == [start + 600]
    event = hx.events[-1]
    assert event.reason is RegistrationReason.EXPIRED
    assert [b.contact for b in event.changed] == [MOBILE]
    assert [b.contact for b in event.bindings] == [PHONE]
    hx.clock.advance(300)
    assert registrar.expire() is None
    assert hx.events[-1].bindings == ()
    assert len(registrar.store) == 0


def test_refresh_moves_next_expiry(hx: Harness) -> None:
    hx.register(contacts=[PHONE], expires=100)
    hx.clock.advance(50)
    hx.register(contacts=[PHONE], expires=100)
    assert hx.registrar.next_expiry() == hx.clock.monotonic() + 100
    assert hx.registrar.expire(hx.clock.monotonic() + 60) == hx.clock.monotonic() + 100
    assert len(hx.registrar.store) == 1


def test_expired_but_uncollected_binding_counts_as_gone(hx: Harness) -> None:
    hx.register(contacts=[PHONE], expires=60)
    hx.clock.advance(61)
    response = hx.register(contacts=[MOBILE])
    assert list(contact_expires(response)) == ["sip:alice@198.51.100.7:40123;transport=tcp"]
    assert len(hx.registrar.store) == 1
    assert hx.registrar.expire() is not None  # the stale heap entry is skipped


# -- persistence ----------------------------------------------------------------------------------


def test_persistence_round_trip(hx: Harness) -> None:
    hx.register(contacts=[PHONE + ";q=0.5"], expires=600, call_id="desk")
    hx.register(contacts=[MOBILE], expires=120, call_id="mobile", cseq=1, source=LOOPBACK)
    records = json.loads(json.dumps(hx.registrar.store.records()))
    assert len(records) == 2

    later = ManualClock(start=5.0, wall=hx.clock.wall() + 200)  # a restart, 200 s later
    store = BindingStore(later)
    assert store.restore(records) == 1  # the mobile's binding has expired meanwhile
    [binding] = store.get("alice")
    original = hx.registrar.store.get("alice")[0]
    assert binding.contact == original.contact
    assert binding.q == 0.5
    assert binding.expires_at_wall == original.expires_at_wall
    assert binding.expires_at == pytest.approx(5.0 + 400)
    assert binding.registered_at == original.registered_at
    assert binding.source == original.source
    assert store.next_expiry() == pytest.approx(405.0)


def test_restore_with_explicit_wall_time_and_broken_records() -> None:
    clock = ManualClock()
    binding = Binding(
        username="bob",
        contact="<sip:bob@192.0.2.5>",
        expires_at=0.0,
        registered_at=100.0,
        expires_at_wall=1000.0,
        call_id="c",
        cseq=1,
        source=LOOPBACK,
    )
    record = binding.to_dict()
    assert record["transport"] == "TCP"
    store = BindingStore(clock)
    assert store.restore([record, {"username": "x"}, {**record, "transport": "SCTP"}], 900.0) == 1
    restored = store.get("bob")[0]
    assert restored.source.connection_id is None  # connections do not survive a restart
    assert restored.expires_at == clock.monotonic() + 100
    assert BindingStore(clock).restore([record], 1000.0) == 0


def test_restored_bindings_are_refreshed_by_the_same_registration() -> None:
    hx = Harness()
    hx.cseq = 20
    hx.register(contacts=[PHONE], expires=600)
    records = hx.registrar.store.records()
    hx2 = Harness()
    hx2.registrar.store.restore(records)
    stored = records[0]["cseq"]
    assert stored > 20
    assert hx2.register(contacts=[PHONE], expires=600, cseq=3).status == 500  # out of order
    assert hx2.register(contacts=[PHONE], expires=600, cseq=stored).status == 500  # not higher
    assert hx2.register(contacts=[PHONE], expires=600, cseq=stored + 1).status == 200
    assert len(hx2.registrar.store) == 1


# -- events and logging -------------------------------------------------------------------------


def test_event_bus_delivers_and_isolates_failures(
    hx: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    bus = EventBus()
    got: list[str] = []

    def broken(event: RegistrationChanged) -> None:
        raise RuntimeError("boom")

    unsubscribe_broken = bus.subscribe(broken)
    unsubscribe = bus.subscribe(lambda e: got.append(e.username))
    hx.registrar._publish = bus.publish
    hx.register(contacts=[PHONE])
    assert got == ["alice"]
    assert any("boom" in r.exc_text for r in caplog.records if r.exc_text)
    unsubscribe()
    unsubscribe()  # twice is harmless
    unsubscribe_broken()
    hx.register(contacts=[PHONE])
    assert got == ["alice"]
    assert len(bus) == 0


def test_one_log_line_per_change_and_per_refusal(
    hx: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "sip_core")
    hx.register(contacts=[PHONE], expires=600)
    lines = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert len(lines) == 1
    assert "alice" in lines[0].getMessage()
    assert "registered" in lines[0].getMessage()
    assert "192.0.2.10:5062" in lines[0].getMessage()
    assert "600" in lines[0].getMessage()
    caplog.clear()
    hx.register(contacts=[PHONE], expires=10)
    lines = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert len(lines) == 1
    assert "423" in lines[0].getMessage()
    assert "below" in lines[0].getMessage()


def test_remove_a_deleted_device(hx: Harness) -> None:
    hx.register(contacts=[PHONE, MOBILE], expires=300)
    hx.register(user="bob", contacts=["<sip:bob@192.0.2.11>"], expires=600)
    gone = hx.registrar.store.remove("alice")
    assert sorted(b.contact for b in gone) == sorted([PHONE, MOBILE])
    assert hx.registrar.store.get("alice") == ()
    assert hx.registrar.store.remove("alice") == ()
    assert len(hx.registrar.store) == 1
    assert hx.registrar.next_expiry() == hx.clock.monotonic() + 600  # alice's heap entries are dead


def test_binding_record_round_trip_is_exact() -> None:
    binding = Binding(
        username="alice",
        contact='"Desk" <sip:alice@192.0.2.10:5062;transport=udp>;+sip.instance="<urn:x>"',
        expires_at=1300.0,
        registered_at=1_700_000_000.0,
        expires_at_wall=1_700_000_300.0,
        call_id="abc@phone",
        cseq=7,
        source=SOURCE,
        q=0.25,
        user_agent="Phone 1.0",
        instance_id="urn:x",
    )
    record = json.loads(json.dumps(binding.to_dict()))
    assert Binding.from_dict(record, now_wall=1_700_000_100.0, now=1100.0) == binding


def test_registration_events_say_who_is_online(hx: Harness) -> None:
    hx.register(contacts=[PHONE])
    assert hx.events[-1].online
    assert hx.events[-1].bindings[0].contact == PHONE
    hx.register(contacts=[PHONE], expires=0)
    assert not hx.events[-1].online
    assert [e.reason for e in hx.events] == [
        RegistrationReason.REGISTERED,
        RegistrationReason.UNREGISTERED,
    ]


def test_device_limited_to_md5_cannot_answer_with_sha256(hx: Harness) -> None:
    first = hx.registrar.handle_register(hx.request(user="bob", contacts=[PHONE]), SOURCE)
    challenge = {**challenges(first)[0], "algorithm": "SHA-256"}
    value = authorization_for("bob", "b0b", challenge, f"sip:{DOMAIN}")
    response = hx.registrar.handle_register(
        hx.request(user="bob", contacts=[PHONE], authorization=value), SOURCE
    )
    assert response.status == 401
    assert hx.registrar.store.get("bob") == ()


# -- routing to a binding -------------------------------------------------------------------------

_UDP_FROM = Source(TransportKind.UDP, Address("192.0.2.10", 5062), Address("192.0.2.1", 5060), None)
_TCP_FROM = Source(TransportKind.TCP, Address("192.0.2.10", 40123), Address("192.0.2.1", 5060), 9)
_V6 = TransportKind.UDP, Address("2001:db8::10", 5062), Address("2001:db8::1", 5060)
_V6_FROM = Source(*_V6, None)


@pytest.mark.parametrize(
    ("contact", "source", "kind", "destination"),
    [
        # The Contact is reachable (its host is where the REGISTER came from): it is used.
        ("sip:alice@192.0.2.10:5070", _UDP_FROM, "UDP", ("192.0.2.10", 5070)),
        ("sip:alice@192.0.2.10", _UDP_FROM, "UDP", ("192.0.2.10", 5060)),
        ("sip:alice@192.0.2.10:5070;transport=tcp", _UDP_FROM, "TCP", ("192.0.2.10", 5070)),
        ("sip:alice@192.0.2.10:5070;transport=TCP", _TCP_FROM, "TCP", ("192.0.2.10", 5070)),
        ("sip:alice@192.0.2.10:5070", _TCP_FROM, "UDP", ("192.0.2.10", 5070)),
        ("sip:alice@[2001:DB8:0::10]:5070", _V6_FROM, "UDP", ("2001:db8::10", 5070)),
        # The Contact is the source itself: the device's own flow (its TCP connection).
        ("sip:alice@192.0.2.10:5062", _UDP_FROM, "UDP", ("192.0.2.10", 5062)),
        ("sip:alice@192.0.2.10:40123;transport=tcp", _TCP_FROM, "TCP", ("192.0.2.10", 40123)),
        ("sip:alice@192.0.2.10:40123", _TCP_FROM, "TCP", ("192.0.2.10", 40123)),
        # Not reachable from here: back where the REGISTER came from, the same way.
        ("sip:alice@10.0.0.7:5060", _UDP_FROM, "UDP", ("192.0.2.10", 5062)),
        ("sip:alice@10.0.0.7:5060;transport=tcp", _TCP_FROM, "TCP", ("192.0.2.10", 40123)),
        ("sip:alice@phone.invalid:5060", _UDP_FROM, "UDP", ("192.0.2.10", 5062)),
        ("sip:alice@192.0.2.10:5070;transport=tls", _TCP_FROM, "TCP", ("192.0.2.10", 40123)),
        ("sip:alice@192.0.2.10:5070;transport=ws", _TCP_FROM, "TCP", ("192.0.2.10", 40123)),
        ("sips:alice@192.0.2.10:5071", _TCP_FROM, "TCP", ("192.0.2.10", 40123)),
        ("sip:alice@192.0.2.10:5070;maddr=10.0.0.7", _UDP_FROM, "UDP", ("192.0.2.10", 5062)),
    ],
)
def test_route_to_contact_unless_it_cannot_be_reached(
    contact: str, source: Source, kind: str, destination: tuple[str, int]
) -> None:
    route = route_to_contact(SipUri.parse(contact), source)
    assert (route.kind.value, route.remote) == (kind, Address(*destination))
    # Our side stays the address the REGISTER reached (for Via, Contact and SDP).
    assert route.local == source.local
    # The device's own TCP connection is kept exactly when the route is its source.
    assert (route.connection_id == source.connection_id) or route.remote != source.remote


def test_route_of_an_ipv4_peer_on_a_dual_stack_socket() -> None:
    mapped = Source(
        TransportKind.UDP, Address("::ffff:192.0.2.10", 5062), Address("::", 5060), None
    )
    route = route_to_contact(SipUri.parse("sip:alice@192.0.2.10:5070"), mapped)
    assert route.remote == Address("::ffff:192.0.2.10", 5070)


def test_binding_route_follows_its_contact(hx: Harness) -> None:
    contact = "<sip:alice@192.0.2.10:5070>"
    assert hx.register(contacts=[contact]).status == 200
    (binding,) = hx.registrar.store.get("alice")
    assert binding.source.remote == Address("192.0.2.10", 5062)
    assert binding.route.remote == Address("192.0.2.10", 5070)
