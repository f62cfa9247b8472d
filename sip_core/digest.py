"""Server-side HTTP Digest authentication for SIP (RFC 7616, RFC 8760, RFC 3261 §22).

Only ``qop=auth`` with MD5 and SHA-256 is offered: the ``-sess`` variants and ``auth-int`` buy
nothing for a PBX on a home network and are poorly supported by phones. Credentials without qop
(RFC 2069 style) are refused, since without a nonce-count a replay cannot be told apart.

Nonces are stateless: each one carries its issue time (on the injected clock's monotonic scale)
and a random part, signed with keyed BLAKE2b (a MAC in one C call, a third of what HMAC-SHA-256
costs) under a secret made fresh for each process. The only state kept is the highest nonce-count
seen for each nonce that has been used and is still alive, so that a captured request cannot be
replayed; that table is bounded and pruned (``_NonceCounts``).

An unknown user and a wrong password must look exactly the same from outside, so that the
registrar cannot be used to find out which usernames exist: both come back as a non-ok
``AuthResult`` with ``stale=False``, and the caller answers both with the same fresh challenge.
The true reason is kept in ``AuthResult.reason`` for the log. Once the password is proven right,
a nonce that is expired, unknown (made before a restart) or replayed gets ``stale=True``, so the
client retries with a fresh nonce without asking its user for the password.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
import secrets
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING
from urllib.parse import unquote

from .message import random_bytes
from .uri import SipUri

if TYPE_CHECKING:
    from .clock import Clock
    from .message import Request


class DigestAlgorithm(StrEnum):
    """The digest algorithms callflip offers, spelled as they appear on the wire."""

    MD5 = "MD5"
    SHA256 = "SHA-256"


#: What a device (and an unknown user, so that the two look alike) is challenged with when the
#: configuration does not say: MD5 alone. Every client we test answers it, while several refuse
#: the whole 401 as soon as it lists anything else (baresip 1.0's SIP library answers any
#: non-MD5 challenge with "Function not implemented" and never registers; sipsak reads only the
#: first challenge). SHA-256 is a per-device choice (``digest: [SHA-256, MD5]``, RFC 8760 §2.4)
#: for the phones that read every challenge.
DEFAULT_ALGORITHMS: tuple[DigestAlgorithm, ...] = (DigestAlgorithm.MD5,)

_HASHES: dict[DigestAlgorithm, Callable[[bytes], hashlib._Hash]] = {
    DigestAlgorithm.MD5: hashlib.md5,
    DigestAlgorithm.SHA256: hashlib.sha256,
}
_ALGORITHM_BY_NAME: dict[str, DigestAlgorithm] = {a.value.lower(): a for a in DigestAlgorithm}


def algorithm_named(name: str) -> DigestAlgorithm | None:
    """The algorithm spelt ``name`` on the wire (any case), or ``None`` for one we do not know."""
    return _ALGORITHM_BY_NAME.get(name.lower())


def digest_hex(algorithm: DigestAlgorithm, text: str) -> str:
    """H(text) of RFC 7616 §3.4.1: the algorithm's digest of the UTF-8 text, in lower-case hex."""
    return _HASHES[algorithm](text.encode("utf-8")).hexdigest()


_h = digest_hex


@dataclass(frozen=True, slots=True)
class DeviceCredentials:
    """What the authenticator needs to know about one device (a SIP user)."""

    username: str
    password: str
    #: Challenge order for this device: some clients only ever read the first challenge. Only the
    #: algorithms listed here are accepted in its responses.
    algorithms: tuple[DigestAlgorithm, ...] = DEFAULT_ALGORITHMS


class AuthFailure(StrEnum):
    """Why a request was not authenticated (``AuthResult.reason``); ``OK`` when it was."""

    OK = "ok"
    NO_CREDENTIALS = "no credentials"
    MALFORMED = "malformed credentials"
    REALM_MISMATCH = "credentials for another realm"
    UNSUPPORTED = "unsupported algorithm or qop"
    UNKNOWN_USER = "unknown user"
    ALGORITHM_NOT_ALLOWED = "algorithm not allowed for this device"
    WRONG_PASSWORD = "wrong password"
    URI_MISMATCH = "digest uri does not match the Request-URI"
    OPAQUE_MISMATCH = "opaque does not match"
    STALE_NONCE = "stale nonce"
    UNKNOWN_NONCE = "nonce not issued by this process"
    REPLAYED_NONCE_COUNT = "replayed nonce count"


@dataclass(frozen=True, slots=True)
class AuthResult:
    """The outcome of ``DigestAuthenticator.verify``.

    ``stale`` is true when the password was right but the nonce can no longer be used: the caller
    challenges again with ``stale=true`` so that the client retries without asking its user.
    """

    ok: bool
    username: str | None
    stale: bool
    reason: AuthFailure
    algorithm: DigestAlgorithm | None = None


@dataclass(frozen=True, slots=True)
class DigestCredentials:
    """One parsed Authorization / Proxy-Authorization header value (scheme Digest)."""

    params: dict[str, str]

    def get(self, name: str) -> str | None:
        return self.params.get(name)


# The credentials' parameter list (``auth-param *("," auth-param)``) and one auth-param: a token
# name, "=", then a quoted string (with backslash escapes) or a token. Possessive quantifiers: no
# run here could give characters back to a successful match (a token value stops only at a blank,
# comma or quote, a quoted one at its closing quote), and matching without backtracking state is
# several times faster.
_NAME = r"[A-Za-z0-9_.!%*+`'~-]++"
_VALUE = r'"(?:[^"\\]++|\\.)*+"|[^ \t,"]*+'
_ITEM = rf"[ \t]*+{_NAME}[ \t]*+=[ \t]*+(?:{_VALUE})[ \t]*+"
_LIST = re.compile(rf"{_ITEM}(?:,{_ITEM})*+")
_PAIR = re.compile(rf"({_NAME})[ \t]*+=[ \t]*+({_VALUE})")
_UNESCAPE = re.compile(r"\\(.)")
_NC = re.compile(r"[0-9a-fA-F]{8}")


def parse_credentials(value: str) -> DigestCredentials | None:
    """Parse a Digest credentials header value; ``None`` when it is not well-formed Digest.

    Parameter names are case-insensitive and may come in any order; a name given twice makes the
    whole value malformed (which value would we believe?).

    Two passes in C: the grammar of the whole list, then ``findall`` for the (name, value) pairs.
    Once the list is known to be well formed, every match of ``_PAIR`` starts at a parameter name
    (blanks and commas cannot start one, and a value is consumed whole), so the pairs are exactly
    the parameters, and the dictionary is built without a Python-level check per character run.
    """
    value = value.strip()
    if value[:6].lower() != "digest" or len(value) < 8 or value[6] not in " \t":
        return None
    rest = value[7:]
    if _LIST.fullmatch(rest) is None:
        return None
    pairs = _PAIR.findall(rest)
    params = {name.lower(): raw for name, raw in pairs}
    if len(params) != len(pairs):
        return None
    if '"' in rest:
        for key, raw in params.items():
            if raw[:1] == '"':
                text = raw[1:-1]
                params[key] = _UNESCAPE.sub(r"\1", text) if "\\" in text else text
    return DigestCredentials(params)


def quoted_string(text: str) -> str:
    """``text`` as a SIP quoted-string (RFC 3261 §25.1): backslash and double quote escaped."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


_quote = quoted_string


def _ext_value(text: str) -> str | None:
    """Decode an RFC 8187 ext-value (``UTF-8''percent-encoded``), as used by ``username*``."""
    charset, sep, rest = text.partition("'")
    _lang, sep2, encoded = rest.partition("'")
    if not sep or not sep2 or charset.lower() != "utf-8":
        return None
    try:
        return unquote(encoded, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        return None


class _NonceCounts:
    """Highest nonce-count seen per live nonce, bounded.

    When the table is full, expired entries go first; if it is still full, the oldest live entries
    are dropped and ``floor`` remembers the newest issue time dropped. A nonce issued at or before
    the floor with no entry is then refused as stale: forgetting its count must never let a replay
    in.
    """

    __slots__ = ("_counts", "_lifetime", "_max_entries", "floor")

    def __init__(self, lifetime: float, max_entries: int) -> None:
        self._counts: dict[str, tuple[float, int]] = {}
        self._lifetime = lifetime
        self._max_entries = max_entries
        self.floor = float("-inf")

    def __len__(self) -> int:
        return len(self._counts)

    def check_and_record(self, nonce: str, issued: float, nc: int, now: float) -> bool:
        """Record ``nc`` for ``nonce``; false when it is not higher than one already seen."""
        entry = self._counts.get(nonce)
        if entry is not None:
            if nc <= entry[1]:
                return False
        elif issued <= self.floor:
            return False
        elif len(self._counts) >= self._max_entries:
            self._prune(now)
        self._counts[nonce] = (issued, nc)
        return True

    def _prune(self, now: float) -> None:
        horizon = now - self._lifetime
        self._counts = {n: e for n, e in self._counts.items() if e[0] >= horizon}
        excess = len(self._counts) - self._max_entries * 3 // 4
        if excess > 0:
            oldest = sorted(self._counts.items(), key=lambda item: item[1][0])[:excess]
            for nonce, (issued, _nc) in oldest:
                del self._counts[nonce]
                self.floor = max(self.floor, issued)


class DigestAuthenticator:
    """Challenges and verifies Digest credentials for one realm.

    ``lookup(username)`` returns the device's credentials or ``None``; it is called on every
    verification, so configuration changes take effect at once. HA1 (which depends only on username,
    realm and password) is computed once per device and algorithm and cached.
    """

    def __init__(
        self,
        realm: str,
        clock: Clock,
        lookup: Callable[[str], DeviceCredentials | None],
        nonce_lifetime: float = 300.0,
        *,
        secret: bytes | None = None,
        max_tracked_nonces: int = 65536,
    ) -> None:
        self.realm = realm
        self.nonce_lifetime = nonce_lifetime
        self._clock = clock
        self._lookup = lookup
        self._secret = secret if secret is not None else secrets.token_bytes(32)
        self._opaque = hmac.new(self._secret, b"opaque", "sha256").hexdigest()[:32]
        # BLAKE2b takes a key of up to 64 bytes; a longer secret is hashed down to that.
        key = self._secret
        self._mac_key = key if len(key) <= 64 else hashlib.blake2b(key).digest()
        self._counts = _NonceCounts(nonce_lifetime, max_tracked_nonces)
        self._ha1: dict[tuple[str, str, DigestAlgorithm], str] = {}

    # -- challenges ---------------------------------------------------------------------------

    def algorithms_for(self, username: str | None) -> tuple[DigestAlgorithm, ...]:
        """The challenge order for ``username``; the default order for an unknown or absent user."""
        if username:
            device = self._lookup(username)
            if device is not None and device.algorithms:
                return device.algorithms
        return DEFAULT_ALGORITHMS

    def challenge(
        self, algorithms: Iterable[DigestAlgorithm] = DEFAULT_ALGORITHMS, stale: bool = False
    ) -> list[str]:
        """WWW-Authenticate (or Proxy-Authenticate) values, one per algorithm, in the order given.

        All of them share one fresh nonce, as RFC 7616 §3.7 allows.
        """
        nonce = self.new_nonce()
        tail = f'", qop="auth", opaque="{self._opaque}"' + (", stale=true" if stale else "")
        head = f'Digest realm={_quote(self.realm)}, nonce="{nonce}'
        return [f"{head}{tail}, algorithm={algorithm.value}" for algorithm in algorithms]

    def new_nonce(self) -> str:
        # Rounded down: a nonce must never look issued after the moment it is checked, which a
        # fast client (answering within the same millisecond) would otherwise hit as 'stale'.
        issued_ms = math.floor(self._clock.monotonic() * 1000)
        body = struct.pack(">q", issued_ms) + random_bytes(8)
        return base64.urlsafe_b64encode(body + self._mac(body)).decode("ascii").rstrip("=")

    def _mac(self, body: bytes) -> bytes:
        """The 128-bit signature of a nonce's body."""
        return hashlib.blake2b(body, key=self._mac_key, digest_size=16).digest()

    def _nonce_issued(self, nonce: str) -> float | None:
        """The issue time of a nonce this process made, else ``None``."""
        if len(nonce) != 43:
            return None
        try:
            raw = base64.urlsafe_b64decode(nonce + "=")
        except ValueError:
            return None
        body, mac = raw[:16], raw[16:]
        if not hmac.compare_digest(mac, self._mac(body)):
            return None
        issued_ms: int = struct.unpack(">q", body[:8])[0]
        return issued_ms / 1000

    # -- verification -------------------------------------------------------------------------

    def ha1(self, device: DeviceCredentials, algorithm: DigestAlgorithm) -> str:
        key = (device.username, device.password, algorithm)
        value = self._ha1.get(key)
        if value is None:
            if len(self._ha1) >= 4096:
                self._ha1.clear()
            value = _h(algorithm, f"{device.username}:{self.realm}:{device.password}")
            self._ha1[key] = value
        return value

    def verify(
        self,
        request: Request,
        header_name: str = "Authorization",
        *,
        local_port: int | None = None,
    ) -> AuthResult:
        """Check the request's credentials for our realm (``Proxy-Authorization`` for a proxy).

        ``local_port`` is the port the request arrived on: a digest ``uri`` naming it designates
        the same target as a Request-URI without a port (see ``digest_uri_matches``).
        """
        values = request.headers.get_all(header_name)
        if not values:
            return AuthResult(False, None, False, AuthFailure.NO_CREDENTIALS)
        credentials = None
        malformed = False
        for value in values:
            parsed = parse_credentials(value)
            if parsed is None:
                malformed = True
            elif parsed.get("realm") == self.realm:
                credentials = parsed
                break
        if credentials is None:
            reason = AuthFailure.MALFORMED if malformed else AuthFailure.REALM_MISMATCH
            return AuthResult(False, None, False, reason)
        return self._verify(request, credentials, local_port)

    def _verify(self, request: Request, c: DigestCredentials, local_port: int | None) -> AuthResult:
        params = c.params
        username = params.get("username")
        if username is None and "username*" in params:
            username = _ext_value(params["username*"])
        nonce = params.get("nonce")
        digest_uri = params.get("uri")
        response = params.get("response")
        cnonce = params.get("cnonce")
        nc_text = params.get("nc")
        if (
            not username
            or nonce is None
            or digest_uri is None
            or response is None
            or cnonce is None
            or nc_text is None
            or _NC.fullmatch(nc_text) is None
        ):
            return AuthResult(False, username, False, AuthFailure.MALFORMED)
        algorithm = _ALGORITHM_BY_NAME.get(params.get("algorithm", "MD5").lower())
        if (
            algorithm is None
            or params.get("qop", "").lower() != "auth"
            or params.get("userhash", "false").lower() != "false"
        ):
            return AuthResult(False, username, False, AuthFailure.UNSUPPORTED)

        # Checks about the request itself come before the user is looked up, so that they answer
        # an unknown user and a known one alike.
        if not digest_uri_matches(digest_uri, request.uri, local_port):
            return AuthResult(False, username, False, AuthFailure.URI_MISMATCH, algorithm)
        # An opaque that is not ours is, like an unknown nonce, most likely from before a restart
        # (both derive from the per-process secret): decided once the password is checked.
        opaque = params.get("opaque")
        foreign_opaque = opaque is not None and not hmac.compare_digest(opaque, self._opaque)

        device = self._lookup(username)
        if device is None:
            # The same arithmetic as a wrong password (a cached HA1, two hashes, one comparison),
            # so that the answer for an unknown user comes no sooner than for a known one.
            ha2 = _h(algorithm, f"{request.method}:{digest_uri}")
            decoy = _h(algorithm, f"{self._opaque}:{nonce}:{nc_text}:{cnonce}:auth:{ha2}")
            hmac.compare_digest(decoy, response.lower())
            return AuthResult(False, username, False, AuthFailure.UNKNOWN_USER, algorithm)
        if algorithm not in device.algorithms:
            return AuthResult(False, username, False, AuthFailure.ALGORITHM_NOT_ALLOWED, algorithm)
        ha2 = _h(algorithm, f"{request.method}:{digest_uri}")
        expected = _h(
            algorithm, f"{self.ha1(device, algorithm)}:{nonce}:{nc_text}:{cnonce}:auth:{ha2}"
        )
        if not hmac.compare_digest(expected, response.lower()):
            return AuthResult(False, username, False, AuthFailure.WRONG_PASSWORD, algorithm)
        # The password is right from here on: what remains is whether this nonce may still be used.
        if foreign_opaque:
            return AuthResult(False, username, True, AuthFailure.OPAQUE_MISMATCH, algorithm)
        issued = self._nonce_issued(nonce)
        if issued is None:
            # Most likely a nonce from before a restart: the client knows the password, so let it
            # retry at once with a fresh nonce.
            return AuthResult(False, username, True, AuthFailure.UNKNOWN_NONCE, algorithm)
        now = self._clock.monotonic()
        if now - issued > self.nonce_lifetime or issued > now:
            return AuthResult(False, username, True, AuthFailure.STALE_NONCE, algorithm)
        if not self._counts.check_and_record(nonce, issued, int(nc_text, 16), now):
            return AuthResult(False, username, True, AuthFailure.REPLAYED_NONCE_COUNT, algorithm)
        return AuthResult(True, device.username, False, AuthFailure.OK, algorithm)


def digest_uri_matches(digest_uri: str, request_uri: SipUri, local_port: int | None = None) -> bool:
    """Whether the credentials' ``uri`` designates the resource the Request-URI names.

    RFC 7616 §3.4.6 (and RFC 3261 §22.4) ask the server to check that the digest ``uri`` names
    the Request-URI, so that credentials computed for one resource are not used for another. An
    exact or RFC 3261 §19.1.4-equivalent URI always matches. Beyond that, a uri with the same
    scheme, user and host whose port is absent, the Request-URI's own, or the one the request
    arrived on (``local_port``) designates the same target: that is what Kamailio and Asterisk
    accept, and what clients send that build the uri from the address they sent the request to
    (sipp's default ``sip:host:port`` while the Request-URI is ``sip:host``). URI parameters are
    not compared: they select how to reach a target, not which one. A uri naming another scheme,
    user, host or port is another resource, and the caller answers 400.
    """
    if digest_uri == str(request_uri):
        return True
    try:
        uri = SipUri.parse(digest_uri)
    except ValueError:
        return False
    if uri.equivalent(request_uri):
        return True
    if uri.scheme != request_uri.scheme or uri.host != request_uri.host:
        return False
    if uri.user_unescaped != request_uri.user_unescaped:
        return False
    return uri.port is None or uri.port in (request_uri.port, local_port)
