"""Blind transfer: pass the other party of a call to another number, and leave.

How (`Transfer`, only through call control's API, `sip_core.call.control.CallControl`): the party
who asks (the transferring device: the keypad code ``*2`` + number, or Home Assistant's action) is
released at once with a BYE. The party that stays (the transferred party) hears a short
"transferring" prompt and then ringback, played by the relay into its own stream, while the
target's devices ring (`CallControl.ring`, first answer wins) with an offer of their own: a spare
relay socket pair for the side the transferring device had, and the codecs the transferred party
already agreed to (the same offer a flip makes). The answer moves that side to the target
(`CallControl.replace_leg`): the transferred party's dialog never sees a request, and its RTP
stream goes on without a break.

When the target does not answer in time, is busy, declines, has nothing registered or cannot be
reached, the transferred party is not dropped: the transferring device is rung back ("recall",
with the same offer) and, when it answers, has the call again. Only when the recall fails too does
the call end, and its record says why (both failures).

While it runs, the transfer is the call's `Operation`: a flip, a second transfer or a push is
refused, offers from the transferred party get 491 (its other side is not there), a BYE from a
ringing target ends only that target's leg, and the transferred party hanging up ends it all.
Each transfer leaves a `TransferRecord` on the call and publishes `TransferStarted` and
`TransferEnded`.

A blind transfer may also send the other party out through a trunk: a number the dial plan sends
out (`CallControl.plan_outbound`), when the transferring device's user may call out (emergency
numbers always), rings the provider in place of devices (`CallControl.ring_trunk`), with the
trunk's caller ID; the rest (ringback, recall, the record) is the same.

A wrong number (nothing it could reach, or no number at all), or an outside number its user may
not call, is refused before anything happens: the device that dialled it hears the error tone and
the call goes on as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from sip_core.audio.playback import PlayPrompts, PlayTone
from sip_core.audio.tones import Tone
from sip_core.call.control import CallControl
from sip_core.call.dial import (
    DialTarget,
    NotRung,
    OutsideNotAllowed,
    RingRequest,
    resolve,
    ring,
)
from sip_core.call.fork import FailureKind, ForkGroup, ForkSummary
from sip_core.call.messages import parse_body
from sip_core.call.targets import RingPlan
from sip_core.calls import (
    Call,
    CallOutcome,
    Leg,
    LegRole,
    LegState,
    OperationView,
    TransferKind,
    TransferRecord,
)
from sip_core.events import TransferEnded, TransferStarted
from sip_core.media import MediaLeg, RelayError
from sip_core.media.client import PLAY_FINISHED, Playing
from sip_core.message import Response
from sip_core.registrar import Binding
from sip_core.sdp import SdpError, SessionDescription, common_codecs, offer_for_new_device

__all__ = [
    "CallNotTransferable",
    "Transfer",
    "TransferCallNotFound",
    "TransferError",
    "TransferInProgress",
    "TransferNotAllowed",
    "TransferOperation",
    "TransferPhase",
    "UnknownTransferTarget",
]

_LOGGER = logging.getLogger(__name__)


class TransferError(Exception):
    """A transfer cannot start; the message is written for the person who asked for it."""


class TransferCallNotFound(TransferError):
    """No call with that id (or on that device) is in progress."""


class CallNotTransferable(TransferError):
    """The call is not answered yet, is ending, or the named device is not in it."""


class TransferInProgress(TransferError):
    """The call is being flipped or transferred already."""


class UnknownTransferTarget(TransferError):
    """The number reaches no user or device (or no number was given)."""


class TransferNotAllowed(UnknownTransferTarget):
    """The number goes out through a trunk, and the transferring device's user may not call out
    (for whoever asked, the number reaches nobody they may send the call to)."""


class TransferPhase(StrEnum):
    """Where a blind transfer is: the target rings, or the transferring device is rung back."""

    RINGING = "ringing"
    RECALLING = "recalling"


@dataclass(slots=True)
class TransferOperation:
    """A blind transfer in progress, the call's `Operation`.

    ``transferring`` is the leg that left (BYE sent at the start; it stays the call's leg in the
    model until a new device takes its side), ``kept`` the transferred party's leg. ``future``
    resolves to the `TransferRecord` whether it worked or not.
    """

    feature: Transfer
    call: Call
    transferring: Leg
    kept: Leg
    target: str
    started_at: float
    future: asyncio.Future[TransferRecord]
    timeout: float
    referred_by: str | None = None
    released: bool = True  # the transferring device's dialog is over (a REFER keeps it a while)
    phase: TransferPhase = TransferPhase.RINGING
    fork: ForkGroup | None = None
    offer: SessionDescription | None = None
    spare: MediaLeg | None = None
    playing: Playing | None = None
    failure: str = ""  # why the target did not take the call (before the recall)
    failed_status: int = 0  # ... as a SIP status
    done: bool = False
    #: Told the target's outcome once: (200, "OK") when it took the call, else a failure status
    #: and why (a REFER reports these to the phone that sent it).
    listeners: list[Callable[[int, str], None]] = field(default_factory=list)
    kind: str = field(default="transfer", init=False)

    @property
    def blocks_offers(self) -> bool:
        """The transferred party's other side is gone until a device takes it: no offer crosses."""
        return True

    def owns(self, leg: Leg) -> bool:
        return self.fork is not None and leg in self.fork.legs

    def on_leg_bye(self, leg: Leg) -> bool:
        """A target (or the recalled device) hanging up before it took the call ends its leg; the
        transferring device hanging up (after its REFER) leaves the transfer to go on."""
        if leg is self.transferring:
            self.released = True
            return True
        return self.owns(leg)

    def on_call_end(self) -> None:
        self.feature.finish(self, None, "the call ended")

    def view(self) -> OperationView | None:
        if self.done:
            return None
        return OperationView(self.kind, self.transferring, self.target, self.started_at)


class Transfer:
    """The blind transfer feature: the keypad code (`on_code`) and `transfer` (Home Assistant)."""

    def __init__(self, control: CallControl) -> None:
        self._control = control

    # -- entry points ----------------------------------------------------------------------------

    def transfer(
        self, call_id: str, target: str, *, device: str | None = None
    ) -> asyncio.Future[TransferRecord]:
        """Blind-transfer the call: ``device``'s side (default: the callee's) leaves, the other
        party goes to ``target`` (an extension, a device or a number). Raises a `TransferError`
        subclass when it cannot start; the future resolves to the record, succeeded or not."""
        control = self._control
        call = control.get(call_id)
        if call is None or not call.active:
            raise TransferCallNotFound(f"no call {call_id} in progress")
        leg = self._leg_of(call, device)
        found = self.check(call, leg, target, outside=True)
        return self.start(call, leg, target, found)

    def on_code(self, leg: Leg, number: str) -> None:
        """The blind transfer code was dialled on ``leg``, followed by ``number``."""
        call = leg.call
        if not call.active:
            return
        try:
            found = self.check(call, leg, number, outside=True)
        except TransferError as exc:
            _LOGGER.info("Call %s: %s dialled the transfer code, but %s", call.id, leg.device, exc)
            self._error_tone(leg)
            if isinstance(exc, TransferNotAllowed):
                self.refused(call, leg, TransferKind.BLIND, number, str(exc))
            return
        try:
            self.start(call, leg, number, found)
        except TransferError as exc:
            _LOGGER.info("Call %s: transfer by %s refused: %s", call.id, leg.device, exc)
            self._error_tone(leg)

    def check(self, call: Call, leg: Leg, target: str, *, outside: bool = True) -> DialTarget:
        """Whether ``leg`` may pass its call to ``target`` now, and what ``target`` reaches
        (`sip_core.call.dial.resolve`: a user or device, a ring group's pilot, or, with
        ``outside``, an outside number when ``leg``'s user may call out); raises a
        `TransferError` if not."""
        if not call.active or not call.answered or call.other(leg) is None:
            raise CallNotTransferable(f"call {call.id} is not answered")
        if leg.state is not LegState.CONFIRMED:
            raise CallNotTransferable(f"{leg.device} has left call {call.id}")
        if call.operation is not None:
            raise TransferInProgress(f"a {call.operation.kind} of call {call.id} is in progress")
        if not target:
            raise UnknownTransferTarget("no number to transfer to")
        try:
            found = resolve(self._control, leg.device or "", target, outside=outside)
        except OutsideNotAllowed as exc:
            raise TransferNotAllowed(str(exc)) from exc
        if found is None:
            raise UnknownTransferTarget(f"{target} is no extension, device or group")
        return found

    def refused(self, call: Call, leg: Leg, kind: TransferKind, target: str, why: str) -> None:
        """A keypad transfer refused before it started (a wrong number, an outside number its
        user may not call): recorded on the call and published as a failed transfer."""
        other = call.other(leg)
        now = self._control.clock.wall()
        record = TransferRecord(
            call.id,
            kind,
            leg.device or "",
            other.device or "" if other is not None else "",
            target,
            None,
            now,
            now,
            False,
            f"refused: {why}",
        )
        call.transfers.append(record)
        self._control.publish(TransferEnded(call.id, record))

    @staticmethod
    def _leg_of(call: Call, device: str | None) -> Leg:
        legs = [leg for leg in (call.callee, call.caller) if leg is not None]
        if not call.answered or len(legs) < 2:
            raise CallNotTransferable(f"call {call.id} is not answered")
        if device is None:
            return legs[0]
        for leg in legs:
            if leg.device == device:
                return leg
        raise CallNotTransferable(f"{device} is not in call {call.id}")

    # -- running it ------------------------------------------------------------------------------

    def start(
        self,
        call: Call,
        transferring: Leg,
        target: str,
        found: DialTarget,
        *,
        referred_by: str | None = None,
        release: bool = True,
        listener: Callable[[int, str], None] | None = None,
    ) -> asyncio.Future[TransferRecord]:
        """Release ``transferring`` and ring ``found`` for the other party (checked by `check`).

        Without ``release`` (a REFER) the transferring device keeps its dialog until the target
        answers (then it gets a BYE) or hangs up itself; if the target fails while it is still
        there, the other party is simply back with it. ``listener`` hears the target's outcome
        (see `TransferOperation.listeners`). Raises `CallNotTransferable` when the call's media
        cannot take another device (before anything changed)."""
        control = self._control
        kept = call.other(transferring)
        assert kept is not None
        config = control.config()
        future: asyncio.Future[TransferRecord] = asyncio.get_running_loop().create_future()
        op = TransferOperation(
            self,
            call,
            transferring,
            kept,
            target,
            control.clock.wall(),
            future,
            float(config.transfer.timeout),
            referred_by,
            released=release,
        )
        if listener is not None:
            op.listeners.append(listener)
        try:
            if call.media is None or kept.remote_sdp is None or transferring.remote_sdp is None:
                raise SdpError("the call has no media yet")
            op.offer = offer_for_new_device(kept.remote_sdp, transferring.remote_sdp)
            op.spare = control.open_spare(call, transferring.side)
        except SdpError as exc:
            raise CallNotTransferable(f"call {call.id}: {exc.reason}") from exc
        except (RelayError, OSError) as exc:
            raise CallNotTransferable(f"call {call.id}: media relay: {exc}") from exc
        control.begin(call, op)
        _LOGGER.info(
            "Call %s: %s transfers %s to %s", call.id, transferring.device, kept.device, target
        )
        if release:
            control.hangup_leg(transferring)
        control.publish(
            TransferStarted(
                call.id, TransferKind.BLIND, transferring.device or "", kept.device or "", target
            )
        )
        self._announce(op)
        if isinstance(found, RingPlan):
            op.timeout = found.timeout  # the group's ring timer
        assert op.offer is not None
        rung = ring(
            control,
            found,
            target,
            RingRequest(
                call,
                LegRole.TRANSFER_TARGET,
                transferring.side,
                kept.party,
                op.offer,
                op.spare.local_rtp.port,
                exclude=kept.device or "",
            ),
            timeout=op.timeout,
            on_answer=lambda leg, response: control.spawn(self._answered(op, leg, response)),
            on_fail=lambda summary: self._failed(op, summary),
            on_timeout=lambda: self._no_answer(op),
        )
        if isinstance(rung, NotRung):
            self._recall(op, rung.reason, rung.status)
        elif not op.done and op.phase is TransferPhase.RINGING:
            op.fork = rung
        return future

    def _announce(self, op: TransferOperation) -> None:
        """The transferred party hears "transferring", then ringback until someone answers."""
        try:
            playing = self._control.play(op.kept, PlayPrompts(("transferring",)))
        except RelayError:
            return
        op.playing = playing

        def prompt_done(done: asyncio.Future[str]) -> None:
            if op.done or op.playing is not playing or done.cancelled():
                return
            if done.result() == PLAY_FINISHED:
                self._ringback(op)

        playing.done.add_done_callback(prompt_done)

    def _ringback(self, op: TransferOperation) -> None:
        try:
            op.playing = self._control.play(op.kept, PlayTone(Tone.RINGBACK))
        except RelayError:
            op.playing = None

    def _ring(
        self, op: TransferOperation, bindings: tuple[Binding, ...], party: str, wait: float
    ) -> None:
        control = self._control
        assert op.offer is not None
        assert op.spare is not None
        op.fork = control.ring(
            op.call,
            bindings,
            role=LegRole.TRANSFER_TARGET,
            side=op.transferring.side,
            party=party,
            presented=op.kept.party,
            offer=op.offer,
            port=op.spare.local_rtp.port,
            on_answer=lambda leg, response: control.spawn(self._answered(op, leg, response)),
            on_fail=lambda summary: self._failed(op, summary),
            on_timeout=lambda: self._no_answer(op),
        )
        if not op.done and op.fork.deciding:
            op.fork.start_timer(wait)

    async def _answered(self, op: TransferOperation, leg: Leg, response: Response) -> None:
        """A device answered our offer (the fork ACKed it): check the answer, move the media."""
        control = self._control
        call = op.call
        failure = ""
        answer: SessionDescription | None = None
        try:
            answer = parse_body(response)
        except SdpError as exc:
            failure = f"unreadable SDP from {leg.device}: {exc}"
        audio = answer.audio() if answer is not None else None
        offered = op.offer.audio() if op.offer is not None else None
        common = (
            common_codecs(offered.codecs(), audio.codecs())
            if audio is not None and offered is not None
            else []
        )
        if not failure and (answer is None or audio is None):
            failure = f"{leg.device} answered without an SDP answer"
        elif not failure and not any(c.encoding.lower() != "telephone-event" for c in common):
            failure = f"{leg.device} accepted none of the offered codecs"
        if op.done or not call.active:
            control.hangup_leg(leg)
            return
        if failure or answer is None:
            control.hangup_leg(leg)
            self._give_up_on(op, failure, 488)
            return
        if op.phase is TransferPhase.RINGING:
            # Before the transferring device's dialog ends (`replace_leg` sends it a BYE).
            for listener in op.listeners:
                listener(200, "OK")
        try:
            replaced = await control.replace_leg(op.transferring, leg, answer, spare=op.spare)
        except (RelayError, OSError) as exc:
            control.hangup_leg(leg)
            self.finish(op, None, f"media relay: {exc}", end_call=True)
            return
        if not replaced:
            control.hangup_leg(leg)
            self.finish(op, None, "the call ended")
            return
        self.finish(op, leg, "")
        control.publish_state(call)

    def _failed(self, op: TransferOperation, summary: ForkSummary) -> None:
        name = op.target if op.phase is TransferPhase.RINGING else op.transferring.device
        kind = summary.kind
        if kind is FailureKind.BUSY:
            reason, status = f"{name} is busy", 486
        elif kind is FailureKind.DECLINED:
            reason, status = f"{name} declined", 603
        elif kind is FailureKind.UNREACHABLE:
            reason, status = f"{name} is unreachable", 480
        else:
            statuses = sorted(set(summary.statuses))
            reason = f"{name} answered {', '.join(map(str, statuses))}"
            status = statuses[0] if statuses else 480
        self._give_up_on(op, reason, status)

    def _no_answer(self, op: TransferOperation) -> None:
        if op.done:
            return
        wait = op.timeout if op.phase is TransferPhase.RINGING else self._recall_wait()
        name = op.target if op.phase is TransferPhase.RINGING else op.transferring.device
        self._give_up_on(op, f"{name} did not answer within {wait:g} s", 480)

    def _give_up_on(self, op: TransferOperation, reason: str, status: int = 500) -> None:
        """Whoever rang did not take the call: recall after the target, else end the call."""
        if op.done:
            return
        if op.phase is TransferPhase.RINGING:
            self._recall(op, reason, status)
        else:
            self.finish(op, None, f"{op.failure}; recall failed: {reason}", end_call=True)

    def _recall_wait(self) -> float:
        return float(self._control.config().transfer.recall_timeout)

    def _recall(self, op: TransferOperation, reason: str, status: int) -> None:
        """The target failed: ring the transferring device back, with the same offer."""
        if op.fork is not None:
            op.fork.close()
        op.failure = reason
        op.phase = TransferPhase.RECALLING
        device = op.transferring.device or ""
        _LOGGER.info(
            "Call %s: transfer to %s failed (%s); recalling %s",
            op.call.id,
            op.target,
            reason,
            device,
        )
        op.failed_status = status
        for listener in op.listeners:
            listener(status, reason)
        transferring = op.transferring
        if not op.released and transferring.state is LegState.CONFIRMED:
            # It never left (a REFER): the other party is simply back with it.
            self.finish(op, transferring, "")
            return
        bindings = tuple(self._control.bindings(device))
        if not bindings:
            self.finish(
                op, None, f"{reason}; recall failed: {device} is not registered", end_call=True
            )
            return
        self._ring(op, bindings, op.transferring.party, self._recall_wait())

    def finish(
        self, op: TransferOperation, winner: Leg | None, reason: str, *, end_call: bool = False
    ) -> None:
        """The transfer is over: ``winner`` took the call (the target, or the recalled device);
        None: nobody did, and with ``end_call`` the call ends with ``reason``."""
        if op.done:
            return
        op.done = True
        control = self._control
        call = op.call
        if op.fork is not None:
            op.fork.close(keep=winner)
        control.end_operation(call, op)
        if op.spare is not None:
            control.discard_spare(call, op.spare)  # nothing when the winner took it
        if op.playing is not None:
            op.playing.stop()
        recalled = winner is not None and op.phase is TransferPhase.RECALLING
        succeeded = winner is not None and not recalled
        if succeeded:
            why = "answered"
        elif recalled:
            why = f"{op.failure}; recalled to {winner.device if winner else ''}"
        else:
            why = reason
        record = TransferRecord(
            call.id,
            TransferKind.BLIND,
            op.transferring.device or "",
            op.kept.device or "",
            op.target,
            winner.device if succeeded and winner is not None else None,
            op.started_at,
            control.clock.wall(),
            succeeded,
            why,
            recalled=winner.device if recalled and winner is not None else None,
            referred_by=op.referred_by,
        )
        call.transfers.append(record)
        _LOGGER.info(
            "Call %s: transfer to %s %s",
            call.id,
            op.target,
            "succeeded" if succeeded else f"failed: {why}",
        )
        control.publish(TransferEnded(call.id, record))
        if not succeeded and op.phase is TransferPhase.RINGING:
            for listener in op.listeners:
                listener(500, why)
        if not op.future.done():
            op.future.set_result(record)
        if end_call and call.active:
            control.terminate(call, CallOutcome.ANSWERED, f"transfer failed: {why}")

    def _error_tone(self, leg: Leg) -> None:
        with contextlib.suppress(RelayError):
            self._control.play(leg, PlayTone(Tone.ERROR))
