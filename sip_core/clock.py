"""Injected time: every timer and timestamp in sip_core goes through a `Clock`.

Why: SIP is full of timers (RFC 3261 §17 alone has twelve), and tests must be able to drive
them deterministically, without sleeping. Production code uses `LoopClock`, which is a thin
veneer over the running asyncio loop; tests use `ManualClock` and call `advance()`.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Protocol

__all__ = [
    "Clock",
    "CountingClock",
    "LoopClock",
    "ManualClock",
    "ManualTimerHandle",
    "TimerHandle",
]


class TimerHandle(Protocol):
    """A scheduled callback; cancelling it twice, or after it ran, is harmless."""

    def cancel(self) -> None: ...


class Clock(Protocol):
    """Monotonic time for timers and expiry, wall time for records, and one-shot timers."""

    def monotonic(self) -> float: ...

    def wall(self) -> float: ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle: ...


class LoopClock:
    """The real clock, on an asyncio loop.

    Without an explicit loop it uses whichever loop is running at each call, so one instance can be
    made before the loop starts (as `Pbx.__init__` may do) and still schedule on the right loop.
    `monotonic()` is `loop.time()` so that it agrees with the loop's own timer deadlines.
    """

    __slots__ = ("_loop",)

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop

    def monotonic(self) -> float:
        loop = self._loop
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                # No loop running: the default loop's clock is time.monotonic() anyway.
                return time.monotonic()
        return loop.time()

    def wall(self) -> float:
        return time.time()

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        loop = self._loop if self._loop is not None else asyncio.get_running_loop()
        return loop.call_later(delay, callback)


def _cancelled() -> None:
    return None


class ManualTimerHandle:
    """A timer of a `ManualClock`."""

    __slots__ = ("_clock", "callback", "cancelled", "when")

    def __init__(self, clock: ManualClock, when: float, callback: Callable[[], None]) -> None:
        self._clock = clock
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            # As asyncio's handles do: what the callback refers to is not kept alive by a timer
            # that will never run (tests check that ended calls can be collected).
            self.callback = _cancelled
            self._clock._forget(self)

    def __repr__(self) -> str:
        state = "cancelled" if self.cancelled else "pending"
        return f"<ManualTimerHandle when={self.when} {state}>"


class ManualClock:
    """A clock that only moves when told to: `advance(seconds)` runs due timers in time order.

    Timers scheduled by callbacks during an advance fire in the same advance if they fall due
    before its end (a zero delay fires at the current instant, after those already due then).
    Timers due at the same instant fire in the order they were scheduled. An exception from a
    callback propagates out of `advance()` (tests should see it); the clock then stands at the
    failing timer's time and the remaining timers stay scheduled.
    """

    def __init__(self, start: float = 1000.0, wall: float = 1_700_000_000.0) -> None:
        self._now = start
        self._wall_offset = wall - start
        self._heap: list[tuple[float, int, ManualTimerHandle]] = []
        self._seq = itertools.count()
        self._live = 0

    def monotonic(self) -> float:
        return self._now

    def wall(self) -> float:
        return self._now + self._wall_offset

    def set_wall(self, value: float) -> None:
        """Set the wall clock to `value` now; it moves on with `advance()` from there."""
        self._wall_offset = value - self._now

    def call_later(self, delay: float, callback: Callable[[], None]) -> ManualTimerHandle:
        handle = ManualTimerHandle(self, self._now + max(delay, 0.0), callback)
        heapq.heappush(self._heap, (handle.when, next(self._seq), handle))
        self._live += 1
        return handle

    @property
    def pending(self) -> int:
        """How many timers are scheduled and not cancelled (for leak checks in tests)."""
        return self._live

    def next_deadline(self) -> float | None:
        """When the earliest pending timer falls due, or None."""
        self._drop_cancelled()
        return self._heap[0][0] if self._heap else None

    def advance(self, seconds: float) -> None:
        """Move time forward by `seconds`, firing every timer that falls due on the way."""
        if seconds < 0:
            raise ValueError("time cannot go backwards")
        target = self._now + seconds
        heap = self._heap
        while True:
            self._drop_cancelled()
            if not heap or heap[0][0] > target:
                break
            when, _, handle = heapq.heappop(heap)
            self._now = max(self._now, when)
            handle.cancelled = True  # it has run; a later cancel() is a no-op
            self._live -= 1
            handle.callback()
        self._now = target

    def run_until_idle(self, limit: float = 3600.0) -> None:
        """Advance until no timer is pending, at most `limit` seconds (guards against loops)."""
        end = self._now + limit
        while (deadline := self.next_deadline()) is not None and deadline <= end:
            self.advance(deadline - self._now)

    def _forget(self, handle: ManualTimerHandle) -> None:
        self._live -= 1

    def _drop_cancelled(self) -> None:
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)


class CountingClock:
    """Wraps a clock and counts its timers that are still pending (neither fired nor cancelled).

    For leak checks (`Pbx.stats`, the soak benchmark): after the last call has ended and the
    transactions have waited out their timers, a PBX should hold no timer but binding expiry.
    Counting costs a set insertion and removal per timer, so only the runner's soak mode and
    tests use it.
    """

    __slots__ = ("_inner", "_pending")

    def __init__(self, inner: Clock) -> None:
        self._inner = inner
        self._pending: set[_CountedHandle] = set()

    @property
    def pending(self) -> int:
        """Timers scheduled and not yet fired or cancelled."""
        return len(self._pending)

    def monotonic(self) -> float:
        return self._inner.monotonic()

    def wall(self) -> float:
        return self._inner.wall()

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        handle = _CountedHandle(self._pending, callback)
        self._pending.add(handle)
        handle.inner = self._inner.call_later(delay, handle.fire)
        return handle


class _CountedHandle:
    __slots__ = ("_callback", "_pending", "inner")

    def __init__(self, pending: set[_CountedHandle], callback: Callable[[], None]) -> None:
        self._pending = pending
        self._callback = callback
        self.inner: TimerHandle | None = None

    def fire(self) -> None:
        self._pending.discard(self)
        callback, self._callback = self._callback, _cancelled
        callback()

    def cancel(self) -> None:
        self._pending.discard(self)
        self._callback = _cancelled
        if self.inner is not None:
            self.inner.cancel()
