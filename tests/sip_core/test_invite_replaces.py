"""INVITE with Replaces (RFC 3891): a device takes over a call of its own user, on the harness."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sip_core.message import Request
from sip_core.sdp import parse_sdp

from .test_b2bua_harness import Harness, Phone, settle
from .test_transfer import answered_call, requests_to


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    harness = Harness()
    yield harness
    harness.close()


def replaces_of(desk: Phone, *flags: str) -> str:
    """The desk's dialog with the PBX as the PBX sees it (to-tag: the PBX's own tag)."""
    dialog = desk.dialog()
    return ";".join(
        (dialog.call_id, f"to-tag={dialog.remote_tag}", f"from-tag={dialog.local_tag}", *flags)
    )


def final_status(phone: Phone, invite: Request) -> int:
    statuses = [
        r.status for r in phone.responses() if r.call_id == invite.call_id and r.status >= 200
    ]
    assert statuses, "no final response"
    return statuses[-1]


async def test_the_users_other_device_takes_the_call_over(h: Harness) -> None:
    carol, desk = await answered_call(h)
    mobile = h.phone("202", 5202)
    call = h.only_call()
    invite = mobile.invite("200", extra=(("Replaces", replaces_of(desk)),))
    await settle()
    assert final_status(mobile, invite) == 200
    mobile.confirm(invite, mobile.responses(200)[-1])
    assert "BYE" in requests_to(desk)
    assert call.callee is not None
    assert call.callee.device == "202"
    assert requests_to(carol) == []
    assert len(h.b2bua.calls()) == 1
    # The call goes on with the mobile: Carol hangs up, the mobile gets the BYE.
    carol.request("BYE")
    assert requests_to(mobile) == ["BYE"]


@pytest.mark.parametrize(
    ("device", "mutate", "status"),
    [
        ("301", "", 403),  # Bob's device: another user's call
        ("202", "unknown", 481),
        ("202", "early-only", 486),
    ],
)
async def test_refusals(h: Harness, device: str, mutate: str, status: int) -> None:
    carol, desk = await answered_call(h)
    phone = h.phone(device, 5300 + int(device[-1]))
    if mutate == "unknown":
        value = "nosuchcall;to-tag=a;from-tag=b"
    elif mutate == "early-only":
        value = replaces_of(desk, "early-only")
    else:
        value = replaces_of(desk)
    invite = phone.invite("200", extra=(("Replaces", value),))
    await settle()
    assert final_status(phone, invite) == status
    call = h.only_call()
    assert call.callee is not None
    assert call.callee.device == "201"
    assert requests_to(desk) == []
    assert requests_to(carol) == []


MOBILE_OFFER = (
    b"v=0\r\no=- 7 7 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 6202 RTP/AVP 8 0 96\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:96 telephone-event/8000\r\na=fmtp:96 0-16\r\na=sendrecv\r\n"
)


async def test_the_answer_keeps_the_new_devices_payload_types(h: Harness) -> None:
    """The mobile numbers telephone-event 96 (Carol: 101) and offers PCMA, which Carol never
    agreed to: the 200 answers PCMU and telephone-event 96 (the offer's numbering, RFC 3264),
    and the relay renumbers 96 <-> 101 between the two."""
    carol, desk = await answered_call(h)
    mobile = h.phone("202", 5202)
    call = h.only_call()
    invite = mobile.invite("200", body=MOBILE_OFFER, extra=(("Replaces", replaces_of(desk)),))
    await settle()
    assert final_status(mobile, invite) == 200
    ok = mobile.responses(200)[-1]
    answer = parse_sdp(ok.body).audio()
    assert answer is not None
    assert [(c.payload_type, c.encoding) for c in answer.codecs()] == [
        (0, "PCMU"),
        (96, "telephone-event"),
    ]
    assert answer.port != 6202
    mobile.confirm(invite, ok)
    await settle()
    assert call.callee is not None
    assert call.callee.device == "202"
    assert call.media is not None
    assert call.media.b.payload_map == {101: 96}  # Carol's 101 goes out to the mobile as 96
    assert call.media.a.payload_map == {96: 101}  # the mobile's 96 reaches Carol as 101
    assert requests_to(carol) == []


async def test_an_offer_without_the_calls_codecs_gets_488(h: Harness) -> None:
    carol, desk = await answered_call(h)
    mobile = h.phone("202", 5202)
    offer = MOBILE_OFFER.replace(b"RTP/AVP 8 0 96", b"RTP/AVP 8 96").replace(
        b"a=rtpmap:0 PCMU/8000\r\n", b""
    )
    invite = mobile.invite("200", body=offer, extra=(("Replaces", replaces_of(desk)),))
    await settle()
    assert final_status(mobile, invite) == 488
    call = h.only_call()
    assert call.callee is not None
    assert call.callee.device == "201"
    assert requests_to(desk) == []
    assert requests_to(carol) == []
