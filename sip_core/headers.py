"""SIP header fields: the ordered multi-map `Headers` and the typed values Via, NameAddress, CSeq.

`Headers` keeps every header as its raw value string, in arrival order, and only parses a value when
somebody asks for it (see `Headers.typed`): a registrar answering thousands of REGISTERs a second
does not pay for Route, Allow or User-Agent it never reads.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from sip_core.limits import MAX_UINT32
from sip_core.uri import ANY_URI, PORT, SIP_REST, ParseError, SipUri, is_token

__all__ = [
    "COMPACT_FORMS",
    "KNOWN_KEYS",
    "NAME_KEYS",
    "CSeq",
    "Headers",
    "NameAddress",
    "Via",
    "canonical_key",
    "canonical_name",
    "parse_params",
    "split_outside",
]

# Canonical spelling of the header names we know, keyed by their lower-case form.
_CANONICAL: dict[str, str] = {
    name.lower(): name
    for name in (
        "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow",
        "Allow-Events", "Authentication-Info", "Authorization", "Call-ID", "Call-Info", "Contact",
        "Content-Disposition", "Content-Encoding", "Content-Language", "Content-Length",
        "Content-Type", "CSeq", "Date", "Error-Info", "Event", "Expires", "From", "History-Info",
        "Identity", "Identity-Info", "In-Reply-To", "Max-Forwards", "MIME-Version", "Min-Expires",
        "Min-SE", "Organization", "P-Asserted-Identity", "P-Preferred-Identity", "Path",
        "Priority", "Privacy", "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require",
        "RAck", "Reason", "Record-Route", "Refer-To", "Referred-By", "Reject-Contact",
        "Replaces", "Reply-To", "Request-Disposition", "Require", "Retry-After", "Route", "RSeq",
        "Server", "Service-Route", "Session-Expires", "SIP-ETag", "SIP-If-Match", "Subject",
        "Subscription-State", "Supported", "Timestamp", "To", "Unsupported", "User-Agent", "Via",
        "Warning", "WWW-Authenticate",
    )
}  # fmt: skip

# Compact forms (RFC 3261 §7.3.3 and the extensions that registered one).
COMPACT_FORMS: dict[str, str] = {
    "a": "accept-contact",
    "b": "referred-by",
    "c": "content-type",
    "d": "request-disposition",
    "e": "content-encoding",
    "f": "from",
    "i": "call-id",
    "j": "reject-contact",
    "k": "supported",
    "l": "content-length",
    "m": "contact",
    "n": "identity-info",
    "o": "event",
    "r": "refer-to",
    "s": "subject",
    "t": "to",
    "u": "allow-events",
    "v": "via",
    "x": "session-expires",
    "y": "identity",
}

# Headers whose grammar is a comma-separated list, so several values may share one line.
# (Not the authentication headers, Date, From/To and the like, whose values contain commas.)
_LIST_HEADERS = frozenset(
    (
        "accept", "accept-contact", "accept-encoding", "accept-language", "alert-info", "allow",
        "allow-events", "call-info", "contact", "content-encoding", "content-language",
        "error-info", "history-info", "in-reply-to", "p-asserted-identity",
        "p-preferred-identity", "path", "privacy", "proxy-require", "reason", "record-route",
        "reject-contact", "require", "route", "service-route", "supported", "unsupported", "via",
        "warning",
    )
)  # fmt: skip


# Exact spellings seen on the wire mapped to their key, so that the parser's hot loop needs one
# dict lookup per header line for the usual names ("Via", "via", "VIA", "v", "V", "Call-ID").
NAME_KEYS: dict[str, str] = {}
for _key, _name in _CANONICAL.items():
    for _spelling in (
        _name,
        _key,
        _name.upper(),
        "-".join(p.capitalize() for p in _key.split("-")),
    ):
        NAME_KEYS[_spelling] = _key
for _letter, _key in COMPACT_FORMS.items():
    NAME_KEYS[_letter] = NAME_KEYS[_letter.upper()] = _key
KNOWN_KEYS = frozenset(_CANONICAL)
# "Name: " as written on the wire, for the serialiser.
_PREFIXES: dict[str, str] = {key: f"{name}: " for key, name in _CANONICAL.items()}


def canonical_key(name: str) -> str:
    """The lookup key of a header name: lower case, compact forms expanded."""
    key = NAME_KEYS.get(name)  # the usual spellings, without strip() and lower() for each lookup
    if key is not None:
        return key
    lname = name.strip().lower()
    return COMPACT_FORMS.get(lname, lname)


def canonical_name(key: str) -> str:
    """How a header with this key is written on the wire."""
    return _CANONICAL.get(key) or "-".join(p.capitalize() for p in key.split("-"))


def split_outside(value: str, sep: str) -> list[str]:
    """Split on `sep` where it is outside quoted strings and <...>; parts are stripped."""
    if '"' not in value and "<" not in value:
        return [p.strip() for p in value.split(sep)]
    parts: list[str] = []
    start = 0
    depth = 0
    in_quote = False
    i = 0
    n = len(value)
    while i < n:
        c = value[i]
        if in_quote:
            if c == "\\":
                i += 1
            elif c == '"':
                in_quote = False
        elif c == '"':
            in_quote = True
        elif c == "<":
            depth += 1
        elif c == ">":
            if depth:
                depth -= 1
        elif c == sep and depth == 0:
            parts.append(value[start:i].strip())
            start = i + 1
        i += 1
    parts.append(value[start:].strip())
    return parts


_PARAM_VALUE_RE = re.compile(r'[A-Za-z0-9\-.!%*_+`\'~:\[\]]+|"(?:[^"\\]|\\.)*"')


def parse_params(items: list[str], *, strict: bool = True) -> dict[str, str | None]:
    """Header parameters (`;name=value` already split on ';'): names lower-cased, values as written
    (quoted values keep their quotes). An empty parameter (";;") is an error when `strict`."""
    params: dict[str, str | None] = {}
    for item in items:
        if not item:
            if strict:
                raise ParseError("empty header parameter")
            continue
        name, eq, value = item.partition("=")
        name = name.rstrip()
        if not is_token(name):
            raise ParseError(f"bad parameter name {name[:80]!r}")
        if eq:
            value = value.strip()
            if _PARAM_VALUE_RE.fullmatch(value) is None:
                raise ParseError(f"bad parameter value {value[:80]!r}")
            params[name.lower()] = value
        else:
            params[name.lower()] = None
    return params


def _params_text(params: dict[str, str | None]) -> str:
    # A plain loop: for the two or three parameters of a Via or a To, building a generator and
    # joining costs more than concatenating.
    text = ""
    for k, v in params.items():
        text = f"{text};{k}" if v is None else f"{text};{k}={v}"
    return text


# --- grammar (RFC 3261 §25.1), compiled once; possessive quantifiers keep matching linear ---------
_SWS = r"[ \t]*+"
_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]++"
_QUOTED = r'"(?:[^"\\]++|\\.)*+"'
_GEN_VALUE = rf"(?:[A-Za-z0-9\-.!%*_+`'~:\[\]]++|{_QUOTED})"
_PARAMS = rf"(?:{_SWS};{_SWS}{_TOKEN}(?:{_SWS}={_SWS}{_GEN_VALUE})?)*+{_SWS}"
_HOST = r"\[[0-9A-Fa-f:.]++\]|[A-Za-z0-9_][A-Za-z0-9._\-]*+"
# Case-insensitive "SIP" spelled out: the rest of the pattern names both cases anyway, and
# re.IGNORECASE would make every character class of it slower.
_VIA = (
    rf"[Ss][Ii][Pp]{_SWS}/{_SWS}2\.0{_SWS}/{_SWS}(?P<transport>{_TOKEN})[ \t]++(?P<host>{_HOST})"
    rf"{_SWS}(?::{_SWS}(?P<port>{PORT}))?(?P<params>{_PARAMS})"
)
_VIA_RE = re.compile(_VIA, re.DOTALL)
_DISPLAY = r"(?:[A-Za-z0-9\-.!%*_+`'~\u0080-\U0010ffff]++|[ \t]++)*+"
_NAME_ADDR_RE = re.compile(
    rf"(?:(?P<quoted>{_QUOTED})|(?P<plain>{_DISPLAY}))?{_SWS}<(?P<uri>[^<>\s\"]*+)>"
    rf"(?P<params>{_PARAMS})",
    re.DOTALL,
)
# The name-addr form with a sip/sips URI, URI parts included, so that the usual From, To and Contact
# are matched once (the groups are those of SIP_REST, renamed where they clash).
_NAME_ADDR_SIP_RE = re.compile(
    rf"(?:(?P<quoted>{_QUOTED})|(?P<plain>{_DISPLAY}))?{_SWS}<(?P<scheme>[Ss][Ii][Pp][Ss]?):"
    + SIP_REST.replace("(?P<params>", "(?P<uri_params>").replace("(?P<headers>", "(?P<uri_headers>")
    + rf">(?P<params>{_PARAMS})",
    re.DOTALL,
)
# addr-spec form: the URI may contain neither ';' (that starts header parameters), '?' nor ','
_ADDR_SPEC_RE = re.compile(rf"(?P<uri>[^\s;,?<>\"]++)(?P<params>{_PARAMS})", re.DOTALL)
# One-pass syntax check of a whole name-addr, URI included (an addr-spec is checked in two steps).
_NAME_ADDR_CHECK_RE = re.compile(
    rf"(?:{_QUOTED}|{_DISPLAY})?{_SWS}<{ANY_URI}>{_PARAMS}",
    re.DOTALL,
)
_ANY_URI_RE = re.compile(ANY_URI)
_CSEQ_RE = re.compile(rf"[ \t]*+([0-9]{{1,10}})[ \t]++({_TOKEN})[ \t]*+")
_EMPTY_PARAM_RE = re.compile(r";[ \t]*+(?=;|$)")


def _params_of(text: str) -> dict[str, str | None]:
    """Parameters from text already matched by _PARAMS (";a=1;b")."""
    params: dict[str, str | None] = {}
    if not text:
        return params
    if '"' in text:
        items = split_outside(text, ";")
    else:
        items = text.split(";")
        if " " not in text and "\t" not in text:
            # The usual ";branch=z9hG4bK...;rport": nothing to strip.
            for item in items[1:]:
                name, eq, value = item.partition("=")
                params[name.lower()] = value if eq else None
            return params
    for item in items[1:]:
        name, eq, value = item.partition("=")
        params[name.strip().lower()] = value.strip() if eq else None
    return params


@dataclass(slots=True)
class Via:
    """One Via value (RFC 3261 §20.42); the protocol is always SIP/2.0."""

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str, *, strict: bool = True) -> Via:
        """Parse one Via value; with strict=False empty parameters (";;") are skipped."""
        text = text.strip()
        m = _VIA_RE.fullmatch(text)
        if m is None and not strict:
            # Only a value the grammar refuses is cleaned: a valid one may hold ";;" in a
            # quoted parameter value, which must stay as it is.
            text = _EMPTY_PARAM_RE.sub("", text)
            m = _VIA_RE.fullmatch(text)
        if m is None:
            raise ParseError(f"bad Via {text[:80]!r}")
        transport, host, port_text, params = m.groups()
        # PORT admits 0-65535 only, so the number needs no range check here.
        port = None if port_text is None else int(port_text)
        return cls(transport.upper(), host.lower(), port, _params_of(params))

    @staticmethod
    def is_valid(text: str) -> bool:
        return _VIA_RE.fullmatch(text.strip()) is not None

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @branch.setter
    def branch(self, value: str) -> None:
        self.params["branch"] = value

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @received.setter
    def received(self, value: str) -> None:
        self.params["received"] = value

    @property
    def has_rport(self) -> bool:
        """True if the client asked for rport (RFC 3581), with or without a value."""
        return "rport" in self.params

    @property
    def rport(self) -> int | None:
        value = self.params.get("rport")
        return int(value) if value and value.isascii() and value.isdigit() else None

    @rport.setter
    def rport(self, value: int) -> None:
        self.params["rport"] = str(value)

    @property
    def is_rfc3261_branch(self) -> bool:
        """The branch is the RFC 3261 magic cookie plus an identifier (else RFC 2543 matching)."""
        branch = self.params.get("branch")
        return branch is not None and len(branch) > 7 and branch.startswith("z9hG4bK")

    @property
    def sent_by(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def copy(self) -> Via:
        return Via(self.transport, self.host, self.port, dict(self.params))

    def __str__(self) -> str:
        params = _params_text(self.params) if self.params else ""
        if self.port is None:
            return f"SIP/2.0/{self.transport} {self.host}{params}"
        return f"SIP/2.0/{self.transport} {self.host}:{self.port}{params}"


# Display names written without quotes: ASCII tokens separated by single spaces.
_PLAIN_DISPLAY_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+(?: [A-Za-z0-9\-.!%*_+`'~]+)*")
_QUOTED_PAIR_RE = re.compile(r"\\(.)", re.DOTALL)


def _display_name(quoted: str | None, plain: str | None) -> str | None:
    """The display name from a quoted-string (unescaped) or plain tokens (blanks collapsed)."""
    if quoted is not None:
        text = quoted[1:-1]
        return _QUOTED_PAIR_RE.sub(r"\1", text) if "\\" in text else text
    return " ".join(plain.split()) or None if plain else None


@dataclass(slots=True)
class NameAddress:
    """A name-addr or addr-spec with header parameters: From, To, Contact, Route, Record-Route..."""

    display_name: str | None
    uri: SipUri
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str, *, strict: bool = True) -> NameAddress:
        """Parse a name-addr or addr-spec with parameters; strict=False skips empty ones."""
        text = text.strip()
        fast = _NAME_ADDR_SIP_RE.fullmatch(text)
        if fast is None:
            if not strict:
                # Cleaned only when needed, as in Via.parse.
                text = _EMPTY_PARAM_RE.sub("", text)
                fast = _NAME_ADDR_SIP_RE.fullmatch(text)
            if fast is None:
                return cls._parse_general(text)
        # A <sip:...> name-addr, the usual From, To and Contact: what _parse_general gives for
        # it, from one match.
        groups = fast.groups()
        quoted, plain, scheme, params = groups[0], groups[1], groups[2], groups[9]
        return cls(
            _display_name(quoted, plain),
            SipUri._from_groups(scheme.lower(), groups[3:9]),
            _params_of(params) if params else {},
        )

    @classmethod
    def _parse_general(cls, text: str) -> NameAddress:
        """Any name-addr or addr-spec (stripped, empty parameters already dealt with): the
        name-addr or addr-spec grammar first, then the URI inside it by its scheme."""
        m = _NAME_ADDR_RE.fullmatch(text) or _ADDR_SPEC_RE.fullmatch(text)
        if m is None:
            raise ParseError(f"bad name-addr {text[:80]!r}")
        named = m.groupdict()
        display = _display_name(named.get("quoted"), named.get("plain"))
        return cls(display, SipUri.parse_any(m["uri"]), _params_of(m["params"]))

    @staticmethod
    def is_valid(text: str) -> bool:
        """Cheap syntax check of a name-addr / addr-spec, URI included, without building objects.

        It accepts exactly what `parse` reads: an addr-spec's URI ends at its first ";" (what
        follows are header parameters, RFC 3261 §20.10), so a URI scheme whose syntax allows ";"
        (such as "isbn:1;") must not swallow them here either.
        """
        text = text.strip()
        if _NAME_ADDR_CHECK_RE.fullmatch(text) is not None:
            return True
        spec = _ADDR_SPEC_RE.fullmatch(text)
        return spec is not None and _ANY_URI_RE.fullmatch(spec["uri"]) is not None

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    @tag.setter
    def tag(self, value: str) -> None:
        self.params["tag"] = value

    def copy(self) -> NameAddress:
        return NameAddress(self.display_name, self.uri.copy(), dict(self.params))

    def __str__(self) -> str:
        name = self.display_name
        params = _params_text(self.params) if self.params else ""
        if name is None:
            return f"<{self.uri}>{params}"
        if _PLAIN_DISPLAY_RE.fullmatch(name):
            head = name + " "
        else:
            head = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '" '
        return f"{head}<{self.uri}>{params}"


@dataclass(slots=True)
class CSeq:
    number: int
    method: str

    @classmethod
    def parse(cls, text: str) -> CSeq:
        m = _CSEQ_RE.fullmatch(text)
        if m is None:
            raise ParseError(f"bad CSeq {text[:80]!r}")
        number, method = m.groups()  # the pattern admits a token only as the method
        value = int(number)
        if value > MAX_UINT32:
            raise ParseError("CSeq number larger than 2**32-1")
        return cls(value, method)

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


class Headers:
    """An ordered multi-map of header fields.

    Names are case-insensitive and compact forms are mapped to their full names. Values are kept as
    raw strings, one entry per header line; `get_all` splits list-valued headers on commas (outside
    quotes and <>). Values of the same name stay in order; different names keep the order in which
    each name first appeared (RFC 3261 §7.3.1 makes only the former significant).

    The raw values of a header are a tuple, not a list: a parsed message is kept for as long as its
    transaction (32 s over UDP), and tuples of strings drop out of the cyclic garbage collector's
    sight after its first pass, where lists would be traversed by every collection until then.

    Typed views (`typed`) are parsed on first use and cached. A cached object may be changed in
    place (the transport adds `received` to the top Via): reading or serialising the header then
    reflects the change. Any write to a header drops its cached view.
    """

    __slots__ = ("_names", "_typed", "_values")

    def __init__(self, items: list[tuple[str, str]] | None = None) -> None:
        self._values: dict[str, tuple[str, ...]] = {}
        self._names: dict[str, str] = {}
        self._typed: dict[str, tuple[object, Callable[[object], list[str]]]] = {}
        if items:
            for name, value in items:
                self.add(name, value)

    # --- raw access -----------------------------------------------------------------------
    def _raw(self, key: str) -> Sequence[str] | None:
        typed = self._typed.get(key)
        if typed is not None:
            obj, dump = typed
            return dump(obj)
        return self._values.get(key)

    def _flush(self, key: str) -> None:
        typed = self._typed.pop(key, None)
        if typed is not None:
            obj, dump = typed
            values = dump(obj)
            if values:
                self._values[key] = tuple(values)
            else:
                self._values.pop(key, None)

    def get(self, name: str) -> str | None:
        """The first value (for a list header: the whole first line)."""
        values = self._raw(canonical_key(name))
        return values[0] if values else None

    def get_lines(self, name: str) -> list[str]:
        """The raw value of every line of this header, unsplit."""
        return list(self._raw(canonical_key(name)) or ())

    def get_all(self, name: str) -> list[str]:
        """Every value; list-valued headers split on commas outside quotes and <>."""
        key = canonical_key(name)
        values = self._raw(key)
        if not values:
            return []
        if key not in _LIST_HEADERS:
            return list(values)
        result: list[str] = []
        for line in values:
            if "," in line:
                result.extend(p for p in split_outside(line, ",") if p)
            elif line:
                result.append(line)
        return result

    def count(self, name: str) -> int:
        """Number of header lines with this name."""
        return len(self._raw(canonical_key(name)) or ())

    def add(self, name: str, value: str) -> None:
        key = canonical_key(name)
        self._flush(key)
        values = self._values.get(key)
        if values is None:
            self._values[key] = (value,)
            if key not in _CANONICAL:
                self._names[key] = name.strip()
        else:
            self._values[key] = (*values, value)

    def set(self, name: str, value: str) -> None:
        key = canonical_key(name)
        self._typed.pop(key, None)
        if key not in self._values and key not in _CANONICAL:
            self._names[key] = name.strip()
        self._values[key] = (value,)

    def prepend(self, name: str, value: str) -> None:
        key = canonical_key(name)
        self._flush(key)
        values = self._values.get(key)
        if values is None:
            if key not in _CANONICAL:
                self._names[key] = name.strip()
            self._values = {key: (value,), **self._values}
        else:
            self._values[key] = (value, *values)

    def remove(self, name: str) -> None:
        key = canonical_key(name)
        self._typed.pop(key, None)
        self._values.pop(key, None)
        self._names.pop(key, None)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and bool(self._values.get(canonical_key(name)))

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for key in list(self._values):
            name = _CANONICAL.get(key) or self._names.get(key) or canonical_name(key)
            for value in self._raw(key) or ():
                yield name, value

    def __len__(self) -> int:
        return sum(len(self._raw(key) or ()) for key in self._values)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Headers({list(self)!r})"

    def copy(self) -> Headers:
        """An independent copy: changing it (or typed values read from it) leaves self alone."""
        new = Headers()
        values = self._values
        new._values = dict(values)
        for key, (obj, dump) in self._typed.items():
            new._values[key] = tuple(dump(obj))
        new._names = dict(self._names)
        return new

    # --- typed access ---------------------------------------------------------------------
    def typed[T](
        self, key: str, parse: Callable[[tuple[str, ...]], T], dump: Callable[[T], list[str]]
    ) -> T:
        """The value of header `key` (a canonical key) parsed by `parse`, cached until the header
        is written; `dump` turns the (possibly modified) object back into raw values."""
        cached = self._typed.get(key)
        if cached is not None:
            return cached[0]  # type: ignore[return-value]
        values = self._values.get(key)
        if values is None:
            # keep a slot so that an object filled in later (vias.append) is serialised in order
            values = self._values[key] = ()
        obj = parse(values)
        self._typed[key] = (obj, dump)  # type: ignore[assignment]
        return obj

    def cache_typed[T](self, key: str, obj: T, dump: Callable[[T], list[str]]) -> None:
        """Install an already parsed view (the parser validates eagerly and keeps its results)."""
        self._typed[key] = (obj, dump)  # type: ignore[assignment]

    def is_cached(self, key: str) -> bool:
        return key in self._typed

    def write_lines(self, out: list[str], skip: str | None = None) -> None:
        """Append "Name: value\\r\\n" for every header line to `out` (fast path for to_bytes)."""
        typed = self._typed
        prefixes = _PREFIXES
        for key, values in self._values.items():
            if key == skip:
                continue
            prefix = prefixes.get(key)
            if prefix is None:
                prefix = f"{self._names.get(key) or canonical_name(key)}: "
            lines: Sequence[str] = values
            if typed and key in typed:
                obj, dump = typed[key]
                lines = dump(obj)
            for value in lines:
                out.append(f"{prefix}{value}\r\n")

    @classmethod
    def _from_parsed(cls, values: dict[str, tuple[str, ...]], names: dict[str, str]) -> Headers:
        new = cls.__new__(cls)
        new._values = values
        new._names = names
        new._typed = {}
        return new
