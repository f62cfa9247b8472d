"""Flip: moving one side of a live call to another device of the same user.

The other party's dialog must never see a request from us during a flip (no re-INVITE, no BYE):
the tests check the caller's inbox holds nothing but responses.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest

from sip_core.calls import CallState, LegRole
from sip_core.dtmf import TelephoneEvent, build_telephone_event
from sip_core.events import (
    DtmfMethod,
    DtmfReceived,
    HandoffFailed,
    HandoffStarted,
    HandoffSucceeded,
)
from sip_core.features import (
    CallNotFlippable,
    FlipInProgress,
    NoFlipTarget,
    NoSuchCall,
    NotUsersDevice,
    TargetIsCurrentDevice,
    TargetNotRegistered,
    UnknownDevice,
)
from sip_core.rtp import RtpPacket

from .test_b2bua_harness import Harness, Phone, sdp, sdp_port, settle


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness()
    yield harness
    harness.close()


async def answered_call(h: Harness) -> tuple[Phone, Phone, Phone]:
    """Carol (401) calls Alice (200); Alice's desk (201) answers, her mobile (202) is free."""
    carol = h.phone("401", 5401)
    desk = h.phone("201", 5201)
    mobile = h.phone("202", 5202)
    invite = carol.invite("200")
    await settle()
    to_mobile = mobile.last_request("INVITE")
    mobile.answer(to_mobile, 180)
    desk.answer(desk.last_request("INVITE"), 200, sdp(6201))
    mobile.reply(mobile.last_request("CANCEL"), 200)
    mobile.answer(to_mobile, 487)
    carol.confirm(invite, carol.responses(200)[-1])
    mobile.seen = len(mobile.inbox())
    return carol, desk, mobile


def new_invites(phone: Phone) -> list:  # type: ignore[type-arg]
    return [m for m in phone.new() if getattr(m, "method", None) == "INVITE"]


async def test_flip_moves_the_call_and_leaves_the_caller_untouched(h: Harness) -> None:
    carol, desk, mobile = await answered_call(h)
    call = h.only_call()
    assert call.media is not None
    carol_requests_before = len(carol.requests())
    old_port = call.media.b.local_rtp.port
    future = h.b2bua.flip(call.id)
    (ringing,) = new_invites(mobile)
    # An offer: a relay port of its own for the mobile, Carol's codecs with telephone-event.
    offered_port = sdp_port(ringing.body)
    assert offered_port != old_port
    assert b"a=rtpmap:0 PCMU/8000" in ringing.body
    assert b"a=rtpmap:101 telephone-event/8000" in ringing.body
    assert '"Carol"' in (ringing.headers.get("From") or "")  # caller ID: the remote party
    assert call.state is CallState.TALKING
    mobile.answer(ringing, 180)
    assert desk.requests("BYE") == []  # still on the desk until the mobile answers
    mobile.answer(ringing, 200, sdp(6202, pt=96))
    await settle()
    record = await asyncio.wait_for(future, 5)
    assert record.succeeded
    assert (record.from_device, record.to_device) == ("201", "202")
    (ack,) = [r for r in mobile.requests("ACK") if r.call_id == ringing.call_id]
    assert ack.body == b""  # the answer was in the 200
    assert call.media.b.local_rtp.port == offered_port
    # The mobile numbers telephone-event 96 where Carol (and our offer) said 101.
    assert call.media.a.payload_map == {96: 101}
    assert len(desk.requests("BYE")) == 1
    assert len(carol.requests()) == carol_requests_before == 0  # never re-INVITEd nor BYEd
    assert call.callee is not None
    assert call.callee.device == "202"
    assert call.callee.role is LegRole.CALLEE
    assert call.media.b.remote_rtp == ("127.0.0.1", 6202)
    assert [type(e) for e in h.events if isinstance(e, HandoffStarted | HandoffSucceeded)] == [
        HandoffStarted,
        HandoffSucceeded,
    ]
    # The call goes on with the mobile: its BYE ends the call for Carol.
    mobile.request("BYE")
    assert len(carol.requests("BYE")) == 1
    (history,) = h.b2bua.history.records()
    assert history.callee_device == "202"
    assert history.answered_device == "201"
    assert [(x.from_device, x.to_device, x.succeeded) for x in history.handoffs] == [
        ("201", "202", True)
    ]


async def test_the_targets_200_again_gets_the_same_ack_and_changes_nothing(h: Harness) -> None:
    carol, desk, mobile = await answered_call(h)
    call = h.only_call()
    future = h.b2bua.flip(call.id)
    (ringing,) = new_invites(mobile)
    mobile.answer(ringing, 200, sdp(6202))
    await settle()
    assert (await asyncio.wait_for(future, 5)).succeeded

    def acks() -> list[bytes]:
        return [r.to_bytes() for r in mobile.requests("ACK") if r.call_id == ringing.call_id]

    (ack,) = acks()
    # Our ACK was lost: the mobile's 200 comes again, and so does the same ACK, nothing else.
    mobile.answer(ringing, 200, sdp(6202))
    await settle()
    assert acks() == [ack, ack]
    assert len(desk.requests("BYE")) == 1
    assert carol.requests() == []
    assert mobile.requests("BYE") == []
    assert call.callee is not None
    assert call.callee.device == "202"


async def test_flip_without_answer_cancels_the_target_and_the_call_stays(h: Harness) -> None:
    carol, desk, mobile = await answered_call(h)
    call = h.only_call()
    future = h.b2bua.flip(call.id)
    (ringing,) = new_invites(mobile)
    mobile.answer(ringing, 180)
    h.clock.advance(30)
    (cancel,) = mobile.requests("CANCEL")[-1:]
    assert cancel.call_id == ringing.call_id
    record = await asyncio.wait_for(future, 5)
    assert not record.succeeded
    assert "no answer" in record.reason
    assert desk.requests("BYE") == []
    assert carol.requests() == []
    assert call.callee is not None
    assert call.callee.device == "201"
    assert call.state is CallState.TALKING
    (failed,) = h.events_of(HandoffFailed)
    assert failed.to_device == "202"


async def test_flip_timeout_argument_overrides_the_config(h: Harness) -> None:
    _, _, mobile = await answered_call(h)
    call = h.only_call()
    future = h.b2bua.flip(call.id, timeout=5)
    (ringing,) = new_invites(mobile)
    mobile.answer(ringing, 180)
    h.clock.advance(5)
    assert not (await asyncio.wait_for(future, 5)).succeeded


async def test_target_declining_fails_the_flip(h: Harness) -> None:
    _, desk, mobile = await answered_call(h)
    call = h.only_call()
    future = h.b2bua.flip(call.id, "202")
    (ringing,) = new_invites(mobile)
    mobile.answer(ringing, 486)
    record = await asyncio.wait_for(future, 5)
    assert not record.succeeded
    assert "busy" in record.reason
    assert desk.requests("BYE") == []


async def test_hangup_during_flip_cancels_the_target(h: Harness) -> None:
    carol, _, mobile = await answered_call(h)
    call = h.only_call()
    future = h.b2bua.flip(call.id)
    (ringing,) = new_invites(mobile)
    mobile.answer(ringing, 180)
    carol.request("BYE")
    assert mobile.requests("CANCEL")[-1].call_id == ringing.call_id
    record = await asyncio.wait_for(future, 5)
    assert not record.succeeded
    assert h.b2bua.calls() == []


async def test_flip_errors_are_typed(h: Harness) -> None:
    with pytest.raises(NoSuchCall):
        h.b2bua.flip("nope")
    carol = h.phone("401", 5401)
    desk = h.phone("201", 5201)
    carol.invite("201")
    await settle()
    ringing_call = h.only_call()
    with pytest.raises(CallNotFlippable):
        h.b2bua.flip(ringing_call.id)
    desk.answer(desk.last_request("INVITE"), 200, sdp(6201))
    call = h.only_call()
    with pytest.raises(NoFlipTarget):
        h.b2bua.flip(call.id, device="201")
    with pytest.raises(TargetNotRegistered):
        h.b2bua.flip(call.id, "202")
    with pytest.raises(TargetIsCurrentDevice):
        h.b2bua.flip(call.id, "201")
    with pytest.raises(NotUsersDevice):
        h.b2bua.flip(call.id, "301", device="201")
    with pytest.raises(UnknownDevice):
        h.b2bua.flip(call.id, "999")
    h.phone("202", 5202)
    h.phone("202", 5212)
    h.b2bua.flip(call.id, "202")
    with pytest.raises(FlipInProgress):
        h.b2bua.flip(call.id, "202")


async def test_the_action_without_a_target_rings_the_first_device_in_menu_order(
    h: Harness,
) -> None:
    config = h.config
    from dataclasses import replace

    from sip_core.config import Device, User

    alice = config.users[0]
    three = User(
        alice.name, alice.extension, (*alice.devices, Device("203", "secret-password", "soft"))
    )
    h.config = replace(config, users=(three, *config.users[1:]))
    carol = h.phone("401", 5401)
    desk = h.phone("201", 5201)
    mobile = h.phone("202", 5202)
    soft = h.phone("203", 5203)
    carol.invite("201")
    await settle()
    desk.answer(desk.last_request("INVITE"), 200, sdp(6201))
    h.b2bua.flip(h.only_call().id, device="201")
    # Both at priority 0: by label, "Alice mobile" (202) before "soft" (203).
    (ringing,) = new_invites(mobile)
    assert ringing.to.uri.user == "202"
    assert new_invites(soft) == []


async def test_star_zero_by_info_starts_the_flip_and_is_not_passed_on(h: Harness) -> None:
    carol, desk, mobile = await answered_call(h)
    for digit in "*0":
        desk.request(
            "INFO",
            body=f"Signal={digit}\r\nDuration=160\r\n".encode(),
            content_type="application/dtmf-relay",
        )
    # "*0" is complete and Alice has one other device: it rings at once, no timer
    (ringing,) = new_invites(mobile)
    assert ringing.headers.get("Content-Type") == "application/sdp"
    assert carol.requests("INFO") == []
    assert [e.digit for e in h.events_of(DtmfReceived)] == ["*", "0"]


async def test_star_zero_in_rtp_from_the_relay_tap_starts_the_flip(h: Harness) -> None:
    carol, _desk, mobile = await answered_call(h)
    call = h.only_call()
    assert call.media is not None
    relay_port = call.media.b.local_rtp.port
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        sequence = 1
        for number, digit in enumerate((10, 0)):  # "*" is event 10
            timestamp = 1000 + 800 * number
            for end in (False, True, True):
                payload = build_telephone_event(TelephoneEvent(digit, end, 10, 400))
                packet = RtpPacket(
                    payload_type=101,
                    sequence=sequence,
                    timestamp=timestamp,
                    ssrc=0x1234,
                    payload=payload,
                    marker=not end,
                )
                sequence += 1
                sock.sendto(packet.to_bytes(), ("127.0.0.1", relay_port))
        for _ in range(200):
            if len(h.events_of(DtmfReceived)) >= 2:
                break
            await asyncio.sleep(0.01)
    finally:
        sock.close()
    digits = h.events_of(DtmfReceived)
    assert [(d.digit, d.device, d.method) for d in digits] == [
        ("*", "201", DtmfMethod.RFC4733),
        ("0", "201", DtmfMethod.RFC4733),
    ]
    (ringing,) = new_invites(mobile)
    assert ringing.call_id != call.id
    assert carol.requests() == []


async def test_with_one_other_device_keys_after_the_code_go_to_the_other_party(
    h: Harness,
) -> None:
    carol, desk, mobile = await answered_call(h)
    for digit in "*0202#":
        desk.request(
            "INFO", body=f"Signal={digit}\r\n".encode(), content_type="application/dtmf-relay"
        )
    (ringing,) = new_invites(mobile)  # rang at "*0", before any of the keys after it
    assert ringing.to.uri.user == "202"
    assert [r.body for r in carol.requests("INFO")] == [
        f"Signal={key}\r\nDuration=160\r\n".encode() for key in "202#"
    ]


async def test_target_answering_with_no_offered_codec_is_released(h: Harness) -> None:
    carol, desk, mobile = await answered_call(h)
    call = h.only_call()
    assert call.media is not None
    available = h.relay.ports.available
    future = h.b2bua.flip(call.id)
    assert h.relay.ports.available == available - 1  # the spare named in the offer
    (ringing,) = new_invites(mobile)
    pcma = (
        b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        b"m=audio 6202 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n"
    )
    mobile.answer(ringing, 200, pcma)
    await settle()
    record = await asyncio.wait_for(future, 5)
    assert not record.succeeded
    assert "none of the offered codecs" in record.reason
    assert len([r for r in mobile.requests("ACK") if r.call_id == ringing.call_id]) == 1
    assert [r.call_id for r in mobile.requests("BYE")] == [ringing.call_id]
    assert desk.requests("BYE") == []
    assert carol.requests() == []
    assert call.callee is not None
    assert call.callee.device == "201"
    await h.relay.sync()  # the engine has closed the spare
    assert h.relay.ports.available == available


async def test_flip_fails_at_once_when_the_relay_has_no_ports_left(h: Harness) -> None:
    _, _, mobile = await answered_call(h)
    call = h.only_call()
    while h.relay.ports.available:
        h.relay.ports.allocate()
    record = await asyncio.wait_for(h.b2bua.flip(call.id), 5)
    assert not record.succeeded
    assert "media relay" in record.reason
    assert new_invites(mobile) == []
    assert call.operation is None


async def test_call_and_flip_invites_share_one_shape(h: Harness) -> None:
    """The fork INVITE and the flip INVITE come from one helper: same headers, Allow, offer."""
    from sip_core.b2bua import ALLOWED_METHODS
    from sip_core.pbx import ALLOWED_METHODS as PBX_ALLOWED

    _, desk, mobile = await answered_call(h)
    call = h.only_call()
    h.b2bua.flip(call.id)
    (flip_invite,) = new_invites(mobile)
    fork_invite = desk.requests("INVITE")[0]
    assert PBX_ALLOWED is ALLOWED_METHODS
    for invite in (fork_invite, flip_invite):
        assert invite.headers.get("Allow") == ", ".join(ALLOWED_METHODS)
        assert invite.headers.get("Content-Type") == "application/sdp"
        assert invite.from_.tag
        assert invite.contacts[0].uri.user == "callflip"
        assert [name for name, _ in invite.headers] == [name for name, _ in fork_invite.headers]


async def test_pending_flip_is_public_while_the_target_rings(h: Harness) -> None:
    _, _, mobile = await answered_call(h)
    call = h.only_call()
    assert call.pending_flip is None
    future = h.b2bua.flip(call.id)
    pending = call.pending_flip
    assert pending is not None
    assert (pending.from_device, pending.to_device) == ("201", "202")
    assert pending.from_leg is call.callee
    assert pending.started_at == h.clock.wall()
    (ringing,) = new_invites(mobile)
    mobile.answer(ringing, 603)
    assert not (await asyncio.wait_for(future, 5)).succeeded
    assert call.pending_flip is None
