"""Tests for sip_core.clock: the manual clock's ordering rules and the loop clock's plumbing."""

from __future__ import annotations

import asyncio
import time

import pytest

from sip_core.clock import Clock, LoopClock, ManualClock


def test_manual_clock_fires_due_timers_in_time_order() -> None:
    clock = ManualClock(start=0.0)
    fired: list[tuple[str, float]] = []
    clock.call_later(2.0, lambda: fired.append(("b", clock.monotonic())))
    clock.call_later(1.0, lambda: fired.append(("a", clock.monotonic())))
    clock.call_later(5.0, lambda: fired.append(("c", clock.monotonic())))
    clock.advance(2.5)
    assert fired == [("a", 1.0), ("b", 2.0)]
    assert clock.monotonic() == 2.5
    assert clock.pending == 1
    clock.advance(10)
    assert fired[-1] == ("c", 5.0)
    assert clock.pending == 0


def test_same_deadline_fires_in_scheduling_order() -> None:
    clock = ManualClock(start=0.0)
    fired: list[int] = []
    for i in range(5):
        clock.call_later(1.0, lambda i=i: fired.append(i))
    clock.advance(1.0)
    assert fired == [0, 1, 2, 3, 4]


def test_timers_scheduled_during_advance_fire_in_the_same_advance() -> None:
    clock = ManualClock(start=0.0)
    fired: list[float] = []

    def retransmit(interval: float) -> None:
        fired.append(clock.monotonic())
        if interval < 4.0:
            clock.call_later(interval * 2, lambda: retransmit(interval * 2))

    clock.call_later(0.5, lambda: retransmit(0.5))
    clock.advance(100)
    assert fired == [0.5, 1.5, 3.5, 7.5]


def test_zero_delay_from_a_callback_runs_before_later_timers() -> None:
    clock = ManualClock(start=0.0)
    order: list[str] = []
    clock.call_later(
        1.0, lambda: (order.append("first"), clock.call_later(0, lambda: order.append("zero")))
    )
    clock.call_later(1.5, lambda: order.append("later"))
    clock.advance(2)
    assert order == ["first", "zero", "later"]


def test_cancel_prevents_firing_and_is_idempotent() -> None:
    clock = ManualClock(start=0.0)
    fired: list[str] = []
    handle = clock.call_later(1.0, lambda: fired.append("x"))
    handle.cancel()
    handle.cancel()
    assert clock.pending == 0
    clock.advance(5)
    assert fired == []
    ran = clock.call_later(1.0, lambda: fired.append("y"))
    clock.advance(1)
    ran.cancel()  # after it ran: harmless, and the count stays right
    assert fired == ["y"]
    assert clock.pending == 0


def test_wall_clock_moves_with_advance_and_can_be_set() -> None:
    clock = ManualClock(start=10.0, wall=1_000_000.0)
    assert clock.wall() == 1_000_000.0
    clock.advance(30)
    assert clock.wall() == 1_000_030.0
    clock.set_wall(2_000_000.0)
    assert clock.wall() == 2_000_000.0
    assert clock.monotonic() == 40.0
    clock.advance(1.5)
    assert clock.wall() == 2_000_001.5


def test_advance_rejects_negative_time() -> None:
    with pytest.raises(ValueError, match="backwards"):
        ManualClock().advance(-1)


def test_exception_in_callback_propagates_and_keeps_the_rest() -> None:
    clock = ManualClock(start=0.0)
    fired: list[str] = []

    def boom() -> None:
        raise RuntimeError("boom")

    clock.call_later(1.0, boom)
    clock.call_later(2.0, lambda: fired.append("after"))
    with pytest.raises(RuntimeError):
        clock.advance(5)
    assert clock.monotonic() == 1.0
    clock.advance(5)
    assert fired == ["after"]


def test_run_until_idle_and_next_deadline() -> None:
    clock = ManualClock(start=0.0)
    assert clock.next_deadline() is None
    clock.call_later(3.0, lambda: None)
    clock.call_later(7.0, lambda: None)
    assert clock.next_deadline() == 3.0
    clock.run_until_idle()
    assert clock.monotonic() == 7.0
    assert clock.pending == 0


def test_both_clocks_satisfy_the_protocol() -> None:
    clocks: list[Clock] = [ManualClock(), LoopClock()]
    assert all(callable(c.call_later) for c in clocks)


async def test_loop_clock_uses_the_running_loop() -> None:
    clock = LoopClock()
    loop = asyncio.get_running_loop()
    assert abs(clock.monotonic() - loop.time()) < 0.5
    assert abs(clock.wall() - time.time()) < 1.0
    done = loop.create_future()
    clock.call_later(0.01, lambda: done.set_result(clock.monotonic()))
    started = clock.monotonic()
    fired_at = await asyncio.wait_for(done, 2)
    assert fired_at >= started
    cancelled: list[int] = []
    handle = clock.call_later(0.01, lambda: cancelled.append(1))
    handle.cancel()
    await asyncio.sleep(0.03)
    assert cancelled == []


def test_loop_clock_without_a_loop_still_tells_time() -> None:
    clock = LoopClock()
    assert abs(clock.monotonic() - time.monotonic()) < 0.5


async def test_loop_clock_with_an_explicit_loop() -> None:
    loop = asyncio.get_running_loop()
    clock = LoopClock(loop)
    assert abs(clock.monotonic() - loop.time()) < 0.01
