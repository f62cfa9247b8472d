"""Call control: every call is two (or, while ringing, more) independent dialogs, back to back.

Why a B2BUA rather than a proxy: a flip replaces one side of a call with another device while the
other side's dialog stays exactly as it was, and media must run through our relay so the switch is
invisible. So each leg has its own Call-ID, tags and CSeq, and this module is the only place that
knows which legs belong together; `sip_core.dialog` knows dialogs, `sip_core.calls` the model.

Call set-up: the caller's INVITE is authenticated (407, the registrar's digest rules; a trunk's
INVITE is recognised by its source instead and routed by its DID, `sip_core.trunk.ingress`),
routed (a device's username rings that device's contacts, a user's extension rings all of that
user's devices except the caller's, Call Forward Always followed with loops refused 482, devices
in Do Not Disturb or Make Busy counted busy; a number no user has may go out through a trunk,
`sip_core.trunk.egress`), and forked. Nothing we send for a call has more Max-Forwards left than
the caller's INVITE had (483 at none). Provisional responses (and early media) go back to the
caller; the first 2xx wins and every other branch is CANCELled (the transaction layer ACKs their
487). A 2xx that arrives after we gave its branch up -- CANCEL racing 200, a second fork answering
-- is ACKed and BYEd at once. Failures map to one answer for the caller: unknown number 404,
nothing registered 480, every device busy 486, no answer in time 480; each with one log line.

In the call: re-INVITE and UPDATE are passed across (SDP rewritten to the relay both ways; a
bodiless UPDATE is a session refresh and is answered here), with 491 when offers would cross
(glare); BYE from either side ends both; digits (INFO or RFC 4733) go to the leg's digit sink (the
feature-code collector) and the rest passes on. A dead leg is found by a missing ACK to our 2xx,
by RFC 4028 session timers when the caller offers them (we refresh when the offer or RFC 4028
§9 makes us the refresher, else expect its refreshes), and by a forwarded request that times out
or gets 408/481; in every case both sides are released, so no call is left half-open.

Features (a flip now; transfers next) program against `CallControl`'s public methods -- ring
targets with first-answer-wins (`ring`), replace a leg (`replace_leg`), hold/resume, play and
collect through the media engine, send an in-dialog request, end a leg or the call -- and plug in
through `CallHooks` (a feature code dialled in a call or from idle, an in-dialog REFER or NOTIFY,
an INVITE with Replaces). A call carries at most one feature `Operation` (`begin` /
`end_operation`), which call control consults for a BYE on a leg the operation added, for offers
while it runs, and when the call ends. This module never imports a feature.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from dataclasses import replace as dc_replace
from functools import partial
from typing import Any

from sip_core.audio.collector import CollectResult, CollectSettings
from sip_core.audio.playback import Playback
from sip_core.call.activity import DeviceActivity, DeviceInCall, busiest, call_parties
from sip_core.call.dial import RingRequest, keep_ringing
from sip_core.call.digits import Digits, DigitSink, SinkFactory
from sip_core.call.fork import BranchSender, FailureKind, ForkGroup, ForkSummary
from sip_core.call.messages import (
    SDP,
    Responder,
    ignore,
    is_open,
    limit_hops,
    nothing,
    parse_body,
)
from sip_core.call.negotiation import Negotiation, media_target
from sip_core.call.originate import CallerId, NothingToRing, Originated, pbx_device, pbx_offer
from sip_core.call.session_timer import (
    MIN_SESSION_EXPIRES,
    SessionTimers,
    negotiate_session_timer,
    session_expires,
    supports,
)
from sip_core.call.targets import Destination, RingPlan, destination, forwarded, ringable
from sip_core.calls import (
    Call,
    CallHistory,
    CallOutcome,
    CallState,
    Leg,
    LegRole,
    LegState,
    Operation,
    Side,
)
from sip_core.clock import Clock
from sip_core.config import PbxConfig
from sip_core.dialog import (
    Dialog,
    DialogError,
    LocalEndpoint,
    SentInvite,
    build_request,
    first_cseq,
    name_address,
)
from sip_core.digest import AuthFailure, AuthResult, DigestAuthenticator
from sip_core.digest_client import AuthOutcome
from sip_core.events import (
    CallRecorded,
    CallStateChanged,
    PbxEvent,
)
from sip_core.forwarding import ForwardingLoop
from sip_core.media import MediaLeg, MediaRelay, MediaSession, RelayError
from sip_core.media.client import Playing
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
    Origin,
    SdpError,
    SessionDescription,
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
from sip_core.trunk.ingress import InboundRefusal, TrunkIngress, trunk_device

__all__ = [
    "ALLOWED_METHODS",
    "CallControl",
    "CallHooks",
    "OperationInProgress",
]

_LOGGER = logging.getLogger(__name__)

_UNSPECIFIED = frozenset({"0.0.0.0", "::", ""})

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
    "REFER",
)
_ALLOW = (("Allow", ", ".join(ALLOWED_METHODS)),)


class OperationInProgress(RuntimeError):
    """A call already carries a feature operation (`CallControl.begin`)."""


@dataclass(slots=True)
class CallHooks:
    """Where features plug into call control (call control never imports a feature).

    Each hook is optional; without one, call control does what it always did. A hook that returns
    True has handled the request (answered it); False leaves it to call control.

    - ``digit_sink``: the sink for an answered leg's digits (feature codes dialled in a call);
      None from it passes every digit of that leg on.
    - ``dialled_code``: an INVITE whose number is no device or user (a feature code dialled from
      idle): ``(request, txn, caller_device, dialled)``; unhandled, it gets 404.
    - ``in_call_request``: an in-dialog request call control does not implement (REFER, NOTIFY):
      ``(leg, request, txn)``; unhandled, it gets 405.
    - ``invite_replaces``: an INVITE with a Replaces header: ``(request, txn, source)``;
      unhandled, the header is ignored and the INVITE is routed like any other.
    - ``is_code``: whether a dialled number is a feature code (so the dial plan never sends it
      out through a trunk); without it, nothing is.
    - ``route_number``: a number no device or user has (a ring group's pilot):
      ``(caller_device, dialled)`` gives a `RingPlan` (the call rings its devices, with its
      timer and no-answer rule), or None (then ``dialled_code``, then 404).
    """

    digit_sink: SinkFactory | None = None
    dialled_code: Callable[[Request, ServerTransaction, str, str], bool] | None = None
    in_call_request: Callable[[Leg, Request, ServerTransaction], bool] | None = None
    invite_replaces: Callable[[Request, ServerTransaction, Source], bool] | None = None
    route_number: Callable[[str, str], RingPlan | None] | None = None
    is_code: Callable[[str], bool] | None = None


@dataclass(frozen=True, slots=True)
class _TrunkBranch:
    """A trunk INVITE as sent, until its final response: a 401/407 is answered by sending the
    same INVITE again with credentials (`CallControl._trunk_response`); anything else goes to the
    fork (``on_response``, ``on_failed``)."""

    leg: Leg
    target: OutboundTarget
    invite: Request
    on_response: Callable[[Response], None]
    on_failed: Callable[[int], None]
    challenges: int = 0


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


class CallControl:
    """Calls: set-up, in-call requests, tear-down, and the API features use. The facade feeds it.

    ``config`` is read on every new call (so user changes apply to the next call); ``bindings``
    gives a device's current registrations; ``respond`` sends a response through a server
    transaction (the facade stamps Allow and Server); ``publish`` is the event bus, and
    ``listening`` says whether anyone subscribes to it: call events are not even built when
    nobody does (five per call; the standalone runner has no subscriber).

    Lower layers plug in here: ``on_auth`` sees every INVITE's digest result (the guard counts
    failures); ``presence`` gives Do Not Disturb, Make Busy, Call Forward Always and the flip
    permission; ``ingress`` recognises a trunk's INVITE and routes its DID, ``egress`` sends a
    number the dial plan routes out through a trunk.
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
        tls_port: Callable[[], int | None] | None = None,
    ) -> None:
        self._txns = transactions
        #: Our TLS listener's port (None: not listening), the port of TLS legs' Via and Contact.
        self._tls_port = tls_port
        #: DND, Make Busy, Call Forward Always and flip permission (`sip_core.presence`).
        self.presence = presence if presence is not None else Presence(config)
        self._on_auth = on_auth
        self._ingress = ingress
        self._egress = egress
        self._clock = clock
        self._config = config
        self._auth = authenticator
        self._bindings = bindings
        self._relay = relay
        self._publish = publish
        self._listening = listening if listening is not None else _always
        self._responder = respond
        self._local_port = local_port
        self.history = history if history is not None else CallHistory()
        self._calls: dict[str, Call] = {}
        self._dialogs: dict[tuple[str, str], Leg] = {}
        self._invites: dict[ServerTransaction, Call] = {}
        self.hooks = CallHooks()
        self._timers = SessionTimers(clock, self)
        self._digits = Digits(self, publish, self._digit_sink)
        self._offers = Negotiation(
            self,
            self._timers,
            relay_host=lambda: self._relay.host,
            set_state=self._set_state,
            ack_timeout=self._ack_timeout,
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._ringing: dict[str, ForkGroup] = {}  # call id -> the fork of its set-up
        self._detached: dict[Leg, None] = {}  # legs `replace_leg` kept up (keep_old)
        # call id -> what a call the PBX placed tells its originator (`originate`)
        self._originated: dict[str, asyncio.Future[Leg | None]] = {}
        self._hosts: dict[str, str] = {}
        self._ack_waiters: dict[tuple[str, str], Callable[[Leg], None]] = {}
        self._plans: dict[str, RingPlan] = {}  # call id -> how a routed number rings
        # dialog key -> an INVITE `answer_with` answered (a code that did its work)
        self._answered_codes: dict[tuple[str, str], _AnsweredCode] = {}

    # -- public API ------------------------------------------------------------------------------

    def calls(self) -> list[Call]:
        """Calls in progress (not yet ended), oldest first."""
        return list(self._calls.values())

    def get(self, call_id: str) -> Call | None:
        return self._calls.get(call_id)

    # -- the API features program against -------------------------------------------------------

    @property
    def clock(self) -> Clock:
        return self._clock

    def config(self) -> PbxConfig:
        """The configuration as it is now (read it per use: users change without a restart)."""
        return self._config()

    def bindings(self, device: str) -> Sequence[Binding]:
        """A device's current registrations."""
        return self._bindings(device)

    def is_registered(self, device: str) -> bool:
        return bool(self._bindings(device))

    def find_leg(self, call_id: str, local_tag: str, remote_tag: str) -> Leg | None:
        """The leg whose dialog this is (our tag ``local_tag``, the device's ``remote_tag``), in
        a call in progress: what a Replaces header (RFC 3891) names."""
        leg = self._dialogs.get((call_id, local_tag))
        dialog = leg.dialog if leg is not None else None
        if leg is None or dialog is None or dialog.remote_tag != remote_tag:
            return None
        if dialog.terminated or not leg.call.active:
            return None
        return leg

    def follow_forwards(self, devices: Sequence[str]) -> tuple[str, ...]:
        """``devices`` with each Call Forward Always followed, as call set-up does (for a
        feature that rings someone: a transfer's target). Raises `ForwardingLoop` when the
        forwards lead back round."""
        return forwarded(devices, self.presence.forwards)

    def route_number(self, caller_device: str, dialled: str) -> RingPlan | None:
        """How a number that is no device or user rings (a ring group's pilot: its `RingPlan`,
        from the ``route_number`` hook), for ``caller_device``; None when nothing routes it."""
        hook = self.hooks.route_number
        return hook(caller_device, dialled) if hook is not None else None

    def is_busy(self, device: str) -> bool:
        """Whether ``device`` answers busy now: in a call, or in Do Not Disturb or Make Busy
        (the rule call set-up uses to skip a device)."""
        return self._unavailable(device)

    def publish(self, event: PbxEvent) -> None:
        self._publish(event)

    def begin(self, call: Call, operation: Operation) -> None:
        """``operation`` takes the call's one operation slot; raises `OperationInProgress`."""
        if call.operation is not None:
            raise OperationInProgress(f"call {call.id}: a {call.operation.kind} is in progress")
        call.operation = operation

    def end_operation(self, call: Call, operation: Operation) -> None:
        """``operation`` is over: the slot is free again (nothing if it is not the call's)."""
        if call.operation is operation:
            call.operation = None

    def ring(
        self,
        call: Call,
        targets: Sequence[Binding],
        *,
        role: LegRole,
        side: Side,
        party: str,
        presented: str,
        offer: SessionDescription,
        on_answer: Callable[[Leg, Response], None],
        on_fail: Callable[[ForkSummary], None],
        on_timeout: Callable[[], None],
        on_early: Callable[[Leg, Response], None] | None = None,
        port: int | None = None,
        legs: list[Leg] | None = None,
    ) -> ForkGroup:
        """Ring ``targets`` at once, first answer wins (`ForkGroup`); start its timer yourself.

        Each target gets a new leg of ``call`` (``role``, relay ``side``, shown to the other side
        as ``party``); the device sees ``presented`` calling, with ``offer`` (rewritten to the
        relay: ``port``, or ``side``'s current port). Stops early once the call ends or a target
        answered while the others were still being rung.
        """
        fork = ForkGroup(
            self,
            self._clock,
            on_answer=on_answer,
            on_fail=on_fail,
            on_timeout=on_timeout,
            on_early=on_early,
            legs=legs,
        )
        for binding in targets:
            if not call.active or not fork.deciding:
                break
            leg = Leg(call, role, side, binding.username, party)
            fork.ring(leg, binding, presented=presented, offer=offer, port=port)
        return fork

    def originate(
        self,
        devices: Sequence[str],
        *,
        dialled: str,
        callee_user: str | None,
        ring_timeout: float,
        caller_id: CallerId | None = None,
        caller_user: str | None = None,
        purpose: str = "originate",
        onward: bool = False,
        plan: RingPlan | None = None,
    ) -> Originated:
        """Place a call from the PBX itself (`sip_core.call.originate`): ring ``devices`` (those
        not busy, every registration), first answer wins, for ``ring_timeout`` seconds.

        The caller leg is the PBX (`pbx_device(purpose)`, presented as ``caller_id``); the
        targets are offered every codec the engine generates. The call is recorded like any
        (``dialled``, ``callee_user``, ``caller_user`` for whom it was placed, if anyone).
        ``onward``: the answer is not the call's answer yet, for the device will be
        connected on (`ring_onward`, click-to-dial): the call stays ringing. ``plan``: the
        devices are a ring group's (its `RingPlan`), whose members who become present and
        available while it rings ring too (`sip_core.call.dial.keep_ringing`). Raises
        `NothingToRing` (no registration, or every device busy) or `RelayError`/OSError (no
        relay ports) before anything is sent; must be called on the loop."""
        wanted = ringable(devices, busy=self._unavailable, bindings=self._bindings)
        if not wanted.bindings:
            busy = wanted.busy > 0
            raise NothingToRing(
                "every device is busy" if busy else "no device registered", busy=busy
            )
        who = caller_id if caller_id is not None else CallerId()
        domain = self._config().sip.domain
        call = Call(
            new_call_id(),
            caller_user=caller_user,
            dialled=dialled,
            callee_user=callee_user,
            started_at=self._clock.wall(),
        )
        media = self._relay.open_session(call.id)
        call.media = media
        media.on_lost = lambda why: self.terminate(call, CallOutcome.FAILED, why, status=503)
        media.on_timeout = lambda side, seconds: self.terminate(
            call, CallOutcome.FAILED, f"no media for {seconds:g} s", status=408
        )
        presented = name_address(who.name, f"sip:{who.number}@{domain}")
        call.caller = Leg(call, LegRole.CALLER, "a", pbx_device(purpose), presented)
        answered: asyncio.Future[Leg | None] = asyncio.get_running_loop().create_future()
        self._calls[call.id] = call
        self._originated[call.id] = answered
        self._publish_state(call, None)

        def early(_leg: Leg, _response: Response) -> None:
            if call.state is CallState.SETUP:
                self._set_state(call, CallState.RINGING)

        def no_answer() -> None:
            if call.active and call.callee is None:
                self.terminate(
                    call, CallOutcome.NO_ANSWER, f"no answer within {ring_timeout:g} s", 480
                )

        fork = self.ring(
            call,
            wanted.bindings,
            role=LegRole.CALLEE,
            side="b",
            party=f"<sip:{dialled}@{domain}>",
            presented=presented,
            offer=pbx_offer(self._relay.host),
            on_early=early,
            on_answer=partial(self._originate_answered, call, onward),
            on_fail=partial(self._ring_failed, call),
            on_timeout=no_answer,
            legs=call.branches,
        )
        if call.active and call.callee is None:
            self._ringing[call.id] = fork
            fork.start_timer(ring_timeout)
            if plan is not None:
                request = RingRequest(
                    call, LegRole.CALLEE, "b", presented, pbx_offer(self._relay.host)
                )
                keep_ringing(self, plan, dialled, request, fork)
        return Originated(call, answered)

    def _originate_answered(self, call: Call, onward: bool, leg: Leg, response: Response) -> None:
        """A device answered a call the PBX placed: it is the callee, and the originator's
        (with ``onward``, not yet the call's answer: the call rings on, `ring_onward`)."""
        self._ringing.pop(call.id, None)
        call.branches = [leg]
        try:
            answer = parse_body(response)
        except SdpError:
            answer = None
        call.callee = leg
        if answer is None or answer.audio() is None:
            _LOGGER.info("Call %s: %s answered without usable SDP", call.id, leg.device)
            self.terminate(call, CallOutcome.FAILED, f"{leg.device} answered without SDP", 488)
            return
        self.learn_sdp(leg, answer)
        caller = call.caller
        if caller is not None:
            caller.state = LegState.CONFIRMED  # the PBX's own side: nothing to send it
        if onward:
            self._set_state(call, CallState.RINGING)
        else:
            call.answered_at = self._clock.wall()
            call.answered_device = leg.device
            self._set_state(call, CallState.TALKING)
        _LOGGER.info("Call %s from the PBX to %s answered by %s", call.id, call.dialled, leg.device)
        future = self._originated.pop(call.id, None)
        if future is not None and not future.done():
            future.set_result(leg)

    def ring_onward(
        self,
        call: Call,
        *,
        devices: Sequence[str],
        outbound: OutboundTarget | None,
        callee_user: str | None,
        ring_timeout: float,
    ) -> asyncio.Future[Leg | None]:
        """Connect the device that answered a call placed with ``onward`` (`originate`) to
        ``devices`` (their registrations, those not busy) or the provider of ``outbound``.

        That device becomes the call's caller, as if it had dialled the number: the targets
        see its user calling, are offered what it answered with, and the first to answer is
        the callee (the call talking; the two hear each other through the relay). Whatever
        the caller should hear meanwhile is the originator's to play. The future resolves to
        the answering leg, or None once the call ended without one (busy, no answer within
        ``ring_timeout``, the caller hung up); nothing to ring ends it at once as busy or
        unavailable."""
        future: asyncio.Future[Leg | None] = asyncio.get_running_loop().create_future()
        first = call.callee
        if not call.active or first is None or first.remote_sdp is None:
            future.set_result(None)
            return future
        config = self._config()
        domain = config.sip.domain
        first.role = LegRole.CALLER
        call.caller = first
        call.callee = None
        call.branches = []
        call.callee_user = callee_user
        owner = config.user_for_device(first.device or "")
        presented = (
            name_address(owner.name, f"sip:{owner.extension}@{domain}")
            if owner is not None
            else f"<sip:{first.device}@{domain}>"
        )
        first.party = presented
        self._originated[call.id] = future
        wanted = ringable(devices, busy=self._unavailable, bindings=self._bindings)
        if not wanted.bindings and outbound is None:
            if wanted.busy:
                self.terminate(call, CallOutcome.BUSY, "busy", 486)
            else:
                self.terminate(call, CallOutcome.UNAVAILABLE, "no device registered", 480)
            return future

        def answered(leg: Leg, response: Response) -> None:
            self._ringing.pop(call.id, None)
            call.branches = [leg]
            try:
                answer = parse_body(response)
            except SdpError:
                answer = None
            call.callee = leg
            if answer is None or answer.audio() is None:
                self.terminate(call, CallOutcome.FAILED, f"{leg.device} answered without SDP")
                return
            self.learn_sdp(leg, answer)
            call.answered_at = self._clock.wall()
            call.answered_device = leg.device
            self._set_state(call, CallState.TALKING)
            _LOGGER.info(
                "Call %s: %s connected to %s, answered by %s",
                call.id,
                first.device,
                call.dialled,
                leg.device,
            )
            done = self._originated.pop(call.id, None)
            if done is not None and not done.done():
                done.set_result(leg)

        def no_answer() -> None:
            if call.active and call.callee is None:
                self.terminate(
                    call, CallOutcome.NO_ANSWER, f"no answer within {ring_timeout:g} s", 480
                )

        party = f"<sip:{call.dialled}@{domain}>"
        offer = first.remote_sdp
        fork = self.ring(
            call,
            wanted.bindings,
            role=LegRole.CALLEE,
            side="a",
            party=party,
            presented=presented,
            offer=offer,
            on_answer=answered,
            on_fail=partial(self._ring_failed, call),
            on_timeout=no_answer,
            legs=call.branches,
        )
        if outbound is not None and call.active and fork.deciding:
            leg = Leg(call, LegRole.CALLEE, "a", trunk_device(outbound.trunk), party)
            local = Address("0.0.0.0", self._local_port())
            fork.add(leg, self._trunk_sender(leg, outbound, local, offer))
        if call.active and call.callee is None:
            self._ringing[call.id] = fork
            fork.start_timer(ring_timeout)
            self.publish_state(call)
        return future

    def open_spare(self, call: Call, side: Side) -> MediaLeg:
        """Relay sockets for a device that may take ``side`` (named in the offer it is rung with).

        Raises `RelayError` or OSError."""
        media = call.media
        if media is None or media.closed:
            raise RelayError(f"call {call.id} has no media")
        return media.open_spare(side)

    def discard_spare(self, call: Call, spare: MediaLeg) -> None:
        """Give back a spare nobody took (nothing when `replace_leg` adopted it)."""
        if call.media is not None:
            call.media.discard_spare(spare)

    async def replace_leg(
        self,
        old: Leg,
        new: Leg,
        answer: SessionDescription,
        *,
        spare: MediaLeg | None = None,
        keep_old: bool = False,
    ) -> bool:
        """``new`` (answered, with ``answer``) takes ``old``'s place in its call.

        The relay moves ``old``'s side to ``new`` (``spare`` when it was offered one), so the
        other party hears one continuous stream and its dialog is never touched; then the model
        swaps the legs and ``old`` gets a BYE. False when the call ended meanwhile (``new`` is
        then not adopted: hang it up). Raises `RelayError` or OSError when the relay refuses.

        ``keep_old``: no BYE; ``old``'s dialog stays up, detached from the media, until its
        device hangs up (its BYE then ends only that dialog) or the call ends (it gets a BYE
        with the rest). Meanwhile its offers get 488, its digits and INFO are answered and
        dropped, and no session timer runs on it.
        """
        call = old.call
        remote = call.other(old)
        media = call.media
        audio = answer.audio()
        remote_sdp = remote.remote_sdp if remote is not None else None
        remote_audio = remote_sdp.audio() if remote_sdp is not None else None
        if media is None or media.closed or audio is None or remote_audio is None:
            raise RelayError(f"call {call.id} has no media to move")
        rtp, rtcp = media_target(answer)
        codecs = audio.codecs()
        await media.switch_leg(
            old.side,
            rtp,
            rtcp,
            codecs=codecs,
            payload_map_in=payload_type_map(codecs, remote_audio.codecs()),
            payload_map_out=payload_type_map(remote_audio.codecs(), codecs),
            spare=spare,
        )
        new.remote_sdp = answer
        if not call.active:
            return False
        # The new device takes the old one's place; only the old device's dialog is closed.
        new.role = old.role
        if old is call.caller:
            call.caller = new
        else:
            call.callee = new
        call.branches = [b for b in call.branches if b is not old]
        self._digits.drop(old)
        if keep_old and old.state is LegState.CONFIRMED:
            self._timers.stop(old)
            self._detached[old] = None
            return True
        self.hang_up(old)
        self.release(old)
        return True

    def move_leg(self, leg: Leg, into: Call, side: Side) -> None:
        """``leg`` (answered, in another call) leaves its call for ``into``, to take ``side``
        there with `replace_leg` next (a REFER with Replaces joining two calls' far parties).

        Its dialog, transactions and timers stay as they are; the call it leaves keeps a stand-in
        with the device's name for its record (never sent anything), so ending that call later
        sends ``leg`` nothing. Its media is the feature's to have moved first (`reoffer`)."""
        old = leg.call
        stand_in = Leg(old, leg.role, leg.side, leg.device, leg.party)
        stand_in.state = LegState.TERMINATED
        if old.caller is leg:
            old.caller = stand_in
        if old.callee is leg:
            old.callee = stand_in
        old.branches = [stand_in if branch is leg else branch for branch in old.branches]
        self._digits.drop(leg)
        leg.call = into
        leg.side = side

    def adopt(
        self,
        request: Request,
        txn: ServerTransaction,
        source: Source,
        *,
        device: str,
        replacing: Leg,
        answer: SessionDescription,
    ) -> bool:
        """An INVITE from ``device`` takes ``replacing``'s place in its answered call (a phone's
        INVITE with Replaces; later a pull): a new leg with the INVITE's dialog answers 200 with
        ``answer`` (the staying party's media, as the device may see it) through a spare relay
        leg, and once the device's offer is in the relay, ``replacing`` gets a BYE. The other
        party's dialog is never touched. False (nothing sent) when the call cannot take it; the
        caller of this answers the INVITE then."""
        call = replacing.call
        try:
            offer = parse_body(request)
        except SdpError:
            return False
        if not call.active or call.media is None or offer is None or offer.audio() is None:
            return False
        try:
            spare = call.media.open_spare(replacing.side)
        except (RelayError, OSError):
            return False
        leg = Leg(call, replacing.role, replacing.side, device, replacing.party)
        try:
            leg.dialog = Dialog.as_uas(
                request, source, local_tag=new_tag(), endpoint=self._endpoint(source)
            )
        except DialogError:
            call.media.discard_spare(spare)
            return False
        leg.invite_cseq = request.cseq.number
        leg.remote_sdp = offer
        leg.peer_allows_update = supports(request, "update", "Allow")
        ok = make_response(
            request,
            200,
            to_tag=leg.dialog.local_tag,
            body=self._offers.sdp_for(leg, answer, spare.local_rtp.port),
        )
        ok.headers.add("Contact", leg.dialog.endpoint.contact)
        ok.headers.add("Content-Type", SDP)
        leg.state = LegState.CONFIRMED
        leg.ack_pending = True
        self._dialogs[leg.dialog.key] = leg
        if isinstance(txn, InviteServerTransaction):
            txn.on_ack_timeout = partial(self._ack_timeout, leg.dialog.key)
        self.respond(txn, ok)

        async def take_over() -> None:
            try:
                replaced = await self.replace_leg(replacing, leg, offer, spare=spare)
            except (RelayError, OSError) as exc:
                self.discard_spare(call, spare)
                self.hang_up(leg)
                self.release(leg)
                _LOGGER.info("Call %s: %s could not take over: %s", call.id, device, exc)
                return
            if not replaced:
                self.hang_up(leg)
                self.release(leg)
                return
            _LOGGER.info("Call %s: %s took over from %s", call.id, device, replacing.device)
            self.publish_state(call)

        self._spawn(take_over())
        return True

    def detached(self, call: Call) -> list[Leg]:
        """Legs of ``call`` that `replace_leg` kept up without media (``keep_old``)."""
        return [leg for leg in self._detached if leg.call is call]

    def hold(self, leg: Leg, play: Playback | None = None) -> Playing:
        """Hold ``leg`` at the PBX, without SIP: its audio is dropped, the other side hears
        ``play`` (music by default) until `resume`. Raises `RelayError` without media."""
        return self._media_of(leg).hold(leg.side, play)

    def resume(self, leg: Leg) -> None:
        """End a `hold`: both sides hear each other again."""
        media = leg.call.media
        if media is not None:
            media.resume(leg.side)

    def play(self, leg: Leg, play: Playback) -> Playing:
        """Play generated audio to ``leg``'s device instead of the other side's audio."""
        return self._media_of(leg).leg(leg.side).play(play)

    def collect(
        self, leg: Leg, settings: CollectSettings, *, prompt: Playback | None = None
    ) -> asyncio.Future[CollectResult]:
        """Collect digits ``leg``'s device keys (RFC 4733 or INFO), optionally over a prompt."""
        return self._media_of(leg).collect(leg.side, settings, prompt=prompt)

    def request(
        self,
        leg: Leg,
        method: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        extra: Sequence[tuple[str, str]] = (),
        on_response: Callable[[Response], None] | None = None,
        on_timeout: Callable[[], None] | None = None,
    ) -> None:
        """Send ``method`` (re-INVITE, UPDATE, NOTIFY, INFO ...) in ``leg``'s confirmed dialog."""
        dialog = leg.dialog
        if dialog is None or dialog.terminated or leg.state is not LegState.CONFIRMED:
            raise DialogError(f"{leg} has no confirmed dialog")
        request = dialog.create_request(
            method, body=body, content_type=content_type, extra=tuple(extra)
        )
        self.send_in_dialog(leg, request, on_response, on_timeout)

    def open_media(self, name: str) -> MediaSession:
        """A media session of a feature's own, apart from any call's: two relay legs ("a", "b")
        for a side conversation (an attended transfer's consultation). The feature sets its legs
        up from the SDP it exchanges (`reoffer`, `ring` with ``port``) and closes it. Raises
        `RelayError` or OSError."""
        return self._relay.open_session(name)

    def reoffer(
        self, leg: Leg, offer: SessionDescription, *, port: int
    ) -> asyncio.Future[SessionDescription | None]:
        """Send ``leg``'s device a re-INVITE offering ``offer`` through relay ``port``.

        For a feature that moves a device's media to another relay leg (its own session's, or a
        spare) without changing its dialog. The 2xx is ACKed here; the future resolves to the
        device's answer (its `Leg.remote_sdp` from then on), or None when it refused, did not
        answer, gave no usable SDP, or an offer was already under way in the dialog. The relay
        itself is the feature's to point at the answer.
        """
        future: asyncio.Future[SessionDescription | None] = (
            asyncio.get_running_loop().create_future()
        )
        dialog = leg.dialog
        if (
            dialog is None
            or dialog.terminated
            or leg.state is not LegState.CONFIRMED
            or leg.incoming_offer
            or leg.outgoing_offer
        ):
            future.set_result(None)
            return future
        body = self._offers.sdp_for(leg, offer, port)
        request = dialog.create_request("INVITE", body=body, content_type=SDP, extra=_ALLOW)
        cseq = request.cseq.number
        leg.outgoing_offer = True

        def on_response(response: Response) -> None:
            if response.status < 200:
                return
            leg.outgoing_offer = False
            answer: SessionDescription | None = None
            if response.status < 300 and not dialog.terminated:
                ack = dialog.create_ack(cseq)
                leg.ack_sent[cseq] = ack
                self.send_ack(ack, dialog)
                dialog.refresh_target(response)
                try:
                    answer = parse_body(response)
                except SdpError:
                    answer = None
                if answer is not None and answer.audio() is not None:
                    leg.remote_sdp = answer
                else:
                    answer = None
            if not future.done():
                future.set_result(answer)

        def on_timeout() -> None:
            leg.outgoing_offer = False
            if not future.done():
                future.set_result(None)

        self.send_in_dialog(leg, request, on_response, on_timeout)
        return future

    def mute(self, leg: Leg, muted: bool = True) -> None:
        """Drop (or, with False, forward again) what ``leg``'s device sends, at the relay and
        without SIP, and play nothing instead: for a device whose far end is elsewhere for a
        while (the held party of an attended transfer, while the transferring device talks to
        the target on a session of its own)."""
        media = leg.call.media
        if media is not None and not media.closed:
            media.leg(leg.side).muted = muted

    def hangup_leg(self, leg: Leg) -> None:
        """End one leg: BYE when answered, CANCEL while it rings; the call goes on."""
        if leg.state is LegState.CONFIRMED:
            self.hang_up(leg)
        else:
            self.cancel_branch(leg)
        self.release(leg)

    def publish_state(self, call: Call) -> None:
        """Tell subscribers the call changed (its devices), though its state did not."""
        self._publish_state(call, call.state)

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run ``coroutine`` as a task the controller cancels when it closes."""
        self._spawn(coroutine)

    def in_call(self, device: str) -> bool:
        """Whether ``device`` is in a call in progress in any way: dialing, ringing (a set-up's
        branch, a flip's, push's or transfer's target), talking, held (`sip_core.call.activity`).
        Such a device is not offered as a target (flip, push, pull, ring groups)."""
        return bool(self.activities(device))

    def activities(self, device: str) -> list[DeviceInCall]:
        """What ``device`` does in each call in progress it is in (`sip_core.call.activity`)."""
        calls: dict[Call, None] = {}
        for call in self._calls.values():
            if call.active and any(leg.device == device for leg in call.legs()):
                calls[call] = None
        for leg in self._dialogs.values():
            if leg.device == device and leg.call.active:
                calls[leg.call] = None
        if not calls:
            return []
        return [
            party
            for call, added in self._added_legs(calls).items()
            for party in call_parties(call, added)
            if party.device == device
        ]

    def device_activity(self, device: str) -> DeviceActivity | None:
        """What ``device`` does in its busiest call in progress, None when it is in none."""
        found = busiest(self.activities(device))
        return found.activity if found is not None else None

    def call_parties(self, call: Call) -> list[DeviceInCall]:
        """Every device in ``call`` with its activity: the call's own legs and the live legs
        only call control knows of (an operation's, a flip's kept-up one)."""
        return call_parties(call, self._added_legs((call,))[call])

    def all_call_parties(self) -> dict[Call, list[DeviceInCall]]:
        """`call_parties` of every call in progress, oldest first, in one pass over the legs."""
        added = self._added_legs(self._calls.values())
        return {call: call_parties(call, legs) for call, legs in added.items()}

    def _added_legs(self, calls: Iterable[Call]) -> dict[Call, list[Leg]]:
        """For each of ``calls``, its live legs that are not the call's own (caller, answered
        leg, branches): those in the dialog index (an operation's) and those a flip kept up."""
        own = {call: set(call.legs()) for call in calls}
        added: dict[Call, list[Leg]] = {call: [] for call in own}
        for leg in itertools.chain(self._dialogs.values(), self._detached):
            legs = own.get(leg.call)
            if legs is not None and leg not in legs and leg not in added[leg.call]:
                added[leg.call].append(leg)
        return added

    def answer_incoming(
        self,
        call: Call,
        request: Request,
        txn: ServerTransaction,
        source: Source,
        *,
        role: LegRole,
        side: Side,
        device: str,
        party: str,
        answer: SessionDescription,
        port: int,
        on_ack: Callable[[Leg], None],
        on_ack_timeout: Callable[[Leg], None],
    ) -> Leg:
        """Answer an INVITE that is not a call of its own (a pull) as a new leg of ``call``.

        The device's 200 carries ``answer`` (in the device's own payload numbering) pointed at
        the relay's ``port`` on ``side`` (a spare, until `replace_leg` adopts it); the leg's
        dialog is indexed, so its ACK, BYE and re-INVITEs find it. ``on_ack`` runs when the ACK
        comes, ``on_ack_timeout`` when it never does (the leg is not part of the call yet: the
        call stays as it was). Raises `DialogError` for an INVITE no dialog can be made from.
        """
        leg = Leg(call, role, side, device, party)
        leg.dialog = Dialog.as_uas(
            request, source, local_tag=new_tag(), endpoint=self._endpoint(source)
        )
        leg.remote_sdp = answer
        leg.invite_cseq = request.cseq.number
        leg.peer_allows_update = supports(request, "update", "Allow")
        if isinstance(txn, InviteServerTransaction):
            leg.server_txn = txn
            txn.on_ack_timeout = lambda _response: on_ack_timeout(leg)
        self._dialogs[leg.dialog.key] = leg
        self._ack_waiters[leg.dialog.key] = on_ack
        ok = make_response(
            request,
            200,
            to_tag=leg.dialog.local_tag,
            body=self._offers.sdp_for(leg, answer, port),
        )
        ok.headers.add("Contact", leg.dialog.endpoint.contact)
        ok.headers.add("Content-Type", SDP)
        leg.state = LegState.CONFIRMED
        leg.ack_pending = True
        self.respond(txn, ok)
        return leg

    def let_go(self, leg: Leg) -> None:
        """A leg that never became part of its call (an `answer_incoming` leg whose pull
        failed): BYE it if it is answered, and forget it."""
        self._ack_waiters.pop(leg.dialog.key if leg.dialog is not None else ("", ""), None)
        if leg.server_txn is not None:
            leg.server_txn.on_ack_timeout = None
        self.hangup_leg(leg)

    def early_media(self, call: Call, leg: Leg, response: Response) -> None:
        """A ringing leg of an unanswered call sent a provisional response: the caller hears
        it (180/183, with early media), as from the call's own devices."""
        self._early(call, leg, response)

    def connect(self, call: Call, leg: Leg, response: Response) -> None:
        """``leg`` (rung by a feature for an unanswered call, its 2xx confirmed) answers the
        call: the caller gets its 200, as when one of the call's own devices answers."""
        self._answered(call, leg, response)

    def refuse_with(
        self,
        request: Request,
        txn: ServerTransaction,
        status: int,
        why: str,
        play: Playback,
        *,
        longest: float = 5.0,
    ) -> None:
        """Refuse an INVITE that is no call (a refused pull), the caller hearing why first.

        ``play`` (an error tone, a prompt) goes to the caller as early media -- a 183 whose SDP
        answers its offer with a relay port of a short-lived media session -- and the final
        ``status`` follows when it has played (``longest`` seconds at most). Without an offer
        the PBX can answer, the status goes at once.
        """
        answered = self._tone_session(request, txn, "refusal")
        if answered is None:
            self.reply(txn, request, status, why)
            return
        media, endpoint, body = answered
        to_tag = new_tag()
        progress = make_response(request, 183, to_tag=to_tag, body=body)
        progress.headers.add("Contact", endpoint.contact)
        progress.headers.add("Content-Type", SDP)
        self.respond(txn, progress)
        playing = media.a.play(play)

        async def final() -> None:
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(playing.done), longest)
            finally:
                if is_open(txn):
                    self.reply(txn, request, status, why, to_tag=to_tag)
                media.close()

        self._spawn(final())

    def answer_with(
        self,
        request: Request,
        txn: ServerTransaction,
        play: Playback,
        *,
        longest: float = 5.0,
        status_without_media: int = 480,
        why: str = "",
    ) -> None:
        """Answer an INVITE that is no call (a code that did what it asked), play ``play`` to
        the caller, then hang up: 200, the tone, BYE.

        Why answered rather than refused: desk phones show an answered call that the other end
        hung up as a finished call, where a 4xx/6xx after early media shows as a failure. The
        BYE waits for the ACK (RFC 3261 §15) and for the playback (``longest`` seconds at most);
        a BYE from the phone first is answered and ends it. Without an SDP offer the PBX can
        answer, the INVITE gets ``status_without_media`` with ``why`` at once.
        """
        answered = self._tone_session(request, txn, "code")
        if answered is None or not isinstance(txn, InviteServerTransaction):
            self.reply(txn, request, status_without_media, why)
            return
        media, endpoint, body = answered
        to_tag = new_tag()
        try:
            dialog = Dialog.as_uas(request, txn.source, local_tag=to_tag, endpoint=endpoint)
        except DialogError as exc:
            media.close()
            self.reply(txn, request, 400, str(exc))
            return
        ok = make_response(request, 200, to_tag=to_tag, body=body)
        ok.headers.add("Contact", endpoint.contact)
        ok.headers.add("Content-Type", SDP)
        pending = _AnsweredCode(dialog, asyncio.get_running_loop().create_future())
        self._answered_codes[dialog.key] = pending
        txn.on_ack_timeout = lambda _response: pending.acked(False)
        self.respond(txn, ok)
        playing = media.a.play(play)
        pending.playing = playing

        async def finish() -> None:
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(playing.done), longest)
                playing.stop()
                acked = await pending.ack
                if not dialog.terminated and acked:
                    dialog.terminated = True
                    bye = dialog.create_request("BYE")
                    txn_bye = self._txns.send_request(
                        bye, dialog.destination, dialog.kind, on_response=ignore, on_timeout=nothing
                    )
                    txn_bye.release_messages()
            finally:
                self._answered_codes.pop(dialog.key, None)
                media.close()

        self._spawn(finish())

    def _tone_session(
        self, request: Request, txn: ServerTransaction, purpose: str
    ) -> tuple[MediaSession, LocalEndpoint, bytes] | None:
        """A short-lived media session answering ``request``'s SDP offer, for a tone or prompt
        the PBX plays to a phone whose INVITE is no call (`refuse_with`, `answer_with`): the
        session, our endpoint towards the phone and the SDP answer. None when there is no offer
        to answer (no SDP, no audio, not an INVITE transaction) or no media session to be had."""
        try:
            offer = parse_body(request)
        except SdpError:
            offer = None
        audio = offer.audio() if offer is not None else None
        if offer is None or audio is None or not isinstance(txn, InviteServerTransaction):
            return None
        try:
            media = self._relay.open_session(f"{purpose}-{new_call_id()}")
        except (RelayError, OSError):
            return None
        rtp, rtcp = media_target(offer)
        media.a.set_remote(rtp, rtcp)
        media.a.set_codecs(audio.codecs())
        endpoint = self._endpoint(txn.source)
        host = endpoint.host
        kind = "IP6" if ":" in host else "IP4"
        origin = Origin("callflip", str(first_cseq()), 1, "IN", kind, host)
        ports = [media.a.local_rtp.port if m is audio else None for m in offer.media]
        body = rewrite_for_relay(offer, host, ports, origin=origin).to_bytes()
        return media, endpoint, body

    def _answered_code_request(self, request: Request, txn: ServerTransaction) -> bool:
        """A request in the dialog of an INVITE `answer_with` answered: a BYE ends it early,
        anything else is answered as the nothing it is."""
        pending = self._answered_codes.get((request.call_id, request.to.tag or ""))
        if pending is None:
            return False
        if request.method == "BYE":
            pending.dialog.terminated = True
            pending.acked(True)
            if pending.playing is not None:
                pending.playing.stop()
            self.reply(txn, request, 200)
        elif request.method in ("INFO", "OPTIONS", "UPDATE") and not request.body:
            self.reply(txn, request, 200)
        else:
            self.reply(txn, request, 488 if request.method == "INVITE" else 405, "no call here")
        return True

    def _media_of(self, leg: Leg) -> MediaSession:
        media = leg.call.media
        if media is None or media.closed:
            raise RelayError(f"call {leg.call.id} has no media")
        return media

    def _digit_sink(self, leg: Leg, pass_on: Callable[[str], None]) -> DigitSink | None:
        factory = self.hooks.digit_sink
        return factory(leg, pass_on) if factory is not None else None

    def hangup(self, call_id: str, reason: str = "hung up by the PBX") -> bool:
        """End a call from outside (Home Assistant); false if there is no such call."""
        call = self._calls.get(call_id)
        if call is None or not call.active:
            return False
        outcome = CallOutcome.ANSWERED if call.answered else CallOutcome.CANCELLED
        self.terminate(call, outcome, reason, status=480)
        return True

    def close(self) -> None:
        """End every call (BYE/CANCEL sent, best effort) and stop every timer: the PBX stops."""
        for call in list(self._calls.values()):
            self.terminate(call, CallOutcome.FAILED, "the PBX is stopping", status=503)
        for task in list(self._tasks):
            task.cancel()

    def open_counts(self) -> dict[str, int]:
        """What call control holds open (calls, dialogs, INVITEs, digit collectors, tasks), for
        leak checks: all zero once every call has ended."""
        return {
            "calls": len(self._calls),
            "dialogs": len(self._dialogs),
            "invites": len(self._invites),
            "collectors": self._digits.open_sinks(),
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
            self.reply(txn, request, 481, "no such dialog")

    def stray_response(self, response: Response, source: Source) -> None:
        """A 2xx to INVITE after its transaction ended: resend our ACK (or ACK and BYE it)."""
        if response.status // 100 != 2 or response.cseq.method != "INVITE":
            return
        leg = self._dialogs.get((response.call_id, response.from_.tag or ""))
        if leg is None:
            return
        ack = leg.ack_sent.get(response.cseq.number)
        if ack is not None and leg.dialog is not None:
            self.send_ack(ack, leg.dialog)

    # -- helpers: sending ------------------------------------------------------------------------

    def reply(
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
        self.respond(txn, response)

    def respond(self, txn: ServerTransaction, response: Response) -> None:
        self._responder(txn, response)

    def ack_again(self, leg: Leg, response: Response) -> bool:
        """Whether ``response`` is a 2xx of the dialog ``leg`` already has: its retransmission
        means our ACK was lost, so the ACK (if sent yet) goes again and nothing else happens."""
        dialog = leg.dialog
        if dialog is None or dialog.remote_tag != response.to.tag:
            return False
        ack = leg.ack_sent.get(response.cseq.number)
        if ack is not None:
            self.send_ack(ack, dialog)
        return True

    def send_ack(self, ack: Request, dialog: Dialog) -> None:
        self._send_ack_to(ack, dialog.destination, dialog.kind)

    def _send_ack_to(self, ack: Request, destination: Address, kind: TransportKind) -> None:
        """An ACK of a 2xx goes straight to the transport (it has no transaction, §17.1.1.3)."""
        try:
            self._txns.transport.send_request(ack, destination, kind)
        except Exception as exc:  # a lost ACK is recovered when the 2xx comes again
            _LOGGER.info("Cannot send ACK for %s: %s", ack.call_id, exc)

    def send_in_dialog(
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
            on_response=on_response or ignore,
            on_timeout=on_timeout or nothing,
        )
        txn.release_messages()  # the handlers keep what they need

    def hang_up(self, leg: Leg) -> None:
        dialog = leg.dialog
        self._stop_leg_timers(leg)
        if dialog is None or dialog.terminated:
            leg.state = LegState.TERMINATED
            return
        dialog.terminated = True
        leg.state = LegState.TERMINATED
        bye = dialog.create_request("BYE")
        self.send_in_dialog(leg, bye)

    def _endpoint(self, source: Source) -> LocalEndpoint:
        port = self._local_port()
        if source.kind is TransportKind.TLS and self._tls_port is not None:
            port = self._tls_port() or port
        nat = self._ingress.endpoint_for(source, port) if self._ingress else None
        if nat is not None:  # a trunk's public_address (sip_core.trunk.nat)
            return nat
        host = source.local.host
        if host in _UNSPECIFIED:
            host = self._route_host(source.remote.host)
        return LocalEndpoint(host, port, source.kind)

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

    def learn_sdp(self, leg: Leg, sdp: SessionDescription) -> None:
        """A device described its media: the relay sends its audio there (`Negotiation`)."""
        self._offers.learn_sdp(leg, sdp)

    # -- set-up ----------------------------------------------------------------------------------

    def _on_invite(self, request: Request, txn: ServerTransaction, source: Source) -> None:
        config = self._config()
        # A trunk's INVITE is recognised by its source and routed by its DID, not challenged.
        inbound = self._ingress.route(request, source) if self._ingress is not None else None
        if isinstance(inbound, InboundRefusal):
            _LOGGER.info("Call from trunk %s rejected: %s", inbound.trunk, inbound.reason)
            self.reply(txn, request, inbound.status, inbound.reason)
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
            self.reply(txn, request, 483, "too many hops")
            return
        replaces_hook = self.hooks.invite_replaces
        if (
            replaces_hook is not None
            and request.headers.get("Replaces") is not None
            and replaces_hook(request, txn, source)
        ):
            return
        wanted: Destination | None
        if inbound is not None:
            user = next((u for u in config.users if u.name == inbound.callee_user), None)
            wanted = Destination(user, tuple(inbound.devices)) if user is not None else None
        else:
            wanted = destination(config, caller_device, dialled)
        outbound: OutboundTarget | None = None
        route_hook = self.hooks.route_number
        ring_plan = (
            route_hook(caller_device, dialled)
            if wanted is None and inbound is None and route_hook is not None
            else None
        )
        if inbound is not None and inbound.group is not None and route_hook is not None:
            group = config.group(inbound.group)  # a DID that rings a group: as its pilot does
            ring_plan = route_hook(caller_device, group.pilot) if group is not None else None
        if wanted is None and inbound is None and ring_plan is None:
            code_hook = self.hooks.dialled_code
            if code_hook is not None and code_hook(request, txn, caller_device, dialled):
                return
            if self._egress is not None:
                is_code = self.hooks.is_code
                plan = self._egress.plan(
                    dialled,
                    caller_user.name if caller_user else None,
                    internal=is_code is not None and is_code(dialled),
                )
                if isinstance(plan, OutboundRefusal):
                    _LOGGER.info(
                        "Call from %s to %s refused: %s", caller_device, dialled, plan.reason
                    )
                    self.reply(txn, request, plan.status, plan.reason)
                    return
                outbound = plan
        if wanted is None and outbound is None and ring_plan is None:
            _LOGGER.info(
                "Call from %s to %s rejected with 404: unknown number", caller_device, dialled
            )
            self.reply(txn, request, 404, "unknown number")
            return
        try:
            # Call Forward Always: each forward followed, loops cut (sip_core.presence).
            devices = (
                ring_plan.devices
                if ring_plan is not None  # a group rings its members themselves, not forwards
                else self.follow_forwards(wanted.devices if wanted else ())
            )
        except ForwardingLoop as loop:
            _LOGGER.info("Call from %s to %s rejected with 482: %s", caller_device, dialled, loop)
            self.reply(txn, request, 482, str(loop))
            return
        callee_user = wanted.user if wanted is not None else None
        callee_name = callee_user.name if callee_user else ring_plan.name if ring_plan else ""
        expires = session_expires(request)
        if expires is not None and expires[0] < MIN_SESSION_EXPIRES:
            self.reply(
                txn,
                request,
                422,
                "session interval too small",
                headers=(("Min-SE", str(MIN_SESSION_EXPIRES)),),
            )
            return
        try:
            offer = parse_body(request)
        except SdpError as exc:
            _LOGGER.info("Call from %s to %s rejected with 488: %s", caller_device, dialled, exc)
            self.reply(txn, request, 488, "unreadable SDP")
            return
        if offer is None or offer.audio() is None:
            _LOGGER.info(
                "Call from %s to %s rejected with 488: the INVITE offers no audio (a delayed "
                "offer is not supported for incoming calls)",
                caller_device,
                dialled,
            )
            self.reply(txn, request, 488, "an SDP offer with audio is required")
            return
        targets = ringable(
            devices, busy=self._unavailable, bindings=self._bindings, caller=caller_device
        )
        if (
            not targets.bindings
            and outbound is None
            and (ring_plan is None or ring_plan.on_no_answer is None)
        ):
            if targets.busy:
                status, why = 486, "busy"
            else:
                status, why = 480, "no device registered"
            _LOGGER.info(
                "Call from %s to %s rejected with %d: %s", caller_device, dialled, status, why
            )
            self.reply(txn, request, status, why)
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
            caller_party = name_address(
                inbound.caller_name, f"sip:{inbound.caller_number}@{domain}"
            )
        elif caller_user is not None:
            caller_party = name_address(caller_user.name, f"sip:{caller_user.extension}@{domain}")
        else:
            caller_party = f"<sip:{caller_device}@{domain}>"
        caller = Leg(call, LegRole.CALLER, "a", caller_device, caller_party)
        try:
            caller.dialog = Dialog.as_uas(
                request, source, local_tag=new_tag(), endpoint=self._endpoint(source)
            )
        except DialogError as exc:
            self.reply(txn, request, 400, str(exc))
            return
        if isinstance(txn, InviteServerTransaction):
            caller.server_txn = txn
        caller.remote_sdp = offer
        caller.invite_cseq = request.cseq.number
        caller.session = negotiate_session_timer(request)
        caller.peer_allows_update = supports(request, "update", "Allow")
        call.caller = caller
        self._calls[call.id] = call
        self._invites[txn] = call
        self._dialogs[caller.dialog.key] = caller
        # By the call's id, not the call: the transaction outlives the call by up to 64*T1.
        txn.on_timeout = partial(self._caller_unreachable, call.id)
        self.reply(txn, request, 100)
        self._publish_state(call, None)
        # At once, not as a task: a task would wait for the loop's current batch of datagrams
        # (up to 64 of them), which was most of a call's set-up time under load.
        if callee_user is None and ring_plan is None:
            self._ring(call, (), f"<sip:{dialled}@{domain}>", outbound=(outbound, source.local))
            return
        if ring_plan is not None:
            self._plans[call.id] = ring_plan
        self._ring(call, targets.bindings, name_address(callee_name, f"sip:{dialled}@{domain}"))
        if ring_plan is not None and call.active and call.callee is None and not call.branches:
            self._no_answer(call)  # nobody of the group may ring: its no-answer rule at once

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
            self.reply(txn, request, 400, reason.value)
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
        self.respond(txn, response)

    def _unavailable(self, device: str) -> bool:
        """Whether ``device`` answers busy: in a call, or in Do Not Disturb or Make Busy."""
        states = self.presence.states(device)
        return states.dnd or states.make_busy or self._busy(device)

    def _busy(self, device: str) -> bool:
        """In a call other than only being rung for it (`DeviceActivity.engaged`)."""
        return any(party.activity.engaged for party in self.activities(device))

    def _ring(
        self,
        call: Call,
        targets: Sequence[Binding],
        callee_party: str,
        *,
        outbound: tuple[OutboundTarget | None, Address] | None = None,
    ) -> None:
        try:
            media = self._relay.open_session(call.id)
        except (RelayError, OSError) as exc:
            _LOGGER.error("Call %s: no media relay ports: %s", call.id, exc)
            self.terminate(call, CallOutcome.FAILED, f"media relay: {exc}", status=503)
            return
        if not call.active:
            media.close()
            return
        call.media = media
        media.on_dtmf = lambda side, digit: self._digits.on_rtp(call, side, digit)
        # The media engine died: the call has no audio any more, so it ends (BYE to each side).
        media.on_lost = lambda why: self.terminate(call, CallOutcome.FAILED, why, status=503)
        # A phone stopped sending (gone without a BYE): the call ends the same way.
        media.on_timeout = lambda side, seconds: self.terminate(
            call, CallOutcome.FAILED, f"no media for {seconds:g} s", status=408
        )
        # Every device may dial the flip code: its telephone-events stop at the relay, and the
        # digits that are not a code are sent on again by `Digits.pass_digit`.
        media.a.swallow_dtmf = media.b.swallow_dtmf = True
        caller = call.caller
        assert caller is not None
        assert caller.remote_sdp is not None
        self.learn_sdp(caller, caller.remote_sdp)
        fork = self.ring(
            call,
            targets,
            role=LegRole.CALLEE,
            side="b",
            party=callee_party,
            presented=caller.party,
            offer=caller.remote_sdp,
            on_early=partial(self._early, call),
            on_answer=partial(self._answered, call),
            on_fail=partial(self._ring_failed, call),
            on_timeout=partial(self._no_answer, call),
            legs=call.branches,
        )
        target, local = outbound if outbound is not None else (None, None)
        if target is not None and local is not None and call.active and fork.deciding:
            leg = Leg(call, LegRole.CALLEE, "b", trunk_device(target.trunk), callee_party)
            offer = caller.remote_sdp
            fork.add(leg, self._trunk_sender(leg, target, local, offer))
        if call.active and call.callee is None:
            self._ringing[call.id] = fork
            plan = self._plans.get(call.id)
            if plan is not None and plan.on_ringing is not None:
                plan.on_ringing(call, fork)
            timeout = plan.timeout if plan is not None else self._config().calls.no_answer_timeout
            fork.start_timer(timeout)

    def send_branch_invite(
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
            body=self._offers.sdp_for(leg, offer, port),
            content_type=SDP,
            extra=_ALLOW,
        )
        limit_hops(invite, leg.call.hops)
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

    def plan_outbound(
        self, dialled: str, user: str | None
    ) -> OutboundTarget | OutboundRefusal | None:
        """Where ``dialled`` goes out through a trunk when ``user`` (a user's name) dials it: the
        dial plan and the permission to call out, as for a call; None when nothing sends it out
        (no trunks, no route, or a feature code)."""
        if self._egress is None:
            return None
        is_code = self.hooks.is_code
        return self._egress.plan(dialled, user, internal=is_code is not None and is_code(dialled))

    def ring_trunk(
        self,
        fork: ForkGroup,
        call: Call,
        target: OutboundTarget,
        *,
        role: LegRole,
        side: Side,
        party: str,
        offer: SessionDescription,
        port: int | None = None,
    ) -> None:
        """Add a branch to ``fork`` that rings ``target`` through its trunk for ``call`` (a
        feature's, such as a blind transfer to an outside number), with ``offer`` rewritten to
        the relay's ``port`` (None: ``side``'s current one)."""
        if not call.active or not fork.deciding:
            return
        leg = Leg(call, role, side, trunk_device(target.trunk), party)
        local = Address("", self._local_port())  # unspecified: our address on the route
        fork.add(leg, self._trunk_sender(leg, target, local, offer, port))

    def _trunk_sender(
        self,
        leg: Leg,
        target: OutboundTarget,
        local: Address,
        offer: SessionDescription,
        port: int | None = None,
    ) -> BranchSender:
        """What rings the provider for ``leg`` in a fork (`ForkGroup.add`): the number at the
        trunk's domain, from its caller ID, sent from our address ``local``."""

        def send(on_response: Callable[[Response], None], on_failed: Callable[[int], None]) -> None:
            invite = self._trunk_invite(leg, target, local, offer, port)
            self._send_trunk_request(_TrunkBranch(leg, target, invite, on_response, on_failed))

        return send

    def _trunk_invite(
        self,
        leg: Leg,
        target: OutboundTarget,
        local: Address,
        offer: SessionDescription,
        port: int | None = None,
    ) -> Request:
        """``leg``'s INVITE to the provider, with its provisional dialog and `SentInvite`."""
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
            body=self._offers.sdp_for(leg, offer, port),
            content_type=SDP,
            extra=_ALLOW,
        )
        limit_hops(invite, leg.call.hops)
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
        return invite

    def _send_trunk_request(self, branch: _TrunkBranch) -> None:
        branch.leg.client_txn = self._txns.send_request(
            branch.invite,
            branch.target.destination,
            branch.target.kind,
            on_response=partial(self._trunk_response, branch),
            on_timeout=partial(branch.on_failed, 408),
        )

    def _trunk_response(self, branch: _TrunkBranch, response: Response) -> None:
        """A provider's answer: a 401/407 is answered (twice at most), the rest as any branch's."""
        if response.status not in (401, 407):
            branch.on_response(response)
            return
        leg, target, invite = branch.leg, branch.target, branch.invite
        call = leg.call
        # A call's own branch is moot once someone answered; a feature's (a transfer's) is
        # ended by its feature when it stops waiting.
        answered = leg.role is LegRole.CALLEE and call.callee is not None
        if leg.state is LegState.TERMINATED or not call.active or answered:
            return
        outcome = target.digest.handle(invite, response)
        if outcome is AuthOutcome.RETRY and branch.challenges < 2:
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
            self._send_trunk_request(
                dc_replace(branch, invite=again, challenges=branch.challenges + 1)
            )
            return
        _LOGGER.warning(
            "Call %s: trunk %s refused our credentials (%s)", call.id, target.trunk, outcome
        )
        branch.on_failed(503)

    def _early(self, call: Call, leg: Leg, response: Response) -> None:
        caller = call.caller
        assert caller is not None
        assert caller.server_txn is not None
        assert caller.dialog is not None
        try:
            sdp = parse_body(response)
        except SdpError as exc:
            _LOGGER.info("Call %s: ignoring bad early SDP from %s: %s", call.id, leg.device, exc)
            sdp = None
        body = b""
        if sdp is not None:
            self.learn_sdp(leg, sdp)
            body = self._offers.sdp_for(caller, sdp)
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
        self.respond(caller.server_txn, relayed)
        if call.state is CallState.SETUP:
            self._set_state(call, CallState.RINGING)

    def reject_late_answer(self, leg: Leg, response: Response) -> None:
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
        self.send_ack(dialog.create_ack(sent.cseq), dialog)
        dialog.terminated = True
        self._txns.send_request(
            dialog.create_request("BYE"),
            dialog.destination,
            dialog.kind,
            on_response=ignore,
            on_timeout=nothing,
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
        txn.on_timeout = nothing

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

    def confirm_answer(self, leg: Leg, response: Response) -> None:
        """A fork's winner: its dialog is the one the 2xx made, and it gets our ACK at once."""
        assert leg.sent_invite is not None
        dialog = leg.sent_invite.dialog(response)
        leg.dialog = dialog
        leg.state = LegState.CONFIRMED
        ack = dialog.create_ack(leg.invite_cseq)
        leg.ack_sent[leg.invite_cseq] = ack
        self.send_ack(ack, dialog)

    def release(self, leg: Leg) -> None:
        """A leg that is over leaves the dialog index, and its INVITE stops naming it."""
        self._forget(leg)
        self._retire(leg)

    def _answered(self, call: Call, leg: Leg, response: Response) -> None:
        """The call's fork has a winner (confirmed, ACKed; the other branches CANCELled)."""
        caller = call.caller
        assert caller is not None
        assert caller.server_txn is not None
        assert caller.dialog is not None
        self._ringing.pop(call.id, None)
        call.branches = [leg]
        try:
            answer = parse_body(response)
        except SdpError:
            answer = None
        if answer is None or answer.audio() is None:
            _LOGGER.info("Call %s: %s answered without usable SDP", call.id, leg.device)
            call.callee = leg
            self.terminate(call, CallOutcome.FAILED, f"{leg.device} answered without SDP", 488)
            return
        self.learn_sdp(leg, answer)
        call.callee = leg
        call.answered_at = self._clock.wall()
        call.answered_device = leg.device
        invite = caller.server_txn.request
        ok = make_response(
            invite, 200, to_tag=caller.dialog.local_tag, body=self._offers.sdp_for(caller, answer)
        )
        ok.headers.add("Contact", caller.dialog.endpoint.contact)
        ok.headers.add("Content-Type", SDP)
        self._timers.headers(caller, ok)
        caller.state = LegState.CONFIRMED
        caller.ack_pending = True
        caller.server_txn.on_ack_timeout = partial(self._ack_timeout, caller.dialog.key)
        self._invites.pop(caller.server_txn, None)
        self.respond(caller.server_txn, ok)
        self._timers.arm(caller)
        self._set_state(call, CallState.TALKING)
        _LOGGER.info(
            "Call %s from %s to %s answered by %s", call.id, caller.device, call.dialled, leg.device
        )

    def cancel_branch(self, leg: Leg) -> None:
        if leg.state is not LegState.TRYING and leg.state is not LegState.EARLY:
            return
        leg.state = LegState.TERMINATED
        txn = leg.client_txn
        if txn is not None:
            txn.cancel()

    def _ring_failed(self, call: Call, summary: ForkSummary) -> None:
        """Every device of the call failed: one answer for the caller."""
        if call.callee is not None or not call.active:
            return
        statuses = summary.statuses
        kind = summary.kind
        if kind is FailureKind.BUSY:
            answer, outcome, why = 486, CallOutcome.BUSY, "busy"
        elif kind is FailureKind.DECLINED:
            answer, outcome, why = 603, CallOutcome.DECLINED, "declined"
        elif kind is FailureKind.UNREACHABLE:
            answer, outcome, why = 480, CallOutcome.UNAVAILABLE, "device unreachable"
        else:
            answer = statuses[0]
            outcome, why = CallOutcome.FAILED, f"devices answered {', '.join(map(str, statuses))}"
        self.terminate(call, outcome, why, status=answer)

    def _no_answer(self, call: Call) -> None:
        plan = self._plans.get(call.id)
        if plan is not None and call.active and call.callee is None:
            fork = self._ringing.pop(call.id, None)
            if fork is not None:
                fork.close()
            if plan.on_no_answer is not None and plan.on_no_answer(call):
                return
            self.terminate(call, CallOutcome.NO_ANSWER, f"nobody in {plan.name} answered", 480)
            return
        if call.active and call.callee is None:
            timeout = self._config().calls.no_answer_timeout
            self.terminate(call, CallOutcome.NO_ANSWER, f"no answer within {timeout} s", 480)

    def _on_cancel(self, cancel_txn: ServerTransaction) -> None:
        invite = cancel_txn.cancelled_transaction
        call = self._invites.get(invite) if invite is not None else None
        if call is None or not call.active or call.callee is not None:
            return
        self.terminate(call, CallOutcome.CANCELLED, "caller hung up before an answer", status=487)

    # -- tear-down -------------------------------------------------------------------------------

    def terminate(
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
        operation = call.operation
        if operation is not None:
            operation.on_call_end()
            call.operation = None  # whatever the feature did: an ended call carries none
        fork = self._ringing.pop(call.id, None)
        if fork is not None:
            fork.stop()
        caller = call.caller
        if call.callee is None or not call.answered:
            if caller is not None and caller.server_txn is not None:
                txn = caller.server_txn
                self._invites.pop(txn, None)
                if caller.state is not LegState.CONFIRMED and is_open(txn):
                    to_tag = caller.dialog.local_tag if caller.dialog else None
                    self.reply(txn, txn.request, status, reason, to_tag=to_tag)
                    caller.state = LegState.TERMINATED
            for leg in call.branches:
                self.cancel_branch(leg)
        self._set_state(call, CallState.ENDING)
        for leg in call.legs():
            if leg is not skip and leg.state is LegState.CONFIRMED:
                self.hang_up(leg)
        self._end(call, outcome, reason)

    def _end(self, call: Call, outcome: CallOutcome, reason: str) -> None:
        self._plans.pop(call.id, None)
        fork = self._ringing.pop(call.id, None)
        if fork is not None:
            fork.stop()
        for leg in self.detached(call):
            del self._detached[leg]
            self.hang_up(leg)
            self.release(leg)
        for leg in call.legs():
            self._stop_leg_timers(leg)
            leg.state = LegState.TERMINATED
            self._digits.drop(leg)
        for leg in (*call.legs(), *call.branches):
            self._forget(leg)
            self._retire(leg)
        if call.media is not None:
            call.media.close()
        call.ended_at = self._clock.wall()
        call.outcome = outcome
        call.reason = reason
        self._calls.pop(call.id, None)
        originated = self._originated.pop(call.id, None)
        if originated is not None and not originated.done():
            originated.set_result(None)  # a call the PBX placed ended unanswered
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
            if is_open(txn):
                # A re-INVITE or UPDATE still waiting when the call ends (BYE during re-INVITE).
                self.reply(txn, txn.request, 487, "the call ended")
        self._timers.stop(leg)

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
            self.terminate(call, CallOutcome.FAILED, "caller unreachable")

    def _ack_missing(self, leg: Leg) -> None:
        call = leg.call
        if call.active and leg.ack_pending:
            self.terminate(call, CallOutcome.ANSWERED, f"no ACK from {leg.device}", skip=None)

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
                call.ended_at if call.state is CallState.ENDED else None,
            )
        )

    # -- in-dialog requests ----------------------------------------------------------------------

    def _in_dialog(self, request: Request, txn: ServerTransaction, to_tag: str) -> None:
        if self._answered_codes and self._answered_code_request(request, txn):
            return
        leg = self._dialogs.get((request.call_id, to_tag))
        dialog = leg.dialog if leg is not None else None
        if leg is None or dialog is None or dialog.terminated:
            self.reply(txn, request, 481, "no such dialog")
            return
        if not dialog.accept_remote_cseq(request):
            self.reply(txn, request, 500, "CSeq out of order", headers=(("Retry-After", "1"),))
            return
        method = request.method
        call = leg.call
        if leg in self._detached:
            self._detached_request(leg, request, txn)
            return
        if method == "BYE":
            self.reply(txn, request, 200)
            dialog.terminated = True
            leg.state = LegState.TERMINATED
            operation = call.operation
            if operation is not None and operation.on_leg_bye(leg):
                return
            outcome = CallOutcome.ANSWERED if call.answered else CallOutcome.CANCELLED
            self.terminate(call, outcome, f"{leg.device} hung up", skip=leg)
        elif method == "UPDATE" and not request.body and leg.state is LegState.CONFIRMED:
            self._timers.local_refresh(leg, request, txn)
        elif method in ("INVITE", "UPDATE"):
            self._offers.offer(leg, request, txn)
        elif method == "INFO":
            self._digits.info(leg, request, txn)
        elif method == "OPTIONS":
            self.reply(txn, request, 200)
        else:
            hook = self.hooks.in_call_request
            if hook is not None and hook(leg, request, txn):
                return
            self.reply(txn, request, 405, f"{method} is not supported in a call")

    def _detached_request(self, leg: Leg, request: Request, txn: ServerTransaction) -> None:
        """A request on a leg kept up after its side moved on (`replace_leg` with keep_old)."""
        method = request.method
        if method == "BYE":
            self.reply(txn, request, 200)
            del self._detached[leg]
            if leg.dialog is not None:
                leg.dialog.terminated = True
            leg.state = LegState.TERMINATED
            self.release(leg)
            _LOGGER.info("Call %s: %s, kept after a flip, hung up", leg.call.id, leg.device)
        elif method == "INVITE" or (method == "UPDATE" and request.body):
            self.reply(txn, request, 488, "this device's call has moved to another device")
        elif method in ("INFO", "OPTIONS", "UPDATE"):
            self.reply(txn, request, 200)
        else:
            self.reply(txn, request, 405, f"{method} is not supported in a call")

    def _on_ack(self, ack: Request) -> None:
        leg = self._dialogs.get((ack.call_id, ack.to.tag or ""))
        if leg is None:
            answered = self._answered_codes.get((ack.call_id, ack.to.tag or ""))
            if answered is not None:
                answered.acked(True)
            return
        leg.ack_pending = False
        self._offers.acked(leg, ack)
        waiter = self._ack_waiters.pop(leg.dialog.key if leg.dialog is not None else ("", ""), None)
        if waiter is not None:
            if leg.server_txn is not None:
                leg.server_txn.on_ack_timeout = None
            waiter(leg)


@dataclass(slots=True)
class _AnsweredCode:
    """An INVITE `CallControl.answer_with` answered: its dialog, whether the ACK came (the
    future: True, or False when it never did), and the playback."""

    dialog: Dialog
    ack: asyncio.Future[bool]
    playing: Playing | None = None

    def acked(self, came: bool) -> None:
        if not self.ack.done():
            self.ack.set_result(came)


def _always() -> bool:
    return True
