"""Server-side digest (RFC 7616): challenges, verification, nonces, replay protection, parsing.

Expected responses are computed here with hashlib straight from RFC 7616 §3.4.1's formulas, not
with the module's own helpers.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sip_core.clock import ManualClock
from sip_core.digest import (
    DEFAULT_ALGORITHMS,
    AuthFailure,
    DeviceCredentials,
    DigestAlgorithm,
    DigestAuthenticator,
    digest_uri_matches,
    parse_credentials,
)
from sip_core.uri import SipUri

REALM = "home.example"
MD5 = DigestAlgorithm.MD5
SHA256 = DigestAlgorithm.SHA256


@dataclass
class FakeHeaders:
    """Just enough of Headers for the authenticator: get_all by case-insensitive name."""

    items: list[tuple[str, str]] = field(default_factory=list)

    def get_all(self, name: str) -> list[str]:
        return [v for n, v in self.items if n.lower() == name.lower()]


@dataclass
class FakeRequest:
    method: str
    uri: SipUri
    headers: FakeHeaders


def h(algorithm: str, text: str) -> str:
    function = hashlib.md5 if algorithm == "MD5" else hashlib.sha256
    return function(text.encode()).hexdigest()


def digest_response(
    *,
    algorithm: str,
    username: str,
    password: str,
    nonce: str,
    method: str,
    uri: str,
    nc: str = "00000001",
    cnonce: str = "0a4f113b",
    realm: str = REALM,
) -> str:
    ha1 = h(algorithm, f"{username}:{realm}:{password}")
    ha2 = h(algorithm, f"{method}:{uri}")
    return h(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")


def challenge_params(value: str) -> dict[str, str]:
    parsed = parse_credentials(value)  # a challenge has the same auth-param syntax
    assert parsed is not None
    return parsed.params


DEVICES = {
    "alice": DeviceCredentials("alice", "wonderland"),
    "bob": DeviceCredentials("bob", "b0b-pass", (MD5,)),
    "carol": DeviceCredentials("carol", 'quo"te\\back', (MD5, SHA256)),
}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def auth(clock: ManualClock) -> DigestAuthenticator:
    return DigestAuthenticator(REALM, clock, DEVICES.get, nonce_lifetime=300)


def nonce_of(auth: DigestAuthenticator, algorithms: tuple[DigestAlgorithm, ...] = (MD5,)) -> str:
    return challenge_params(auth.challenge(algorithms)[0])["nonce"]


def authorization(
    *,
    username: str,
    password: str,
    nonce: str,
    algorithm: str | None = "MD5",
    uri: str = "sip:home.example",
    digest_uri: str | None = None,
    method: str = "REGISTER",
    nc: str = "00000001",
    realm: str = REALM,
    extra: str = "",
    qop: str | None = "auth",
) -> str:
    digest_uri = uri if digest_uri is None else digest_uri
    response = digest_response(
        algorithm=algorithm or "MD5",
        username=username,
        password=password,
        nonce=nonce,
        method=method,
        uri=digest_uri,
        nc=nc,
        realm=realm,
    )
    parts = [
        f'username="{username}"',
        f'realm="{realm}"',
        f'nonce="{nonce}"',
        f'uri="{digest_uri}"',
        f'response="{response}"',
        'cnonce="0a4f113b"',
        f"nc={nc}",
    ]
    if qop is not None:
        parts.append(f"qop={qop}")
    if algorithm is not None:
        parts.append(f"algorithm={algorithm}")
    return "Digest " + ", ".join(parts) + extra


def request(
    value: str | list[str] | None,
    *,
    method: str = "REGISTER",
    uri: str = "sip:home.example",
    header: str = "Authorization",
) -> FakeRequest:
    values = [] if value is None else [value] if isinstance(value, str) else value
    return FakeRequest(method, SipUri.parse(uri), FakeHeaders([(header, v) for v in values]))


# -- challenges ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("algorithms", "expected"),
    [
        ((SHA256, MD5), ["SHA-256", "MD5"]),
        ((MD5, SHA256), ["MD5", "SHA-256"]),
        ((MD5,), ["MD5"]),
        ((SHA256,), ["SHA-256"]),
    ],
)
def test_challenge_order_and_contents(
    auth: DigestAuthenticator, algorithms: tuple[DigestAlgorithm, ...], expected: list[str]
) -> None:
    values = auth.challenge(algorithms)
    params = [challenge_params(v) for v in values]
    assert [p["algorithm"] for p in params] == expected
    for p in params:
        assert p["realm"] == REALM
        assert p["qop"] == "auth"
        assert p["opaque"]
        assert "stale" not in p
    assert len({p["nonce"] for p in params}) == 1  # one nonce shared by the challenges


def test_stale_challenge_and_fresh_nonces(auth: DigestAuthenticator) -> None:
    first = challenge_params(auth.challenge((MD5,), stale=True)[0])
    assert first["stale"] == "true"
    assert nonce_of(auth) != nonce_of(auth)


def test_default_is_md5_alone() -> None:
    # baresip 1.0 refuses a 401 that lists any non-MD5 challenge, sipsak reads only the first:
    # the shipped default must be what every tested client answers.
    assert DEFAULT_ALGORITHMS == (MD5,)
    assert DeviceCredentials("x", "y").algorithms == (MD5,)


def test_algorithms_for_device_order_and_unknown_default(auth: DigestAuthenticator) -> None:
    assert auth.algorithms_for("alice") == DEFAULT_ALGORITHMS
    assert auth.algorithms_for("bob") == (MD5,)
    assert auth.algorithms_for("carol") == (MD5, SHA256)
    assert auth.algorithms_for("nobody") == DEFAULT_ALGORITHMS
    assert auth.algorithms_for(None) == DEFAULT_ALGORITHMS


# -- verification -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "algorithm"),
    [
        ("alice", "MD5"),
        ("bob", "MD5"),
        ("carol", "SHA-256"),
        ("carol", "MD5"),
    ],
)
def test_correct_response_is_accepted(auth: DigestAuthenticator, user: str, algorithm: str) -> None:
    device = DEVICES[user]
    value = authorization(
        username=user, password=device.password, nonce=nonce_of(auth), algorithm=algorithm
    )
    result = auth.verify(request(value))
    assert result.ok, result
    assert result.username == user
    assert result.reason is AuthFailure.OK
    assert result.algorithm == DigestAlgorithm(algorithm)
    assert not result.stale


def test_missing_algorithm_means_md5(auth: DigestAuthenticator) -> None:
    value = authorization(
        username="alice", password="wonderland", nonce=nonce_of(auth), algorithm=None
    )
    assert auth.verify(request(value)).ok


def test_sha256_needs_the_device_option(auth: DigestAuthenticator) -> None:
    # A device on the defaults is not challenged with SHA-256, so a SHA-256 answer is refused
    # even with the right password; a device configured for it (carol) is accepted above.
    value = authorization(
        username="alice", password="wonderland", nonce=nonce_of(auth), algorithm="SHA-256"
    )
    result = auth.verify(request(value))
    assert not result.ok
    assert result.reason is AuthFailure.ALGORITHM_NOT_ALLOWED


def test_sha256_response_checked_with_sha256_not_md5(auth: DigestAuthenticator) -> None:
    nonce = nonce_of(auth)
    md5_value = authorization(username="carol", password='quo"te\\back', nonce=nonce)
    forged = md5_value.replace("algorithm=MD5", "algorithm=SHA-256")
    result = auth.verify(request(forged))
    assert not result.ok
    assert result.reason is AuthFailure.WRONG_PASSWORD


def test_invite_with_proxy_authorization(auth: DigestAuthenticator) -> None:
    value = authorization(
        username="alice",
        password="wonderland",
        nonce=nonce_of(auth),
        method="INVITE",
        uri="sip:bob@home.example",
    )
    req = request(value, method="INVITE", uri="sip:bob@home.example", header="Proxy-Authorization")
    assert auth.verify(req, "Proxy-Authorization").ok
    # The same credentials under the other header name are not looked at.
    assert auth.verify(req).reason is AuthFailure.NO_CREDENTIALS


@pytest.mark.parametrize(
    ("mutate", "reason", "stale"),
    [
        ({"password": "wrong"}, AuthFailure.WRONG_PASSWORD, False),
        ({"username": "mallory"}, AuthFailure.UNKNOWN_USER, False),
        ({"digest_uri": "sip:other.example"}, AuthFailure.URI_MISMATCH, False),
        ({"method": "INVITE"}, AuthFailure.WRONG_PASSWORD, False),  # digest over another method
        ({"realm": "elsewhere"}, AuthFailure.REALM_MISMATCH, False),
        (
            {"algorithm": "SHA-256", "username": "bob", "password": "b0b-pass"},
            AuthFailure.ALGORITHM_NOT_ALLOWED,
            False,
        ),
        ({"algorithm": "MD5-sess"}, AuthFailure.UNSUPPORTED, False),
        ({"algorithm": "SHA-512-256"}, AuthFailure.UNSUPPORTED, False),
        ({"qop": None}, AuthFailure.UNSUPPORTED, False),
        ({"qop": "auth-int"}, AuthFailure.UNSUPPORTED, False),
        ({"nc": "1"}, AuthFailure.MALFORMED, False),
        ({"extra": ", userhash=true"}, AuthFailure.UNSUPPORTED, False),
        # Right password, an opaque of another process (before a restart): retry with ours.
        ({"extra": ', opaque="not-ours"'}, AuthFailure.OPAQUE_MISMATCH, True),
        ({"extra": ', opaque="not-ours"', "password": "wrong"}, AuthFailure.WRONG_PASSWORD, False),
        ({"extra": ', opaque="not-ours"', "username": "mallory"}, AuthFailure.UNKNOWN_USER, False),
    ],
)
def test_rejections(
    auth: DigestAuthenticator, mutate: dict[str, str | None], reason: AuthFailure, stale: bool
) -> None:
    args: dict[str, str | None] = {"username": "alice", "password": "wonderland"}
    args.update(mutate)
    method = "REGISTER"
    value = authorization(nonce=nonce_of(auth), **args)  # type: ignore[arg-type]
    result = auth.verify(request(value, method=method))
    assert not result.ok
    assert result.reason is reason
    assert result.stale is stale


def test_unknown_user_and_wrong_password_look_alike(auth: DigestAuthenticator) -> None:
    unknown = auth.verify(
        request(authorization(username="mallory", password="x", nonce=nonce_of(auth)))
    )
    wrong = auth.verify(
        request(authorization(username="alice", password="x", nonce=nonce_of(auth)))
    )
    assert (unknown.ok, unknown.stale) == (wrong.ok, wrong.stale) == (False, False)
    assert {unknown.reason, wrong.reason} == {AuthFailure.UNKNOWN_USER, AuthFailure.WRONG_PASSWORD}


def test_equivalent_uri_is_accepted_and_different_one_is_not(auth: DigestAuthenticator) -> None:
    # The client wrote the Request-URI with an upper-case host; the digest uri is what it wrote.
    ok = authorization(
        username="alice", password="wonderland", nonce=nonce_of(auth), uri="sip:HOME.example"
    )
    assert auth.verify(request(ok, uri="sip:HOME.example")).ok
    other = authorization(
        username="alice",
        password="wonderland",
        nonce=nonce_of(auth),
        digest_uri="sip:home.example:5070",
    )
    # Port 5070 is neither the Request-URI's (none) nor the one the request arrived on.
    result = auth.verify(request(other), local_port=5060)
    assert result.reason is AuthFailure.URI_MISMATCH
    garbage = authorization(
        username="alice", password="wonderland", nonce=nonce_of(auth), digest_uri="not a uri"
    )
    assert auth.verify(request(garbage)).reason is AuthFailure.URI_MISMATCH


@pytest.mark.parametrize(
    ("request_uri", "digest_uri", "local_port", "same"),
    [
        # sipp's default: the address it sent to, while the Request-URI names the host alone.
        ("sip:home.example", "sip:home.example:5070", 5070, True),
        ("sip:home.example:5070", "sip:home.example", 5070, True),
        ("sip:home.example:5070", "sip:home.example:5070", None, True),
        ("sip:home.example", "sip:home.example;transport=tcp", 5060, True),
        ("sip:bob@home.example", "sip:bob@home.example:5060", 5060, True),
        # Another resource: a port that is not ours, another host, user or scheme.
        ("sip:home.example", "sip:home.example:5070", 5060, False),
        ("sip:home.example", "sip:home.example:5070", None, False),
        ("sip:home.example:5060", "sip:home.example:5070", 5060, False),
        ("sip:home.example", "sip:other.example", 5060, False),
        ("sip:home.example", "sip:other.example:5060", 5060, False),
        ("sip:bob@home.example", "sip:alice@home.example", 5060, False),
        ("sip:bob@home.example", "sip:home.example", 5060, False),
        ("sip:home.example", "sips:home.example", 5060, False),
        ("sip:home.example", "tel:+15551234", 5060, False),
    ],
)
def test_digest_uri_designating_the_same_target(
    request_uri: str, digest_uri: str, local_port: int | None, same: bool
) -> None:
    assert digest_uri_matches(digest_uri, SipUri.parse(request_uri), local_port) is same


def test_digest_uri_with_our_port_verifies(auth: DigestAuthenticator) -> None:
    value = authorization(
        username="alice",
        password="wonderland",
        nonce=nonce_of(auth),
        digest_uri="sip:home.example:5070",
    )
    result = auth.verify(request(value, uri="sip:home.example"), local_port=5070)
    assert result.ok, result


# -- nonces -------------------------------------------------------------------------------------


def test_expired_nonce_with_right_password_is_stale(
    auth: DigestAuthenticator, clock: ManualClock
) -> None:
    nonce = nonce_of(auth)
    clock.advance(299)
    assert auth.verify(
        request(authorization(username="alice", password="wonderland", nonce=nonce))
    ).ok
    clock.advance(2)
    result = auth.verify(
        request(authorization(username="alice", password="wonderland", nonce=nonce, nc="00000002"))
    )
    assert (result.ok, result.stale, result.reason) == (False, True, AuthFailure.STALE_NONCE)
    # A wrong password with an expired nonce is a wrong password, not stale.
    result = auth.verify(
        request(authorization(username="alice", password="nope", nonce=nonce, nc="00000003"))
    )
    assert (result.ok, result.stale, result.reason) == (False, False, AuthFailure.WRONG_PASSWORD)


@pytest.mark.parametrize(
    "nonce",
    [
        "A" * 43,  # right length, wrong signature
        "short",
        "!" * 43,  # not base64
        "",
    ],
)
def test_foreign_nonce_with_right_password_is_stale(auth: DigestAuthenticator, nonce: str) -> None:
    result = auth.verify(
        request(authorization(username="alice", password="wonderland", nonce=nonce))
    )
    assert (result.ok, result.stale, result.reason) == (False, True, AuthFailure.UNKNOWN_NONCE)


def test_nonce_from_another_process_is_unknown(clock: ManualClock) -> None:
    before_restart = DigestAuthenticator(REALM, clock, DEVICES.get)
    after_restart = DigestAuthenticator(REALM, clock, DEVICES.get)
    nonce = nonce_of(before_restart)
    value = authorization(username="alice", password="wonderland", nonce=nonce)
    assert before_restart.verify(request(value)).ok
    result = after_restart.verify(request(value))
    assert (result.stale, result.reason) == (True, AuthFailure.UNKNOWN_NONCE)


@pytest.mark.parametrize("secret", [b"k" * 32, b"k" * 64, b"k" * 200])
def test_a_changed_nonce_is_unknown_whatever_the_secret_length(
    clock: ManualClock, secret: bytes
) -> None:
    auth = DigestAuthenticator(REALM, clock, DEVICES.get, secret=secret)
    nonce = nonce_of(auth)
    assert auth.verify(
        request(authorization(username="alice", password="wonderland", nonce=nonce))
    ).ok
    for index in (0, 12, 30, 41):  # issue time, random part, signature (not the last pad bits)
        changed = nonce[:index] + ("B" if nonce[index] != "B" else "C") + nonce[index + 1 :]
        value = authorization(username="alice", password="wonderland", nonce=changed)
        result = auth.verify(request(value))
        assert (result.ok, result.reason) == (False, AuthFailure.UNKNOWN_NONCE)


def test_nonce_count_replay_is_refused(auth: DigestAuthenticator) -> None:
    nonce = nonce_of(auth)

    def attempt(nc: str) -> tuple[bool, bool, AuthFailure]:
        value = authorization(username="alice", password="wonderland", nonce=nonce, nc=nc)
        result = auth.verify(request(value))
        return result.ok, result.stale, result.reason

    assert attempt("00000001") == (True, False, AuthFailure.OK)
    assert attempt("00000001") == (False, True, AuthFailure.REPLAYED_NONCE_COUNT)
    assert attempt("00000003") == (True, False, AuthFailure.OK)  # gaps are fine
    assert attempt("00000002") == (False, True, AuthFailure.REPLAYED_NONCE_COUNT)
    assert attempt("0000000A") == (True, False, AuthFailure.OK)  # hex, either case


def test_nonce_table_is_bounded_and_eviction_never_lets_a_replay_in(clock: ManualClock) -> None:
    auth = DigestAuthenticator(REALM, clock, DEVICES.get, max_tracked_nonces=8)
    used: list[str] = []
    for _ in range(40):
        nonce = nonce_of(auth)
        clock.advance(0.01)
        value = authorization(username="alice", password="wonderland", nonce=nonce)
        assert auth.verify(request(value)).ok
        used.append(nonce)
    assert len(auth._counts) <= 8
    for nonce in used:
        value = authorization(username="alice", password="wonderland", nonce=nonce)
        assert not auth.verify(request(value)).ok


def test_expired_entries_are_pruned_first(clock: ManualClock) -> None:
    auth = DigestAuthenticator(REALM, clock, DEVICES.get, nonce_lifetime=10, max_tracked_nonces=4)
    for _ in range(4):
        value = authorization(username="alice", password="wonderland", nonce=nonce_of(auth))
        assert auth.verify(request(value)).ok
    clock.advance(11)
    fresh = nonce_of(auth)
    value = authorization(username="alice", password="wonderland", nonce=fresh)
    assert auth.verify(request(value)).ok
    assert len(auth._counts) == 1
    assert auth._counts.floor == float("-inf")  # nothing live had to be dropped


def test_password_change_takes_effect(clock: ManualClock) -> None:
    devices = {"alice": DeviceCredentials("alice", "old")}
    auth = DigestAuthenticator(REALM, clock, devices.get)
    assert auth.verify(
        request(authorization(username="alice", password="old", nonce=nonce_of(auth)))
    ).ok
    devices["alice"] = DeviceCredentials("alice", "new")
    old = auth.verify(
        request(authorization(username="alice", password="old", nonce=nonce_of(auth)))
    )
    assert old.reason is AuthFailure.WRONG_PASSWORD
    assert auth.verify(
        request(authorization(username="alice", password="new", nonce=nonce_of(auth)))
    ).ok


# -- header parsing -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('Digest username="a", realm="r"', {"username": "a", "realm": "r"}),
        ("digest USERNAME=a,Realm=r", {"username": "a", "realm": "r"}),
        ('DIGEST  realm = "r" ,  username = "a"  ', {"username": "a", "realm": "r"}),
        (r'Digest username="a\"b\\c", realm="x,y"', {"username": 'a"b\\c', "realm": "x,y"}),
        ('Digest realm=""', {"realm": ""}),
        ("Digest\tnc=00000001,qop=auth", {"nc": "00000001", "qop": "auth"}),
    ],
)
def test_parse_credentials_accepts(value: str, expected: dict[str, str]) -> None:
    parsed = parse_credentials(value)
    assert parsed is not None
    assert parsed.params == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "Digest",
        "Basic dXNlcjpwYXNz",
        "Digestusername=a",
        'Digest username="a',  # unterminated quote
        'Digest username="a" realm="r"',  # missing comma
        "Digest username=a,",  # trailing comma
        "Digest username=a, username=b",  # duplicate
        "Digest =a",
        'Digest username="a"x',
        "Digest username",
    ],
)
def test_parse_credentials_rejects(value: str) -> None:
    assert parse_credentials(value) is None


@given(st.text(max_size=200))
def test_parse_credentials_never_raises(value: str) -> None:
    result = parse_credentials("Digest " + value)
    assert result is None or isinstance(result.params, dict)


def test_malformed_header_is_no_credentials_not_an_exception(auth: DigestAuthenticator) -> None:
    result = auth.verify(request('Digest username="alice'))
    assert (result.ok, result.reason) == (False, AuthFailure.MALFORMED)
    result = auth.verify(request(None))
    assert (result.ok, result.reason) == (False, AuthFailure.NO_CREDENTIALS)
    result = auth.verify(request('Digest username="alice", realm="home.example"'))
    assert (result.ok, result.reason) == (False, AuthFailure.MALFORMED)


def test_credentials_for_our_realm_are_picked_among_several(auth: DigestAuthenticator) -> None:
    ours = authorization(username="alice", password="wonderland", nonce=nonce_of(auth))
    theirs = authorization(username="alice", password="other", nonce="abc", realm="proxy.example")
    assert auth.verify(request([theirs, "garbage", ours])).ok


def test_username_star_extended_notation(clock: ManualClock) -> None:
    devices = {"jürgen": DeviceCredentials("jürgen", "pw")}
    auth = DigestAuthenticator(REALM, clock, devices.get)
    value = authorization(username="jürgen", password="pw", nonce=nonce_of(auth))
    value = value.replace('username="jürgen"', "username*=UTF-8''j%C3%BCrgen")
    result = auth.verify(request(value))
    assert result.ok
    assert result.username == "jürgen"


@pytest.mark.parametrize("start", [100.0004, 100.0006, 100.9999])
def test_answer_within_the_same_millisecond_is_not_stale(start: float) -> None:
    """A nonce checked a fraction of a millisecond after it was issued is fresh, whatever the
    fraction: rounding its issue time up once made fast clients look like they used a nonce from
    the future, and they were sent round again with stale=true."""
    clock = ManualClock(start=start)
    auth = DigestAuthenticator(REALM, clock, DEVICES.get, nonce_lifetime=300)
    nonce = nonce_of(auth)
    clock.advance(0.0001)
    value = authorization(username="alice", password="wonderland", nonce=nonce)
    result = auth.verify(request(value))
    assert (result.ok, result.stale, result.reason) == (True, False, AuthFailure.OK)
