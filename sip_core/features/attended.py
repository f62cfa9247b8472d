"""Attended transfer: hold the other party, talk to the target first, then hand the call over.

How (`AttendedTransfer`, only through call control's API): the code (``**`` + number) puts the
other party (the held party) on hold at the PBX: the relay drops what the transferring device
sends it and plays it music instead (`CallControl.hold`), and drops what it sends too
(`CallControl.mute`), so neither hears the other; its dialog sees no request at all. The
consultation runs on a media session of its own (`CallControl.open_media`): the transferring
device is moved there with a re-INVITE (`CallControl.reoffer`), hears ringback from it while the
target's devices ring with an offer on its other leg, and talks to the target there. The held
party's session never carries a packet of it, so the held party cannot hear the consultation.

Completion: the transferring device hangs up (or keys the completion code, ``*3`` by default):
the target is re-INVITEd to a spare relay leg on the held party's side of the call, which then
takes the transferring device's place (`CallControl.replace_leg`, a BYE to it if still there),
and the hold ends; the held party and the target talk. The transferring device hanging up while
the target still rings hands the call over as soon as the target answers.

Return: the cancel code (``*4``), or the target not answering in time, being busy, declining or
hanging up, puts the transferring device back with the held party (a re-INVITE to the call's
session, and the hold ends). Only when that is impossible -- the transferring device has gone --
does the call end, with the reason in its record.

The held party hanging up during the consultation does not end it: the transferring device and
the target become the call (the target is re-INVITEd to a spare on the held party's side and
takes its place with `CallControl.replace_leg`; the transferring device is re-INVITEd back to its
own side of the call's session), and the transfer's record says that the held party hung up.
While the target still rings, that happens when it answers; if it fails then, or the
transferring device hangs up too, the call ends. Only a hang-up while the handover or the return
is already under way ends everything.

The keys: the completion and cancel codes are read from the transferring device's keys whether
they come as RFC 4733 events (on the consultation's session) or as SIP INFO in its dialog
(`take_digit`, a digit taker of the feature registry); keys that are no code go to the target,
never to the held party, and the held party's own keys reach no one meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from enum import StrEnum

from sip_core.audio.playback import PlayMusic, PlayTone
from sip_core.audio.tones import Tone
from sip_core.call.control import CallControl
from sip_core.call.dial import DialTarget, NotRung, RingRequest, ring
from sip_core.call.fork import FailureKind, ForkGroup, ForkSummary
from sip_core.call.messages import parse_body
from sip_core.call.negotiation import media_target
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
from sip_core.dialog import DialogError
from sip_core.dtmf import format_dtmf_relay
from sip_core.events import TransferEnded, TransferStarted
from sip_core.features.codes import FeatureCode, FeatureCodeCollector, FeatureMatch
from sip_core.features.transfer import (
    CallNotTransferable,
    Transfer,
    TransferError,
    TransferNotAllowed,
)
from sip_core.media import MediaLeg, MediaSession, RelayError
from sip_core.media.client import Playing
from sip_core.message import Response
from sip_core.sdp import SdpError, SessionDescription, offer_for_new_device, payload_type_map

__all__ = ["AttendedPhase", "AttendedTransfer", "AttendedTransferOperation"]

_LOGGER = logging.getLogger(__name__)


class AttendedPhase(StrEnum):
    """Where an attended transfer is."""

    MOVING = "moving"  # the transferring device is being moved to the consultation session
    RINGING = "ringing"  # the target rings
    TALKING = "talking"  # the transferring device and the target talk
    COMPLETING = "completing"  # the target is being moved to the held party
    RETURNING = "returning"  # the transferring device is being moved back
    JOINING = "joining"  # the held party hung up: the consultation becomes the call


@dataclass(slots=True)
class AttendedTransferOperation:
    """An attended transfer in progress, the call's `Operation` (see the module docstring)."""

    feature: AttendedTransfer
    call: Call
    transferring: Leg
    held: Leg
    target: str
    found: DialTarget
    started_at: float
    future: asyncio.Future[TransferRecord]
    session: MediaSession
    phase: AttendedPhase = AttendedPhase.MOVING
    fork: ForkGroup | None = None
    consulted: Leg | None = None  # the target's device that answered
    ringback: Playing | None = None
    codes: FeatureCodeCollector | None = None
    complete_on_answer: bool = False  # the transferring device hung up while the target rang
    held_left: bool = False  # the held party hung up: the consultation is to become the call
    done: bool = False
    kind: str = field(default="transfer", init=False)

    @property
    def blocks_offers(self) -> bool:
        """Neither party's other side is where its dialog thinks: no offer may cross."""
        return True

    def owns(self, leg: Leg) -> bool:
        return leg is self.consulted or (self.fork is not None and leg in self.fork.legs)

    def on_leg_bye(self, leg: Leg) -> bool:
        """The transferring device hanging up completes; the target hanging up returns."""
        if leg is self.transferring:
            self.feature.transferring_left(self)
            return True
        if leg is self.held:
            return self.feature.held_left(self)
        if self.owns(leg):
            if leg is self.consulted:
                self.feature.back_to_held(self, f"{leg.device} hung up")
            return True
        return False

    def on_call_end(self) -> None:
        self.feature.finish(self, None, "the call ended")

    def view(self) -> OperationView | None:
        if self.done:
            return None
        return OperationView(
            self.kind, self.transferring, self.target, self.started_at, holds_other=True
        )


class AttendedTransfer:
    """The attended transfer feature: the keypad code (`on_code`)."""

    def __init__(self, control: CallControl, blind: Transfer) -> None:
        self._control = control
        self._blind = blind  # its checks are the same

    def on_code(self, leg: Leg, number: str) -> None:
        """The attended transfer code was dialled on ``leg``, followed by ``number``."""
        call = leg.call
        if not call.active:
            return
        try:
            found = self._blind.check(call, leg, number, outside=True)
            self.start(call, leg, number, found)
        except TransferError as exc:
            _LOGGER.info(
                "Call %s: %s dialled the attended transfer code, but %s", call.id, leg.device, exc
            )
            self._tone(leg, Tone.ERROR)
            if isinstance(exc, TransferNotAllowed):
                self._blind.refused(call, leg, TransferKind.ATTENDED, number, str(exc))

    def start(
        self, call: Call, transferring: Leg, target: str, found: DialTarget
    ) -> asyncio.Future[TransferRecord]:
        """Hold the other party and start the consultation (checked by `Transfer.check`)."""
        control = self._control
        held = call.other(transferring)
        assert held is not None
        if transferring.remote_sdp is None or held.remote_sdp is None or call.media is None:
            raise CallNotTransferable(f"call {call.id} has no media yet")
        try:
            session = control.open_media(f"{call.id}~consult")
        except (RelayError, OSError) as exc:
            raise CallNotTransferable(f"call {call.id}: media relay: {exc}") from exc
        future: asyncio.Future[TransferRecord] = asyncio.get_running_loop().create_future()
        op = AttendedTransferOperation(
            self,
            call,
            transferring,
            held,
            target,
            found,
            control.clock.wall(),
            future,
            session,
        )
        control.begin(call, op)
        _LOGGER.info(
            "Call %s: %s holds %s and consults %s",
            call.id,
            transferring.device,
            held.device,
            target,
        )
        control.publish(
            TransferStarted(
                call.id,
                TransferKind.ATTENDED,
                transferring.device or "",
                held.device or "",
                target,
            )
        )
        try:
            control.hold(transferring, PlayMusic())
        except RelayError:
            _LOGGER.info("Call %s: no hold music for %s", call.id, held.device)
        control.mute(held)
        session.on_dtmf = lambda side, digit: self._consult_key(op, side, digit.digit)
        session.a.swallow_dtmf = True
        control.spawn(self._move_to_consultation(op))
        return future

    # -- the consultation ------------------------------------------------------------------------

    async def _move_to_consultation(self, op: AttendedTransferOperation) -> None:
        control = self._control
        transferring = op.transferring
        assert transferring.remote_sdp is not None
        try:
            offer = offer_for_new_device(transferring.remote_sdp, transferring.remote_sdp)
        except SdpError as exc:
            self.back_to_held(op, exc.reason)
            return
        answer = await control.reoffer(transferring, offer, port=op.session.a.local_rtp.port)
        if op.done or op.phase is not AttendedPhase.MOVING:
            return
        if answer is None:
            self.back_to_held(op, f"{transferring.device} did not take the consultation's media")
            return
        _point(op.session.a, answer)
        op.phase = AttendedPhase.RINGING
        with contextlib.suppress(RelayError):
            op.ringback = op.session.a.play(PlayTone(Tone.RINGBACK))
        config = control.config()
        found = op.found
        wait = found.timeout if isinstance(found, RingPlan) else float(config.transfer.timeout)
        rung = ring(
            control,
            found,
            op.target,
            RingRequest(
                op.call,
                LegRole.TRANSFER_TARGET,
                transferring.side,
                transferring.party,
                offer_for_new_device(answer, answer),
                op.session.b.local_rtp.port,
                exclude=transferring.device or "",
            ),
            timeout=wait,
            on_answer=lambda leg, response: self._answered(op, leg, response),
            on_fail=lambda summary: self._failed(op, summary),
            on_timeout=lambda: self.back_to_held(
                op, f"{op.target} did not answer within {wait:g} s"
            ),
        )
        if isinstance(rung, NotRung):
            self.back_to_held(op, rung.reason)
        elif not op.done and op.phase is AttendedPhase.RINGING:
            op.fork = rung

    def _answered(self, op: AttendedTransferOperation, leg: Leg, response: Response) -> None:
        control = self._control
        try:
            answer = parse_body(response)
        except SdpError:
            answer = None
        if op.done or op.phase is not AttendedPhase.RINGING:
            control.hangup_leg(leg)
            return
        if answer is None or answer.audio() is None:
            control.hangup_leg(leg)
            self.back_to_held(op, f"{leg.device} answered without an SDP answer")
            return
        leg.remote_sdp = answer
        op.consulted = leg
        _point(op.session.b, answer)
        transferring_sdp = op.transferring.remote_sdp
        transferring_audio = transferring_sdp.audio() if transferring_sdp is not None else None
        target_audio = answer.audio()
        if transferring_audio is not None and target_audio is not None:
            op.session.a.set_payload_map(
                payload_type_map(target_audio.codecs(), transferring_audio.codecs())
            )
            op.session.b.set_payload_map(
                payload_type_map(transferring_audio.codecs(), target_audio.codecs())
            )
        if op.ringback is not None:
            op.ringback.stop()
            op.ringback = None
        op.phase = AttendedPhase.TALKING
        _LOGGER.info("Call %s: %s consults %s", op.call.id, op.transferring.device, leg.device)
        if op.held_left:
            self._join(op, leg)
        elif op.complete_on_answer:
            self.complete(op)

    def _failed(self, op: AttendedTransferOperation, summary: ForkSummary) -> None:
        kind = summary.kind
        if kind is FailureKind.BUSY:
            reason = f"{op.target} is busy"
        elif kind is FailureKind.DECLINED:
            reason = f"{op.target} declined"
        elif kind is FailureKind.UNREACHABLE:
            reason = f"{op.target} is unreachable"
        else:
            reason = f"{op.target} answered {', '.join(map(str, sorted(set(summary.statuses))))}"
        self.back_to_held(op, reason)

    def _consult_key(self, op: AttendedTransferOperation, side: str, key: str) -> None:
        """A key on the consultation: the transferring device's completion and cancel codes;
        any other key goes on to the target as it came."""
        if op.done:
            return
        if side != "a":
            return
        if op.codes is None:
            config = self._control.config().transfer
            op.codes = FeatureCodeCollector(
                self._control.clock,
                lambda match: self._consult_code(op, match),
                lambda passed: self._pass_to_target(op, passed),
                (
                    FeatureCode(config.complete_code, "complete"),
                    FeatureCode(config.cancel_code, "cancel"),
                ),
            )
        op.codes.feed(key)

    def take_digit(self, leg: Leg, key: str) -> bool:
        """A key a device sent in its call's dialog or stream (SIP INFO; RFC 4733 before the
        move): during a consultation the transferring device's keys are read like those on the
        consultation's session, and the held party's go nowhere (it talks to no one)."""
        op = leg.call.operation
        if not isinstance(op, AttendedTransferOperation) or op.done or op.feature is not self:
            return False
        if leg is op.transferring:
            self._consult_key(op, "a", key)
            return True
        if leg is op.held:
            _LOGGER.debug("Call %s: key %s from the held party dropped", op.call.id, key)
            return True
        return False

    def _pass_to_target(self, op: AttendedTransferOperation, key: str) -> None:
        """A key that is no code goes to the target: as telephone-events when it takes them,
        else as an INFO in its dialog; before it answered, nowhere."""
        if op.done or op.session.closed:
            return
        if op.session.b.send_dtmf(key):
            return
        consulted = op.consulted
        if consulted is None or consulted.state is not LegState.CONFIRMED:
            return
        with contextlib.suppress(DialogError):
            self._control.request(
                consulted,
                "INFO",
                body=format_dtmf_relay(key),
                content_type="application/dtmf-relay",
            )

    def _consult_code(self, op: AttendedTransferOperation, match: FeatureMatch) -> None:
        if match.name == "cancel":
            self.back_to_held(op, "cancelled")
        elif op.phase is AttendedPhase.TALKING:
            self.complete(op)
        else:
            with contextlib.suppress(RelayError):
                op.session.a.play(PlayTone(Tone.ERROR))

    # -- the two ways out --------------------------------------------------------------------------

    def transferring_left(self, op: AttendedTransferOperation) -> None:
        """The transferring device hung up: hand over now, or as soon as the target answers."""
        if op.held_left:
            self.finish(op, None, f"{self._both_left(op)}", end_call=True)
            return
        if op.phase is AttendedPhase.TALKING:
            self.complete(op)
        elif op.phase in (AttendedPhase.RINGING, AttendedPhase.MOVING):
            op.complete_on_answer = True
        elif op.phase is AttendedPhase.RETURNING:
            self.finish(op, None, f"{op.transferring.device} hung up", end_call=True)

    def held_left(self, op: AttendedTransferOperation) -> bool:
        """The held party hung up: the consultation goes on as the call (now, or once the target
        answers). False (the call ends) when a handover or return is already moving media, or
        the transferring device has hung up as well."""
        if op.done or op.phase in (
            AttendedPhase.COMPLETING,
            AttendedPhase.RETURNING,
            AttendedPhase.JOINING,
        ):
            return False
        if op.complete_on_answer or op.transferring.state is not LegState.CONFIRMED:
            return False
        op.held_left = True
        _LOGGER.info(
            "Call %s: %s hung up while on hold; %s keeps the consultation with %s",
            op.call.id,
            op.held.device,
            op.transferring.device,
            op.target,
        )
        if op.phase is AttendedPhase.TALKING and op.consulted is not None:
            self._join(op, op.consulted)
        return True

    def _both_left(self, op: AttendedTransferOperation) -> str:
        return f"{op.held.device} hung up while on hold, then {op.transferring.device} hung up"

    def _join(self, op: AttendedTransferOperation, consulted: Leg) -> None:
        op.phase = AttendedPhase.JOINING
        self._control.spawn(self._keep_consultation(op, consulted))

    async def _keep_consultation(self, op: AttendedTransferOperation, consulted: Leg) -> None:
        """The target takes the held party's side of the call, the transferring device goes
        back to its own: the two talk on as an ordinary call."""
        control = self._control
        call = op.call
        transferring = op.transferring
        reason = f"{op.held.device} hung up while on hold"
        media = call.media
        if (
            media is None
            or media.closed
            or transferring.remote_sdp is None
            or consulted.remote_sdp is None
        ):
            self.finish(op, None, f"{reason}; the call has no media", end_call=True)
            return
        try:
            offer = offer_for_new_device(transferring.remote_sdp, consulted.remote_sdp)
            spare = control.open_spare(call, op.held.side)
        except SdpError as exc:
            self.finish(op, None, f"{reason}; {exc.reason}", end_call=True)
            return
        except (RelayError, OSError) as exc:
            self.finish(op, None, f"{reason}; media relay: {exc}", end_call=True)
            return
        answer = await control.reoffer(consulted, offer, port=spare.local_rtp.port)
        if op.done or not call.active or answer is None:
            control.discard_spare(call, spare)
            if not op.done:
                why = f"{consulted.device} did not take the call's media"
                self.finish(op, None, f"{reason}; {why}", end_call=True)
            return
        try:
            replaced = await control.replace_leg(op.held, consulted, answer, spare=spare)
        except (RelayError, OSError) as exc:
            control.discard_spare(call, spare)
            self.finish(op, None, f"{reason}; media relay: {exc}", end_call=True)
            return
        if not replaced:
            return
        control.mute(consulted, False)
        try:
            back = offer_for_new_device(answer, transferring.remote_sdp)
        except SdpError:
            back = answer
        moved = await control.reoffer(
            transferring, back, port=media.leg(transferring.side).local_rtp.port
        )
        if _over(op) or not call.active:
            return
        if moved is None:
            why = f"{transferring.device} could not be moved back"
            self.finish(op, None, f"{reason}; {why}", end_call=True)
            return
        control.learn_sdp(transferring, moved)
        control.resume(transferring)
        self.finish(
            op,
            None,
            f"{reason}; {transferring.device} and {consulted.device} talk on",
            kept=consulted,
        )
        control.publish_state(call)

    def complete(self, op: AttendedTransferOperation) -> None:
        """Move the target to the held party's call (see the module docstring)."""
        if op.done or op.phase is not AttendedPhase.TALKING or op.consulted is None:
            return
        op.phase = AttendedPhase.COMPLETING
        self._control.spawn(self._complete(op, op.consulted))

    async def _complete(self, op: AttendedTransferOperation, consulted: Leg) -> None:
        control = self._control
        call = op.call
        held_sdp = op.held.remote_sdp
        if held_sdp is None or consulted.remote_sdp is None:
            self.finish(op, None, "the call has no media", end_call=True)
            return
        try:
            offer = offer_for_new_device(held_sdp, consulted.remote_sdp)
            spare = control.open_spare(call, op.transferring.side)
        except SdpError as exc:
            self._not_completed(op, f"{consulted.device}: {exc.reason}")
            return
        except (RelayError, OSError) as exc:
            self._not_completed(op, f"media relay: {exc}")
            return
        answer = await control.reoffer(consulted, offer, port=spare.local_rtp.port)
        if op.done or not call.active:
            control.discard_spare(call, spare)
            return
        if answer is None:
            control.discard_spare(call, spare)
            self._not_completed(op, f"{consulted.device} did not take the held party's media")
            return
        try:
            replaced = await control.replace_leg(op.transferring, consulted, answer, spare=spare)
        except (RelayError, OSError) as exc:
            control.discard_spare(call, spare)
            self._not_completed(op, f"media relay: {exc}")
            return
        if not replaced:
            return
        control.resume(consulted)
        control.mute(op.held, False)
        self.finish(op, consulted, "")
        control.publish_state(call)

    def _not_completed(self, op: AttendedTransferOperation, reason: str) -> None:
        if op.consulted is not None:
            self._control.hangup_leg(op.consulted)
        self.back_to_held(op, reason)

    def back_to_held(self, op: AttendedTransferOperation, reason: str) -> None:
        """The consultation is over without a handover: the transferring device goes back."""
        if op.done or op.phase is AttendedPhase.RETURNING:
            return
        op.phase = AttendedPhase.RETURNING
        control = self._control
        if op.fork is not None:
            op.fork.close()
        if op.consulted is not None and op.consulted.state is LegState.CONFIRMED:
            control.hangup_leg(op.consulted)
        if op.ringback is not None:
            op.ringback.stop()
            op.ringback = None
        transferring = op.transferring
        if op.held_left:
            self.finish(
                op, None, f"{op.held.device} hung up while on hold; {reason}", end_call=True
            )
            return
        if op.complete_on_answer or transferring.state is not LegState.CONFIRMED:
            self.finish(op, None, f"{reason}; {transferring.device} had hung up", end_call=True)
            return
        _LOGGER.info(
            "Call %s: %s is back with %s (%s)",
            op.call.id,
            transferring.device,
            op.held.device,
            reason,
        )
        control.spawn(self._return(op, reason))

    async def _return(self, op: AttendedTransferOperation, reason: str) -> None:
        control = self._control
        call = op.call
        transferring = op.transferring
        media = call.media
        held_sdp = op.held.remote_sdp
        answer: SessionDescription | None = None
        if media is not None and not media.closed and held_sdp is not None:
            assert transferring.remote_sdp is not None
            try:
                offer = offer_for_new_device(held_sdp, transferring.remote_sdp)
            except SdpError:
                offer = held_sdp
            port = media.leg(transferring.side).local_rtp.port
            answer = await control.reoffer(transferring, offer, port=port)
        if op.done:
            return
        if answer is None:
            self.finish(
                op, None, f"{reason}; {transferring.device} could not be moved back", end_call=True
            )
            return
        control.learn_sdp(transferring, answer)
        control.resume(transferring)
        control.mute(op.held, False)
        self.finish(op, None, reason)

    def finish(
        self,
        op: AttendedTransferOperation,
        winner: Leg | None,
        reason: str,
        *,
        end_call: bool = False,
        kept: Leg | None = None,
    ) -> None:
        """The attended transfer is over: ``winner`` (the target) has the call, or nobody;
        ``kept``: the target stays in the call all the same (the held party hung up)."""
        if op.done:
            return
        op.done = True
        control = self._control
        call = op.call
        stays = winner or kept
        if op.fork is not None:
            op.fork.close(keep=stays)
        consulted = op.consulted
        if (
            consulted is not None
            and consulted is not stays
            and consulted.state is LegState.CONFIRMED
        ):
            control.hangup_leg(consulted)
        if op.codes is not None:
            op.codes.close()
        op.session.on_dtmf = None
        op.session.close()
        control.end_operation(call, op)
        succeeded = winner is not None
        why = "answered" if succeeded else reason
        record = TransferRecord(
            call.id,
            TransferKind.ATTENDED,
            op.transferring.device or "",
            op.held.device or "",
            op.target,
            winner.device if winner is not None else None,
            op.started_at,
            control.clock.wall(),
            succeeded,
            why,
        )
        call.transfers.append(record)
        _LOGGER.info(
            "Call %s: attended transfer to %s %s",
            call.id,
            op.target,
            "succeeded" if succeeded else f"ended: {why}",
        )
        control.publish(TransferEnded(call.id, record))
        if not op.future.done():
            op.future.set_result(record)
        if end_call and call.active:
            control.terminate(call, CallOutcome.ANSWERED, f"transfer failed: {why}")

    def _tone(self, leg: Leg, tone: Tone) -> None:
        with contextlib.suppress(RelayError):
            self._control.play(leg, PlayTone(tone))


def _over(op: AttendedTransferOperation) -> bool:
    """Whether ``op`` was finished (re-read after an await: another event may have ended it)."""
    return op.done


def _point(leg: MediaLeg, sdp: SessionDescription) -> None:
    """Send ``leg``'s audio where ``sdp`` asks, in its codecs."""
    rtp, rtcp = media_target(sdp)
    leg.set_remote(rtp, rtcp)
    audio = sdp.audio()
    if audio is not None:
        leg.set_codecs(audio.codecs())
