"""RFC 4028 session timers with the caller, driven by the ManualClock.

The caller's offer decides who refreshes: a named refresher is kept; without one, a caller that
supports timers refreshes itself and one that does not leaves it to us. When we refresh we send a
bodiless UPDATE (or a re-INVITE with the same SDP) at half the interval; when the caller does, a
missing refresh ends the call on both sides with BYE.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sip_core.call.session_timer import negotiate_session_timer
from sip_core.calls import Refresher, SessionTimer
from sip_core.message import Request, parse_message

from .test_b2bua_harness import Harness, Phone, sdp, settle


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness()
    yield harness
    harness.close()


def sent(phone: Phone, method: str) -> int:
    """Distinct requests of ``method`` the phone got (retransmissions counted once)."""
    return len({(r.call_id, r.cseq.number) for r in phone.requests(method)})


async def call_with(
    h: Harness, headers: tuple[tuple[str, str], ...]
) -> tuple[Phone, Phone, Request]:
    """Alice (201) calls Carol (400) with these extra INVITE headers; Carol answers, Alice ACKs."""
    alice = h.phone("201", 5201)
    carol = h.phone("401", 5401)
    invite = alice.invite("400", extra=headers)
    await settle()
    carol.answer(carol.last_request("INVITE"), 200, sdp(6401))
    alice.confirm(invite, alice.responses(200)[-1])
    return alice, carol, invite


def request(text: str) -> Request:
    lines = [
        "INVITE sip:400@home.arpa SIP/2.0",
        "Via: SIP/2.0/UDP 127.0.0.1:5201;branch=z9hG4bK-1",
        "From: <sip:201@home.arpa>;tag=a",
        "To: <sip:400@home.arpa>",
        "Call-ID: x",
        "CSeq: 1 INVITE",
        *text.splitlines(),
    ]
    message = parse_message(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode())
    assert isinstance(message, Request)
    return message


def test_negotiation_follows_rfc_4028_section_9() -> None:
    uac, uas = Refresher.UAC, Refresher.UAS
    cases = {
        "Session-Expires: 1800;refresher=uas\nSupported: timer": SessionTimer(1800, uas, True),
        "Session-Expires: 1800;refresher=uac\nSupported: timer": SessionTimer(1800, uac, True),
        "Session-Expires: 1800\nSupported: timer": SessionTimer(1800, uac, True),
        "Session-Expires: 1800\nRequire: timer": SessionTimer(1800, uac, True),
        "Session-Expires: 1800": SessionTimer(1800, uas, False),
        "Session-Expires: 600;Refresher=UAC": SessionTimer(600, uac, False),
        "Supported: timer": None,
    }
    for headers, expected in cases.items():
        assert negotiate_session_timer(request(headers)) == expected, headers
    current = SessionTimer(300, uas, True)
    assert negotiate_session_timer(request("Supported: timer"), current) is current


async def test_a_named_refresher_uas_makes_us_refresh_with_update(h: Harness) -> None:
    alice, carol, _ = await call_with(
        h,
        (
            ("Supported", "timer"),
            ("Session-Expires", "120;refresher=uas"),
            ("Allow", "INVITE, ACK, BYE, CANCEL, UPDATE"),
        ),
    )
    ok = alice.responses(200)[-1]
    assert ok.headers.get("Session-Expires") == "120;refresher=uas"
    assert ok.headers.get("Require") == "timer"
    h.clock.advance(59)
    assert alice.requests("UPDATE") == []
    h.clock.advance(1)  # half the interval
    update = alice.last_request("UPDATE")
    assert update.body == b""
    assert update.headers.get("Session-Expires") == "120;refresher=uac"  # we are its UAC
    assert update.to.tag == alice.dialog().local_tag
    alice.reply(update, 200)
    h.clock.advance(60)
    assert sent(alice, "UPDATE") == 2  # the next refresh, half an interval after the 200
    alice.reply(alice.last_request("UPDATE"), 200)
    assert carol.requests("UPDATE") == carol.requests("INVITE")[1:] == []
    assert h.b2bua.calls()[0].active


async def test_without_update_in_allow_we_refresh_with_the_same_sdp(h: Harness) -> None:
    alice, carol, _ = await call_with(
        h, (("Supported", "timer"), ("Session-Expires", "90;refresher=uas"))
    )
    ok = alice.responses(200)[-1]
    h.clock.advance(45)
    (reinvite,) = alice.requests("INVITE")
    assert reinvite.body == ok.body  # same description, same o= version: a pure refresh
    assert reinvite.headers.get("Session-Expires") == "90;refresher=uac"
    alice.reply(reinvite, 200, sdp(6201))
    acks = [r for r in alice.requests("ACK") if r.cseq.number == reinvite.cseq.number]
    assert len(acks) == 1
    assert carol.requests("INVITE")[1:] == []
    h.clock.advance(45)
    assert sent(alice, "INVITE") == 2


async def test_update_refused_with_501_falls_back_to_reinvite(h: Harness) -> None:
    alice, _, _ = await call_with(
        h,
        (
            ("Session-Expires", "90;refresher=uas"),
            ("Allow", "INVITE, ACK, BYE, UPDATE"),
        ),
    )
    assert alice.responses(200)[-1].headers.get("Require") is None  # no Supported: timer
    h.clock.advance(45)
    alice.reply(alice.last_request("UPDATE"), 501)
    assert len(alice.requests("INVITE")) == 1


async def test_without_a_refresher_a_caller_without_timer_support_leaves_it_to_us(
    h: Harness,
) -> None:
    alice, carol, _ = await call_with(h, (("Session-Expires", "100"),))
    ok = alice.responses(200)[-1]
    assert ok.headers.get("Session-Expires") == "100;refresher=uas"
    assert ok.headers.get("Require") is None
    h.clock.advance(50)
    assert sent(alice, "INVITE") == 1
    assert sent(alice, "BYE") == sent(carol, "BYE") == 0


async def test_without_a_refresher_a_caller_with_timer_support_refreshes(h: Harness) -> None:
    alice, carol, _ = await call_with(h, (("Supported", "timer"), ("Session-Expires", "300")))
    ok = alice.responses(200)[-1]
    assert ok.headers.get("Session-Expires") == "300;refresher=uac"
    h.clock.advance(200)
    assert alice.requests("UPDATE") == alice.requests("INVITE") == []
    alice.request("UPDATE", extra=(("Session-Expires", "300;refresher=uac"),))
    h.clock.advance(200)  # refreshed at 200 s: expires at 500 - 32
    assert sent(alice, "BYE") == 0
    h.clock.advance(70)
    assert sent(alice, "BYE") == sent(carol, "BYE") == 1
    (record,) = h.b2bua.history.records()
    assert "session timer expired" in record.reason


async def test_a_refresh_answered_481_ends_the_call_on_both_sides(h: Harness) -> None:
    alice, carol, _ = await call_with(
        h, (("Session-Expires", "90;refresher=uas"), ("Allow", "UPDATE"))
    )
    h.clock.advance(45)
    alice.reply(alice.last_request("UPDATE"), 481)
    assert sent(carol, "BYE") == 1
    assert h.b2bua.calls() == []
    assert "session refresh" in h.b2bua.history.records()[0].reason


async def test_an_unanswered_refresh_ends_the_call(h: Harness) -> None:
    _, carol, _ = await call_with(h, (("Session-Expires", "90;refresher=uas"), ("Allow", "UPDATE")))
    h.clock.advance(45 + 32)  # Timer F: 64 * T1
    assert sent(carol, "BYE") == 1
    assert h.b2bua.calls() == []


async def test_other_refusals_keep_the_call_until_the_session_expires(h: Harness) -> None:
    alice, carol, _ = await call_with(
        h, (("Session-Expires", "90;refresher=uas"), ("Allow", "UPDATE"))
    )
    h.clock.advance(45)
    alice.reply(alice.last_request("UPDATE"), 500)
    h.clock.advance(44)
    assert sent(carol, "BYE") == 0
    h.clock.advance(1)
    assert sent(carol, "BYE") == sent(alice, "BYE") == 1


async def test_the_caller_may_hand_refreshing_to_us_in_a_reinvite(h: Harness) -> None:
    alice, carol, _ = await call_with(h, (("Supported", "timer"), ("Session-Expires", "90")))
    h.clock.advance(30)
    reinvite = alice.request(
        "INVITE",
        body=sdp(6202),
        extra=(("Supported", "timer"), ("Session-Expires", "90;refresher=uas")),
    )
    forwarded = carol.last_request("INVITE")
    carol.reply(forwarded, 200, sdp(6401))
    ok = alice.responses(200)[-1]
    assert ok.cseq.number == reinvite.cseq.number
    assert ok.headers.get("Session-Expires") == "90;refresher=uas"
    alice.send(alice.in_dialog_request(alice.dialog(), "ACK", cseq=reinvite.cseq.number))
    h.clock.advance(45)
    assert sent(alice, "INVITE") == 1  # our refresh
    assert sent(alice, "BYE") == 0
