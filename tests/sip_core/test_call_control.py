"""Call control's seams for features: the fork summary, the hooks, the operation slot.

Features plug into call control only through `CallHooks` and the `Operation` a call carries; these
tests drive the B2BUA through the wire harness and check each seam is really consulted, and that
without a feature taking a request call control answers as it always did.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from sip_core.call.control import OperationInProgress
from sip_core.call.fork import FailureKind, summarise
from sip_core.call.targets import destination, ringable
from sip_core.calls import Leg, OperationView
from sip_core.features import FlipInProgress
from sip_core.message import Request, make_response
from sip_core.transaction import ServerTransaction
from sip_core.transport import Source

from .test_b2bua_harness import Harness, Phone, connect, make_config, ring, sdp, settle


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness()
    yield harness
    harness.close()


@pytest.mark.parametrize(
    ("statuses", "kind"),
    [
        ((486,), FailureKind.BUSY),
        ((408, 600), FailureKind.BUSY),
        ((603, 486), FailureKind.BUSY),
        ((480, 603), FailureKind.DECLINED),
        ((487, 487), FailureKind.CANCELLED),
        ((408, 480), FailureKind.UNREACHABLE),
        ((408, 500), FailureKind.OTHER),
        ((487, 408), FailureKind.OTHER),
    ],
)
def test_one_failure_summary_for_every_fork(statuses: tuple[int, ...], kind: FailureKind) -> None:
    summary = summarise(statuses)
    assert summary.kind is kind
    assert summary.statuses == statuses  # in the order the legs rang


def test_targets_a_device_an_extension_and_busy_devices() -> None:
    config = make_config()
    device = destination(config, "401", "202")
    assert device is not None
    assert (device.user.name, device.devices) == ("Alice", ("202",))
    user = destination(config, "201", "200")  # her own extension: her other devices only
    assert user is not None
    assert user.devices == ("202",)
    assert destination(config, "201", "999") is None
    found = ringable(
        ("201", "202", "301"),
        busy=lambda device: device == "202",
        bindings=lambda device: [] if device == "301" else [device],  # type: ignore[list-item]
    )
    assert (found.bindings, found.busy) == (("201",), 1)


async def test_in_call_request_goes_to_the_hook_else_405(h: Harness) -> None:
    alice = h.phone("201", 5201)
    carol = h.phone("401", 5401)
    await connect(h, alice, carol, "401")
    h.b2bua.hooks.in_call_request = None  # call control alone (the features take REFER)
    refer = alice.request("REFER", extra=(("Refer-To", "<sip:301@home.arpa>"),))
    assert [r.status for r in alice.responses() if r.cseq.number == refer.cseq.number] == [405]

    taken: list[tuple[str | None, str]] = []

    def in_call(leg: Leg, request: Request, txn: ServerTransaction) -> bool:
        taken.append((leg.device, request.method))
        txn.respond(make_response(request, 202))
        return True

    h.b2bua.hooks.in_call_request = in_call
    refer = alice.request("REFER", extra=(("Refer-To", "<sip:301@home.arpa>"),))
    assert taken == [("201", "REFER")]
    assert [r.status for r in alice.responses() if r.cseq.number == refer.cseq.number] == [202]
    assert carol.requests("REFER") == []
    assert h.only_call().active


async def test_code_dialled_from_idle_goes_to_the_hook_else_404(h: Harness) -> None:
    alice = h.phone("201", 5201)
    await ring(h, alice, "*69")
    assert [r.status for r in alice.responses() if r.status >= 200] == [404]
    asked: list[tuple[str, str]] = []

    def dialled(request: Request, txn: ServerTransaction, caller: str, number: str) -> bool:
        asked.append((caller, number))
        txn.respond(make_response(request, 403))
        return True

    h.b2bua.hooks.dialled_code = dialled
    await ring(h, alice, "*69")
    assert asked == [("201", "*69")]
    assert [r.status for r in alice.responses() if r.status >= 200] == [404, 403]
    assert h.b2bua.calls() == []


async def test_invite_with_replaces_goes_to_the_hook_else_is_routed(h: Harness) -> None:
    alice = h.phone("201", 5201)
    carol = h.phone("401", 5401)
    replaces = (("Replaces", "abc@127.0.0.1;to-tag=1;from-tag=2"),)
    h.b2bua.hooks.invite_replaces = None  # call control alone (a feature takes Replaces)
    await ring(h, alice, "401", extra=replaces)
    assert len(carol.requests("INVITE")) == 1  # no feature takes it: an ordinary call
    seen: list[Source] = []

    def replacing(request: Request, txn: ServerTransaction, source: Source) -> bool:
        seen.append(source)
        txn.respond(make_response(request, 481))
        return True

    h.b2bua.hooks.invite_replaces = replacing
    bob = h.phone("301", 5301)
    await ring(h, bob, "401", extra=replaces)
    assert len(seen) == 1
    assert [r.status for r in bob.responses() if r.status >= 200] == [481]
    assert len(carol.requests("INVITE")) == 1


@dataclass
class Parked:
    """A stand-in feature operation: what call control must ask, and what it told it."""

    leg: Leg
    kind: str = "park"
    blocks_offers: bool = True
    ended: list[str] = field(default_factory=list)

    def owns(self, leg: Leg) -> bool:
        return False

    def on_leg_bye(self, leg: Leg) -> bool:
        return False

    def on_call_end(self) -> None:
        self.ended.append("end")

    def view(self) -> OperationView | None:
        return OperationView(self.kind, self.leg, "", 0.0)


async def test_a_call_carries_one_operation_that_others_see(h: Harness) -> None:
    alice = h.phone("201", 5201)
    carol = h.phone("401", 5401)
    h.phone("202", 5202)
    await connect(h, carol, alice, "201")
    call = h.only_call()
    assert call.callee is not None
    parked = Parked(call.callee)
    h.b2bua.begin(call, parked)
    with pytest.raises(OperationInProgress):
        h.b2bua.begin(call, Parked(call.callee))
    with pytest.raises(FlipInProgress):
        h.b2bua.flip(call.id)
    assert call.pending_flip is None  # another kind of operation is not a flip
    # While it blocks offers, a device's re-INVITE gets 491 naming it.
    reinvite = alice.request("INVITE", body=sdp(6201))
    (refused,) = [r for r in alice.responses() if r.cseq.number == reinvite.cseq.number]
    assert refused.status == 491
    assert "park in progress" in (refused.headers.get("Warning") or "")
    # The call ends: the operation hears it.
    carol.request("BYE")
    assert parked.ended == ["end"]
    assert call.operation is None  # an ended call carries none, whatever the feature did


async def test_flip_is_the_calls_operation_while_it_rings(h: Harness) -> None:
    carol = h.phone("401", 5401)
    desk = h.phone("201", 5201)
    mobile: Phone = h.phone("202", 5202)
    await connect(h, carol, desk, "201")
    call = h.only_call()
    future = h.b2bua.flip(call.id)
    await settle()
    operation = call.operation
    assert operation is not None
    assert operation.kind == "flip"
    assert call.pending_flip == operation.view()
    mobile.answer(mobile.last_request("INVITE"), 486)
    record = await asyncio.wait_for(future, 5)
    assert (record.succeeded, record.reason) == (False, "202 is busy")
    assert call.operation is None
