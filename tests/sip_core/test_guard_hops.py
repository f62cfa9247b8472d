"""Loops: Max-Forwards across the B2BUA, 483 when it runs out, forwarding chains that come back."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from sip_core.forwarding import ForwardChain, ForwardingLoop, resolve_targets
from sip_core.message import Request, Response

from .test_b2bua_harness import Harness, Phone, connect, ring, sdp


@pytest.fixture
def harness() -> Iterator[Harness]:
    h = Harness()
    yield h
    h.close()


def hops(phone: Phone, hops_left: int) -> Callable[[], None]:
    """Make every request ``phone`` sends carry ``Max-Forwards: hops_left``; returns the undo."""
    original = phone.send

    def send(message: Request | Response) -> None:
        if isinstance(message, Request):
            message.headers.set("Max-Forwards", str(hops_left))
        original(message)

    phone.send = send  # type: ignore[method-assign]
    return lambda: setattr(phone, "send", original)


@pytest.mark.parametrize(("incoming", "outgoing"), [(70, 69), (5, 4), (1, 0), (200, 70)])
async def test_the_callee_invite_never_has_more_hops_than_the_caller_left(
    harness: Harness, incoming: int, outgoing: int
) -> None:
    alice = harness.phone("201", 5201)
    carol = harness.phone("401", 5401)
    hops(alice, incoming)
    await ring(harness, alice, "400")
    assert carol.last_request("INVITE").max_forwards == outgoing


async def test_an_invite_with_no_hops_left_gets_483_and_rings_nobody(harness: Harness) -> None:
    alice = harness.phone("201", 5201)
    carol = harness.phone("401", 5401)
    hops(alice, 0)
    await ring(harness, alice, "400")
    assert [r.status for r in alice.responses() if r.status >= 200] == [483]
    assert carol.requests("INVITE") == []


async def test_in_dialog_requests_are_forwarded_with_one_hop_less(harness: Harness) -> None:
    alice = harness.phone("201", 5201)
    carol = harness.phone("401", 5401)
    await connect(harness, alice, carol, "400")
    hops(alice, 3)
    alice.request("INFO", body=b"ping", content_type="application/x-test")
    alice.request("INVITE", body=sdp(7201, direction="sendonly"))
    assert carol.last_request("INFO").max_forwards == 2
    assert carol.last_request("INVITE").max_forwards == 2


def test_targets_without_forwards_are_the_devices_themselves() -> None:
    assert resolve_targets(["201", "202"]) == ["201", "202"]


def test_forwards_are_followed_and_each_device_rings_once() -> None:
    forwards = {"201": ["301", "302"], "302": ["401"], "202": ["401"]}
    assert resolve_targets(["201", "202"], forwards.get) == ["301", "401"]


def test_forwards_pointing_at_each_other_are_cut_with_the_chain_named() -> None:
    forwards = {"201": ["301"], "301": ["401"], "401": ["201"]}
    with pytest.raises(ForwardingLoop) as caught:
        resolve_targets(["201"], forwards.get)
    assert caught.value.chain == ("201", "301", "401", "201")
    assert str(caught.value) == "forwarding loop: 201 -> 301 -> 401 -> 201"


def test_a_device_forwarding_to_itself_is_a_loop() -> None:
    with pytest.raises(ForwardingLoop, match="forwarding loop: 201 -> 201"):
        resolve_targets(["201"], {"201": ["201"]}.get)


def test_a_chain_already_travelled_counts() -> None:
    """A forwarded call resolved again (say, after a no-answer forward) keeps its history."""
    chain = ForwardChain(("201", "301"))
    with pytest.raises(ForwardingLoop):
        resolve_targets(["401"], {"401": ["201"]}.get, chain)
    assert resolve_targets(["401"], {"401": ["501"]}.get, chain) == ["501"]


def test_an_endless_chain_without_a_repeat_is_cut_too() -> None:
    with pytest.raises(ForwardingLoop, match="forwarding chain too long"):
        resolve_targets(["d0"], lambda device: [f"d{int(device[1:]) + 1}"])
