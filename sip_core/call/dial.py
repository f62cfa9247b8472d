"""Numbers a feature dials: one resolution and one way to ring what a number reaches.

Why its own module: a transfer's target, an attended transfer's consultation, an announcement and
a call's own set-up must agree on what a number means, or "dial 300" rings a group in one place
and gets an error tone in another. `resolve` gives the one answer for a number dialled by a
device in a call: a user's extension or a device (`Destination`), a Personal Ring Group's pilot
(the `RingPlan` the ring group feature makes, through `CallControl.route_number`), or an outside
number the dial plan sends out through a trunk (`OutboundTarget`, only when the dialling user may
call out: else `OutsideNotAllowed`). `ring` then rings it for a leg of a call, first answer wins:

- a destination's devices with Call Forward Always followed (`CallControl.follow_forwards`, the
  one implementation, loops cut there: 482) and busy devices skipped (in a call, Do Not Disturb,
  Make Busy);
- a group's present, available members, for the group's ring timer; who may ring is asked again
  every `RECHECK_INTERVAL` seconds while it rings, so a member who becomes present and available
  starts ringing (the group's no-answer destination is the call set-up's rule: a feature that
  rings a group applies its own, a transfer's recall);
- an outside number: one branch to the provider (`CallControl.ring_trunk`).

When nothing can ring, `ring` answers a `NotRung` with the reason and a SIP status instead of a
fork, so every feature words its refusal the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from sip_core.call.targets import Destination, RingPlan, destination, ringable
from sip_core.calls import Call, Leg, LegRole, LegState, Side
from sip_core.clock import TimerHandle
from sip_core.dialog import name_address
from sip_core.forwarding import ForwardingLoop
from sip_core.message import Response
from sip_core.registrar import Binding
from sip_core.sdp import SessionDescription
from sip_core.trunk.egress import OutboundRefusal, OutboundTarget

if TYPE_CHECKING:
    from sip_core.call.control import CallControl
    from sip_core.call.fork import ForkGroup, ForkSummary

__all__ = [
    "RECHECK_INTERVAL",
    "DialTarget",
    "NotRung",
    "OutsideNotAllowed",
    "RingRequest",
    "keep_ringing",
    "resolve",
    "ring",
]

#: How often a ringing group's members are checked again (the rule: at least every 4 s).
RECHECK_INTERVAL: Final = 2.0

#: What a number reaches: a user or device, a ring group, or an outside number.
DialTarget = Destination | RingPlan | OutboundTarget


class OutsideNotAllowed(Exception):
    """The number goes out through a trunk, and the dialling user may not call out."""


@dataclass(frozen=True, slots=True)
class NotRung:
    """Nothing could ring for the number: ``reason`` (for the log and the record), ``status``
    (the SIP status it counts as: 482 a forwarding loop, 486 busy, 480 nobody registered)."""

    reason: str
    status: int


@dataclass(frozen=True, slots=True)
class RingRequest:
    """How the ringing legs belong to ``call``: their ``role`` and relay ``side``, whom the
    devices see calling (``presented``), the ``offer`` (rewritten to the relay's ``port``), and
    the device that never rings (``exclude``: the party that would be called back to itself)."""

    call: Call
    role: LegRole
    side: Side
    presented: str
    offer: SessionDescription
    port: int | None = None
    exclude: str = ""


def resolve(
    control: CallControl, caller_device: str, number: str, *, outside: bool = True
) -> DialTarget | None:
    """What ``number`` reaches when ``caller_device`` dials it; None when nothing (a wrong
    number). With ``outside``, a number the dial plan sends out is an `OutboundTarget` when the
    caller's user may call out (emergency numbers always), else `OutsideNotAllowed` is raised."""
    if not number:
        return None
    config = control.config()
    found = destination(config, caller_device, number)
    if found is not None and found.devices:
        return found
    plan = control.route_number(caller_device, number)
    if plan is not None:
        return plan
    if not outside:
        return None
    user = config.user_for_device(caller_device) if caller_device else None
    out = control.plan_outbound(number, user.name if user else None)
    if isinstance(out, OutboundRefusal):
        who = user.name if user else caller_device
        raise OutsideNotAllowed(f"{who} may not call {number} outside ({out.reason})")
    return out


def ring(
    control: CallControl,
    target: DialTarget,
    number: str,
    request: RingRequest,
    *,
    timeout: float,
    on_answer: Callable[[Leg, Response], None],
    on_fail: Callable[[ForkSummary], None],
    on_timeout: Callable[[], None],
) -> ForkGroup | NotRung:
    """Ring ``target`` (what ``number`` reached) for ``request``'s call, its timer started:
    ``timeout`` seconds, or a group's own ring timer. `NotRung` when nothing could ring."""
    domain = control.config().sip.domain

    def fork_of(bindings: Sequence[Binding], party: str, seconds: float) -> ForkGroup:
        fork = control.ring(
            request.call,
            bindings,
            role=request.role,
            side=request.side,
            party=party,
            presented=request.presented,
            offer=request.offer,
            port=request.port,
            on_answer=on_answer,
            on_fail=on_fail,
            on_timeout=on_timeout,
        )
        fork.start_timer(seconds)
        return fork

    if isinstance(target, OutboundTarget):
        party = f"<sip:{number}@{domain}>"
        fork = fork_of((), party, timeout)
        control.ring_trunk(
            fork,
            request.call,
            target,
            role=request.role,
            side=request.side,
            party=party,
            offer=request.offer,
            port=request.port,
        )
        return fork
    if isinstance(target, RingPlan):
        members = target.available() if target.available is not None else target.devices
        wanted = ringable(
            members, busy=control.is_busy, bindings=control.bindings, caller=request.exclude
        )
        if not wanted.bindings:
            return NotRung(f"nobody in {target.name} can take the call", 480)
        fork = fork_of(
            wanted.bindings, name_address(target.name, f"sip:{number}@{domain}"), target.timeout
        )
        keep_ringing(control, target, number, request, fork)
        return fork
    try:
        devices = control.follow_forwards(target.devices)
    except ForwardingLoop as loop:
        return NotRung(f"{number}: {loop}", 482)
    wanted = ringable(
        devices, busy=control.is_busy, bindings=control.bindings, caller=request.exclude
    )
    if not wanted.bindings:
        if wanted.busy:
            return NotRung(f"{number} is busy", 486)
        return NotRung(f"{number} has no device registered", 480)
    party = name_address(target.user.name, f"sip:{number}@{domain}")
    return fork_of(wanted.bindings, party, timeout)


def keep_ringing(
    control: CallControl, plan: RingPlan, number: str, request: RingRequest, fork: ForkGroup
) -> None:
    """While ``fork`` rings a group, ring the members who may ring now and do not yet."""
    if plan.available is None:
        return
    available = plan.available
    party = name_address(plan.name, f"sip:{number}@{control.config().sip.domain}")

    timer: TimerHandle | None = None

    def recheck() -> None:
        nonlocal timer
        call = request.call
        if not call.active or not fork.deciding:
            return
        ringing = {leg.device for leg in fork.legs if leg.state is not LegState.TERMINATED}
        for member in available():
            if member in ringing or member == request.exclude or control.is_busy(member):
                continue
            for binding in control.bindings(member):
                leg = Leg(call, request.role, request.side, member, party)
                fork.ring(
                    leg,
                    binding,
                    presented=request.presented,
                    offer=request.offer,
                    port=request.port,
                )
        if fork.deciding:
            timer = control.clock.call_later(RECHECK_INTERVAL, recheck)

    def stop() -> None:
        if timer is not None:
            timer.cancel()

    timer = control.clock.call_later(RECHECK_INTERVAL, recheck)
    fork.when_decided(stop)
