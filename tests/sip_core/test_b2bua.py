"""The B2BUA in process: call set-up, forking, failures, in-call requests, dead legs.

Phones are fake (tests/sip_core/test_b2bua_harness.py); transactions and the media relay are
real; time is a ManualClock. Nothing is timed.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sip_core.calls import CallOutcome, CallState
from sip_core.events import CallRecorded, CallStateChanged, DtmfMethod, DtmfReceived

from .test_b2bua_harness import (
    Harness,
    Phone,
    connect,
    make_config,
    ring,
    sdp,
    sdp_port,
)


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness()
    yield harness
    harness.close()


# -- set-up and failures ---------------------------------------------------------------------------


async def test_invite_without_credentials_is_challenged_with_407(h: Harness) -> None:
    alice = h.phone("201", 5201)
    carol = h.phone("401", 5401)
    await ring(h, alice, "400", authenticate=False)
    (challenge,) = alice.responses(407)
    assert (challenge.headers.get("Proxy-Authenticate") or "").startswith("Digest ")
    assert carol.requests("INVITE") == []
    assert h.b2bua.calls() == []


@pytest.mark.parametrize(
    ("dialled", "register", "status"),
    [("999", True, 404), ("400", False, 480), ("401", False, 480)],
)
async def test_unknown_number_and_nothing_registered(
    h: Harness, dialled: str, register: bool, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    alice = h.phone("201", 5201)
    h.phone("401", 5401, register=register)
    caplog.set_level("INFO")
    await ring(h, alice, dialled)
    assert [r.status for r in alice.responses() if r.status >= 200] == [status]
    why = "unknown number" if status == 404 else "no device registered"
    assert any(why in record.getMessage() for record in caplog.records)


async def test_busy_device_gets_486(h: Harness) -> None:
    alice = h.phone("201", 5201)
    carol = h.phone("401", 5401)
    bob = h.phone("301", 5301)
    await connect(h, alice, carol, "401")
    await ring(h, bob, "401")
    assert [r.status for r in bob.responses() if r.status >= 200] == [486]
    assert len(carol.requests("INVITE")) == 1


async def test_callee_busy_response_is_passed_back_as_486(h: Harness) -> None:
    alice = h.phone("201", 5201)
    carol = h.phone("401", 5401)
    await ring(h, alice, "400")
    carol.answer(carol.last_request("INVITE"), 486)
    assert [r.status for r in alice.responses() if r.status >= 200] == [486]
    (record,) = h.b2bua.history.records()
    assert record.outcome is CallOutcome.BUSY
    assert len(carol.requests("ACK")) == 1  # the transaction layer ACKed the 486


async def test_no_answer_in_time_cancels_and_answers_480(h: Harness) -> None:
    alice = h.phone("201", 5201)
    carol = h.phone("401", 5401)
    await ring(h, alice, "400")
    offered = carol.last_request("INVITE")
    carol.answer(offered, 180)
    assert [r.status for r in alice.responses()][-1] == 180
    h.clock.advance(30)
    (cancel,) = carol.requests("CANCEL")
    assert cancel.call_id == offered.call_id
    assert [r.status for r in alice.responses() if r.status >= 200] == [480]
    carol.reply(cancel, 200)
    carol.answer(offered, 487)
    assert len(carol.requests("ACK")) == 1
    (record,) = h.b2bua.history.records()
    assert record.outcome is CallOutcome.NO_ANSWER
    assert "no answer" in record.reason


async def test_forking_first_answer_wins_and_the_others_are_cancelled(h: Harness) -> None:
    carol = h.phone("401", 5401)
    desk = h.phone("301", 5301)
    mobile = h.phone("302", 5302)
    invite = await ring(h, carol, "300")
    to_desk, to_mobile = desk.last_request("INVITE"), mobile.last_request("INVITE")
    assert to_desk.call_id != to_mobile.call_id != invite.call_id  # each leg its own dialog
    assert '"Carol"' in (to_desk.headers.get("From") or "")
    desk.answer(to_desk, 180)
    mobile.answer(to_mobile, 180)
    mobile.answer(to_mobile, 200, sdp(6302))
    assert len(carol.responses(200)) == 1
    (cancel,) = desk.requests("CANCEL")
    desk.reply(cancel, 200)
    desk.answer(to_desk, 487)
    assert len(desk.requests("ACK")) == 1  # the 487 is ACKed
    assert mobile.requests("CANCEL") == []
    assert mobile.requests("ACK")[-1].call_id == to_mobile.call_id
    call = h.only_call()
    assert call.state is CallState.TALKING
    assert call.devices == ("401", "302")


async def test_extension_does_not_ring_the_calling_device(h: Harness) -> None:
    desk = h.phone("201", 5201)
    mobile = h.phone("202", 5202)
    await ring(h, desk, "200")
    assert desk.requests("INVITE") == []
    assert len(mobile.requests("INVITE")) == 1


async def test_sdp_is_rewritten_through_the_relay_both_ways(h: Harness) -> None:
    alice = h.phone("201", 5201)
    carol = h.phone("401", 5401)
    await connect(h, alice, carol, "400")
    call = h.only_call()
    assert call.media is not None
    offered = carol.last_request("INVITE")
    assert sdp_port(offered.body) == call.media.b.local_rtp.port
    assert b"c=IN IP4 127.0.0.1" in offered.body
    ok = alice.responses(200)[-1]
    assert sdp_port(ok.body) == call.media.a.local_rtp.port
    assert b"telephone-event" in ok.body
    assert call.media.a.remote_rtp == ("127.0.0.1", 6201)
    assert call.media.b.remote_rtp == ("127.0.0.1", 6401)


async def test_early_media_183_is_relayed_with_rewritten_sdp(h: Harness) -> None:
    alice = h.phone("201", 5201)
    carol = h.phone("401", 5401)
    await ring(h, alice, "400")
    carol.answer(carol.last_request("INVITE"), 183, sdp(6401))
    early = alice.responses(183)[-1]
    call = h.only_call()
    assert call.media is not None
    assert sdp_port(early.body) == call.media.a.local_rtp.port
    assert call.state is CallState.RINGING
    assert call.media.b.remote_rtp == ("127.0.0.1", 6401)


async def test_caller_cancel_cancels_the_callee(h: Harness) -> None:
    alice = h.phone("201", 5201)
    carol = h.phone("401", 5401)
    invite = await ring(h, alice, "400")
    carol.answer(carol.last_request("INVITE"), 180)
    alice.cancel(invite)
    assert alice.responses(487)
    assert len(carol.requests("CANCEL")) == 1
    (record,) = h.b2bua.history.records()
    assert record.outcome is CallOutcome.CANCELLED


async def test_cancel_racing_200_the_late_answer_is_acked_and_byed(h: Harness) -> None:
    alice = h.phone("201", 5201)
    carol = h.phone("401", 5401)
    invite = await ring(h, alice, "400")
    offered = carol.last_request("INVITE")
    carol.answer(offered, 180)
    alice.cancel(invite)
    assert carol.requests("CANCEL")
    carol.answer(offered, 200, sdp(6401))  # crossed our CANCEL on the wire
    (ack,) = carol.requests("ACK")
    (bye,) = carol.requests("BYE")
    assert ack.call_id == bye.call_id == offered.call_id
    assert [r for r in alice.responses(200) if r.cseq.method == "INVITE"] == []
    assert [r.status for r in alice.responses() if r.cseq.method == "INVITE"][-1] == 487


async def test_second_fork_answering_late_is_acked_and_byed(h: Harness) -> None:
    carol = h.phone("401", 5401)
    desk = h.phone("301", 5301)
    mobile = h.phone("302", 5302)
    await ring(h, carol, "300")
    to_desk, to_mobile = desk.last_request("INVITE"), mobile.last_request("INVITE")
    desk.answer(to_desk, 180)
    mobile.answer(to_mobile, 200, sdp(6302))
    desk.answer(to_desk, 200, sdp(6301))
    assert len(desk.requests("ACK")) == 1
    assert sent(desk, "BYE") == 1
    assert len(carol.responses(200)) == 1


# -- in the call -----------------------------------------------------------------------------------


async def test_reinvite_hold_and_resume_pass_across(h: Harness) -> None:
    alice = h.phone("201", 5201)
    carol = h.phone("401", 5401)
    await connect(h, alice, carol, "400")
    call = h.only_call()
    hold = alice.request("INVITE", body=sdp(6201, direction="sendonly"))
    reinvite = carol.last_request("INVITE")
    assert reinvite.to.tag
    assert b"a=sendonly" in reinvite.body
    assert sdp_port(reinvite.body) == call.media.b.local_rtp.port  # type: ignore[union-attr]
    carol.reply(reinvite, 200, sdp(6401, direction="recvonly"))
    assert len(carol.requests("ACK")) == 2  # initial + re-INVITE
    ok = [r for r in alice.responses(200) if r.cseq.number == hold.cseq.number][-1]
    assert b"a=recvonly" in ok.body
    assert call.state is CallState.HELD
    media = call.media
    assert media is not None
    assert media.a.on_hold  # the relay knows: a silent held call is not timed out
    alice.send(alice.in_dialog_request(alice.dialog(), "ACK", cseq=hold.cseq.number))
    alice.request("INVITE", body=sdp(6201))
    carol.reply(carol.last_request("INVITE"), 200, sdp(6401))
    assert h.only_call().state is CallState.TALKING
    assert not media.a.on_hold
    assert not media.b.on_hold
    states = [e.state for e in h.events_of(CallStateChanged)]
    assert states[-2:] == [CallState.HELD, CallState.TALKING]


async def test_update_from_the_callee_passes_to_the_caller(h: Harness) -> None:
    alice = h.phone("201", 5201)
    carol = h.phone("401", 5401)
    await connect(h, alice, carol, "400")
    update = carol.request("UPDATE", body=sdp(7401))
    (forwarded,) = alice.requests("UPDATE")
    assert forwarded.call_id != update.call_id
    alice.reply(forwarded, 200, sdp(7201))
    (ok,) = [r for r in carol.responses(200) if r.cseq.method == "UPDATE"]
    assert b"m=audio" in ok.body
    call = h.only_call()
    assert call.media is not None
    assert call.media.b.remote_rtp == ("127.0.0.1", 7401)


async def test_a_retransmitted_200_during_the_call_gets_the_same_ack_and_nothing_else(
    h: Harness,
) -> None:
    alice = h.phone("201", 5201)
    carol = h.phone("401", 5401)
    _, offered = await connect(h, alice, carol, "400")
    (ack,) = carol.requests("ACK")
    to_alice = len(alice.responses())
    # Our ACK was lost on the way: carol's 200 comes again.
    carol.answer(offered, 200, sdp(6401))
    first, again = carol.requests("ACK")
    assert again.to_bytes() == first.to_bytes() == ack.to_bytes()
    # The call goes on untouched: nothing new to alice, nobody hung up.
    assert len(alice.responses()) == to_alice
    assert carol.requests("BYE") == []
    assert alice.requests("BYE") == []
    assert h.only_call().state is CallState.TALKING


@pytest.mark.parametrize("who", ["caller", "callee"])
async def test_bye_from_either_side_ends_both(h: Harness, who: str) -> None:
    alice = h.phone("201", 5201)
    carol = h.phone("401", 5401)
    await connect(h, alice, carol, "400")
    sender, other = (alice, carol) if who == "caller" else (carol, alice)
    sender.request("BYE")
    assert sender.responses(200)[-1].cseq.method == "BYE"
    assert sent(other, "BYE") == 1
    assert h.b2bua.calls() == []
    (record,) = h.b2bua.history.records()
    assert record.outcome is CallOutcome.ANSWERED
    assert h.events_of(CallRecorded)[0].record == record


async def test_reinvite_glare_gets_491(h: Harness) -> None:
    alice = h.phone("201", 5201)
    carol = h.phone("401", 5401)
    await connect(h, alice, carol, "400")
    alice.request("INVITE", body=sdp(6201, direction="sendonly"))
    assert len(carol.requests("INVITE")) == 2
    carol.request("INVITE", body=sdp(6401, direction="sendonly"))
    assert carol.responses(491)
    assert len(alice.requests("INVITE")) == 0


async def test_491_from_the_far_end_is_passed_back(h: Harness) -> None:
    alice = h.phone("201", 5201)
    carol = h.phone("401", 5401)
    await connect(h, alice, carol, "400")
    alice.request("INVITE", body=sdp(6201, direction="sendonly"))
    carol.reply(carol.last_request("INVITE"), 491)
    assert alice.responses(491)
    assert h.only_call().state is CallState.TALKING


async def test_bye_during_reinvite_ends_both_and_answers_the_reinvite(h: Harness) -> None:
    alice = h.phone("201", 5201)
    carol = h.phone("401", 5401)
    await connect(h, alice, carol, "400")
    alice.request("INVITE", body=sdp(6201, direction="sendonly"))
    carol.request("BYE")
    assert alice.requests("BYE")
    assert alice.responses(487)  # the pending re-INVITE is answered
    assert h.b2bua.calls() == []


async def test_request_for_an_unknown_dialog_gets_481(h: Harness) -> None:
    alice = h.phone("201", 5201)
    carol = h.phone("401", 5401)
    await connect(h, alice, carol, "400")
    alice.request("BYE")
    alice.request("BYE")
    assert alice.responses(481)


async def test_session_timer_expiry_tears_both_sides_down(h: Harness) -> None:
    alice = h.phone("201", 5201)
    carol = h.phone("401", 5401)
    invite = await ring(h, alice, "400", extra=(("Supported", "timer"), ("Session-Expires", "90")))
    offered = carol.last_request("INVITE")
    carol.answer(offered, 200, sdp(6401))
    ok = alice.responses(200)[-1]
    assert ok.headers.get("Session-Expires") == "90;refresher=uac"
    assert ok.headers.get("Require") == "timer"
    alice.confirm(invite, ok)
    h.clock.advance(50)  # a refresh resets the timer
    alice.request("UPDATE")  # bodiless: answered by us, not passed to Carol
    assert carol.requests("UPDATE") == []
    (refreshed,) = [r for r in alice.responses(200) if r.cseq.method == "UPDATE"]
    assert refreshed.headers.get("Session-Expires") == "90;refresher=uac"
    h.clock.advance(50)
    assert alice.requests("BYE") == []
    h.clock.advance(20)
    assert sent(alice, "BYE") == 1
    assert sent(carol, "BYE") == 1
    (record,) = h.b2bua.history.records()
    assert "session timer" in record.reason


async def test_too_small_session_interval_gets_422(h: Harness) -> None:
    alice = h.phone("201", 5201)
    h.phone("401", 5401)
    await ring(h, alice, "400", extra=(("Supported", "timer"), ("Session-Expires", "30")))
    (too_small,) = alice.responses(422)
    assert too_small.headers.get("Min-SE") == "90"


async def test_missing_ack_tears_both_sides_down(h: Harness) -> None:
    alice = h.phone("201", 5201)
    carol = h.phone("401", 5401)
    await ring(h, alice, "400")
    carol.answer(carol.last_request("INVITE"), 200, sdp(6401))
    assert alice.responses(200)
    h.clock.advance(40)
    assert sent(carol, "BYE") == 1
    assert sent(alice, "BYE") == 1
    assert "no ACK" in h.b2bua.history.records()[0].reason


async def test_forwarded_request_timing_out_releases_the_call(h: Harness) -> None:
    alice = h.phone("201", 5201)
    carol = h.phone("401", 5401)
    await connect(h, alice, carol, "400")
    alice.request("INVITE", body=sdp(6201, direction="sendonly"))
    h.clock.advance(40)  # carol never answers the re-INVITE: she is gone
    assert alice.responses(408)
    assert sent(alice, "BYE") == 1
    assert h.b2bua.calls() == []


async def test_info_dtmf_is_reported_and_passed_on(h: Harness) -> None:
    alice = h.phone("201", 5201)
    carol = h.phone("401", 5401)
    await connect(h, alice, carol, "400")
    alice.request(
        "INFO", body=b"Signal=5\r\nDuration=160\r\n", content_type="application/dtmf-relay"
    )
    assert alice.responses(200)[-1].cseq.method == "INFO"
    (event,) = h.events_of(DtmfReceived)
    assert (event.digit, event.device, event.method) == ("5", "201", DtmfMethod.INFO)
    (info,) = carol.requests("INFO")
    assert b"Signal=5" in info.body


async def test_other_info_is_forwarded_and_answered_with_the_far_status(h: Harness) -> None:
    alice = h.phone("201", 5201)
    carol = h.phone("401", 5401)
    await connect(h, alice, carol, "400")
    alice.request("INFO", body=b"hello", content_type="text/plain")
    (info,) = carol.requests("INFO")
    carol.reply(info, 200)
    assert [r for r in alice.responses(200) if r.cseq.method == "INFO"]


async def test_hangup_api_ends_both_sides(h: Harness) -> None:
    alice = h.phone("201", 5201)
    carol = h.phone("401", 5401)
    await connect(h, alice, carol, "400")
    call = h.only_call()
    assert h.b2bua.hangup(call.id)
    assert alice.requests("BYE")
    assert carol.requests("BYE")
    assert not h.b2bua.hangup(call.id)


async def test_no_answer_timeout_is_configurable() -> None:
    harness = Harness(make_config(no_answer=5))
    try:
        alice = harness.phone("201", 5201)
        carol = harness.phone("401", 5401)
        await ring(harness, alice, "400")
        carol.answer(carol.last_request("INVITE"), 180)
        harness.clock.advance(5)
        assert carol.requests("CANCEL")
    finally:
        harness.close()


def sent(phone: Phone, method: str) -> int:
    """How many distinct requests (retransmissions counted once) the phone got."""
    return len({(r.call_id, r.cseq.number) for r in phone.requests(method)})


async def test_no_dialog_state_is_left_after_calls_end(h: Harness) -> None:
    carol = h.phone("401", 5401)
    desk = h.phone("301", 5301)
    mobile = h.phone("302", 5302)
    invite = await ring(h, carol, "300")
    desk.answer(desk.last_request("INVITE"), 180)
    mobile.answer(mobile.last_request("INVITE"), 200, sdp(6302))
    carol.confirm(invite, carol.responses(200)[-1])
    carol.request("BYE")
    assert h.b2bua.calls() == []
    assert h.b2bua._dialogs == {}
    assert h.b2bua._invites == {}
    assert h.relay.sessions == {}


async def test_no_call_events_are_built_without_listeners_but_history_is_kept(h: Harness) -> None:
    listening = [False]
    h.b2bua._listening = lambda: listening[0]
    alice = h.phone("201", 5201)
    carol = h.phone("401", 5401)
    await connect(h, alice, carol, "400")
    assert h.events == []
    listening[0] = True
    alice.request("BYE")
    assert [e.state for e in h.events_of(CallStateChanged)] == [CallState.ENDING, CallState.ENDED]
    assert len(h.events_of(CallRecorded)) == 1
    assert len(h.b2bua.history.records()) == 1


async def test_the_callee_rings_before_the_loop_runs_anything_else(h: Harness) -> None:
    """The INVITE to the callee goes out while the caller's INVITE is handled, not from a task
    that waits for the rest of the loop's batch of datagrams (under load, most of the set-up)."""
    caller, callee = h.phone("201", 5201), h.phone("301", 5301)
    caller.invite("301")  # no settle(): nothing else may run in between
    offered = callee.last_request("INVITE")
    assert offered.method == "INVITE"
    assert caller.responses(100)
