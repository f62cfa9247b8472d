"""The call model: the state machine, records and the bounded history."""

from __future__ import annotations

import pytest

from sip_core.calls import (
    Call,
    CallHistory,
    CallOutcome,
    CallState,
    HandoffRecord,
    InvalidTransition,
    Leg,
    LegRole,
)


def new_call() -> Call:
    return Call("c1", caller_user="Carol", dialled="200", callee_user="Alice", started_at=100.0)


def test_a_normal_call_goes_through_every_state() -> None:
    call = new_call()
    path = [
        CallState.RINGING,
        CallState.TALKING,
        CallState.HELD,
        CallState.TALKING,
        CallState.ENDING,
        CallState.ENDED,
    ]
    previous = [call.transition(state) for state in path]
    assert previous == [
        CallState.SETUP,
        CallState.RINGING,
        CallState.TALKING,
        CallState.HELD,
        CallState.TALKING,
        CallState.ENDING,
    ]
    assert not call.active


@pytest.mark.parametrize(
    ("start", "bad"),
    [
        ([], CallState.HELD),
        ([CallState.RINGING, CallState.TALKING], CallState.RINGING),
        ([CallState.ENDED], CallState.TALKING),
        ([CallState.ENDING], CallState.TALKING),
    ],
)
def test_impossible_transitions_are_refused(start: list[CallState], bad: CallState) -> None:
    call = new_call()
    for state in start:
        call.transition(state)
    with pytest.raises(InvalidTransition):
        call.transition(bad)


def test_same_state_is_not_a_transition() -> None:
    call = new_call()
    assert call.transition(CallState.SETUP) is CallState.SETUP


def test_record_names_parties_devices_times_and_handoffs() -> None:
    call = new_call()
    call.caller = Leg(call, LegRole.CALLER, "a", "401", "<sip:400@home.arpa>")
    call.callee = Leg(call, LegRole.CALLEE, "b", "202", "<sip:200@home.arpa>")
    call.answered_at = 105.0
    call.answered_device = "201"
    call.ended_at = 165.0
    call.outcome = CallOutcome.ANSWERED
    call.reason = "401 hung up"
    handoff = HandoffRecord("c1", "201", "202", 120.0, 125.0, True, "answered")
    call.handoffs.append(handoff)
    record = call.record()
    assert (record.caller, record.dialled, record.callee_device) == ("401", "200", "202")
    assert record.answered_device == "201"
    assert record.duration == 60.0
    assert record.handoffs == (handoff,)
    assert call.devices == ("401", "202")


def test_unanswered_record_has_no_duration() -> None:
    call = new_call()
    call.ended_at = 130.0
    call.outcome = CallOutcome.NO_ANSWER
    assert call.record().duration == 0.0


def test_history_keeps_the_latest_records() -> None:
    history = CallHistory(limit=2)
    records = []
    for n in range(3):
        call = new_call()
        call.id = f"c{n}"
        call.ended_at = 200.0
        call.outcome = CallOutcome.BUSY
        records.append(call.record())
        history.add(records[-1])
    assert history.records() == records[1:]
    assert len(history) == 2
