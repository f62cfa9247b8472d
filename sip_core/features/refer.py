"""A phone's own transfer button: REFER (RFC 3515) inside a call, handled by the PBX itself.

Why not forward it: the far end of a B2BUA leg is the PBX, and the party the phone wants to pass
on only knows the PBX's dialog; so the PBX does the transfer, with the same rules as the keypad.

- A REFER whose Refer-To is a number of this PBX is a blind transfer (`Transfer.start`, without
  releasing the phone at once): 202, then the implicit subscription's NOTIFYs (``Event: refer``,
  ``message/sipfrag``): ``100 Trying`` at once, and the target's final status once known, with
  ``Subscription-State: terminated``. When the target answers, the phone's dialog gets a BYE (if
  the phone did not hang up already); when it fails, the other party is back with the phone.
  ``Refer-Sub: false`` (RFC 4488) is honoured: no NOTIFYs.
- A REFER whose Refer-To carries Replaces (RFC 3891) naming another dialog of the PBX with the
  same user's device (the phone's attended transfer) joins the two remote parties: the other
  call's party is moved into this call with a re-INVITE to a spare relay leg, and both of the
  phone's dialogs end with a BYE. A remote party the phone had put on hold is offered the
  joined session again (a re-INVITE with sendrecv), so neither is left on hold.
- ``Referred-By`` is kept in the transfer's record.
- Refused with 403 and a log line: a REFER from a device that belongs to no user, to a target
  outside the PBX (another domain, or a number that reaches nobody), or naming a dialog of
  another user's call. A REFER without exactly one readable Refer-To gets 400; one while another
  operation runs on the call gets 491.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from urllib.parse import unquote

from sip_core.call.control import CallControl
from sip_core.call.negotiation import is_hold
from sip_core.calls import (
    Call,
    CallOutcome,
    Leg,
    OperationView,
    TransferKind,
    TransferRecord,
)
from sip_core.dialog import DialogError
from sip_core.events import TransferEnded, TransferStarted
from sip_core.features.transfer import (
    Transfer,
    TransferError,
    TransferNotAllowed,
    UnknownTransferTarget,
)
from sip_core.headers import NameAddress
from sip_core.media import RelayError
from sip_core.message import REASON_PHRASES, ParseError, Request, make_response
from sip_core.sdp import SdpError, offer_for_new_device
from sip_core.transaction import ServerTransaction
from sip_core.uri import SipUri

__all__ = ["Refer", "Replaces", "parse_replaces"]

_LOGGER = logging.getLogger(__name__)

SIPFRAG = "message/sipfrag;version=2.0"


@dataclass(frozen=True, slots=True)
class Replaces:
    """A Replaces value (RFC 3891): the dialog ``call_id`` with tags as its recipient sees them
    (``to_tag`` the recipient's own, ``from_tag`` the other end's); ``early_only`` its flag."""

    call_id: str
    to_tag: str
    from_tag: str
    early_only: bool = False


def parse_replaces(text: str) -> Replaces:
    """``callid;to-tag=a;from-tag=b[;early-only]``; ValueError naming what is missing."""
    parts = [part.strip() for part in text.split(";")]
    call_id = parts[0]
    params: dict[str, str | None] = {}
    for part in parts[1:]:
        if not part:
            continue
        name, _, value = part.partition("=")
        params[name.strip().lower()] = value.strip() if value else None
    to_tag, from_tag = params.get("to-tag"), params.get("from-tag")
    if not call_id or not to_tag or not from_tag:
        raise ValueError(f"Replaces needs a Call-ID, to-tag and from-tag: {text!r}")
    return Replaces(call_id, to_tag, from_tag, "early-only" in params)


@dataclass(slots=True)
class _Subscription:
    """The implicit subscription a REFER created (RFC 3515 §2.4.4): NOTIFYs in its dialog."""

    control: CallControl
    leg: Leg
    event: str
    wanted: bool
    done: bool = False

    def notify(self, status: int, reason: str | None = None, *, final: bool) -> None:
        if not self.wanted or self.done:
            return
        self.done = final
        phrase = reason or REASON_PHRASES.get(status, "")
        state = "terminated;reason=noresource" if final else "active;expires=60"
        with contextlib.suppress(DialogError):  # the phone's dialog is over: nobody to tell
            self.control.request(
                self.leg,
                "NOTIFY",
                body=f"SIP/2.0 {status} {phrase}\r\n".encode(),
                content_type=SIPFRAG,
                extra=(("Event", self.event), ("Subscription-State", state)),
            )


@dataclass(slots=True)
class _Join:
    """Two calls being joined for a REFER with Replaces: each call's `Operation` meanwhile."""

    call: Call
    phone: Leg
    target: str
    started_at: float
    done: bool = False
    kind: str = field(default="transfer", init=False)

    @property
    def blocks_offers(self) -> bool:
        return True

    def owns(self, leg: Leg) -> bool:
        return False

    def on_leg_bye(self, leg: Leg) -> bool:
        """The phone hanging up does not stop the join (its dialogs end anyway)."""
        return leg is self.phone

    def on_call_end(self) -> None:
        self.done = True

    def view(self) -> OperationView | None:
        if self.done:
            return None
        return OperationView(self.kind, self.phone, self.target, self.started_at)


@dataclass(slots=True)
class _JoinPlan:
    """A REFER with Replaces: the phone's ``leg`` (the REFER's dialog) and ``other_leg`` (the
    dialog Replaces names); ``kept`` stays in ``leg``'s call and ``moving`` comes into it."""

    leg: Leg
    other_leg: Leg
    kept: Leg
    moving: Leg
    joins: tuple[_Join, _Join]
    subscription: _Subscription
    referred_by: str | None


class Refer:
    """REFER in a call (see the module docstring); `on_request` is its in-call handler."""

    def __init__(self, control: CallControl, transfer: Transfer) -> None:
        self._control = control
        self._transfer = transfer

    def on_request(self, leg: Leg, request: Request, txn: ServerTransaction) -> bool:
        if request.method != "REFER":
            return False
        control = self._control
        call = leg.call
        config = control.config()
        user = config.user_for_device(leg.device or "")
        if user is None:
            self._refuse(txn, request, leg, 403, "REFER is taken only from a user's device")
            return True
        values = request.headers.get_all("Refer-To")
        if len(values) != 1:
            self._refuse(txn, request, leg, 400, "exactly one Refer-To is needed")
            return True
        try:
            refer_to = NameAddress.parse(values[0])
        except (ParseError, ValueError):
            self._refuse(txn, request, leg, 400, "unreadable Refer-To")
            return True
        uri = refer_to.uri
        referred_by = request.headers.get("Referred-By")
        if uri.scheme not in ("sip", "sips") or not self._ours(uri):
            self._refuse(txn, request, leg, 403, f"{uri} is outside this PBX")
            return True
        if call.operation is not None:
            self._refuse(txn, request, leg, 491, f"a {call.operation.kind} is in progress")
            return True
        replaces_text = _uri_header(uri, "Replaces")
        if replaces_text is not None:
            self._attended(leg, request, txn, replaces_text, referred_by)
            return True
        number = uri.user_unescaped or ""
        try:
            found = self._transfer.check(call, leg, number, outside=True)
        except TransferNotAllowed as exc:
            self._refuse(txn, request, leg, 403, str(exc))
            return True
        except UnknownTransferTarget:
            self._refuse(txn, request, leg, 403, f"{number or uri} reaches nobody here")
            return True
        except TransferError as exc:
            self._refuse(txn, request, leg, 403, str(exc))
            return True
        subscription = self._accept(leg, request, txn)
        try:
            self._transfer.start(
                call,
                leg,
                number,
                found,
                referred_by=referred_by,
                release=False,
                # (the sipfrag carries the status's own phrase; the reason is in the record)
                listener=lambda status, _reason: subscription.notify(status, final=True),
            )
        except TransferError as exc:
            _LOGGER.info("Call %s: REFER from %s failed: %s", call.id, leg.device, exc)
            subscription.notify(503, final=True)
        return True

    # -- the phone's attended transfer -----------------------------------------------------------

    def _attended(
        self,
        leg: Leg,
        request: Request,
        txn: ServerTransaction,
        replaces_text: str,
        referred_by: str | None,
    ) -> None:
        control = self._control
        config = control.config()
        try:
            replaces = parse_replaces(unquote(replaces_text))
        except ValueError as exc:
            self._refuse(txn, request, leg, 400, str(exc))
            return
        other_leg = control.find_leg(replaces.call_id, replaces.to_tag, replaces.from_tag)
        if other_leg is None or other_leg is leg:
            self._refuse(txn, request, leg, 403, "Replaces names no other dialog of this PBX")
            return
        owner = config.user_for_device(leg.device or "")
        if owner is None or config.user_for_device(other_leg.device or "") is not owner:
            self._refuse(txn, request, leg, 403, "Replaces names another user's dialog")
            return
        here, there = leg.call, other_leg.call
        kept = here.other(leg)
        moving = there.other(other_leg)
        if (
            here is there
            or kept is None
            or moving is None
            or not here.answered
            or not there.answered
            or kept.remote_sdp is None
            or moving.remote_sdp is None
        ):
            self._refuse(txn, request, leg, 403, "both dialogs must be answered calls")
            return
        if there.operation is not None:
            self._refuse(txn, request, leg, 491, f"a {there.operation.kind} is in progress")
            return
        subscription = self._accept(leg, request, txn)
        now = control.clock.wall()
        joins = (_Join(here, leg, moving.device or "", now), _Join(there, other_leg, "", now))
        control.begin(here, joins[0])
        control.begin(there, joins[1])
        control.publish(
            TransferStarted(
                here.id,
                TransferKind.ATTENDED,
                leg.device or "",
                kept.device or "",
                moving.device or "",
            )
        )
        plan = _JoinPlan(leg, other_leg, kept, moving, joins, subscription, referred_by)
        control.spawn(self._join(plan))

    async def _join(self, plan: _JoinPlan) -> None:
        """Move ``moving`` (the far party of the phone's other call) into ``leg``'s place."""
        control = self._control
        leg, other_leg, kept, moving = plan.leg, plan.other_leg, plan.kept, plan.moving
        subscription = plan.subscription
        here, there = leg.call, other_leg.call
        failure = ""
        spare = None
        try:
            assert kept.remote_sdp is not None
            assert moving.remote_sdp is not None
            offer = offer_for_new_device(kept.remote_sdp, moving.remote_sdp)
            spare = control.open_spare(here, leg.side)
            answer = await control.reoffer(moving, offer, port=spare.local_rtp.port)
            if answer is None:
                failure = f"{moving.device} did not take the joined session"
            elif not here.active or not there.active:
                failure = "a call ended"
        except SdpError as exc:
            failure, answer = exc.reason, None
        except (RelayError, OSError) as exc:
            failure, answer = f"media relay: {exc}", None
        for join in plan.joins:
            control.end_operation(join.call, join)
            join.done = True
        if failure or answer is None:
            if spare is not None:
                control.discard_spare(here, spare)
            _LOGGER.info("Call %s: joining for %s's REFER failed: %s", here.id, leg.device, failure)
            subscription.notify(503, "Service Unavailable", final=True)
            self._record(plan, None, failure)
            return
        subscription.notify(200, "OK", final=True)
        control.move_leg(moving, here, leg.side)
        try:
            replaced = await control.replace_leg(leg, moving, answer, spare=spare)
        except (RelayError, OSError) as exc:
            control.hangup_leg(moving)
            control.terminate(here, CallOutcome.FAILED, f"media relay: {exc}")
            replaced = False
        if there.active:
            control.terminate(there, CallOutcome.ANSWERED, f"joined with call {here.id}")
        if not replaced:
            self._record(plan, None, "the call ended")
            return
        self._record(plan, moving, "")
        # A party the phone held before the transfer must hear the new one: offer it again.
        if kept.remote_sdp is not None and is_hold(kept.remote_sdp) and here.media is not None:
            with contextlib.suppress(SdpError):
                await control.reoffer(
                    kept,
                    offer_for_new_device(answer, kept.remote_sdp),
                    port=here.media.leg(kept.side).local_rtp.port,
                )
        control.publish_state(here)

    def _record(self, plan: _JoinPlan, winner: Leg | None, reason: str) -> None:
        control = self._control
        call = plan.leg.call
        record = TransferRecord(
            call.id,
            TransferKind.ATTENDED,
            plan.leg.device or "",
            plan.kept.device or "",
            plan.moving.device or "",
            winner.device if winner is not None else None,
            control.clock.wall(),
            control.clock.wall(),
            winner is not None,
            reason or "answered",
            referred_by=plan.referred_by,
        )
        call.transfers.append(record)
        control.publish(TransferEnded(call.id, record))

    # -- helpers ---------------------------------------------------------------------------------

    def _ours(self, uri: SipUri) -> bool:
        """Whether ``uri`` names this PBX (its domain, or an address it listens on)."""
        host = uri.host.strip("[]")
        config = self._control.config()
        return host in (config.sip.domain, config.sip.listen, "127.0.0.1", "::1") or any(
            leg_host == host for leg_host in self._local_hosts()
        )

    def _local_hosts(self) -> set[str]:
        hosts: set[str] = set()
        for call in self._control.calls():
            for leg in call.legs():
                if leg.dialog is not None:
                    hosts.add(leg.dialog.endpoint.host)
        return hosts

    def _accept(self, leg: Leg, request: Request, txn: ServerTransaction) -> _Subscription:
        """202 Accepted, and the first NOTIFY (100 Trying) unless the phone wants none."""
        wanted = (request.headers.get("Refer-Sub") or "true").strip().lower() != "false"
        response = make_response(request, 202)
        if not wanted:
            response.headers.add("Refer-Sub", "false")
        self._control.respond(txn, response)
        event = f"refer;id={request.cseq.number}"
        subscription = _Subscription(self._control, leg, event, wanted)
        subscription.notify(100, "Trying", final=False)
        _LOGGER.info(
            "Call %s: %s sent REFER to %s (Referred-By %s)",
            leg.call.id,
            leg.device,
            request.headers.get("Refer-To"),
            request.headers.get("Referred-By") or "-",
        )
        return subscription

    def _refuse(
        self, txn: ServerTransaction, request: Request, leg: Leg, status: int, why: str
    ) -> None:
        _LOGGER.info(
            "Call %s: REFER from %s refused with %d: %s", leg.call.id, leg.device, status, why
        )
        self._control.reply(txn, request, status, why)


def _uri_header(uri: SipUri, name: str) -> str | None:
    for key, value in uri.headers.items():
        if key.lower() == name.lower():
            return value
    return None
