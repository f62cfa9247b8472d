"""Client-side HTTP Digest for SIP (RFC 7616, RFC 8760, RFC 2617, RFC 3261 §22): answering a
provider's 401 (WWW-Authenticate) and a proxy's 407 (Proxy-Authenticate).

The PBX is a client when it registers with, or calls out through, a SIP trunk. The provider decides
the algorithm and the options, so this side is more lenient than the server side in ``digest``:
besides ``qop=auth`` with MD5 and SHA-256 it answers a challenge without qop (RFC 2069 style, which
many providers still send). ``auth-int``, the ``-sess`` algorithms and ``userhash`` are not
answered: a challenge that offers nothing else is reported as ``AuthOutcome.UNSUPPORTED``.

When several challenges for one realm come in one response, the first one we can answer is used:
RFC 8760 §2.4 says the server lists them in its order of preference.

Why the client remembers nonces: a trunk refreshes its registration every few minutes and sends
INVITEs through the same provider. Signing them with the last nonce (and a growing nonce-count)
saves a round trip each time; a provider that no longer accepts that nonce answers with a fresh
challenge, which is answered once.

Telling a wrong password from an expired nonce matters, because a provider that sees repeated
failures may ban our address. A challenge in answer to credentials that answered a *fresh*
challenge (nonce-count 1, or the nonce's first use without qop) and that is not marked
``stale=true`` means the credentials were refused: ``AuthOutcome.REJECTED``, and the caller must not
simply try again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from .digest import (
    DigestAlgorithm,
    algorithm_named,
    digest_hex,
    parse_credentials,
    quoted_string,
)
from .message import random_bytes

if TYPE_CHECKING:
    from .message import Request, Response

__all__ = [
    "AuthOutcome",
    "ChallengeKind",
    "ClientCredentials",
    "DigestChallenge",
    "DigestClient",
    "challenges_of",
    "digest_response",
    "parse_challenge",
]


class ChallengeKind(StrEnum):
    """Who challenged: the server itself (401) or a proxy on the way (407)."""

    SERVER = "WWW-Authenticate"
    PROXY = "Proxy-Authenticate"

    @property
    def credentials_header(self) -> str:
        """The header that carries our answer (RFC 3261 §22.2, §22.3)."""
        return "Authorization" if self is ChallengeKind.SERVER else "Proxy-Authorization"


@dataclass(frozen=True, slots=True)
class DigestChallenge:
    """One Digest challenge we are able to answer.

    ``qop_auth`` is false for a challenge without ``qop`` (RFC 2069 compatibility): the answer then
    has no cnonce or nonce-count.
    """

    kind: ChallengeKind
    realm: str
    nonce: str
    algorithm: DigestAlgorithm
    qop_auth: bool
    opaque: str | None
    stale: bool


def parse_challenge(value: str, kind: ChallengeKind) -> DigestChallenge | None:
    """Parse a challenge header value; ``None`` when it is not one we can answer.

    That is: not the Digest scheme, malformed, without realm or nonce, an algorithm other than
    MD5 or SHA-256 (absent means MD5, RFC 7616 §3.3), a qop list without ``auth``, or
    ``userhash=true``.
    """
    parsed = parse_credentials(value)  # a challenge has the same auth-param list as credentials
    if parsed is None:
        return None
    params = parsed.params
    realm = params.get("realm")
    nonce = params.get("nonce")
    if realm is None or not nonce:
        return None
    algorithm = algorithm_named(params.get("algorithm", "MD5"))
    if algorithm is None or params.get("userhash", "false").lower() == "true":
        return None
    qop = params.get("qop")
    if qop is None:
        qop_auth = False
    else:
        options = {option.strip().lower() for option in qop.split(",")}
        if "auth" not in options:
            return None
        qop_auth = True
    return DigestChallenge(
        kind,
        realm,
        nonce,
        algorithm,
        qop_auth,
        params.get("opaque"),
        params.get("stale", "false").lower() == "true",
    )


def challenges_of(response: Response) -> list[DigestChallenge]:
    """Every challenge of a 401 or 407 we can answer, in the order the response lists them.

    Each header line is read whole: a challenge's parameters are separated by commas, so the
    generic list splitting does not apply. Several challenges on one line are not split either
    (RFC 3261 §20.44 allows one per line in practice; a combined line is skipped as malformed).
    """
    found: list[DigestChallenge] = []
    for kind in ChallengeKind:
        for line in response.headers.get_lines(kind.value):
            challenge = parse_challenge(line, kind)
            if challenge is not None:
                found.append(challenge)
    return found


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    """An account at a provider. ``realm``, when set, is the only realm we answer for: a
    provider's challenge for another realm is refused instead of handing it our password's hash.
    """

    username: str
    password: str
    realm: str | None = None


class AuthOutcome(StrEnum):
    """What ``DigestClient.handle`` made of a 401 or 407."""

    RETRY = "retry"  # the challenges are remembered: sign the request again and resend it
    REJECTED = "rejected"  # our credentials were refused (wrong username or password)
    UNSUPPORTED = "unsupported"  # no challenge we can answer (algorithm, qop, scheme, malformed)
    WRONG_REALM = "wrong realm"  # only realms other than the configured one were challenged


@dataclass(slots=True)
class _Nonce:
    challenge: DigestChallenge
    count: int = 0


def digest_response(
    algorithm: DigestAlgorithm,
    username: str,
    realm: str,
    password: str,
    *,
    method: str,
    uri: str,
    nonce: str,
    qop_auth: tuple[str, str] | None = None,
) -> str:
    """The ``response`` value (RFC 7616 §3.4.1): with ``qop_auth=(nc, cnonce)`` for ``qop=auth``,
    without it the RFC 2069 form ``H(HA1:nonce:HA2)``."""
    ha1 = digest_hex(algorithm, f"{username}:{realm}:{password}")
    ha2 = digest_hex(algorithm, f"{method}:{uri}")
    if qop_auth is None:
        return digest_hex(algorithm, f"{ha1}:{nonce}:{ha2}")
    nc, cnonce = qop_auth
    return digest_hex(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")


def _default_cnonce() -> str:
    return random_bytes(12).hex()


class DigestClient:
    """Answers the Digest challenges of one provider account and signs later requests.

    ``handle(request, response)`` reads a 401/407 to ``request`` and remembers its challenges;
    ``authorize(request)`` writes our credentials for every remembered challenge into a request.
    ``cnonce`` makes the client nonce (tests pass a fixed one).
    """

    def __init__(
        self, credentials: ClientCredentials, *, cnonce: Callable[[], str] = _default_cnonce
    ) -> None:
        self.credentials = credentials
        self._cnonce = cnonce
        self._nonces: dict[tuple[ChallengeKind, str], _Nonce] = {}

    @property
    def has_challenges(self) -> bool:
        return bool(self._nonces)

    def forget(self) -> None:
        """Drop every remembered challenge (after the account's password changed, say)."""
        self._nonces.clear()

    def handle(self, request: Request, response: Response) -> AuthOutcome:
        """Take in the challenges of ``response`` (a 401 or 407 to ``request``)."""
        challenges = challenges_of(response)
        wanted = self.credentials.realm
        chosen: dict[tuple[ChallengeKind, str], DigestChallenge] = {}
        other_realms = False
        for challenge in challenges:
            if wanted is not None and challenge.realm != wanted:
                other_realms = True
                continue
            chosen.setdefault((challenge.kind, challenge.realm), challenge)
        if not chosen:
            return AuthOutcome.WRONG_REALM if other_realms else AuthOutcome.UNSUPPORTED
        for key, challenge in chosen.items():
            if not challenge.stale and self._answered_fresh(request, key):
                return AuthOutcome.REJECTED
        for key, challenge in chosen.items():
            self._nonces[key] = _Nonce(challenge)
        return AuthOutcome.RETRY

    def _answered_fresh(self, request: Request, key: tuple[ChallengeKind, str]) -> bool:
        """Whether ``request`` answered a challenge for ``key`` that was fresh when it was sent."""
        kind, realm = key
        for line in request.headers.get_lines(kind.credentials_header):
            sent = parse_credentials(line)
            if sent is None or sent.get("realm") != realm:
                continue
            nc = sent.get("nc")
            if nc is not None:
                return nc == "00000001"
            remembered = self._nonces.get(key)
            return (
                remembered is not None
                and remembered.challenge.nonce == sent.get("nonce")
                and remembered.count <= 1
            )
        return False

    def authorize(self, request: Request) -> None:
        """Write (or rewrite) our credentials into ``request``, one header per remembered
        challenge, each with the next nonce-count. Call it for every request sent anew."""
        for kind in ChallengeKind:
            request.headers.remove(kind.credentials_header)
        for nonce in self._nonces.values():
            nonce.count += 1
            header = nonce.challenge.kind.credentials_header
            request.headers.add(header, self._credentials(request, nonce))

    def _credentials(self, request: Request, nonce: _Nonce) -> str:
        challenge = nonce.challenge
        algorithm = challenge.algorithm
        username = self.credentials.username
        uri = str(request.uri)
        parts = [
            f"username={quoted_string(username)}",
            f"realm={quoted_string(challenge.realm)}",
            f"nonce={quoted_string(challenge.nonce)}",
            f"uri={quoted_string(uri)}",
        ]
        secret = self.credentials.password
        if challenge.qop_auth:
            nc = f"{nonce.count:08x}"
            cnonce = self._cnonce()
            answer = digest_response(
                algorithm,
                username,
                challenge.realm,
                secret,
                method=request.method,
                uri=uri,
                nonce=challenge.nonce,
                qop_auth=(nc, cnonce),
            )
            parts += [
                f'response="{answer}"',
                f"algorithm={algorithm.value}",
                f"cnonce={quoted_string(cnonce)}",
                "qop=auth",
                f"nc={nc}",
            ]
        else:
            answer = digest_response(
                algorithm,
                username,
                challenge.realm,
                secret,
                method=request.method,
                uri=uri,
                nonce=challenge.nonce,
            )
            parts += [f'response="{answer}"', f"algorithm={algorithm.value}"]
        if challenge.opaque is not None:
            parts.append(f"opaque={quoted_string(challenge.opaque)}")
        return "Digest " + ", ".join(parts)
