"""Ring several targets at once, the first to answer wins: forking, as a B2BUA does it.

One implementation serves every "ring these, take the first answer" in the PBX: the caller's call
rings the callee's devices, a flip rings the target device's registrations, and later push,
transfers and ring groups ring theirs. Each ringing target is a `Leg` with an INVITE of its own.

The rules, the same for all of them:
- provisional responses make a leg early and are reported (`on_early`);
- the first 2xx wins: its dialog is confirmed and ACKed at once (an answer is ACKed whatever the
  caller of the group then does with it), every other leg is CANCELled and let go, and the
  winner is reported (`on_answer`);
- a 2xx after that -- a second fork, or one racing our CANCEL -- is ACKed and BYEd; a copy of the
  winner's 2xx gets our ACK again;
- when every leg has failed, one `ForkSummary` says why (`on_fail`);
- the ring timer (`start_timer`) reports `on_timeout` if nobody answered in time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from sip_core.calls import Leg, LegState
from sip_core.clock import Clock, TimerHandle
from sip_core.message import Response
from sip_core.registrar import Binding
from sip_core.sdp import SessionDescription

__all__ = ["BranchSender", "FailureKind", "ForkGroup", "ForkSummary", "Forking", "summarise"]

#: Sends one leg's INVITE: ``send(on_response, on_failed)`` (see `ForkGroup.add`).
BranchSender = Callable[[Callable[[Response], None], Callable[[int], None]], None]

#: The status a leg counts as when it ended without one of its own.
_NO_STATUS = 480


class FailureKind(StrEnum):
    """Why nobody answered, from the final statuses of every leg."""

    BUSY = "busy"  # some target said 486 or 600
    DECLINED = "declined"  # some target said 603 (and none was busy)
    CANCELLED = "cancelled"  # every leg ended with 487
    UNREACHABLE = "unreachable"  # every leg timed out or was unavailable (408, 480)
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class ForkSummary:
    """Why a fork failed: one kind, and each leg's final status in the order they rang."""

    kind: FailureKind
    statuses: tuple[int, ...]


def summarise(statuses: Sequence[int]) -> ForkSummary:
    """The one reading of a fork's failure statuses that set-up and flip share."""
    if any(status in (486, 600) for status in statuses):
        kind = FailureKind.BUSY
    elif any(status == 603 for status in statuses):
        kind = FailureKind.DECLINED
    elif statuses and all(status == 487 for status in statuses):
        kind = FailureKind.CANCELLED
    elif all(status in (408, 480) for status in statuses):
        kind = FailureKind.UNREACHABLE
    else:
        kind = FailureKind.OTHER
    return ForkSummary(kind, tuple(statuses))


class Forking(Protocol):
    """What a fork group needs of call control: INVITEs out, CANCEL, BYE, letting a leg go."""

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
    ) -> None: ...

    def confirm_answer(self, leg: Leg, response: Response) -> None: ...

    def ack_again(self, leg: Leg, response: Response) -> bool: ...

    def reject_late_answer(self, leg: Leg, response: Response) -> None: ...

    def cancel_branch(self, leg: Leg) -> None: ...

    def hang_up(self, leg: Leg) -> None: ...

    def release(self, leg: Leg) -> None: ...


class ForkGroup:
    """Legs ringing for one purpose; see the module docstring for the rules.

    ``legs`` is the list the group appends its legs to (a call's ``branches``, so that the call
    shows what rings); a new list by default.
    """

    def __init__(
        self,
        forking: Forking,
        clock: Clock,
        *,
        on_answer: Callable[[Leg, Response], None],
        on_fail: Callable[[ForkSummary], None],
        on_timeout: Callable[[], None],
        on_early: Callable[[Leg, Response], None] | None = None,
        legs: list[Leg] | None = None,
    ) -> None:
        self._forking = forking
        self._clock = clock
        self._on_answer = on_answer
        self._on_fail = on_fail
        self._on_timeout = on_timeout
        self._on_early = on_early
        self.legs: list[Leg] = legs if legs is not None else []
        self.winner: Leg | None = None
        self.done = False
        self._timer: TimerHandle | None = None
        self._decided: list[Callable[[], None]] = []

    @property
    def deciding(self) -> bool:
        """Still waiting for the first answer (no winner, not given up)."""
        return not self.done and self.winner is None

    def ring(
        self,
        leg: Leg,
        binding: Binding,
        *,
        presented: str,
        offer: SessionDescription,
        port: int | None = None,
    ) -> None:
        """Ring one registration for ``leg`` (see `Forking.send_branch_invite` for the rest)."""

        def send(on_response: Callable[[Response], None], on_failed: Callable[[int], None]) -> None:
            self._forking.send_branch_invite(
                leg,
                binding,
                presented=presented,
                offer=offer,
                port=port,
                on_response=on_response,
                on_timeout=lambda: on_failed(408),
            )

        self.add(leg, send)

    def add(self, leg: Leg, send: BranchSender) -> None:
        """Ring ``leg`` with an INVITE that ``send`` sends itself (a trunk's, with credentials).

        ``send(on_response, on_failed)`` reports every response it does not deal with itself to
        ``on_response``, and a failure without a usable response (timeout, refused credentials)
        to ``on_failed`` with the status it counts as."""
        self.legs.append(leg)
        send(
            lambda response: self._response(leg, response), lambda status: self._failed(leg, status)
        )

    def when_decided(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the group stops deciding (a winner, or stopped), so that what
        a feature keeps running while it rings (a re-check timer) ends with it."""
        if self.deciding:
            self._decided.append(callback)
        else:
            callback()

    def _no_longer_deciding(self) -> None:
        callbacks, self._decided = self._decided, []
        for callback in callbacks:
            callback()

    def start_timer(self, seconds: float) -> None:
        """No answer within ``seconds``: `on_timeout` (unless decided by then)."""
        if self.deciding:
            self._timer = self._clock.call_later(seconds, self._expired)

    def stop(self) -> None:
        """Stop deciding (the call ended, or the feature gave up): no timer, no more reports."""
        self.done = True
        self._stop_timer()
        self._no_longer_deciding()

    def close(self, keep: Leg | None = None) -> None:
        """Stop, and end every leg but ``keep``: BYE an answered one, CANCEL a ringing one."""
        self.stop()
        for leg in self.legs:
            if leg is keep:
                continue
            if leg.state is LegState.CONFIRMED:
                self._forking.hang_up(leg)
            else:
                self._forking.cancel_branch(leg)
            self._forking.release(leg)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        if self.deciding:
            self._on_timeout()

    def _response(self, leg: Leg, response: Response) -> None:
        status = response.status
        if status == 100:
            return
        if status < 200:
            if leg.state is LegState.TERMINATED or not self.deciding:
                return
            leg.state = LegState.EARLY
            if self._on_early is not None:
                self._on_early(leg, response)
            return
        if status >= 300:
            self._failed(leg, status)
            return
        if leg is self.winner and self._forking.ack_again(leg, response):
            return
        if leg.state is LegState.TERMINATED or not self.deciding:
            self._forking.reject_late_answer(leg, response)
            return
        self.winner = leg
        self._stop_timer()
        self._no_longer_deciding()
        self._forking.confirm_answer(leg, response)
        for other in self.legs:
            if other is not leg:
                self._forking.cancel_branch(other)
                self._forking.release(other)
        self._on_answer(leg, response)

    def _failed(self, leg: Leg, status: int) -> None:
        was_live = leg.state is not LegState.TERMINATED
        leg.state = LegState.TERMINATED
        if leg.failed_status is None:
            leg.failed_status = status
        if not was_live or not self.deciding:
            return
        if any(other.state is not LegState.TERMINATED for other in self.legs):
            return
        self.stop()
        self._on_fail(summarise([other.failed_status or _NO_STATUS for other in self.legs]))
