"""SIP URIs (RFC 3261 §19.1) and the error type of the whole message layer.

Values are kept as written (still %-escaped) so that a URI serialises back to what the peer sent;
comparison (`equivalent`) and the `*_unescaped` properties do the unescaping.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import unquote

if TYPE_CHECKING:
    from sip_core.message import Request

__all__ = ["ParseError", "SipUri", "is_token", "unescape"]


class ParseError(ValueError):
    """A message, header or URI that cannot be used.

    `status` is the response to answer with (400, 416, 505 ...) or None when the input must be
    dropped silently (garbage, or a broken response). `basis` is a request good enough to build
    that error response from with `make_response` (Via, From, To, Call-ID and CSeq usable), else
    None.
    """

    def __init__(self, reason: str, status: int | None = 400, basis: Request | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.basis = basis

    def __repr__(self) -> str:
        return f"ParseError({self.reason!r}, status={self.status!r})"


_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_OPAQUE_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
_SIP_SCHEMES = frozenset(("sip", "sips"))
# 0-65535, leading zeros allowed up to five digits
PORT = r"(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[0-5][0-9]{4}|[0-9]{1,4})"
_PCHAR = r"[A-Za-z0-9\-_.!~*'()%\[\]/:&+$]"
_HCHAR = r"[A-Za-z0-9\-_.!~*'()%\[\]/?:+$]"
# Everything after "sip:" (RFC 3261 §25.1 SIP-URI): userinfo (the user may hold ';' and '?'),
# host, port, uri-parameters, headers. Possessive quantifiers keep matching linear.
SIP_REST = (
    r"(?:(?P<user>[A-Za-z0-9\-_.!~*'()%&=+$,;?/]++)"
    r"(?::(?P<password>[A-Za-z0-9\-_.!~*'()%&=+$,]*+))?@)?"
    r"(?P<host>\[[0-9A-Fa-f:.]++\]|[A-Za-z0-9_][A-Za-z0-9._\-]*+)"
    rf"(?::(?P<port>{PORT}))?"
    rf"(?P<params>(?:;{_PCHAR}++(?:={_PCHAR}++)?)*+)"
    rf"(?:\?(?P<headers>{_HCHAR}++={_HCHAR}*+(?:&{_HCHAR}++={_HCHAR}*+)*+))?"
)
_SIP_REST_RE = re.compile(SIP_REST)
# Any URI a name-addr may hold, as a pattern without groups (for one-pass syntax checks).
ANY_URI = (
    r"(?:[Ss][Ii][Pp][Ss]?:"
    + re.sub(r"\(\?P<\w+>", "(?:", SIP_REST)
    + r"|(?![Ss][Ii][Pp][Ss]?:)[A-Za-z][A-Za-z0-9+\-.]*+:[^\s<>\"]++)"
)


def is_token(text: str) -> bool:
    """True if `text` is an RFC 3261 token (method names, header names, parameter names)."""
    return _TOKEN_RE.fullmatch(text) is not None


def unescape(text: str) -> str:
    """Undo %HH escapes as UTF-8 (invalid sequences become U+FFFD; a lone "%" stays)."""
    return unquote(text, errors="replace") if "%" in text else text


@dataclass(slots=True)
class SipUri:
    """A sip: or sips: URI.

    Other schemes only appear inside name-addrs (From: <tel:...>, To: <http:...>), where they are
    kept opaque: `opaque` holds everything after "scheme:" and the SIP fields are empty. The
    Request-URI must be sip/sips (`parse` raises ParseError 416 for anything else).
    """

    scheme: str
    user: str | None
    password: str | None
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    opaque: str | None = None

    @classmethod
    def parse(cls, text: str) -> SipUri:
        """Parse a sip/sips URI; ParseError 416 for another scheme, 400 if malformed."""
        scheme, colon, rest = text.partition(":")
        lscheme = scheme.lower()
        if not colon or lscheme not in _SIP_SCHEMES:
            if colon and _OPAQUE_SCHEME_RE.fullmatch(scheme):
                raise ParseError(f"unsupported URI scheme {scheme!r}", 416)
            raise ParseError(f"not a URI: {text[:80]!r}")
        return cls._parse_sip(lscheme, rest)

    @classmethod
    def parse_any(cls, text: str) -> SipUri:
        """Parse a URI of any scheme: sip/sips fully, others as an opaque value."""
        scheme, colon, rest = text.partition(":")
        lscheme = scheme.lower()
        if colon and lscheme in _SIP_SCHEMES:
            return cls._parse_sip(lscheme, rest)
        if not colon or not _OPAQUE_SCHEME_RE.fullmatch(scheme) or not rest:
            raise ParseError(f"not a URI: {text[:80]!r}")
        if any(c in rest for c in ' \t\r\n<>"'):
            raise ParseError(f"bad character in URI {text[:80]!r}")
        return cls(lscheme, None, None, "", opaque=rest)

    @classmethod
    def _parse_sip(cls, scheme: str, rest: str) -> SipUri:
        m = _SIP_REST_RE.fullmatch(rest)
        if m is None:
            raise ParseError(f"bad SIP URI {scheme}:{rest[:80]!r}")
        return cls._from_groups(scheme, m.groups())

    @classmethod
    def _from_groups(cls, scheme: str, groups: Sequence[str | None]) -> SipUri:
        """A URI from the six groups of a `SIP_REST` match (also used by patterns that embed it,
        so that a name-addr is matched once, URI included); `scheme` is lower case already."""
        user, password, host, port_text, param_text, header_text = groups
        assert host is not None  # the pattern always has a host
        # PORT admits 0-65535 only, so the number needs no range check here.
        port = None if port_text is None else int(port_text)
        params: dict[str, str | None] = {}
        if param_text:
            for item in param_text[1:].split(";"):
                name, eq, value = item.partition("=")
                params[name.lower()] = value if eq else None
        headers: dict[str, str] = {}
        if header_text:
            for item in header_text.split("&"):
                name, _, value = item.partition("=")
                headers[name] = value
        return cls(scheme, user, password, host.lower(), port, params, headers)

    @staticmethod
    def is_valid_any(text: str) -> bool:
        """Cheap syntax check: a valid sip/sips URI, or an absolute URI of another scheme."""
        scheme, colon, rest = text.partition(":")
        if scheme.lower() in _SIP_SCHEMES:
            return _SIP_REST_RE.fullmatch(rest) is not None
        return bool(colon and rest and _OPAQUE_SCHEME_RE.fullmatch(scheme)) and not any(
            c in rest for c in ' \t\r\n<>"'
        )

    @property
    def is_sip(self) -> bool:
        return self.opaque is None

    @property
    def user_unescaped(self) -> str | None:
        return None if self.user is None else unescape(self.user)

    @property
    def password_unescaped(self) -> str | None:
        return None if self.password is None else unescape(self.password)

    @property
    def transport(self) -> str | None:
        value = self.params.get("transport")
        return value.lower() if value else None

    @property
    def host_port(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def copy(self) -> SipUri:
        return SipUri(
            self.scheme,
            self.user,
            self.password,
            self.host,
            self.port,
            dict(self.params),
            dict(self.headers),
            self.opaque,
        )

    def __str__(self) -> str:
        if self.opaque is not None:
            return f"{self.scheme}:{self.opaque}"
        if self.password is None and not self.params and not self.headers:
            # The usual shape ("sip:alice@host:port"): one f-string instead of a parts list.
            user = "" if self.user is None else self.user + "@"
            if self.port is None:
                return f"{self.scheme}:{user}{self.host}"
            return f"{self.scheme}:{user}{self.host}:{self.port}"
        parts = [self.scheme, ":"]
        if self.user is not None:
            parts.append(self.user)
            if self.password is not None:
                parts += (":", self.password)
            parts.append("@")
        parts.append(self.host)
        if self.port is not None:
            parts += (":", str(self.port))
        for name, value in self.params.items():
            parts += (";", name) if value is None else (";", name, "=", value)
        if self.headers:
            parts += ("?", "&".join(f"{k}={v}" for k, v in self.headers.items()))
        return "".join(parts)

    def equivalent(self, other: SipUri) -> bool:
        """URI comparison of RFC 3261 §19.1.4."""
        if self.scheme != other.scheme:
            return False
        if self.opaque is not None or other.opaque is not None:
            return self.opaque == other.opaque
        if self.user_unescaped != other.user_unescaped:
            return False
        if self.password_unescaped != other.password_unescaped:
            return False
        if self.host != other.host or self.port != other.port:
            return False
        mine = {unescape(k).lower(): _lower_unescaped(v) for k, v in self.params.items()}
        theirs = {unescape(k).lower(): _lower_unescaped(v) for k, v in other.params.items()}
        for name in ("user", "ttl", "method", "maddr", "transport"):
            if mine.get(name, "") != theirs.get(name, ""):
                return False
        for name in mine.keys() & theirs.keys():
            if mine[name] != theirs[name]:
                return False
        my_headers = {k.lower(): unescape(v) for k, v in self.headers.items()}
        their_headers = {k.lower(): unescape(v) for k, v in other.headers.items()}
        return my_headers == their_headers


def _lower_unescaped(value: str | None) -> str | None:
    return None if value is None else unescape(value).lower()
