"""INVITE with Replaces (RFC 3891): a device takes over a call of its own user, on the harness."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sip_core.message import Request

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
