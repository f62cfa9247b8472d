"""Client-side digest (RFC 7616): answering 401 and 407, nonce reuse, stale and refused credentials.

Expected responses are computed here with hashlib from RFC 7616 §3.4.1's formulas, and the
module is also checked against RFC 7616 §3.9.1's published example and against our own server
(``DigestAuthenticator``), which was written and tested separately.
"""

from __future__ import annotations

import hashlib

import pytest

from sip_core.clock import ManualClock
from sip_core.digest import (
    DeviceCredentials,
    DigestAlgorithm,
    DigestAuthenticator,
    parse_credentials,
)
from sip_core.digest_client import (
    AuthOutcome,
    ChallengeKind,
    ClientCredentials,
    DigestClient,
    challenges_of,
    digest_response,
    parse_challenge,
)
from sip_core.headers import Headers
from sip_core.message import Request, Response
from sip_core.uri import SipUri

MD5 = DigestAlgorithm.MD5
SHA256 = DigestAlgorithm.SHA256
URI = "sip:provider.example"


def h(name: str, text: str) -> str:
    return hashlib.new(name, text.encode()).hexdigest()


def register() -> Request:
    headers = Headers()
    headers.add("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-1")
    headers.add("From", "<sip:4930@provider.example>;tag=a")
    headers.add("To", "<sip:4930@provider.example>")
    headers.add("Call-ID", "reg-1")
    headers.add("CSeq", "1 REGISTER")
    return Request("REGISTER", SipUri.parse(URI), headers)


def challenge(status: int, *values: str) -> Response:
    headers = Headers()
    name = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
    for value in values:
        headers.add(name, value)
    return Response(status, headers=headers)


def sent(request: Request, header: str = "Authorization") -> dict[str, str]:
    credentials = parse_credentials(request.headers.get_lines(header)[0])
    assert credentials is not None
    return credentials.params


def test_rfc7616_example_vectors() -> None:
    """RFC 7616 §3.9.1: Mufasa's request, with MD5 and with SHA-256."""
    for algorithm, expected in [
        (MD5, "8ca523f5e9506fed4657c9700eebdbec"),
        (SHA256, "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ]:
        answer = digest_response(
            algorithm,
            "Mufasa",
            "http-auth@example.org",
            "Circle of Life",
            method="GET",
            uri="/dir/index.html",
            nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
            qop_auth=("00000001", "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"),
        )
        assert answer == expected


@pytest.mark.parametrize(("algorithm", "hashname"), [("MD5", "md5"), ("SHA-256", "sha256")])
def test_answers_a_401_with_qop_auth(algorithm: str, hashname: str) -> None:
    client = DigestClient(ClientCredentials("4930", "s3cret pass"), cnonce=lambda: "c0ffee")
    request = register()
    response = challenge(
        401,
        f'Digest realm="sip.example", nonce="n-1", qop="auth,auth-int", '
        f'opaque="op", algorithm={algorithm}',
    )
    assert client.handle(request, response) is AuthOutcome.RETRY
    client.authorize(request)
    params = sent(request)
    ha1 = h(hashname, "4930:sip.example:s3cret pass")
    ha2 = h(hashname, f"REGISTER:{URI}")
    assert params["response"] == h(hashname, f"{ha1}:n-1:00000001:c0ffee:auth:{ha2}")
    assert params["username"] == "4930"
    assert params["uri"] == URI
    assert params["qop"] == "auth"
    assert params["nc"] == "00000001"
    assert params["cnonce"] == "c0ffee"
    assert params["opaque"] == "op"
    assert params["algorithm"] == algorithm
    assert "Proxy-Authorization" not in request.headers


def test_answers_a_407_in_proxy_authorization() -> None:
    client = DigestClient(ClientCredentials("4930", "pw"), cnonce=lambda: "x")
    request = register()
    response = challenge(407, 'Digest realm="proxy.example", nonce="p", qop="auth"')
    assert client.handle(request, response) is AuthOutcome.RETRY
    client.authorize(request)
    assert "Authorization" not in request.headers
    assert sent(request, "Proxy-Authorization")["realm"] == "proxy.example"


def test_a_challenge_without_qop_gets_the_rfc2069_answer() -> None:
    client = DigestClient(ClientCredentials("bob", "pw"))
    request = register()
    assert client.handle(request, challenge(401, 'Digest realm="r", nonce="abc"')) == "retry"
    client.authorize(request)
    params = sent(request)
    ha1, ha2 = h("md5", "bob:r:pw"), h("md5", f"REGISTER:{URI}")
    assert params["response"] == h("md5", f"{ha1}:abc:{ha2}")
    assert "nc" not in params
    assert "cnonce" not in params


def test_the_first_answerable_challenge_wins() -> None:
    """RFC 8760 §2.4: the server lists its challenges in its order of preference."""
    client = DigestClient(ClientCredentials("u", "p"))
    request = register()
    response = challenge(
        401,
        'Digest realm="r", nonce="1", qop="auth", algorithm=SHA-512-256',
        'Digest realm="r", nonce="2", qop="auth", algorithm=SHA-256',
        'Digest realm="r", nonce="3", qop="auth", algorithm=MD5',
    )
    assert client.handle(request, response) is AuthOutcome.RETRY
    client.authorize(request)
    assert sent(request)["algorithm"] == "SHA-256"
    assert sent(request)["nonce"] == "2"


@pytest.mark.parametrize(
    "value",
    [
        'Basic realm="r"',
        'Digest realm="r", nonce="n", qop="auth-int"',
        'Digest realm="r", nonce="n", algorithm=MD5-sess, qop="auth"',
        'Digest realm="r", nonce="n", qop="auth", userhash=true',
        'Digest realm="r", qop="auth"',
        'Digest nonce="n", qop="auth"',
        'Digest realm="r, nonce="n"',
        "Digest",
    ],
)
def test_challenges_we_cannot_answer(value: str) -> None:
    assert parse_challenge(value, ChallengeKind.SERVER) is None
    client = DigestClient(ClientCredentials("u", "p"))
    assert client.handle(register(), challenge(401, value)) is AuthOutcome.UNSUPPORTED
    assert not client.has_challenges


def test_a_configured_realm_is_the_only_one_answered() -> None:
    client = DigestClient(ClientCredentials("u", "p", realm="mine"))
    other = challenge(401, 'Digest realm="theirs", nonce="n", qop="auth"')
    assert client.handle(register(), other) is AuthOutcome.WRONG_REALM
    both = challenge(
        401,
        'Digest realm="theirs", nonce="n", qop="auth"',
        'Digest realm="mine", nonce="m", qop="auth"',
    )
    request = register()
    assert client.handle(request, both) is AuthOutcome.RETRY
    client.authorize(request)
    realms = [parse_credentials(v) for v in request.headers.get_lines("Authorization")]
    assert [c.params["realm"] for c in realms if c is not None] == ["mine"]


def test_a_second_challenge_after_a_fresh_answer_means_wrong_password() -> None:
    client = DigestClient(ClientCredentials("u", "wrong"))
    request = register()
    first = challenge(401, 'Digest realm="r", nonce="n1", qop="auth"')
    assert client.handle(request, first) is AuthOutcome.RETRY
    client.authorize(request)
    again = challenge(401, 'Digest realm="r", nonce="n2", qop="auth"')
    assert client.handle(request, again) is AuthOutcome.REJECTED


def test_wrong_password_is_recognised_without_qop_too() -> None:
    client = DigestClient(ClientCredentials("u", "wrong"))
    request = register()
    assert client.handle(request, challenge(401, 'Digest realm="r", nonce="n1"')) == "retry"
    client.authorize(request)
    assert client.handle(request, challenge(401, 'Digest realm="r", nonce="n2"')) == "rejected"


def test_stale_true_is_answered_again() -> None:
    client = DigestClient(ClientCredentials("u", "p"))
    request = register()
    client.handle(request, challenge(401, 'Digest realm="r", nonce="n1", qop="auth"'))
    client.authorize(request)
    stale = challenge(401, 'Digest realm="r", nonce="n2", qop="auth", stale=TRUE')
    assert client.handle(request, stale) is AuthOutcome.RETRY
    client.authorize(request)
    assert sent(request)["nonce"] == "n2"
    assert sent(request)["nc"] == "00000001"


def test_later_requests_reuse_the_nonce_with_a_growing_count() -> None:
    client = DigestClient(ClientCredentials("u", "p"))
    first = register()
    client.handle(first, challenge(401, 'Digest realm="r", nonce="n1", qop="auth"'))
    client.authorize(first)
    refresh = register()
    client.authorize(refresh)
    assert sent(refresh)["nonce"] == "n1"
    assert sent(refresh)["nc"] == "00000002"
    # A reused nonce challenged again (not stale) is not a wrong password: answer the new one.
    fresh = challenge(401, 'Digest realm="r", nonce="n3", qop="auth"')
    assert client.handle(refresh, fresh) is AuthOutcome.RETRY
    client.authorize(refresh)
    assert sent(refresh)["nc"] == "00000001"
    assert len(refresh.headers.get_lines("Authorization")) == 1


def test_challenges_of_reads_both_kinds_in_order() -> None:
    response = challenge(401, 'Digest realm="a", nonce="1", qop="auth"')
    response.headers.add("Proxy-Authenticate", 'Digest realm="b", nonce="2"')
    found = challenges_of(response)
    assert [(c.kind, c.realm, c.qop_auth) for c in found] == [
        (ChallengeKind.SERVER, "a", True),
        (ChallengeKind.PROXY, "b", False),
    ]


@pytest.mark.parametrize("algorithm", [MD5, SHA256])
def test_our_server_accepts_the_answer(algorithm: DigestAlgorithm) -> None:
    """End to end against the separately written server side."""
    clock = ManualClock()
    server = DigestAuthenticator(
        "home.example",
        clock,
        lambda name: DeviceCredentials(name, "pass word!", (algorithm,)) if name == "201" else None,
    )
    client = DigestClient(ClientCredentials("201", "pass word!"))
    request = register()
    assert client.handle(request, challenge(401, *server.challenge((algorithm,)))) == "retry"
    client.authorize(request)
    assert server.verify(request).ok
    client.authorize(request)  # next nonce-count, same nonce: still fine
    assert server.verify(request).ok
    wrong = DigestClient(ClientCredentials("201", "not it"))
    request = register()
    wrong.handle(request, challenge(401, *server.challenge((algorithm,))))
    wrong.authorize(request)
    assert not server.verify(request).ok
