"""SIP requests and responses: parsing, validation, serialisation and building responses.

`parse_message` splits the header block once into (name, raw value) pairs; the values the
validation of RFC 3261 §8.1.1/§8.2 needs (Via, From, To, CSeq, Contact) are parsed then and kept,
everything else only when read. It raises nothing but `ParseError`, whatever the input bytes.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Sequence

from sip_core.headers import (
    COMPACT_FORMS,
    KNOWN_KEYS,
    NAME_KEYS,
    CSeq,
    Headers,
    NameAddress,
    Via,
    canonical_name,
    split_outside,
)
from sip_core.limits import (
    MAX_BODY,
    MAX_HEADER_BLOCK,
    MAX_HEADER_LINES,
    MAX_MAX_FORWARDS,
    MAX_START_LINE,
    MAX_UINT32,
)
from sip_core.uri import ParseError, SipUri, is_token

__all__ = [
    "REASON_PHRASES",
    "CSeq",
    "Headers",
    "NameAddress",
    "ParseError",
    "Request",
    "Response",
    "SipUri",
    "Via",
    "make_response",
    "new_branch",
    "new_call_id",
    "new_tag",
    "parse_message",
    "random_bytes",
]

SIP_VERSION = "SIP/2.0"

REASON_PHRASES: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    199: "Early Dialog Terminated",
    200: "OK",
    202: "Accepted",
    204: "No Notification",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    305: "Use Proxy",
    380: "Alternative Service",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    412: "Conditional Request Failed",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    417: "Unknown Resource-Priority",
    420: "Bad Extension",
    421: "Extension Required",
    422: "Session Interval Too Small",
    423: "Interval Too Brief",
    428: "Use Identity Header",
    429: "Provide Referrer Identity",
    430: "Flow Failed",
    433: "Anonymity Disallowed",
    436: "Bad Identity-Info",
    437: "Unsupported Certificate",
    438: "Invalid Identity Header",
    439: "First Hop Lacks Outbound Support",
    440: "Max-Breadth Exceeded",
    469: "Bad Info Package",
    470: "Consent Needed",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    485: "Ambiguous",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    491: "Request Pending",
    493: "Undecipherable",
    494: "Security Agreement Required",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    555: "Push Notification Service Not Supported",
    580: "Precondition Failure",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
    607: "Unwanted",
    608: "Rejected",
}

# Methods whose 101-299 responses establish a dialog, so Record-Route is copied (RFC 3261 §12.1.1).
_DIALOG_METHODS = frozenset(("INVITE", "SUBSCRIBE", "REFER"))
# Tokens every parse would otherwise check with a regular expression.
_COMMON_METHODS = frozenset((
    "REGISTER", "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO", "UPDATE", "PRACK",
    "SUBSCRIBE", "NOTIFY", "REFER", "MESSAGE", "PUBLISH",
))  # fmt: skip


class _RandomPool:
    """Bytes from the operating system's CSPRNG, fetched a few kilobytes at a time.

    Every response needs a To tag and every challenge a nonce; one ``os.urandom`` system call for
    each of those costs more than the rest of building the value. The bytes are the same quality
    as ``secrets.token_bytes`` gives (that is ``os.urandom`` too); each is handed out once.
    """

    __slots__ = ("_buffer", "_lock", "_position")

    _SIZE = 4096

    def __init__(self) -> None:
        self._buffer = b""
        self._position = 0
        self._lock = threading.Lock()

    def take(self, count: int) -> bytes:
        with self._lock:
            start = self._position
            end = start + count
            if end > len(self._buffer):
                self._buffer = os.urandom(max(self._SIZE, count))
                start, end = 0, count
            self._position = end
            return self._buffer[start:end]


_RANDOM = _RandomPool()


def random_bytes(count: int) -> bytes:
    """``count`` cryptographically random bytes (for tags, branches, Call-IDs and nonces)."""
    return _RANDOM.take(count)


def new_branch() -> str:
    """A Via branch with the RFC 3261 magic cookie, unique across space and time."""
    return "z9hG4bK" + _RANDOM.take(10).hex()


def new_tag() -> str:
    return _RANDOM.take(8).hex()


def new_call_id() -> str:
    return _RANDOM.take(16).hex()


# --- typed header views ---------------------------------------------------------------------


def _split_list(values: Sequence[str]) -> list[str]:
    items: list[str] = []
    for line in values:
        if "," in line:
            items.extend(split_outside(line, ","))
        else:
            items.append(line.strip())
    return items


def _parse_vias(values: Sequence[str]) -> list[Via]:
    return [Via.parse(item) for item in _split_list(values)]


def _parse_vias_lenient(values: Sequence[str]) -> list[Via]:
    vias: list[Via] = []
    for item in _split_list(values):
        if item:
            try:
                vias.append(Via.parse(item, strict=False))
            except ParseError:
                continue
    return vias


def _dump_list(items: list[Via] | list[NameAddress]) -> list[str]:
    return [str(item) for item in items]


def _parse_name_addresses(values: Sequence[str]) -> list[NameAddress]:
    return [NameAddress.parse(item) for item in _split_list(values)]


def _single(values: Sequence[str], name: str) -> str:
    if not values:
        raise ParseError(f"missing {name}")
    return values[0]


def _parse_from(values: Sequence[str]) -> NameAddress:
    return NameAddress.parse(_single(values, "From"))


def _parse_to(values: Sequence[str]) -> NameAddress:
    return NameAddress.parse(_single(values, "To"))


def _parse_cseq(values: Sequence[str]) -> CSeq:
    return CSeq.parse(_single(values, "CSeq"))


def _dump_one(item: NameAddress | CSeq) -> list[str]:
    return [str(item)]


def _digits(value: str | None) -> int | None:
    if value is None:
        return None
    value = value.strip()
    if not value or not (value.isascii() and value.isdigit()):
        return None
    return int(value)


class _Message:
    """What requests and responses share: headers, body, and typed header views."""

    __slots__ = ("body", "headers", "version")

    headers: Headers
    body: bytes
    version: str

    def header(self, name: str) -> str | None:
        """Shortcut for headers.get(name)."""
        return self.headers.get(name)

    @property
    def vias(self) -> list[Via]:
        """Every Via value, top first. Changing these objects changes the message."""
        return self.headers.typed("via", _parse_vias, _dump_list)

    @property
    def top_via(self) -> Via:
        vias = self.vias
        if not vias:
            raise ParseError("message has no Via")
        return vias[0]

    @property
    def call_id(self) -> str:
        value = self.headers.get("call-id")
        if value is None:
            raise ParseError("message has no Call-ID")
        return value

    @property
    def cseq(self) -> CSeq:
        return self.headers.typed("cseq", _parse_cseq, _dump_one)

    @property
    def from_(self) -> NameAddress:
        return self.headers.typed("from", _parse_from, _dump_one)

    @property
    def to(self) -> NameAddress:
        return self.headers.typed("to", _parse_to, _dump_one)

    @property
    def is_wildcard_contact(self) -> bool:
        """Contact is "*" (REGISTER removing every binding, RFC 3261 §10.2.2)."""
        values = self.headers.get_lines("contact")
        return len(values) == 1 and values[0].strip() == "*"

    @property
    def contacts(self) -> list[NameAddress]:
        """Every Contact value; empty for the wildcard "*" (see is_wildcard_contact)."""
        if self.is_wildcard_contact:
            return []
        return self.headers.typed("contact", _parse_name_addresses, _dump_list)

    @property
    def routes(self) -> list[NameAddress]:
        return self.headers.typed("route", _parse_name_addresses, _dump_list)

    @property
    def record_routes(self) -> list[NameAddress]:
        return self.headers.typed("record-route", _parse_name_addresses, _dump_list)

    @property
    def expires(self) -> int | None:
        """The Expires header in seconds (values past 2**32-1 are clamped), None if absent or
        not a number."""
        value = _digits(self.headers.get("expires"))
        return None if value is None else min(value, MAX_UINT32)

    @property
    def max_forwards(self) -> int | None:
        return _digits(self.headers.get("max-forwards"))

    @property
    def content_type(self) -> str | None:
        """The media type, lower-cased and without parameters ("application/sdp")."""
        value = self.headers.get("content-type")
        if value is None:
            return None
        return value.partition(";")[0].strip().lower() or None

    def _to_bytes(self, start_line: str) -> bytes:
        out = [start_line, "\r\n"]
        self.headers.write_lines(out, skip="content-length")
        body = self.body
        out.append(f"Content-Length: {len(body)}\r\n\r\n")
        head = "".join(out).encode()
        return head + body if body else head


class Request(_Message):
    __slots__ = ("method", "uri")

    def __init__(
        self,
        method: str,
        uri: SipUri,
        headers: Headers | None = None,
        body: bytes = b"",
        version: str = SIP_VERSION,
    ) -> None:
        self.method = method
        self.uri = uri
        self.headers = Headers() if headers is None else headers
        self.body = body
        self.version = version

    def to_bytes(self) -> bytes:
        """The wire form; Content-Length is set from the body."""
        return self._to_bytes(f"{self.method} {self.uri} {self.version}")

    def copy(self) -> Request:
        """An independent copy: headers, URI and typed values can be changed on either side."""
        return Request(self.method, self.uri.copy(), self.headers.copy(), self.body, self.version)

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"


class Response(_Message):
    __slots__ = ("reason", "status")

    def __init__(
        self,
        status: int,
        reason: str | None = None,
        headers: Headers | None = None,
        body: bytes = b"",
        version: str = SIP_VERSION,
    ) -> None:
        self.status = status
        self.reason = REASON_PHRASES.get(status, "Unknown") if reason is None else reason
        self.headers = Headers() if headers is None else headers
        self.body = body
        self.version = version

    def to_bytes(self) -> bytes:
        """The wire form; Content-Length is set from the body."""
        return self._to_bytes(f"{self.version} {self.status} {self.reason}")

    def copy(self) -> Response:
        return Response(self.status, self.reason, self.headers.copy(), self.body, self.version)

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"


# --- responses ----------------------------------------------------------------------------------

_TAG_PARAM_RE = re.compile(r";\s*[Tt][Aa][Gg]\s*=")
_COPIED = ("from", "to", "call-id", "cseq")
_VIA_SLOT = ("",)


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    body: bytes = b"",
) -> Response:
    """A response to `request` per RFC 3261 §8.2.6: every Via, From, To, Call-ID, CSeq copied; a
    To tag added (`to_tag`, else a new one) unless the status is 100 or the To already has one.
    Record-Route is copied into 101-299 responses to dialog-creating requests (§12.1.1) and
    Timestamp into 100 Trying (§8.2.6.1)."""
    source = request.headers
    values: dict[str, tuple[str, ...]] = {}
    headers = Headers._from_parsed(values, {})
    cached = source._typed.get("via")
    if cached is None:
        via = source._values.get("via")
        if via:
            values["via"] = via
    elif cached[0]:
        # The request's Via objects are parsed already (the parser keeps them, the transport
        # stamped the top one): the response gets copies, so that routing it (send_response
        # reads its top Via) parses nothing, and they are written out once, when it is sent.
        # Until then the raw slot only keeps the header's place: the typed view is what counts.
        vias: list[Via] = cached[0]  # type: ignore[assignment]
        values["via"] = _VIA_SLOT
        headers.cache_typed("via", [v.copy() for v in vias], _dump_list)
    raw_of = source._raw
    for key in _COPIED:
        raw = raw_of(key)
        if raw:
            values[key] = (raw[0],)
    to_values = values.get("to")
    if status != 100 and to_values and not _has_tag(to_values[0]):
        values["to"] = (f"{to_values[0]};tag={to_tag or new_tag()}",)
    if 100 < status < 300 and request.method in _DIALOG_METHODS:
        record_route = source._raw("record-route")
        if record_route:
            values["record-route"] = tuple(record_route)
    elif status == 100:
        timestamp = source._raw("timestamp")
        if timestamp:
            values["timestamp"] = tuple(timestamp)
    return Response(status, reason, headers, body)


def _has_tag(to_value: str) -> bool:
    """Whether the To has a tag parameter, read from the raw value (no parse on the hot path;
    also works for a basis request whose To did not parse). Header parameters follow the '>'
    of a name-addr, or the URI of an addr-spec, which cannot itself contain ';'."""
    close = to_value.rfind(">")
    return _TAG_PARAM_RE.search(to_value, close + 1) is not None


# --- parsing ------------------------------------------------------------------------------------


def parse_message(data: bytes) -> Request | Response:
    """Parse one SIP message: a UDP datagram or a message cut from a stream by StreamFramer.

    A Content-Length larger than the body is an error; a shorter one truncates the body (RFC 3261
    §18.3); without one the body is the rest of the data. Requests are validated (§8.1.1 headers,
    CSeq, single-valued headers). Raises ParseError, and only ParseError, on any invalid input.
    """
    try:
        return _parse(data if type(data) is bytes else bytes(data))
    except ParseError:
        raise
    except Exception as exc:  # a bug must not become a crash on hostile input
        raise ParseError(f"unparseable message ({type(exc).__name__})", None) from exc


def _parse(data: bytes) -> Request | Response:
    # RFC 3261 §7.5: ignore CRLFs before the start line (keep-alives, sloppy senders)
    if data[:1] in (b"\r", b"\n"):
        data = data.lstrip(b"\r\n")
    if not data or data.isspace():  # what strip() would empty, without copying a message
        raise ParseError("no message (keep-alive)", None)
    end = data.find(b"\r\n\r\n")
    crlf = True
    if end >= 0:
        head = data[:end]
        rest = data[end + 4 :]
    else:
        end = data.find(b"\n\n")
        if end >= 0:
            head = data[:end]
            rest = data[end + 2 :]
            crlf = False
        else:
            head = data.rstrip(b"\r\n")
            rest = b""
            crlf = b"\r\n" in head or b"\n" not in head
    is_response = head[:4].upper() == b"SIP/"
    answer_status = None if is_response else 400
    if len(head) > MAX_HEADER_BLOCK:
        raise ParseError("header block too large", None if is_response else 513)
    first_end = head.find(b"\n")
    if (first_end if first_end >= 0 else len(head)) > MAX_START_LINE:
        raise ParseError("start line too long", None if is_response else 414)
    try:
        text = head.decode()
    except UnicodeDecodeError:
        # RFC 3261 says UTF-8, but old phones send Latin-1 display names: take them as such
        text = head.decode("latin-1")
    if crlf:
        lines = text.split("\r\n")
        stray = text.count("\n") != len(lines) - 1 or text.count("\r") != len(lines) - 1
    else:
        lines = [line.rstrip("\r") for line in text.split("\n")]
        stray = "\r" in text.replace("\r\n", "\n")
    if len(lines) > MAX_HEADER_LINES + 1:
        raise ParseError("too many header lines", None if is_response else 513)

    first = lines[0]
    # --- header lines ---
    values: dict[str, tuple[str, ...]] = {}
    names: dict[str, str] = {}
    error: ParseError | None = None
    if stray:
        error = ParseError("bare CR or LF inside the header block", answer_status)
    last: str | None = None  # the key of the header a continuation line belongs to
    name_keys = NAME_KEYS
    for index in range(1, len(lines)):
        line = lines[index]
        name, colon, value = line.partition(":")
        key = name_keys.get(name)
        if key is None:
            if not line:
                continue
            if line[0] in " \t":  # continuation line (RFC 3261 §7.3.1)
                if last is None:
                    error = error or ParseError(
                        "continuation before the first header", answer_status
                    )
                    continue
                extra = line.strip(" \t")
                if extra:
                    *before, tail = values[last]
                    values[last] = (*before, f"{tail} {extra}" if tail else extra)
                continue
            name = name.rstrip(" \t")
            lower = name.lower()
            key = _COMPACT_GET(lower, lower)
            if not colon or (key not in KNOWN_KEYS and not is_token(name)):
                error = error or ParseError(f"malformed header line {line[:60]!r}", answer_status)
                last = None
                continue
            if key not in KNOWN_KEYS and key not in names:
                names[key] = name
        value = value.strip(" \t")
        existing = values.get(key)
        values[key] = (value,) if existing is None else (*existing, value)
        last = key
    headers = Headers._from_parsed(values, names)

    # --- body (RFC 3261 §18.3) ---
    length_values = values.get("content-length")
    body = rest
    if length_values is not None:
        if len(length_values) != 1:
            error = error or ParseError("more than one Content-Length", answer_status)
        else:
            length_text = length_values[0]
            if not (length_text.isascii() and length_text.isdigit()):
                error = error or ParseError(
                    f"bad Content-Length {length_text[:40]!r}", answer_status
                )
            elif len(length_text) > 9 or int(length_text) > MAX_BODY:
                error = error or ParseError("body too large", None if is_response else 413)
            else:
                length = int(length_text)
                if length > len(rest):
                    error = error or ParseError(
                        "Content-Length larger than the body", answer_status
                    )
                else:
                    body = rest[:length]
    elif len(rest) > MAX_BODY:
        error = error or ParseError("body too large", None if is_response else 413)

    if is_response:
        return _response(first, headers, body, error)
    return _request(first, headers, body, error)


_COMPACT_GET = COMPACT_FORMS.get


def _response(first: str, headers: Headers, body: bytes, error: ParseError | None) -> Response:
    parts = first.split(" ", 2)
    if parts[0].upper() != SIP_VERSION:
        raise ParseError(f"unsupported version in status line {first[:60]!r}", None)
    code = parts[1] if len(parts) > 1 else ""
    if len(code) != 3 or not (code.isascii() and code.isdigit()) or not 100 <= int(code) <= 699:
        raise ParseError(f"bad status code {code[:20]!r}", None)
    if error is not None:
        raise ParseError(error.reason, None)
    response = Response(int(code), parts[2] if len(parts) == 3 else "", headers, body)
    values = headers._values
    try:
        for key in ("via", "from", "to", "call-id", "cseq"):
            if not values.get(key):
                raise ParseError(f"response without {canonical_name(key)}", None)
        headers.cache_typed("cseq", _parse_cseq(values["cseq"]), _dump_one)
        vias = _parse_vias_lenient(values["via"])
        if not vias:
            raise ParseError("response without a usable Via", None)
        headers.cache_typed("via", vias, _dump_list)
    except ParseError as exc:
        raise ParseError(exc.reason, None) from None
    return response


def _request(first: str, headers: Headers, body: bytes, error: ParseError | None) -> Request:
    parts = first.split(" ")
    uri: SipUri | None = None
    start_error: ParseError | None = None
    if len(parts) != 3 or not parts[1]:
        words = first.split()
        if len(words) >= 3 and words[-1].upper().startswith("SIP/") and is_token(words[0]):
            start_error = ParseError(f"malformed request line {first[:80]!r}", 400)
        else:
            raise ParseError(f"not a SIP message {first[:40]!r}", None)
        method = words[0]
    else:
        method, uri_text, version = parts
        upper_version = version.upper()
        if method not in _COMMON_METHODS and not is_token(method):
            if not upper_version.startswith("SIP/"):
                raise ParseError(f"not a SIP message {first[:40]!r}", None)
            start_error = ParseError(f"bad method {method[:40]!r}", 400)
        elif upper_version != SIP_VERSION:
            if not upper_version.startswith("SIP/"):
                raise ParseError(f"not a SIP message {first[:40]!r}", None)
            start_error = ParseError(f"unsupported SIP version {version[:20]!r}", 505)
        elif uri_text.startswith("<"):
            start_error = ParseError("Request-URI enclosed in <>", 400)
        else:
            try:
                uri = SipUri.parse(uri_text)
            except ParseError as exc:
                start_error = exc
            else:
                if uri.headers:
                    start_error = ParseError("headers in the Request-URI", 400)
    if start_error is None:
        start_error = error
    request = Request(method, uri or SipUri("sip", None, None, "invalid"), headers)
    if start_error is not None:
        raise ParseError(start_error.reason, start_error.status, _basis(request))
    request.body = body
    _validate_request(request)
    return request


# What every request needs (RFC 3261 §8.1.1), and the headers a request may have once at most.
_REQUIRED = ("via", "from", "to", "call-id", "cseq")
_SINGLE = ("from", "to", "call-id", "cseq", "max-forwards")


def _validate_request(request: Request) -> None:
    """RFC 3261 §8.1.1 / §8.2: the headers every request needs, once each and well formed."""
    headers = request.headers
    values = headers._values
    get = values.get
    try:
        for key in _REQUIRED:
            if not get(key):
                raise ParseError(f"missing {canonical_name(key)}")
        for key in _SINGLE:
            found = get(key)
            if found is not None and len(found) > 1:
                raise ParseError(f"more than one {canonical_name(key)}")
        cseq = CSeq.parse(values["cseq"][0])
        headers.cache_typed("cseq", cseq, _dump_one)
        if cseq.method != request.method:
            raise ParseError("CSeq method does not match the request method")
        # Every Via is parsed now (the check is the same match): the transport stamps the top
        # one and the transaction layer keys on it, so each request reads it at once anyway.
        vias: list[Via] = []
        for line in values["via"]:
            for item in split_outside(line, ",") if "," in line else (line,):
                try:
                    vias.append(Via.parse(item))
                except ParseError:
                    raise ParseError(f"bad Via {item[:80]!r}") from None
        headers.cache_typed("via", vias, _dump_list)
        # Syntax only: these objects are built when somebody reads them.
        if not NameAddress.is_valid(values["from"][0]):
            raise ParseError("bad From")
        if not NameAddress.is_valid(values["to"][0]):
            raise ParseError("bad To")
        call_id = values["call-id"][0]
        if len(call_id.split()) != 1:
            raise ParseError("bad Call-ID")
        contact = values.get("contact")
        if contact and not (len(contact) == 1 and contact[0] == "*"):
            for line in contact:
                for item in _split_list([line]) if "," in line else (line,):
                    if not NameAddress.is_valid(item):
                        raise ParseError(f"bad Contact {item[:80]!r}")
        max_forwards = get("max-forwards")
        if max_forwards is not None:
            number = _digits(max_forwards[0])
            if number is None or number > MAX_MAX_FORWARDS:
                raise ParseError("bad Max-Forwards")
        date = get("date")
        if date is not None and not date[0].endswith("GMT"):
            raise ParseError("Date not in GMT (RFC 3261 §20.17)")
    except ParseError as exc:
        headers._typed.clear()
        raise ParseError(exc.reason, exc.status, _basis(request)) from None


def _basis(request: Request) -> Request | None:
    """The request itself if an error response can be built from it, else None."""
    headers = request.headers
    values = headers._values
    for key in ("via", "from", "to", "call-id", "cseq"):
        if not values.get(key):
            return None
    try:
        cseq = CSeq.parse(values["cseq"][0])
    except ParseError:
        return None
    vias = _parse_vias_lenient(values["via"])
    top = _split_list(values["via"][:1])[0]
    try:
        if not vias or Via.parse(top, strict=False) != vias[0]:
            return None
    except ParseError:
        return None
    headers._typed.clear()
    headers.cache_typed("cseq", cseq, _dump_one)
    headers.cache_typed("via", vias, _dump_list)
    return request
