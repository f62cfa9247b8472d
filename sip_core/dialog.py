"""SIP dialogs (RFC 3261 §12): the state two user agents share, and the requests sent inside it.

A dialog knows its identifiers, the remote target and route set, both CSeq counters and where to
send; it knows nothing of calls. The B2BUA keeps one dialog per leg and is the only place that
knows both.

Where to send: a device's in-dialog requests go to the address its packets came from (the
registration's or the INVITE's source), not to whatever its Contact says, because phones behind
NAT advertise addresses nobody can reach. The Request-URI is still the remote target, and the route
set (Record-Route) is written as Route headers so any proxy in the path sees what it expects.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from sip_core.headers import Headers, NameAddress
from sip_core.message import Request, Response, new_branch
from sip_core.transport import Address, Source, TransportKind
from sip_core.uri import SipUri

__all__ = [
    "Dialog",
    "DialogError",
    "LocalEndpoint",
    "SentInvite",
    "build_request",
    "first_cseq",
]

#: Headers copied from an initial request or response only when they are present.
_MAX_FORWARDS = "70"


class DialogError(ValueError):
    """A message cannot start or continue a dialog (no tag, no usable Contact)."""


@dataclass(frozen=True, slots=True)
class LocalEndpoint:
    """How we appear on one transport towards one far end: Via sent-by and Contact."""

    host: str
    port: int
    kind: TransportKind = TransportKind.UDP

    @property
    def contact(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        # UDP is the default (RFC 3263 §4.1); TLS keeps the sip: scheme with transport=tls, as
        # providers expect (RFC 5630 §3.1.3 deprecates it, but sips: would demand TLS on every
        # hop to the far end, which nobody behind a provider can promise).
        suffix = "" if self.kind is TransportKind.UDP else f";transport={self.kind.value.lower()}"
        return f"<sip:callflip@{host}:{self.port}{suffix}>"

    def via(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"SIP/2.0/{self.kind.value} {host}:{self.port};branch={new_branch()};rport"


def first_cseq() -> int:
    """A starting CSeq: random and well below 2**31 so it can grow for a long call (§8.1.1.5)."""
    return 1 + random.getrandbits(20)  # randint's argument checks cost more than this


def build_request(
    method: str,
    uri: SipUri,
    *,
    endpoint: LocalEndpoint,
    from_value: str,
    to_value: str,
    call_id: str,
    cseq: int,
    routes: list[str] | tuple[str, ...] = (),
    body: bytes = b"",
    content_type: str | None = None,
    extra: tuple[tuple[str, str], ...] = (),
) -> Request:
    """A request with the mandatory headers (§8.1.1), a fresh Via branch and our Contact."""
    headers = Headers()
    headers.add("Via", endpoint.via())
    headers.add("Max-Forwards", _MAX_FORWARDS)
    for route in routes:
        headers.add("Route", route)
    headers.add("From", from_value)
    headers.add("To", to_value)
    headers.add("Call-ID", call_id)
    headers.add("CSeq", f"{cseq} {method}")
    if method in ("INVITE", "UPDATE", "SUBSCRIBE", "REFER"):
        headers.add("Contact", endpoint.contact)
    for name, value in extra:
        headers.add(name, value)
    if body and content_type:
        headers.add("Content-Type", content_type)
    return Request(method, uri.copy(), headers, body)


def _contact_uri(message: Request | Response) -> SipUri | None:
    contacts = message.contacts
    return contacts[0].uri.copy() if contacts else None


@dataclass(slots=True)
class Dialog:
    """One dialog, seen from our side.

    ``local_party``/``remote_party`` are the From/To values we write (tags included), exactly as
    they were first exchanged: §12.2.1.1 wants the URIs and tags as in the dialog's creation.
    """

    call_id: str
    local_tag: str
    remote_tag: str
    local_party: str
    remote_party: str
    remote_target: SipUri
    destination: Address
    endpoint: LocalEndpoint
    local_cseq: int
    remote_cseq: int | None = None
    route_set: list[str] = field(default_factory=list)
    connection_source: Source | None = None
    terminated: bool = False

    @property
    def kind(self) -> TransportKind:
        return self.endpoint.kind

    @property
    def key(self) -> tuple[str, str]:
        """(Call-ID, our tag): enough to find the dialog of an incoming in-dialog request."""
        return (self.call_id, self.local_tag)

    # -- creation ----------------------------------------------------------------------------

    @classmethod
    def as_uas(
        cls, invite: Request, source: Source, *, local_tag: str, endpoint: LocalEndpoint
    ) -> Dialog:
        """The dialog our 2xx (or tagged 1xx) to ``invite`` creates (§12.1.1)."""
        remote_tag = invite.from_.tag
        if not remote_tag:
            raise DialogError("the INVITE's From has no tag")
        target = _contact_uri(invite)
        if target is None:
            raise DialogError("the INVITE has no Contact")
        to_value = invite.headers.get("To") or ""
        return cls(
            call_id=invite.call_id,
            local_tag=local_tag,
            remote_tag=remote_tag,
            local_party=f"{to_value};tag={local_tag}",
            remote_party=invite.headers.get("From") or "",
            remote_target=target,
            destination=source.remote,
            endpoint=endpoint,
            local_cseq=first_cseq(),
            remote_cseq=invite.cseq.number,
            route_set=[str(route) for route in invite.record_routes],
            connection_source=source,
        )

    @classmethod
    def as_uac(
        cls, invite: Request, response: Response, *, destination: Address, endpoint: LocalEndpoint
    ) -> Dialog:
        """The dialog a tagged 1xx or 2xx to our ``invite`` creates (§12.1.2)."""
        local_tag = invite.from_.tag
        if not local_tag:
            raise DialogError("a dialog needs both tags")
        sent = SentInvite(
            call_id=invite.call_id,
            local_tag=local_tag,
            local_party=invite.headers.get("From") or "",
            cseq=invite.cseq.number,
            target=invite.uri,
            destination=destination,
            endpoint=endpoint,
        )
        return sent.dialog(response)

    # -- requests ----------------------------------------------------------------------------

    def create_request(
        self,
        method: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> Request:
        """The next in-dialog request (§12.2.1.1); each one takes the next local CSeq."""
        self.local_cseq += 1
        return build_request(
            method,
            self.remote_target,
            endpoint=self.endpoint,
            from_value=self.local_party,
            to_value=self.remote_party,
            call_id=self.call_id,
            cseq=self.local_cseq,
            routes=self.route_set,
            body=body,
            content_type=content_type,
            extra=extra,
        )

    def create_ack(
        self, invite_cseq: int, *, body: bytes = b"", content_type: str | None = None
    ) -> Request:
        """The ACK for a 2xx (§13.2.2.4): the INVITE's CSeq number, its own branch."""
        return build_request(
            "ACK",
            self.remote_target,
            endpoint=self.endpoint,
            from_value=self.local_party,
            to_value=self.remote_party,
            call_id=self.call_id,
            cseq=invite_cseq,
            routes=self.route_set,
            body=body,
            content_type=content_type,
        )

    # -- incoming ----------------------------------------------------------------------------

    def accept_remote_cseq(self, request: Request) -> bool:
        """Record the CSeq of an in-dialog request; false if it is out of order (§12.2.2: 500)."""
        number = request.cseq.number
        if request.method in ("ACK", "CANCEL"):
            return True
        if self.remote_cseq is not None and number <= self.remote_cseq:
            return False
        self.remote_cseq = number
        return True

    def refresh_target(self, message: Request | Response) -> None:
        """A target refresh (re-INVITE, UPDATE or their 2xx) may move the remote target."""
        target = _contact_uri(message)
        if target is not None:
            self.remote_target = target

    def matches(self, request: Request) -> bool:
        """Whether an incoming request belongs here (Call-ID, our tag in To, theirs in From)."""
        return (
            request.call_id == self.call_id
            and request.to.tag == self.local_tag
            and request.from_.tag == self.remote_tag
        )


@dataclass(frozen=True, slots=True)
class SentInvite:
    """An initial INVITE we sent: what the dialogs its answers create are made of (§12.1.2).

    Kept by the B2BUA instead of the request itself. A 2xx may arrive up to 64*T1 after our side
    of the call is over (a retransmission, another fork answering, an answer racing our CANCEL)
    and must still be ACKed (and BYEd), while the parsed request -- headers, Vias, the SDP body --
    would only keep the garbage collector busy for those 32 s. ``local_party`` is our From with
    its tag; ``target`` the Request-URI, the remote target when a 2xx has no Contact.
    """

    call_id: str
    local_tag: str
    local_party: str
    cseq: int
    target: SipUri
    destination: Address
    endpoint: LocalEndpoint

    def dialog(self, response: Response) -> Dialog:
        """The dialog a tagged 1xx or 2xx to this INVITE creates (§12.1.2)."""
        remote_tag = response.to.tag
        if not remote_tag or not self.local_tag:
            raise DialogError("a dialog needs both tags")
        return Dialog(
            call_id=self.call_id,
            local_tag=self.local_tag,
            remote_tag=remote_tag,
            local_party=self.local_party,
            remote_party=response.headers.get("To") or "",
            remote_target=_contact_uri(response) or self.target.copy(),
            destination=self.destination,
            endpoint=self.endpoint,
            local_cseq=self.cseq,
            route_set=[str(route) for route in reversed(response.record_routes)],
        )


def name_address(display: str | None, uri: str) -> str:
    """``"display" <uri>`` with the display name quoted and escaped (or just ``<uri>``)."""
    if not display:
        return f"<{uri}>"
    escaped = display.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}" <{uri}>'


def tag_of(value: str) -> str | None:
    """The tag parameter of a From/To value."""
    return NameAddress.parse(value).tag
