"""The call sensors during a transfer: "transferring" and "held" (call_view, on snapshots)."""

from __future__ import annotations

from dataclasses import dataclass

from custom_components.callflip.call_view import PhoneState, views_of
from sip_core.call_snapshot import snapshot_of
from sip_core.calls import Call, CallState, Leg, LegRole, LegState, OperationView


@dataclass
class _Transfer:
    """A stand-in transfer operation: only its view matters here."""

    transferring: Leg
    holds_other: bool
    kind: str = "transfer"
    blocks_offers: bool = True

    def owns(self, leg: Leg) -> bool:
        return False

    def on_leg_bye(self, leg: Leg) -> bool:
        return False

    def on_call_end(self) -> None:
        return None

    def view(self) -> OperationView:
        return OperationView(self.kind, self.transferring, "300", 0.0, self.holds_other)


def answered_call() -> tuple[Call, Leg, Leg]:
    call = Call("c1", caller_user="Bob", dialled="201", callee_user="Alice", started_at=0.0)
    bob = Leg(call, LegRole.CALLER, "a", "bob-soft", "<sip:102@x>")
    desk = Leg(call, LegRole.CALLEE, "b", "alice-desk", "<sip:101@x>")
    bob.state = desk.state = LegState.CONFIRMED
    call.caller, call.callee = bob, desk
    call.transition(CallState.TALKING)
    call.answered_at = 1.0
    return call, bob, desk


def states(call: Call) -> dict[str, PhoneState]:
    return {view.username: view.state for view in views_of(snapshot_of(call), {})}


def test_attended_transfer_holds_the_other_party() -> None:
    call, _bob, desk = answered_call()
    call.operation = _Transfer(desk, holds_other=True)
    assert states(call) == {
        "bob-soft": PhoneState.HELD,
        "alice-desk": PhoneState.TRANSFERRING,
    }


def test_blind_transfer_shows_the_passed_on_party_transferring_and_not_the_released_one() -> None:
    call, _bob, desk = answered_call()
    desk.state = LegState.TERMINATED  # released at once
    call.operation = _Transfer(desk, holds_other=False)
    assert states(call) == {"bob-soft": PhoneState.TRANSFERRING}


def test_without_a_transfer_nothing_changes() -> None:
    call, _bob, _desk = answered_call()
    assert states(call) == {"bob-soft": PhoneState.TALKING, "alice-desk": PhoneState.TALKING}
