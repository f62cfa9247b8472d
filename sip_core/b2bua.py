"""The back-to-back user agent: every call is two (or, while ringing, more) independent dialogs.

Why a B2BUA rather than a proxy: a flip replaces one side of a call with another device while the
other side's dialog stays exactly as it was, and media must run through our relay so the switch is
invisible. So each leg has its own Call-ID, tags and CSeq, and this module is the only place that
knows which legs belong together; `sip_core.dialog` knows dialogs, `sip_core.calls` the model.

Call set-up: the caller's INVITE is authenticated (407, the registrar's digest rules), routed (a
device's username rings that device's contacts, a user's extension rings all of that user's
devices except the caller's), and forked. Provisional responses (and early media) go back to the
caller; the first 2xx wins and every other branch is CANCELled (the transaction layer ACKs their
487). A 2xx that arrives after we gave its branch up -- CANCEL racing 200, a second fork answering
-- is ACKed and BYEd at once. Failures map to one answer for the caller: unknown number 404,
nothing registered 480, every device busy 486, no answer in time 480; each with one log line.

In the call: re-INVITE and UPDATE are passed across (SDP rewritten to the relay both ways; a
bodiless UPDATE is a session refresh and is answered here), with
491 when offers would cross (glare); BYE from either side ends both; INFO DTMF goes through the
feature-code collector and passes on the rest. A dead leg is found by a missing ACK to our 2xx,
by RFC 4028 session timers when the caller offers them (we refresh when the offer or RFC 4028
§9 makes us the refresher, else expect its refreshes), and by a forwarded request that times out
or gets 408/481; in every case both sides are released, so no call is left half-open.

Flip: the target device rings with an SDP offer of its own: a spare relay socket pair for the side
it would take (`MediaSession.open_spare`) and the codecs the staying party already agreed to, plus
telephone-event. Its 200 carries the answer; our ACK has no body, and `switch_leg` adopts the spare.
A delayed offer (INVITE without SDP) would let the target pick codecs the staying party never
agreed to, and needs an answer in the ACK, which many phones handle badly. The other party's
dialog is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from dataclasses import replace as dc_replace
from functools import partial
from typing import Any

from sip_core.calls import (
    Call,
    CallHistory,
    CallOutcome,
    CallState,
    HandoffRecord,
    Leg,
    LegRole,
    LegState,
    Refresher,
    SessionTimer,
    Side,
)
from sip_core.clock import Clock, TimerHandle
from sip_core.config import PbxConfig
from sip_core.dialog import (
    Dialog,
    DialogError,
    LocalEndpoint,
    SentInvite,
    build_request,
    first_cseq,
)
from sip_core.digest import AuthFailure, AuthResult, DigestAuthenticator
from sip_core.digest_client import AuthOutcome
from sip_core.dtmf import (
    DtmfDigit,
    DtmfError,
    FeatureCode,
    FeatureCodeCollector,
    FeatureMatch,
    format_dtmf_relay,
    parse_dtmf_info,
)
from sip_core.events import (
    CallRecorded,
    CallStateChanged,
    DtmfMethod,
    DtmfReceived,
    HandoffFailed,
    HandoffStarted,
    HandoffSucceeded,
    PbxEvent,
)
from sip_core.features import (
    CallNotFlippable,
    FlipError,
    FlipInProgress,
    FlipPlan,
    NoSuchCall,
    plan_flip,
)
from sip_core.forwarding import ForwardingLoop, resolve_targets
from sip_core.media import MediaLeg, MediaRelay, RelayError
from sip_core.message import (
    Request,
    Response,
    make_response,
    new_call_id,
    new_tag,
    parse_message,
)
from sip_core.presence import Presence
from sip_core.registrar import Binding
from sip_core.sdp import (
    Direction,
    Origin,
    SdpError,
    SessionDescription,
    common_codecs,
    offer_for_new_device,
    parse_sdp,
    payload_type_map,
    rewrite_for_relay,
)
from sip_core.transaction import (
    InviteServerTransaction,
    ServerTransaction,
    TransactionLayer,
    TransactionState,
)
from sip_core.transport import Address, Source, TransportKind
from sip_core.trunk.egress import OutboundRefusal, OutboundTarget, TrunkEgress
from sip_core.trunk.ingress import InboundRefusal, TrunkIngress, is_trunk_device, trunk_device

__all__ = [
    "ALLOWED_METHODS",
    "MIN_SESSION_EXPIRES",
    "B2bua",
    "FlipHandle",
    "negotiate_session_timer",
]

_LOGGER = logging.getLogger(__name__)

SDP = "application/sdp"
DTMF_TYPES = frozenset({"application/dtmf-relay", "application/dtmf"})
#: RFC 4028 §4: the smallest session interval we accept (and the default minimum).
MIN_SESSION_EXPIRES = 90
#: Seconds before a session refresh that could not go out (an offer was under way, or 491) is
#: tried again.
REFRESH_RETRY = 2.0
_UNSPECIFIED = frozenset({"0.0.0.0", "::", ""})
_NO_ADDRESS = frozenset({"0.0.0.0", "::"})
_HOLD = frozenset({Direction.SENDONLY, Direction.INACTIVE})

Responder = Callable[[ServerTransaction, Response], None]

#: Methods this PBX implements: the Allow header of every response and of our INVITEs.
ALLOWED_METHODS: tuple[str, ...] = (
    "REGISTER",
    "OPTIONS",
    "INVITE",
    "ACK",
    "CANCEL",
    "BYE",
    "INFO",
    "UPDATE",
)
_ALLOW = (("Allow", ", ".join(ALLOWED_METHODS)),)


@dataclass(slots=True)
class FlipHandle:
    """A flip in progress; ``future`` resolves to its `HandoffRecord` whether it worked or not."""

    call: Call
    from_leg: Leg
    to_device: str
    started_at: float
    future: asyncio.Future[HandoffRecord]
    timeout: float
    legs: list[Leg] = field(default_factory=list)
    offer: SessionDescription | None = None  # what every target was offered (before the relay)
    spare: MediaLeg | None = None  # the relay sockets named in that offer
    winner: Leg | None = None
    timer: TimerHandle | None = None
    done: bool = False


@dataclass(frozen=True, slots=True)
class _EndedInvite:
    """What a leg that is over leaves its INVITE transaction (`B2bua._retire`): no call, no leg.

    ``tag`` is the remote tag of the dialog we confirmed ("" if none), ``ack`` our ACK of its 2xx
    as sent (b"" if none); ``call_id`` (ours) and ``device`` are for the log line.
    """

    sent: SentInvite
    tag: str
    ack: bytes
    call_id: str
    device: str | None


def _session_expires(request: Request | Response) -> tuple[int, str | None] | None:
    """(interval, refresher) from Session-Expires, or None when absent or unreadable."""
    value = request.headers.get("Session-Expires")
    if not value:
        return None
    head, *params = value.split(";")
    head = head.strip()
    if not head.isdigit():
        return None
    refresher = None
    for param in params:
        name, _, val = param.partition("=")
        if name.strip().lower() == "refresher":
            refresher = val.strip().lower()
    return int(head), refresher


def _supports(message: Request | Response, tag: str, header: str = "Supported") -> bool:
    for value in message.headers.get_all(header):
        if any(part.strip().lower() == tag for part in value.split(",")):
            return True
    return False


def negotiate_session_timer(
    request: Request, current: SessionTimer | None = None
) -> SessionTimer | None:
    """The session timer for a device's INVITE or UPDATE to us, as its UAS (RFC 4028 §9).

    A refresher the request names is kept. Without one, a device that supports timers refreshes
    itself (it asked for the timer, and so we never send re-INVITEs to a phone that only
    tolerates them); a device that does not support them cannot refresh, so we do. A request
    without Session-Expires leaves the timer as it was (``current``): our 2xx may still carry it.
    """
    expires = _session_expires(request)
    if expires is None:
        return current
    interval, named = expires
    supported = _supports(request, "timer") or _supports(request, "timer", "Require")
    if named in (Refresher.UAC, Refresher.UAS):
        refresher = Refresher(named)
    else:
        refresher = Refresher.UAC if supported else Refresher.UAS
    return SessionTimer(interval, refresher, supported)


def _media_target(sdp: SessionDescription) -> tuple[Address | None, Address | None]:
    """Where a description asks its audio to be sent: (RTP, RTCP); None for hold by 0.0.0.0."""
    audio = sdp.audio()
    if audio is None:
        return None, None
    connection = audio.effective_connection(sdp)
    if connection is None or connection.address in _NO_ADDRESS or audio.port == 0:
        return None, None
    rtp = Address(connection.address, audio.port)
    rtcp_info = audio.rtcp
    if rtcp_info is None:
        return rtp, None
    port, rtcp_connection = rtcp_info
    host = rtcp_connection.address if rtcp_connection is not None else connection.address
    return rtp, Address(host, port)


def _is_hold(sdp: SessionDescription) -> bool:
    audio = sdp.audio()
    if audio is None:
        return False
    connection = audio.effective_connection(sdp)
    if connection is not None and connection.address in _NO_ADDRESS:
        return True
    return audio.effective_direction(sdp) in _HOLD


class B2bua:
    """Calls: set-up, in-call requests, tear-down and flips. The PBX facade feeds it requests.

    ``config`` is read on every new call (so user changes apply to the next call); ``bindings``
    gives a device's current registrations; ``respond`` sends a response through a server
    transaction (the facade stamps Allow and Server); ``publish`` is the event bus, and
    ``listening`` says whether anyone subscribes to it: call events are not even built when
    nobody does (five per call; the standalone runner has no subscriber).
    """

    def __init__(
        self,
        transactions: TransactionLayer,
        clock: Clock,
        *,
        config: Callable[[], PbxConfig],
        authenticator: DigestAuthenticator,
        bindings: Callable[[str], Sequence[Binding]],
        relay: MediaRelay,
        publish: Callable[[PbxEvent], None],
        respond: Responder,
        local_port: Callable[[], int],
        history: CallHistory | None = None,
        listening: Callable[[], bool] | None = None,
        on_auth: Callable[[Source, Request, AuthResult], None] | None = None,
        presence: Presence | None = None,
        ingress: TrunkIngress | None = None,
        egress: TrunkEgress | None = None,
    ) -> None:
        self._txns = transactions
        #: DND, Make Busy, Call Forward Always and flip permission (`sip_core.presence`).
        self.presence = presence if presence is not None else Presence(config)
        self._on_auth = on_auth
        self._ingress = ingress
        self._egress = egress
        # Outgoing trunk INVITEs as sent, until their final response: a 401/407 is answered by
        # sending the same INVITE again with credentials (see `_trunk_response`).
        self._trunk_invites: dict[Leg, tuple[Request, OutboundTarget, int]] = {}
        self._clock = clock
        self._config = config
        self._auth = authenticator
        self._bindings = bindings
        self._relay = relay
        self._publish = publish
        self._listening = listening if listening is not None else _always
        self._respond = respond
        self._local_port = local_port
        self.history = history if history is not None else CallHistory()
        self._calls: dict[str, Call] = {}
        self._dialogs: dict[tuple[str, str], Leg] = {}
        self._invites: dict[ServerTransaction, Call] = {}
        self._collectors: dict[tuple[Leg, DtmfMethod], FeatureCodeCollector] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._hosts: dict[str, str] = {}

    # -- public API ------------------------------------------------------------------------------

    def calls(self) -> list[Call]:
        """Calls in progress (not yet ended), oldest first."""
        return list(self._calls.values())

    def get(self, call_id: str) -> Call | None:
        return self._calls.get(call_id)

    def hangup(self, call_id: str, reason: str = "hung up by the PBX") -> bool:
        """End a call from outside (Home Assistant); false if there is no such call."""
        call = self._calls.get(call_id)
        if call is None or not call.active:
            return False
        outcome = CallOutcome.ANSWERED if call.answered else CallOutcome.CANCELLED
        self._terminate(call, outcome, reason, status=480)
        return True

    def flip(
        self,
        call_id: str,
        target: str | None = None,
        timeout: float | None = None,
        *,
        device: str | None = None,
    ) -> asyncio.Future[HandoffRecord]:
        """Move one side of an answered call to another device of the same user.

        ``device`` picks the side to move when both are devices of users (default: the side whose
        user owns ``target``, else the only side that can flip, else the callee). Raises a
        `FlipError` subclass when the flip cannot start; the future resolves to the handoff record,
        ``succeeded`` or not.
        """
        call = self._calls.get(call_id)
        if call is None or not call.active:
            raise NoSuchCall(f"no call {call_id} in progress")
        if call.flip is not None:
            raise FlipInProgress(f"call {call_id} is already being flipped")
        if not call.answered or call.caller is None or call.callee is None:
            raise CallNotFlippable(f"call {call_id} is not answered yet")
        config = self._config()
        leg = self._side_to_flip(call, config, target, device)
        try:
            plan = self._plan_flip(config, leg, target)
        except FlipError as exc:
            self._flip_refused(call, leg, target, exc)
            raise
        return self._start_flip(call, leg, plan.to_device, timeout)

    def close(self) -> None:
        """End every call (BYE/CANCEL sent, best effort) and stop every timer: the PBX stops."""
        for call in list(self._calls.values()):
            self._terminate(call, CallOutcome.FAILED, "the PBX is stopping", status=503)
        for task in list(self._tasks):
            task.cancel()

    def open_counts(self) -> dict[str, int]:
        """What the B2BUA holds open (calls, dialogs, INVITEs, digit collectors, tasks), for leak
        checks: all zero once every call has ended."""
        return {
            "calls": len(self._calls),
            "dialogs": len(self._dialogs),
            "invites": len(self._invites),
            "collectors": len(self._collectors),
            "call_tasks": len(self._tasks),
        }

    # -- dispatch from the facade ----------------------------------------------------------------

    def handle_request(
        self, request: Request, txn: ServerTransaction | None, source: Source
    ) -> None:
        """INVITE, ACK, BYE, CANCEL, UPDATE, INFO (and in-dialog OPTIONS) from the facade."""
        method = request.method
        if txn is None:
            if method == "ACK":
                self._on_ack(request)
            return
        if method == "CANCEL":
            self._on_cancel(txn)
            return
        to_tag = request.to.tag
        if to_tag:
            self._in_dialog(request, txn, to_tag)
        elif method == "INVITE":
            self._on_invite(request, txn, source)
        else:
            self._reply(txn, request, 481, "no such dialog")

    def stray_response(self, response: Response, source: Source) -> None:
        """A 2xx to INVITE after its transaction ended: resend our ACK (or ACK and BYE it)."""
        if response.status // 100 != 2 or response.cseq.method != "INVITE":
            return
        leg = self._dialogs.get((response.call_id, response.from_.tag or ""))
        if leg is None:
            return
        ack = leg.ack_sent.get(response.cseq.number)
        if ack is not None and leg.dialog is not None:
            self._send_ack(ack, leg.dialog)

    # -- helpers: sending ------------------------------------------------------------------------

    def _reply(
        self,
        txn: ServerTransaction,
        request: Request,
        status: int,
        why: str = "",
        *,
        to_tag: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        response = make_response(request, status, to_tag=to_tag)
        for name, value in headers:
            response.headers.add(name, value)
        if why and status >= 300:
            response.headers.add("Warning", f'399 callflip "{why}"')
        self._respond(txn, response)

    def _ack_again(self, leg: Leg, response: Response) -> bool:
        """Whether ``response`` is a 2xx of the dialog ``leg`` already has: its retransmission
        means our ACK was lost, so the ACK (if sent yet) goes again and nothing else happens."""
        dialog = leg.dialog
        if dialog is None or dialog.remote_tag != response.to.tag:
            return False
        ack = leg.ack_sent.get(response.cseq.number)
        if ack is not None:
            self._send_ack(ack, dialog)
        return True

    def _send_ack(self, ack: Request, dialog: Dialog) -> None:
        self._send_ack_to(ack, dialog.destination, dialog.kind)

    def _send_ack_to(self, ack: Request, destination: Address, kind: TransportKind) -> None:
        """An ACK of a 2xx goes straight to the transport (it has no transaction, §17.1.1.3)."""
        try:
            self._txns.transport.send_request(ack, destination, kind)
        except Exception as exc:  # a lost ACK is recovered when the 2xx comes again
            _LOGGER.info("Cannot send ACK for %s: %s", ack.call_id, exc)

    def _send_in_dialog(
        self,
        leg: Leg,
        request: Request,
        on_response: Callable[[Response], None] | None = None,
        on_timeout: Callable[[], None] | None = None,
    ) -> None:
        dialog = leg.dialog
        assert dialog is not None
        txn = self._txns.send_request(
            request,
            dialog.destination,
            dialog.kind,
            on_response=on_response or _ignore,
            on_timeout=on_timeout or _nothing,
        )
        txn.release_messages()  # the handlers keep what they need

    def _send_bye(self, leg: Leg) -> None:
        dialog = leg.dialog
        self._stop_leg_timers(leg)
        if dialog is None or dialog.terminated:
            leg.state = LegState.TERMINATED
            return
        dialog.terminated = True
        leg.state = LegState.TERMINATED
        bye = dialog.create_request("BYE")
        self._send_in_dialog(leg, bye)

    def _endpoint(self, source: Source) -> LocalEndpoint:
        nat = self._ingress.endpoint_for(source, self._local_port()) if self._ingress else None
        if nat is not None:  # a trunk's public_address (sip_core.trunk.nat)
            return nat
        host = source.local.host
        if host in _UNSPECIFIED:
            host = self._route_host(source.remote.host)
        return LocalEndpoint(host, self._local_port(), source.kind)

    def _route_host(self, remote: str) -> str:
        """Our address on the route to ``remote`` (a connected UDP socket sends nothing)."""
        cached = self._hosts.get(remote)
        if cached is not None:
            return cached
        family = socket.AF_INET6 if ":" in remote else socket.AF_INET
        host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
        with contextlib.suppress(OSError), socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((remote, 9))
            host = str(probe.getsockname()[0])
        self._hosts[remote] = host
        return host

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _LOGGER.error("Call task failed", exc_info=task.exception())

    # -- helpers: SDP ----------------------------------------------------------------------------

    def _sdp_for(self, leg: Leg, description: SessionDescription, port: int | None = None) -> bytes:
        """``description`` (from the other side) as ``leg``'s device must see it: via the relay.

        ``port`` is the relay port for the device (default: its side's current one)."""
        call = leg.call
        if port is None:
            assert call.media is not None
            port = call.media.leg(leg.side).local_rtp.port
        dialog = leg.dialog
        host = dialog.endpoint.host if dialog is not None else self._relay.host
        if leg.origin is None:
            leg.origin = Origin("callflip", str(first_cseq()), 1, "IN", _ip_type(host), host)
        else:
            leg.origin.session_version += 1
        audio = description.audio()
        ports = [port if media is audio else None for media in description.media]
        body = rewrite_for_relay(description, host, ports, origin=leg.origin).to_bytes()
        leg.local_sdp = body
        return body

    def _learn_sdp(self, leg: Leg, sdp: SessionDescription) -> None:
        """A device described its media: the relay sends its audio there, with its codecs."""
        leg.remote_sdp = sdp
        media = leg.call.media
        if media is None or media.closed:
            return
        relay_leg = media.leg(leg.side)
        rtp, rtcp = _media_target(sdp)
        relay_leg.set_remote(rtp, rtcp)
        relay_leg.on_hold = _is_hold(sdp)
        audio = sdp.audio()
        if audio is not None:
            relay_leg.set_codecs(audio.codecs())

    @staticmethod
    def _parse_body(message: Request | Response) -> SessionDescription | None:
        """The SDP of a message; None without a body. Raises SdpError for a bad one."""
        if not message.body:
            return None
        content_type = message.content_type
        if content_type is not None and content_type != SDP:
            raise SdpError(f"body is {content_type}, not SDP")
        return parse_sdp(message.body)

    # -- set-up ----------------------------------------------------------------------------------

    def _on_invite(self, request: Request, txn: ServerTransaction, source: Source) -> None:
        config = self._config()
        # A trunk's INVITE is recognised by its source and routed by its DID, not challenged.
        inbound = self._ingress.route(request, source) if self._ingress is not None else None
        if isinstance(inbound, InboundRefusal):
            _LOGGER.info("Call from trunk %s rejected: %s", inbound.trunk, inbound.reason)
            self._reply(txn, request, inbound.status, inbound.reason)
            return
        if inbound is None:
            auth = self._auth.verify(request, "Proxy-Authorization", local_port=source.local.port)
            if self._on_auth is not None:
                self._on_auth(source, request, auth)
            if not auth.ok:
                self._challenge(
                    request,
                    txn=txn,
                    source=source,
                    reason=auth.reason,
                    stale=auth.stale,
                    username=auth.username,
                )
                return
            caller_device = auth.username or ""
            dialled = request.uri.user_unescaped or ""
        else:
            caller_device, dialled = trunk_device(inbound.trunk), inbound.did
        caller_user = config.user_for_device(caller_device)
        if request.max_forwards == 0:
            self._reply(txn, request, 483, "too many hops")
            return
        if inbound is not None:
            callee_user = next((u for u in config.users if u.name == inbound.callee_user), None)
            devices = list(inbound.devices)
        else:
            callee_user = config.user_for_device(dialled)
            devices = [dialled]
            if callee_user is None:
                callee_user = config.user_by_extension(dialled)
                devices = [
                    d.username
                    for d in (callee_user.devices if callee_user else ())
                    if d.username != caller_device
                ]
        outbound: OutboundTarget | None = None
        if callee_user is None and inbound is None and self._egress is not None:
            plan = self._egress.plan(
                dialled,
                caller_user.name if caller_user else None,
                internal=dialled == config.flip.code,
            )
            if isinstance(plan, OutboundRefusal):
                _LOGGER.info("Call from %s to %s refused: %s", caller_device, dialled, plan.reason)
                self._reply(txn, request, plan.status, plan.reason)
                return
            outbound = plan
        if callee_user is None and outbound is None:
            _LOGGER.info(
                "Call from %s to %s rejected with 404: unknown number", caller_device, dialled
            )
            self._reply(txn, request, 404, "unknown number")
            return
        try:
            # Call Forward Always: each forward followed, loops cut (sip_core.presence).
            devices = resolve_targets(devices, self.presence.forwards)
        except ForwardingLoop as loop:
            _LOGGER.info("Call from %s to %s rejected with 482: %s", caller_device, dialled, loop)
            self._reply(txn, request, 482, str(loop))
            return
        session_expires = _session_expires(request)
        if session_expires is not None and session_expires[0] < MIN_SESSION_EXPIRES:
            self._reply(
                txn,
                request,
                422,
                "session interval too small",
                headers=(("Min-SE", str(MIN_SESSION_EXPIRES)),),
            )
            return
        try:
            offer = self._parse_body(request)
        except SdpError as exc:
            _LOGGER.info("Call from %s to %s rejected with 488: %s", caller_device, dialled, exc)
            self._reply(txn, request, 488, "unreadable SDP")
            return
        if offer is None or offer.audio() is None:
            _LOGGER.info(
                "Call from %s to %s rejected with 488: the INVITE offers no audio (a delayed "
                "offer is not supported for incoming calls)",
                caller_device,
                dialled,
            )
            self._reply(txn, request, 488, "an SDP offer with audio is required")
            return
        busy = 0
        targets: list[Binding] = []
        for device in devices:
            if device == caller_device:
                continue  # forwarded back to the caller: not rung
            states = self.presence.states(device)
            # Do Not Disturb and Make Busy both answer busy when nothing else rings.
            if states.dnd or states.make_busy or self._busy(device):
                busy += 1
                continue
            targets.extend(self._bindings(device))
        if not targets and outbound is None:
            if busy:
                status, why = 486, "busy"
            else:
                status, why = 480, "no device registered"
            _LOGGER.info(
                "Call from %s to %s rejected with %d: %s", caller_device, dialled, status, why
            )
            self._reply(txn, request, status, why)
            return
        call = Call(
            new_call_id(),
            caller_user=caller_user.name if caller_user else None,
            dialled=dialled,
            callee_user=callee_user.name if callee_user else None,
            started_at=self._clock.wall(),
        )
        call.hops = request.max_forwards
        domain = config.sip.domain
        if inbound is not None:
            caller_party = _name_addr(inbound.caller_name, f"sip:{inbound.caller_number}@{domain}")
        elif caller_user is not None:
            caller_party = _name_addr(caller_user.name, f"sip:{caller_user.extension}@{domain}")
        else:
            caller_party = f"<sip:{caller_device}@{domain}>"
        caller = Leg(call, LegRole.CALLER, "a", caller_device, caller_party)
        try:
            caller.dialog = Dialog.as_uas(
                request, source, local_tag=new_tag(), endpoint=self._endpoint(source)
            )
        except DialogError as exc:
            self._reply(txn, request, 400, str(exc))
            return
        if isinstance(txn, InviteServerTransaction):
            caller.server_txn = txn
        caller.remote_sdp = offer
        caller.invite_cseq = request.cseq.number
        caller.session = negotiate_session_timer(request)
        caller.peer_allows_update = _supports(request, "update", "Allow")
        call.caller = caller
        self._calls[call.id] = call
        self._invites[txn] = call
        self._dialogs[caller.dialog.key] = caller
        # By the call's id, not the call: the transaction outlives the call by up to 64*T1.
        txn.on_timeout = partial(self._caller_unreachable, call.id)
        self._reply(txn, request, 100)
        self._publish_state(call, None)
        # At once, not as a task: a task would wait for the loop's current batch of datagrams
        # (up to 64 of them), which was most of a call's set-up time under load.
        if callee_user is None:
            self._ring(call, [], f"<sip:{dialled}@{domain}>", outbound=(outbound, source.local))
            return
        self._ring(call, targets, _name_addr(callee_user.name, f"sip:{dialled}@{domain}"))

    def _challenge(
        self,
        request: Request,
        *,
        txn: ServerTransaction,
        source: Source,
        reason: AuthFailure,
        stale: bool,
        username: str | None,
    ) -> None:
        from_user = request.from_.uri.user_unescaped
        if reason is AuthFailure.URI_MISMATCH:
            self._reply(txn, request, 400, reason.value)
            return
        if reason is not AuthFailure.NO_CREDENTIALS:
            _LOGGER.log(
                logging.INFO if stale else logging.WARNING,
                "INVITE from %s (%s) refused with 407: %s",
                username or from_user,
                source.remote,
                reason.value,
            )
        response = make_response(request, 407)
        for value in self._auth.challenge(self._auth.algorithms_for(from_user), stale):
            response.headers.add("Proxy-Authenticate", value)
        self._respond(txn, response)

    def _busy(self, device: str) -> bool:
        for call in self._calls.values():
            if not call.active:
                continue
            if call.caller is not None and call.caller.device == device:
                return True
            if call.callee is not None and call.callee.device == device:
                return True
        return False

    def _is_registered(self, device: str) -> bool:
        return bool(self._bindings(device))

    def _ring(
        self,
        call: Call,
        targets: list[Binding],
        callee_party: str,
        *,
        outbound: tuple[OutboundTarget | None, Address] | None = None,
    ) -> None:
        try:
            media = self._relay.open_session(call.id)
        except (RelayError, OSError) as exc:
            _LOGGER.error("Call %s: no media relay ports: %s", call.id, exc)
            self._terminate(call, CallOutcome.FAILED, f"media relay: {exc}", status=503)
            return
        if not call.active:
            media.close()
            return
        call.media = media
        media.on_dtmf = lambda side, digit: self._on_rtp_dtmf(call, side, digit)
        # The media engine died: the call has no audio any more, so it ends (BYE to each side).
        media.on_lost = lambda why: self._terminate(call, CallOutcome.FAILED, why, status=503)
        # A phone stopped sending (gone without a BYE): the call ends the same way.
        media.on_timeout = lambda side, seconds: self._terminate(
            call, CallOutcome.FAILED, f"no media for {seconds:g} s", status=408
        )
        # Every device may dial the flip code: its telephone-events stop at the relay, and the
        # digits that are not a code are sent on again by `_pass_digit`.
        media.a.swallow_dtmf = media.b.swallow_dtmf = True
        caller = call.caller
        assert caller is not None
        assert caller.remote_sdp is not None
        self._learn_sdp(caller, caller.remote_sdp)
        for binding in targets:
            if not call.active or call.callee is not None:
                break
            leg = Leg(call, LegRole.CALLEE, "b", binding.username, callee_party)
            call.branches.append(leg)
            self._send_branch_invite(
                leg,
                binding,
                presented=caller.party,
                offer=caller.remote_sdp,
                port=None,
                on_response=partial(self._branch_response, leg),
                on_timeout=partial(self._branch_failed, leg, 408),
            )
        target, local = outbound if outbound is not None else (None, None)
        if target is not None and local is not None and call.active:
            leg = Leg(call, LegRole.CALLEE, "b", trunk_device(target.trunk), callee_party)
            call.branches.append(leg)
            self._send_trunk_invite(leg, target, local, offer=caller.remote_sdp)
        if call.active and call.callee is None:
            timeout = self._config().calls.no_answer_timeout
            call.no_answer_timer = self._clock.call_later(timeout, lambda: self._no_answer(call))

    def _send_branch_invite(
        self,
        leg: Leg,
        binding: Binding,
        *,
        presented: str,
        offer: SessionDescription,
        port: int | None,
        on_response: Callable[[Response], None],
        on_timeout: Callable[[], None],
    ) -> None:
        """Ring one registration of a device for ``leg``: a new dialog's INVITE with our offer.

        Serves both the call's forks and a flip's targets. ``presented`` is the party the device
        sees calling (From, without tag); ``port`` the relay port named in the offer (None: the
        current one of the leg's side). Until the answer, a provisional dialog carries the
        endpoint (for the SDP's address) and the identifiers; the answer replaces it.
        """
        route = binding.route  # the Contact, or the REGISTER's source behind NAT
        endpoint = self._endpoint(route)
        local_tag = new_tag()
        call_id = new_call_id()
        cseq = first_cseq()
        leg.invite_cseq = cseq
        to_value = f"<sip:{binding.username}@{self._config().sip.domain}>"
        from_value = f"{presented};tag={local_tag}"
        leg.dialog = Dialog(
            call_id=call_id,
            local_tag=local_tag,
            remote_tag="",
            local_party=from_value,
            remote_party=to_value,
            remote_target=binding.contact_uri,
            destination=route.remote,
            endpoint=endpoint,
            local_cseq=cseq,
        )
        invite = build_request(
            "INVITE",
            binding.contact_uri,
            endpoint=endpoint,
            from_value=from_value,
            to_value=to_value,
            call_id=call_id,
            cseq=cseq,
            body=self._sdp_for(leg, offer, port),
            content_type=SDP,
            extra=_ALLOW,
        )
        _limit_hops(invite, leg.call.hops)
        leg.sent_invite = SentInvite(
            call_id=call_id,
            local_tag=local_tag,
            local_party=from_value,
            cseq=cseq,
            target=binding.contact_uri,
            destination=route.remote,
            endpoint=endpoint,
        )
        self._dialogs[(call_id, local_tag)] = leg
        leg.client_txn = self._txns.send_request(
            invite,
            route.remote,
            route.kind,
            on_response=on_response,
            on_timeout=on_timeout,
        )
        # Answers make their dialogs from `leg.sent_invite`; the transaction needs not keep them.
        leg.client_txn.release_messages()

    # -- out through a trunk --------------------------------------------------------------------

    def _send_trunk_invite(
        self, leg: Leg, target: OutboundTarget, local: Address, *, offer: SessionDescription
    ) -> None:
        """Ring the provider for ``leg``: the number at the trunk's domain, from its caller ID."""
        endpoint = self._endpoint(Source(target.kind, target.destination, local, None))
        local_tag = new_tag()
        call_id = new_call_id()
        cseq = first_cseq()
        leg.invite_cseq = cseq
        from_value = f"{target.from_value};tag={local_tag}"
        leg.dialog = Dialog(
            call_id=call_id,
            local_tag=local_tag,
            remote_tag="",
            local_party=from_value,
            remote_party=target.to_value,
            remote_target=target.uri,
            destination=target.destination,
            endpoint=endpoint,
            local_cseq=cseq,
        )
        invite = build_request(
            "INVITE",
            target.uri,
            endpoint=endpoint,
            from_value=from_value,
            to_value=target.to_value,
            call_id=call_id,
            cseq=cseq,
            routes=target.routes,
            body=self._sdp_for(leg, offer, None),
            content_type=SDP,
            extra=_ALLOW,
        )
        target.digest.authorize(invite)
        leg.sent_invite = SentInvite(
            call_id=call_id,
            local_tag=local_tag,
            local_party=from_value,
            cseq=cseq,
            target=target.uri,
            destination=target.destination,
            endpoint=endpoint,
        )
        self._dialogs[(call_id, local_tag)] = leg
        self._send_trunk_request(leg, invite, target, 0)

    def _send_trunk_request(
        self, leg: Leg, invite: Request, target: OutboundTarget, challenges: int
    ) -> None:
        self._trunk_invites[leg] = (invite, target, challenges)
        leg.client_txn = self._txns.send_request(
            invite,
            target.destination,
            target.kind,
            on_response=partial(self._trunk_response, leg),
            on_timeout=partial(self._trunk_timeout, leg),
        )

    def _trunk_timeout(self, leg: Leg) -> None:
        self._trunk_invites.pop(leg, None)
        self._branch_failed(leg, 408)

    def _trunk_response(self, leg: Leg, response: Response) -> None:
        """A provider's answer: a 401/407 is answered (twice at most), the rest as any branch's."""
        status = response.status
        sent = self._trunk_invites.pop(leg, None) if status >= 200 else None
        call = leg.call
        if status in (401, 407) and sent is not None:
            invite, target, challenges = sent
            live = leg.state is not LegState.TERMINATED and call.active and call.callee is None
            if not live:
                return
            outcome = target.digest.handle(invite, response)
            if outcome is AuthOutcome.RETRY and challenges < 2:
                again = invite.copy()
                cseq = invite.cseq.number + 1
                again.headers.set("CSeq", f"{cseq} INVITE")
                if leg.dialog is not None:
                    again.headers.set("Via", leg.dialog.endpoint.via())
                    leg.dialog.local_cseq = cseq
                target.digest.authorize(again)
                leg.invite_cseq = cseq
                if leg.sent_invite is not None:
                    leg.sent_invite = dc_replace(leg.sent_invite, cseq=cseq)
                self._send_trunk_request(leg, again, target, challenges + 1)
                return
            _LOGGER.warning(
                "Call %s: trunk %s refused our credentials (%s)", call.id, target.trunk, outcome
            )
            self._branch_failed(leg, 503)
            return
        self._branch_response(leg, response)

    def _branch_response(self, leg: Leg, response: Response) -> None:
        call = leg.call
        status = response.status
        if status == 100:
            return
        if status < 200:
            if leg.state is LegState.TERMINATED or not call.active or call.callee is not None:
                return
            leg.state = LegState.EARLY
            self._early(call, leg, response)
            return
        if status < 300:
            if leg is call.callee and self._ack_again(leg, response):
                return
            if leg.state is LegState.TERMINATED or not call.active or call.callee is not None:
                self._reject_late_answer(leg, response)
                return
            self._answered(call, leg, response)
            return
        self._branch_failed(leg, status)

    def _early(self, call: Call, leg: Leg, response: Response) -> None:
        caller = call.caller
        assert caller is not None
        assert caller.server_txn is not None
        assert caller.dialog is not None
        try:
            sdp = self._parse_body(response)
        except SdpError as exc:
            _LOGGER.info("Call %s: ignoring bad early SDP from %s: %s", call.id, leg.device, exc)
            sdp = None
        body = b""
        if sdp is not None:
            self._learn_sdp(leg, sdp)
            body = self._sdp_for(caller, sdp)
        relayed = make_response(
            caller.server_txn.request,
            response.status,
            response.reason,
            to_tag=caller.dialog.local_tag,
            body=body,
        )
        relayed.headers.add("Contact", caller.dialog.endpoint.contact)
        if body:
            relayed.headers.add("Content-Type", SDP)
        self._respond(caller.server_txn, relayed)
        if call.state is CallState.SETUP:
            self._set_state(call, CallState.RINGING)

    def _reject_late_answer(self, leg: Leg, response: Response) -> None:
        """A 2xx we no longer want (CANCEL raced it, or another device answered): ACK, then BYE."""
        if leg.sent_invite is not None:
            self._ack_and_bye(leg.sent_invite, response, leg.call.id, leg.device)

    def _ack_and_bye(
        self, sent: SentInvite, response: Response, call_id: str, device: str | None
    ) -> None:
        """End the dialog a 2xx to ``sent`` created: ACK it (§13.2.2.4), then BYE it."""
        try:
            dialog = sent.dialog(response)
        except DialogError:
            return
        _LOGGER.info("Call %s: %s answered after we gave up on it; ACK and BYE", call_id, device)
        self._send_ack(dialog.create_ack(sent.cseq), dialog)
        dialog.terminated = True
        self._txns.send_request(
            dialog.create_request("BYE"),
            dialog.destination,
            dialog.kind,
            on_response=_ignore,
            on_timeout=_nothing,
        ).release_messages()

    def _retire(self, leg: Leg) -> None:
        """``leg`` is over: its INVITE's transaction stops pointing at the leg (and the call).

        That transaction lives on for up to 64*T1 (Timer M, D or B) and with it whatever its
        callbacks hold. A callback naming the leg would keep the whole call alive -- legs,
        dialogs, descriptions, relay legs -- for every call ended in the last 32 s, which at a few
        hundred calls a second is what the garbage collector would spend its time walking. What
        the transaction may still bring is answered from an `_EndedInvite` of strings and the
        `SentInvite`: a 2xx of the dialog we had confirmed (and have BYEd) gets its ACK again; any
        other 2xx -- a fork answering late, an answer racing our CANCEL -- is ACKed and BYEd.
        Other responses need nothing from us (the transaction ACKs a 3xx-6xx itself).
        """
        txn = leg.client_txn
        sent = leg.sent_invite
        if txn is None or sent is None or txn.state is TransactionState.TERMINATED:
            return
        dialog = leg.dialog
        tag = dialog.remote_tag if dialog is not None else ""
        ack = leg.ack_sent.get(sent.cseq) if tag else None
        ended = _EndedInvite(
            sent, tag, ack.to_bytes() if ack is not None else b"", leg.call.id, leg.device
        )
        txn.on_response = partial(self._ended_response, ended)
        txn.on_timeout = _nothing

    def _ended_response(self, ended: _EndedInvite, response: Response) -> None:
        """A response to the INVITE of a leg that is over (see `_retire`)."""
        if response.status // 100 != 2:
            return
        sent = ended.sent
        if not ended.tag or response.to.tag != ended.tag:
            self._ack_and_bye(sent, response, ended.call_id, ended.device)
            return
        # The dialog we confirmed, and have since ended: its 2xx came again, so did our ACK
        # get lost. The same ACK again (or a new one, if the call ended before we sent any).
        ack = parse_message(ended.ack) if ended.ack else None
        if not isinstance(ack, Request):
            try:
                ack = sent.dialog(response).create_ack(sent.cseq)
            except DialogError:
                return
        self._send_ack_to(ack, sent.destination, sent.endpoint.kind)

    def _answered(self, call: Call, leg: Leg, response: Response) -> None:
        caller = call.caller
        assert caller is not None
        assert caller.server_txn is not None
        assert caller.dialog is not None
        assert leg.sent_invite is not None
        if call.no_answer_timer is not None:
            call.no_answer_timer.cancel()
            call.no_answer_timer = None
        dialog = leg.sent_invite.dialog(response)
        leg.dialog = dialog
        leg.state = LegState.CONFIRMED
        ack = dialog.create_ack(leg.invite_cseq)
        leg.ack_sent[leg.invite_cseq] = ack
        self._send_ack(ack, dialog)
        for other in call.branches:
            if other is not leg:
                self._cancel_branch(other)
                self._forget(other)
                self._retire(other)
        call.branches = [leg]
        try:
            answer = self._parse_body(response)
        except SdpError:
            answer = None
        if answer is None or answer.audio() is None:
            _LOGGER.info("Call %s: %s answered without usable SDP", call.id, leg.device)
            call.callee = leg
            self._terminate(call, CallOutcome.FAILED, f"{leg.device} answered without SDP", 488)
            return
        self._learn_sdp(leg, answer)
        call.callee = leg
        call.answered_at = self._clock.wall()
        call.answered_device = leg.device
        invite = caller.server_txn.request
        ok = make_response(
            invite, 200, to_tag=caller.dialog.local_tag, body=self._sdp_for(caller, answer)
        )
        ok.headers.add("Contact", caller.dialog.endpoint.contact)
        ok.headers.add("Content-Type", SDP)
        self._session_headers(caller, ok)
        caller.state = LegState.CONFIRMED
        caller.ack_pending = True
        caller.server_txn.on_ack_timeout = partial(self._ack_timeout, caller.dialog.key)
        self._invites.pop(caller.server_txn, None)
        self._respond(caller.server_txn, ok)
        self._arm_session_timer(caller)
        self._set_state(call, CallState.TALKING)
        _LOGGER.info(
            "Call %s from %s to %s answered by %s", call.id, caller.device, call.dialled, leg.device
        )

    def _cancel_branch(self, leg: Leg) -> None:
        if leg.state is not LegState.TRYING and leg.state is not LegState.EARLY:
            return
        leg.state = LegState.TERMINATED
        txn = leg.client_txn
        if txn is not None:
            txn.cancel()

    def _branch_failed(self, leg: Leg, status: int) -> None:
        call = leg.call
        if leg.role is LegRole.FLIP_TARGET:
            self._flip_leg_failed(leg, status)
            return
        was_live = leg.state is not LegState.TERMINATED
        leg.state = LegState.TERMINATED
        if leg.failed_status is None:
            leg.failed_status = status
        if not was_live or call.callee is not None or not call.active:
            return
        if any(b.state is not LegState.TERMINATED for b in call.branches):
            return
        statuses = [b.failed_status or 480 for b in call.branches]
        if any(s in (486, 600) for s in statuses):
            answer, outcome, why = 486, CallOutcome.BUSY, "busy"
        elif any(s == 603 for s in statuses):
            answer, outcome, why = 603, CallOutcome.DECLINED, "declined"
        elif all(s in (408, 480) for s in statuses):
            answer, outcome, why = 480, CallOutcome.UNAVAILABLE, "device unreachable"
        else:
            answer = statuses[0]
            outcome, why = CallOutcome.FAILED, f"devices answered {', '.join(map(str, statuses))}"
        self._terminate(call, outcome, why, status=answer)

    def _no_answer(self, call: Call) -> None:
        call.no_answer_timer = None
        if call.active and call.callee is None:
            timeout = self._config().calls.no_answer_timeout
            self._terminate(call, CallOutcome.NO_ANSWER, f"no answer within {timeout} s", 480)

    def _on_cancel(self, cancel_txn: ServerTransaction) -> None:
        invite = cancel_txn.cancelled_transaction
        call = self._invites.get(invite) if invite is not None else None
        if call is None or not call.active or call.callee is not None:
            return
        self._terminate(call, CallOutcome.CANCELLED, "caller hung up before an answer", status=487)

    # -- tear-down -------------------------------------------------------------------------------

    def _terminate(
        self,
        call: Call,
        outcome: CallOutcome,
        reason: str,
        status: int = 480,
        *,
        skip: Leg | None = None,
    ) -> None:
        """End ``call`` from any state: answer, CANCEL or BYE whatever is open, then record."""
        if not call.active:
            return
        if call.flip is not None:
            self._finish_flip(call.flip, None, "the call ended")
        caller = call.caller
        if call.callee is None or not call.answered:
            if caller is not None and caller.server_txn is not None:
                txn = caller.server_txn
                self._invites.pop(txn, None)
                if caller.state is not LegState.CONFIRMED and _open(txn):
                    to_tag = caller.dialog.local_tag if caller.dialog else None
                    self._reply(txn, txn.request, status, reason, to_tag=to_tag)
                    caller.state = LegState.TERMINATED
            for leg in call.branches:
                self._cancel_branch(leg)
        self._set_state(call, CallState.ENDING)
        for leg in call.legs():
            if leg is not skip and leg.state is LegState.CONFIRMED:
                self._send_bye(leg)
        self._end(call, outcome, reason)

    def _end(self, call: Call, outcome: CallOutcome, reason: str) -> None:
        if call.no_answer_timer is not None:
            call.no_answer_timer.cancel()
            call.no_answer_timer = None
        for leg in call.legs():
            self._stop_leg_timers(leg)
            leg.state = LegState.TERMINATED
            for method in DtmfMethod:
                collector = self._collectors.pop((leg, method), None)
                if collector is not None:
                    collector.close()
        for leg in (*call.legs(), *call.branches):
            self._forget(leg)
            self._retire(leg)
        if call.media is not None:
            call.media.close()
        call.ended_at = self._clock.wall()
        call.outcome = outcome
        call.reason = reason
        self._calls.pop(call.id, None)
        self._set_state(call, CallState.ENDED, reason)
        record = call.record()
        self.history.add(record)
        self._let_go(call)
        if self._listening():
            self._publish(CallRecorded(record))
        _LOGGER.info(
            "Call %s from %s to %s ended: %s (%s)",
            call.id,
            call.caller_device,
            call.dialled,
            outcome.value,
            reason,
        )

    @staticmethod
    def _let_go(call: Call) -> None:
        """The call is over and recorded: drop what only a live call needs.

        A call and its legs refer to each other, so what they hold is freed only when the garbage
        collector finds the cycle; what is dropped here -- descriptions, our ACKs, transactions,
        the relay's callback into the call -- is freed at once instead, and the collector has
        some 30 objects per call left to find rather than 80. The dialogs stay (they are small,
        and say how the call ended).
        """
        media = call.media
        if media is not None:
            media.on_dtmf = None
            media.on_lost = None
            media.on_timeout = None
        for leg in (*call.legs(), *call.branches):
            leg.remote_sdp = None
            leg.origin = None
            leg.ack_sent = {}
            leg.client_txn = None
            server = leg.server_txn
            if server is not None:
                # Its reports would find no call now (they look it up by id): not worth keeping.
                server.on_timeout = None
                server.on_ack_timeout = None
                leg.server_txn = None
            leg.offer_txn = None

    def _forget(self, leg: Leg) -> None:
        """Drop the leg from the dialog index (its key is the same before and after the answer)."""
        dialog = leg.dialog
        if dialog is not None and self._dialogs.get(dialog.key) is leg:
            del self._dialogs[dialog.key]

    def _stop_leg_timers(self, leg: Leg) -> None:
        txn = leg.offer_txn
        if txn is not None:
            leg.offer_txn = None
            if _open(txn):
                # A re-INVITE or UPDATE still waiting when the call ends (BYE during re-INVITE).
                self._reply(txn, txn.request, 487, "the call ended")
        if leg.session_timer is not None:
            leg.session_timer.cancel()
            leg.session_timer = None

    def _ack_timeout(self, key: tuple[str, str], _response: Response) -> None:
        """No ACK to a 2xx we sent on the dialog ``key``: by key, as the transaction that reports
        it may outlive the call (and must not keep it alive); a forgotten dialog needs nothing."""
        leg = self._dialogs.get(key)
        if leg is not None:
            self._ack_missing(leg)

    def _caller_unreachable(self, call_id: str) -> None:
        """The caller's INVITE transaction failed (Timer H, or a response could not be sent)."""
        call = self._calls.get(call_id)
        if call is not None:
            self._terminate(call, CallOutcome.FAILED, "caller unreachable")

    def _ack_missing(self, leg: Leg) -> None:
        call = leg.call
        if call.active and leg.ack_pending:
            self._terminate(call, CallOutcome.ANSWERED, f"no ACK from {leg.device}", skip=None)

    # -- state and events ------------------------------------------------------------------------

    def _set_state(self, call: Call, state: CallState, reason: str = "") -> None:
        previous = call.transition(state)
        if previous is not state:
            self._publish_state(call, previous, reason)

    def _publish_state(self, call: Call, previous: CallState | None, reason: str = "") -> None:
        if not self._listening():
            return
        self._publish(
            CallStateChanged(
                call.id,
                call.state,
                previous,
                call.caller_device,
                call.dialled,
                call.devices,
                reason,
                call.caller_user,
                call.callee_user,
                call.outcome if call.state is CallState.ENDED else None,
            )
        )

    # -- in-dialog requests ----------------------------------------------------------------------

    def _in_dialog(self, request: Request, txn: ServerTransaction, to_tag: str) -> None:
        leg = self._dialogs.get((request.call_id, to_tag))
        dialog = leg.dialog if leg is not None else None
        if leg is None or dialog is None or dialog.terminated:
            self._reply(txn, request, 481, "no such dialog")
            return
        if not dialog.accept_remote_cseq(request):
            self._reply(txn, request, 500, "CSeq out of order", headers=(("Retry-After", "1"),))
            return
        method = request.method
        call = leg.call
        if method == "BYE":
            self._reply(txn, request, 200)
            dialog.terminated = True
            leg.state = LegState.TERMINATED
            if call.flip is not None and leg in call.flip.legs:
                return
            outcome = CallOutcome.ANSWERED if call.answered else CallOutcome.CANCELLED
            self._terminate(call, outcome, f"{leg.device} hung up", skip=leg)
        elif method == "UPDATE" and not request.body and leg.state is LegState.CONFIRMED:
            self._local_refresh(leg, request, txn)
        elif method in ("INVITE", "UPDATE"):
            self._offer(leg, request, txn)
        elif method == "INFO":
            self._info(leg, request, txn)
        elif method == "OPTIONS":
            self._reply(txn, request, 200)
        else:
            self._reply(txn, request, 405, f"{method} is not supported in a call")

    def _on_ack(self, ack: Request) -> None:
        leg = self._dialogs.get((ack.call_id, ack.to.tag or ""))
        if leg is None:
            return
        leg.ack_pending = False
        call = leg.call
        other = call.other(leg)
        if other is None or other.deferred_ack is None or other.dialog is None:
            return
        cseq = other.deferred_ack
        other.deferred_ack = None
        body = b""
        try:
            sdp = self._parse_body(ack)
        except SdpError:
            sdp = None
        if sdp is not None and call.media is not None:
            self._learn_sdp(leg, sdp)
            body = self._sdp_for(other, sdp)
        reply = other.dialog.create_ack(cseq, body=body, content_type=SDP if body else None)
        other.ack_sent[cseq] = reply
        self._send_ack(reply, other.dialog)

    def _offer(self, leg: Leg, request: Request, txn: ServerTransaction) -> None:
        """A re-INVITE or UPDATE from one device: pass it to the other, or 491 if offers cross."""
        call = leg.call
        other = call.other(leg)
        method = request.method
        if (
            other is None
            or other.dialog is None
            or other.state is not LegState.CONFIRMED
            or call.media is None
        ):
            if leg.role is LegRole.FLIP_TARGET or (call.flip is not None and leg in call.flip.legs):
                self._reply(txn, request, 491, "flip in progress", headers=(("Retry-After", "2"),))
            else:
                self._reply(txn, request, 491, "call not answered yet")
            return
        if leg.incoming_offer or leg.outgoing_offer or other.incoming_offer or other.outgoing_offer:
            self._reply(txn, request, 491, "offers crossed")
            return
        if call.flip is not None and call.flip.winner is not None:
            self._reply(txn, request, 491, "flip in progress")
            return
        try:
            sdp = self._parse_body(request)
        except SdpError as exc:
            self._reply(txn, request, 488, str(exc))
            return
        assert leg.dialog is not None
        self._refreshed(leg, request)
        leg.dialog.refresh_target(request)
        previous = leg.remote_sdp
        if sdp is not None:
            self._learn_sdp(leg, sdp)
        body = self._sdp_for(other, sdp) if sdp is not None else b""
        forwarded = other.dialog.create_request(
            method, body=body, content_type=SDP if body else None
        )
        _limit_hops(forwarded, request.max_forwards)
        leg.incoming_offer = True
        leg.offer_txn = txn
        other.outgoing_offer = True
        cseq = forwarded.cseq.number

        def on_response(response: Response) -> None:
            self._offer_answered(
                leg,
                other=other,
                request=request,
                txn=txn,
                response=response,
                cseq=cseq,
                offer=sdp,
                previous=previous,
            )

        def on_timeout() -> None:
            leg.incoming_offer = other.outgoing_offer = False
            if _open(txn):
                self._reply(txn, request, 408, f"{other.device} does not answer")
            self._terminate(call, CallOutcome.ANSWERED, f"{other.device} stopped answering")

        self._send_in_dialog(other, forwarded, on_response, on_timeout)

    def _offer_answered(
        self,
        origin: Leg,
        *,
        other: Leg,
        request: Request,
        txn: ServerTransaction,
        response: Response,
        cseq: int,
        offer: SessionDescription | None,
        previous: SessionDescription | None,
    ) -> None:
        status = response.status
        call = origin.call
        if status < 200:
            return
        origin.incoming_offer = other.outgoing_offer = False
        origin.offer_txn = None
        assert origin.dialog is not None
        assert other.dialog is not None
        method = request.method
        if status >= 300:
            if offer is not None and previous is not None:
                self._learn_sdp(origin, previous)
            headers = [("Retry-After", v) for v in response.headers.get_all("Retry-After")]
            if _open(txn):
                self._reply(txn, request, status, headers=headers)
            if status in (408, 481):
                self._terminate(
                    call, CallOutcome.ANSWERED, f"{other.device} lost the dialog ({status})"
                )
            return
        other.dialog.refresh_target(response)
        try:
            answer = self._parse_body(response)
        except SdpError:
            answer = None
        if method == "INVITE":
            if offer is not None or answer is None:
                ack = other.dialog.create_ack(cseq)
                other.ack_sent[cseq] = ack
                self._send_ack(ack, other.dialog)
            else:
                other.deferred_ack = cseq  # the answer comes in the originator's ACK
        body = b""
        if answer is not None:
            self._learn_sdp(other, answer)
            body = self._sdp_for(origin, answer)
        ok = make_response(request, status, body=body)
        ok.headers.add("Contact", origin.dialog.endpoint.contact)
        if body:
            ok.headers.add("Content-Type", SDP)
        self._session_headers(origin, ok)
        if method == "INVITE":
            origin.ack_pending = True
            if isinstance(txn, InviteServerTransaction):
                txn.on_ack_timeout = partial(self._ack_timeout, origin.dialog.key)
        if _open(txn):
            self._respond(txn, ok)
        description = offer if offer is not None else answer
        if description is not None and call.state in (CallState.TALKING, CallState.HELD):
            self._set_state(call, CallState.HELD if _is_hold(description) else CallState.TALKING)

    # -- session timers (RFC 4028) ---------------------------------------------------------------

    def _session_headers(self, leg: Leg, response: Response) -> None:
        """Our 2xx to a device's INVITE/UPDATE states the timer agreed with it (RFC 4028 §9)."""
        timer = leg.session
        if timer is None:
            return
        response.headers.add("Session-Expires", f"{timer.interval};refresher={timer.refresher}")
        if timer.required:
            response.headers.add("Require", "timer")

    def _arm_session_timer(self, leg: Leg) -> None:
        """After each refresh: our next refresh at half the interval (§7.2) if we refresh, else
        the expiry check a little before the interval ends (§10)."""
        timer = leg.session
        if timer is None:
            return
        if leg.session_timer is not None:
            leg.session_timer.cancel()
        interval = timer.interval
        leg.session_deadline = self._clock.monotonic() + interval
        if timer.refresher is Refresher.UAS:
            leg.session_timer = self._clock.call_later(
                interval / 2, lambda: self._send_refresh(leg)
            )
        else:
            delay = interval - min(32, interval / 3)
            leg.session_timer = self._clock.call_later(delay, lambda: self._session_expired(leg))

    def _refreshed(self, leg: Leg, request: Request) -> None:
        """A re-INVITE or UPDATE from the device: it may renegotiate, and it refreshes."""
        leg.session = negotiate_session_timer(request, leg.session)
        self._arm_session_timer(leg)

    def _local_refresh(self, leg: Leg, request: Request, txn: ServerTransaction) -> None:
        """A bodiless UPDATE changes no media: it refreshes this dialog only, so it is answered
        here rather than passed to a far end that may not even allow UPDATE."""
        assert leg.dialog is not None
        self._refreshed(leg, request)
        leg.dialog.refresh_target(request)
        ok = make_response(request, 200)
        ok.headers.add("Contact", leg.dialog.endpoint.contact)
        self._session_headers(leg, ok)
        self._respond(txn, ok)

    def _send_refresh(self, leg: Leg) -> None:
        """We are the refresher: a bodiless UPDATE if the device allows it, else a re-INVITE
        with the description it already has (same o= version: nothing changes)."""
        leg.session_timer = None
        call = leg.call
        dialog = leg.dialog
        timer = leg.session
        if not call.active or dialog is None or dialog.terminated or timer is None:
            return
        if leg.incoming_offer or leg.outgoing_offer or leg.ack_pending:
            leg.session_timer = self._clock.call_later(
                REFRESH_RETRY, lambda: self._send_refresh(leg)
            )
            return
        # We are the UAC of the refresh transaction, and the refresher.
        extra = (("Session-Expires", f"{timer.interval};refresher=uac"), ("Supported", "timer"))
        if leg.peer_allows_update:
            request = dialog.create_request("UPDATE", extra=extra)
        else:
            body = leg.local_sdp
            request = dialog.create_request(
                "INVITE", body=body, content_type=SDP if body else None, extra=extra
            )
            leg.outgoing_offer = True
        cseq = request.cseq.number
        self._send_in_dialog(
            leg,
            request,
            lambda response: self._refresh_answered(leg, response, cseq),
            lambda: self._refresh_failed(leg, 408),
        )

    def _refresh_answered(self, leg: Leg, response: Response, cseq: int) -> None:
        status = response.status
        if status < 200:
            return
        method = response.cseq.method
        dialog = leg.dialog
        if method == "INVITE":
            leg.outgoing_offer = False
        call = leg.call
        if dialog is None or dialog.terminated or not call.active:
            return
        if status < 300:
            if method == "INVITE":
                ack = dialog.create_ack(cseq)
                leg.ack_sent[cseq] = ack
                self._send_ack(ack, dialog)
                try:
                    sdp = self._parse_body(response)
                except SdpError:
                    sdp = None
                if sdp is not None:
                    self._learn_sdp(leg, sdp)
            dialog.refresh_target(response)
            expires = _session_expires(response)
            timer = leg.session
            if expires is not None and timer is not None:
                # Roles in our refresh: "uac" is us, "uas" the device, which may take over.
                who = Refresher.UAC if expires[1] == Refresher.UAS else Refresher.UAS
                leg.session = SessionTimer(expires[0], who, timer.required)
            self._arm_session_timer(leg)
        elif status == 491:
            leg.session_timer = self._clock.call_later(
                REFRESH_RETRY, lambda: self._send_refresh(leg)
            )
        elif status in (405, 501) and method == "UPDATE":
            leg.peer_allows_update = False
            self._send_refresh(leg)
        else:
            self._refresh_failed(leg, status)

    def _refresh_failed(self, leg: Leg, status: int) -> None:
        """408/481 (or no answer): the dialog is gone, end the call now. Other refusals: the
        session lasts until it expires (RFC 4028 §10)."""
        if leg.outgoing_offer and status == 408:
            leg.outgoing_offer = False
        call = leg.call
        if not call.active:
            return
        if status in (408, 481):
            self._terminate(
                call, CallOutcome.ANSWERED, f"session refresh of {leg.device} failed ({status})"
            )
            return
        delay = max(0.0, leg.session_deadline - self._clock.monotonic())
        leg.session_timer = self._clock.call_later(delay, lambda: self._session_expired(leg))

    def _session_expired(self, leg: Leg) -> None:
        leg.session_timer = None
        call = leg.call
        if call.active:
            self._terminate(call, CallOutcome.ANSWERED, f"session timer expired on {leg.device}")

    # -- DTMF and feature codes ------------------------------------------------------------------

    def _info(self, leg: Leg, request: Request, txn: ServerTransaction) -> None:
        call = leg.call
        content_type = request.content_type or ""
        if content_type in DTMF_TYPES:
            try:
                digit = parse_dtmf_info(request.headers.get("Content-Type") or "", request.body)
            except DtmfError as exc:
                self._reply(txn, request, 400, str(exc))
                return
            self._reply(txn, request, 200)
            self._digit(leg, digit.digit, DtmfMethod.INFO)
            return
        other = call.other(leg)
        if other is None or other.dialog is None or other.state is not LegState.CONFIRMED:
            self._reply(txn, request, 200)
            return
        forwarded = other.dialog.create_request(
            "INFO", body=request.body, content_type=request.headers.get("Content-Type")
        )
        _limit_hops(forwarded, request.max_forwards)

        def relay(response: Response) -> None:
            if response.status >= 200 and _open(txn):
                self._reply(txn, request, response.status)

        def timeout() -> None:
            if _open(txn):
                self._reply(txn, request, 408)

        self._send_in_dialog(other, forwarded, relay, timeout)

    def _on_rtp_dtmf(self, call: Call, side: Side, digit: DtmfDigit) -> None:
        leg = call.caller if side == "a" else call.callee
        if leg is not None and call.active:
            self._digit(leg, digit.digit, DtmfMethod.RFC4733)
        elif call.active and call.media is not None and not call.media.closed:
            # early media from a callee not chosen yet: nothing to collect, pass it on
            call.media.leg(side).other.send_dtmf(digit.digit)

    def _digit(self, leg: Leg, digit: str, method: DtmfMethod) -> None:
        call = leg.call
        self._publish(DtmfReceived(call.id, leg.device, digit, method))
        if (
            not call.answered
            or (leg is not call.caller and leg is not call.callee)
            or is_trunk_device(leg.device)  # an outside caller cannot dial a feature code
        ):
            self._pass_digit(leg, digit, method)  # no feature codes before the answer
            return
        collector = self._collectors.get((leg, method))
        if collector is None:
            code = self._config().flip.code
            collector = FeatureCodeCollector(
                self._clock,
                lambda match: self._feature(leg, match),
                lambda passed: self._pass_digit(leg, passed, method),
                (FeatureCode(code, "flip", argument=True),),
            )
            self._collectors[(leg, method)] = collector
        collector.feed(digit)

    def _pass_digit(self, leg: Leg, digit: str, method: DtmfMethod) -> None:
        """A digit that is not part of a feature code goes on to the far end.

        Key presses that came as telephone-events were stopped at the relay, so they are sent
        again as telephone-events on the stream towards the far end, with its payload type; a far
        end without telephone-event (and digits that came by INFO) gets an INFO.
        """
        call = leg.call
        media = call.media
        if (
            method is DtmfMethod.RFC4733
            and media is not None
            and not media.closed
            and media.leg(leg.side).other.send_dtmf(digit)
        ):
            return
        other = call.other(leg)
        if other is None or other.dialog is None or other.state is not LegState.CONFIRMED:
            return
        info = other.dialog.create_request(
            "INFO", body=format_dtmf_relay(digit), content_type="application/dtmf-relay"
        )
        self._send_in_dialog(other, info)

    def _feature(self, leg: Leg, match: FeatureMatch) -> None:
        call = leg.call
        if match.name != "flip" or not call.active:
            return
        target = match.argument or None
        try:
            if call.flip is not None:
                raise FlipInProgress(f"call {call.id} is already being flipped")
            plan = self._plan_flip(self._config(), leg, target)
        except FlipError as exc:
            _LOGGER.info("Call %s: %s dialled the flip code, but %s", call.id, leg.device, exc)
            self._flip_refused(call, leg, target, exc)
            return
        self._start_flip(call, leg, plan.to_device, None)

    # -- flip ------------------------------------------------------------------------------------

    def _plan_flip(self, config: PbxConfig, leg: Leg, target: str | None) -> FlipPlan:
        return plan_flip(
            config,
            leg.device or "",
            target,
            self._is_registered,
            is_available=self.presence.available,
            flip_enabled=self.presence.flip_enabled,
        )

    def _flip_refused(self, call: Call, leg: Leg, target: str | None, exc: FlipError) -> None:
        """A flip that could not start is still a failed handoff: in the call's record and on
        the bus (``HandoffFailed`` with the reason), like one that rang and failed."""
        now = self._clock.wall()
        reason = str(exc)
        record = HandoffRecord(call.id, leg.device or "", target or "", now, now, False, reason)
        call.handoffs.append(record)
        self._publish(HandoffFailed(call.id, leg.device or "", target or "", reason, record))

    def _side_to_flip(
        self, call: Call, config: PbxConfig, target: str | None, device: str | None
    ) -> Leg:
        legs = [leg for leg in (call.callee, call.caller) if leg is not None]
        if device is not None:
            for leg in legs:
                if leg.device == device:
                    return leg
            raise CallNotFlippable(f"{device} is not in call {call.id}")
        if target is not None:
            owner = config.user_for_device(target)
            for leg in legs:
                if owner is not None and config.user_for_device(leg.device or "") is owner:
                    return leg
        possible = []
        for leg in legs:
            try:
                plan_flip(config, leg.device or "", target, self._is_registered)
            except FlipError:
                continue
            possible.append(leg)
        return possible[0] if possible else legs[0]

    def _start_flip(
        self, call: Call, from_leg: Leg, to_device: str, timeout: float | None
    ) -> asyncio.Future[HandoffRecord]:
        config = self._config()
        remote = call.other(from_leg)
        assert remote is not None
        wait = float(timeout if timeout is not None else config.flip.timeout)
        future: asyncio.Future[HandoffRecord] = asyncio.get_running_loop().create_future()
        flip = FlipHandle(call, from_leg, to_device, self._clock.wall(), future, wait)
        call.flip = flip
        _LOGGER.info("Call %s: flipping from %s to %s", call.id, from_leg.device, to_device)
        self._publish(HandoffStarted(call.id, from_leg.device or "", to_device))
        media = call.media
        try:
            if media is None or remote.remote_sdp is None or from_leg.remote_sdp is None:
                raise SdpError("the call has no media yet")
            flip.offer = offer_for_new_device(remote.remote_sdp, from_leg.remote_sdp)
            flip.spare = media.open_spare(from_leg.side)
        except SdpError as exc:
            self._finish_flip(flip, None, exc.reason)
            return future
        except (RelayError, OSError) as exc:
            self._finish_flip(flip, None, f"media relay: {exc}")
            return future
        port = flip.spare.local_rtp.port
        for binding in self._bindings(to_device):
            leg = Leg(call, LegRole.FLIP_TARGET, from_leg.side, binding.username, from_leg.party)
            flip.legs.append(leg)
            self._send_branch_invite(
                leg,
                binding,
                presented=remote.party,
                offer=flip.offer,
                port=port,
                on_response=partial(self._flip_response, flip, leg),
                on_timeout=partial(self._flip_leg_failed, leg, 408),
            )
        if not flip.done:
            flip.timer = self._clock.call_later(wait, lambda: self._flip_no_answer(flip))
        return future

    def _flip_response(self, flip: FlipHandle, leg: Leg, response: Response) -> None:
        status = response.status
        if status < 200:
            if status > 100 and leg.state is LegState.TRYING:
                leg.state = LegState.EARLY
            return
        if status >= 300:
            self._flip_leg_failed(leg, status)
            return
        if leg is flip.winner and self._ack_again(leg, response):
            return
        if flip.done or flip.winner is not None or leg.state is LegState.TERMINATED:
            self._reject_late_answer(leg, response)
            return
        assert leg.sent_invite is not None
        flip.winner = leg
        if flip.timer is not None:
            flip.timer.cancel()
            flip.timer = None
        for other in flip.legs:
            if other is not leg:
                self._cancel_branch(other)
        leg.dialog = leg.sent_invite.dialog(response)
        leg.state = LegState.CONFIRMED
        self._spawn(self._complete_flip(flip, leg, response))

    async def _complete_flip(self, flip: FlipHandle, leg: Leg, response: Response) -> None:
        """The target answered our offer: check the answer, ACK it, and move the media over."""
        call = flip.call
        dialog = leg.dialog
        assert dialog is not None
        old = flip.from_leg
        remote = call.other(old)
        failure = ""
        answer: SessionDescription | None = None
        try:
            answer = self._parse_body(response)
        except SdpError as exc:
            failure = f"unreadable SDP from {leg.device}: {exc}"
        audio = answer.audio() if answer is not None else None
        remote_audio = (
            remote.remote_sdp.audio() if remote is not None and remote.remote_sdp else None
        )
        offered = flip.offer.audio() if flip.offer is not None else None
        common = (
            common_codecs(offered.codecs(), audio.codecs())
            if audio is not None and offered is not None
            else []
        )
        if not failure and (answer is None or audio is None):
            failure = f"{leg.device} answered without an SDP answer"
        elif not failure and not any(c.encoding.lower() != "telephone-event" for c in common):
            failure = f"{leg.device} accepted none of the offered codecs"
        ack = dialog.create_ack(leg.invite_cseq)
        leg.ack_sent[leg.invite_cseq] = ack
        self._send_ack(ack, dialog)
        media = call.media
        if not failure and (media is None or media.closed or not call.active or flip.done):
            failure = "the call ended"
        if failure or answer is None or audio is None or remote_audio is None or media is None:
            self._send_bye(leg)
            self._finish_flip(flip, None, failure or "the call ended")
            return
        rtp, rtcp = _media_target(answer)
        target_codecs = audio.codecs()
        try:
            await media.switch_leg(
                old.side,
                rtp,
                rtcp,
                codecs=target_codecs,
                payload_map_in=payload_type_map(target_codecs, remote_audio.codecs()),
                payload_map_out=payload_type_map(remote_audio.codecs(), target_codecs),
                spare=flip.spare,
            )
        except (RelayError, OSError) as exc:
            self._send_bye(leg)
            self._finish_flip(flip, None, f"media relay: {exc}")
            return
        leg.remote_sdp = answer
        if not call.active:
            self._send_bye(leg)
            self._finish_flip(flip, None, "the call ended")
            return
        # The new device takes the old one's place; only the old device's dialog is closed.
        leg.role = old.role
        if old is call.caller:
            call.caller = leg
        else:
            call.callee = leg
        call.branches = [b for b in call.branches if b is not old]
        for method in DtmfMethod:
            collector = self._collectors.pop((old, method), None)
            if collector is not None:
                collector.close()
        self._send_bye(old)
        self._forget(old)
        self._retire(old)
        self._finish_flip(flip, leg, "")
        self._publish_state(call, call.state)

    def _flip_leg_failed(self, leg: Leg, status: int) -> None:
        leg.state = LegState.TERMINATED
        if leg.failed_status is None:
            leg.failed_status = status
        flip = leg.call.flip
        if flip is None or leg not in flip.legs or flip.done or flip.winner is not None:
            return
        if any(other.state is not LegState.TERMINATED for other in flip.legs):
            return
        statuses = sorted({other.failed_status or 408 for other in flip.legs})
        if statuses in ([486], [600]):
            reason = f"{flip.to_device} is busy"
        elif 603 in statuses:
            reason = f"{flip.to_device} declined"
        elif statuses == [487]:
            reason = "cancelled"
        else:
            reason = f"{flip.to_device} answered {', '.join(map(str, statuses))}"
        self._finish_flip(flip, None, reason)

    def _flip_no_answer(self, flip: FlipHandle) -> None:
        flip.timer = None
        if flip.done or flip.winner is not None:
            return
        self._finish_flip(flip, None, f"no answer within {flip.timeout:g} s")

    def _finish_flip(self, flip: FlipHandle, winner: Leg | None, reason: str) -> None:
        if flip.done:
            return
        flip.done = True
        call = flip.call
        if flip.timer is not None:
            flip.timer.cancel()
            flip.timer = None
        for leg in flip.legs:
            if leg is not winner:
                if leg.state is LegState.CONFIRMED:
                    self._send_bye(leg)
                else:
                    self._cancel_branch(leg)
                self._forget(leg)
                self._retire(leg)
        if call.flip is flip:
            call.flip = None
        if flip.spare is not None and call.media is not None:
            call.media.discard_spare(flip.spare)  # nothing when the winner took it
        from_device = flip.from_leg.device or ""
        record = HandoffRecord(
            call.id,
            from_device,
            flip.to_device,
            flip.started_at,
            self._clock.wall(),
            winner is not None,
            reason or "answered",
        )
        call.handoffs.append(record)
        if winner is not None:
            _LOGGER.info("Call %s flipped from %s to %s", call.id, from_device, flip.to_device)
            self._publish(HandoffSucceeded(call.id, from_device, flip.to_device, record))
        else:
            _LOGGER.info(
                "Call %s: flip from %s to %s failed: %s",
                call.id,
                from_device,
                flip.to_device,
                reason,
            )
            self._publish(HandoffFailed(call.id, from_device, flip.to_device, reason, record))
        if not flip.future.done():
            flip.future.set_result(record)


def _always() -> bool:
    return True


def _ignore(response: Response) -> None:
    return None


def _nothing() -> None:
    return None


def _ip_type(host: str) -> str:
    return "IP6" if ":" in host else "IP4"


def _name_addr(display: str | None, uri: str) -> str:
    if not display:
        return f"<{uri}>"
    escaped = display.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}" <{uri}>'


def _open(txn: ServerTransaction) -> bool:
    """Whether a server transaction still waits for its final response."""
    return txn.state in (TransactionState.TRYING, TransactionState.PROCEEDING)


def _limit_hops(outgoing: Request, incoming: int | None) -> None:
    """A request we make from one we received never has more hops left than it had (RFC 3261
    §16.6 step 3 applied across the B2BUA): otherwise two PBXes, or a device registered with our
    own address as its contact, would pass a call back and forth for ever. ``incoming`` is the
    Max-Forwards the received request had (None: it had none, and ours keeps the default 70)."""
    if incoming is not None and incoming - 1 < (outgoing.max_forwards or 0):
        outgoing.headers.set("Max-Forwards", str(max(incoming - 1, 0)))
