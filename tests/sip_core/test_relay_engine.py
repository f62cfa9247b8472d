"""The relay's packet thread on its own: handlers run under the lock, survive errors, stop cleanly.

Waits are bounded only so that a broken engine fails instead of hanging; nothing is timed.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from sip_core.clock import ManualClock
from sip_core.media import packets
from sip_core.media.packets import TIMER_COALESCE_SECONDS, RelayEngine

HOST = "127.0.0.1"
WAIT = 5.0


@pytest.fixture
def engine() -> Iterator[RelayEngine]:
    clock = ManualClock()
    relay_engine = RelayEngine(clock.monotonic)
    relay_engine.start()
    yield relay_engine
    relay_engine.stop()


def _socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    sock.setblocking(False)
    return sock


def test_a_handler_runs_on_the_engine_thread_with_the_lock_held(engine: RelayEngine) -> None:
    sock, sender = _socket(), _socket()
    got: list[tuple[bytes, bool, str]] = []
    done = threading.Event()

    def handler() -> None:
        size, _ = sock.recvfrom_into(engine.buffer)
        owned = engine.lock._is_owned()  # type: ignore[attr-defined]
        got.append((bytes(engine.view[:size]), owned, threading.current_thread().name))
        if len(got) == 3:
            done.set()

    try:
        with engine.lock:
            engine.register(sock, handler)
        for payload in (b"one", b"two", b"three"):
            sender.sendto(payload, sock.getsockname())
        assert done.wait(WAIT)
        assert [g[0] for g in got] == [b"one", b"two", b"three"]  # one read per readiness
        assert all(g[1] for g in got)
        assert {g[2] for g in got} == {"callflip-relay"}
    finally:
        with engine.lock:
            engine.unregister(sock)
        sock.close()
        sender.close()


def test_a_failing_handler_does_not_stop_the_others(engine: RelayEngine) -> None:
    bad, good, sender = _socket(), _socket(), _socket()
    arrived = threading.Event()

    def explode() -> None:
        bad.recv(64)
        raise RuntimeError("boom")

    def fine() -> None:
        good.recv(64)
        arrived.set()

    try:
        with engine.lock:
            engine.register(bad, explode)
            engine.register(good, fine)
        sender.sendto(b"x", bad.getsockname())
        sender.sendto(b"y", good.getsockname())
        assert arrived.wait(WAIT)
        assert engine.running
    finally:
        with engine.lock:
            engine.unregister(bad)
            engine.unregister(good)
        for sock in (bad, good, sender):
            sock.close()


def test_an_unregistered_socket_is_not_read_and_stop_joins_the_thread() -> None:
    clock = ManualClock()
    engine = RelayEngine(clock.monotonic)
    engine.start()
    sock, sender = _socket(), _socket()
    calls: list[int] = []
    try:
        with engine.lock:
            engine.register(sock, lambda: calls.append(1))
            engine.unregister(sock)
            engine.unregister(sock)  # twice is harmless
        sender.sendto(b"late", sock.getsockname())
        engine.stop()
        assert not engine.running
        assert calls == []
        assert sock.recv(64) == b"late"  # still queued: nobody read it
        engine.stop()  # idempotent
    finally:
        sock.close()
        sender.close()


def test_each_readiness_gets_one_call_and_waiting_datagrams_are_reported_again(
    engine: RelayEngine,
) -> None:
    sock, sender = _socket(), _socket()
    reads: list[bytes | None] = []
    done = threading.Event()

    def handler() -> None:
        try:
            reads.append(sock.recv(64))
        except BlockingIOError:  # called with nothing waiting
            reads.append(None)
        if len(reads) >= 3:
            done.set()

    try:
        with engine.lock:  # all three wait before the thread may read any
            engine.register(sock, handler)
            for payload in (b"a", b"b", b"c"):
                sender.sendto(payload, sock.getsockname())
        assert done.wait(WAIT)
        with engine.lock:  # the batch in progress is over
            assert reads == [b"a", b"b", b"c"]
        assert engine.running
    finally:
        with engine.lock:
            engine.unregister(sock)
        sock.close()
        sender.close()


def _run_on_a_thread(engine: RelayEngine) -> threading.Thread:
    """`run` as the engine process calls it, on a thread of the test's own."""
    thread = threading.Thread(target=engine.run, name="callflip-media", daemon=True)
    thread.start()
    return thread


def test_timers_fire_in_order_and_a_cancelled_one_never_does() -> None:
    engine = RelayEngine(time.monotonic, name="callflip-media")
    fired: list[str] = []
    start = time.monotonic()
    engine.call_at(start + 0.03, lambda: fired.append("second"))
    engine.call_at(start + 0.02, lambda: fired.append("first"))
    engine.call_at(start + 0.025, lambda: fired.append("cancelled")).cancel()
    engine.call_at(start + 0.04, engine.stop)
    thread = _run_on_a_thread(engine)
    thread.join(WAIT)
    assert not thread.is_alive()
    assert fired == ["first", "second"]


def test_a_timer_set_from_a_timer_fires_even_when_it_is_already_due() -> None:
    """Each timer schedules the next at a time already past: the loop must not wait for it."""
    engine = RelayEngine(time.monotonic, name="callflip-media")
    fired: list[int] = []
    past = time.monotonic()

    def tick() -> None:
        fired.append(len(fired))
        if len(fired) < 5:
            engine.call_at(past, tick)  # the same instant, long gone
        else:
            engine.stop()

    engine.call_at(past, tick)
    thread = _run_on_a_thread(engine)
    thread.join(WAIT)
    assert not thread.is_alive()
    assert fired == [0, 1, 2, 3, 4]


@pytest.mark.skipif(not hasattr(os, "timerfd_create"), reason="no timerfd on this system")
def test_on_linux_the_timers_are_woken_by_a_timerfd_in_the_epoll_set() -> None:
    engine = RelayEngine(time.monotonic, name="callflip-media")
    engine.prepare()
    try:
        assert engine._timerfd >= 0
        engine._arm(time.monotonic() + 60)
        remaining = os.timerfd_gettime_ns(engine._timerfd)[0]
        assert 59 * 10**9 < remaining <= 60 * 10**9  # set to the nanosecond, not in epoll ms
        engine._arm(None)
        assert os.timerfd_gettime_ns(engine._timerfd) == (0, 0)
    finally:
        engine._close_poller()


def test_timers_due_just_after_the_first_fire_with_it_and_later_ones_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = 100.0
    monkeypatch.setattr(packets, "time", SimpleNamespace(monotonic=lambda: now))
    engine = RelayEngine(lambda: now)
    fired: list[str] = []
    engine.call_at(now + 0.02, lambda: fired.append("next frame"))
    engine.call_at(now + TIMER_COALESCE_SECONDS / 2, lambda: fired.append("close behind"))
    engine.call_at(now, lambda: fired.append("due"))
    assert engine._run_timers() == now + 0.02  # what the timerfd is armed for next
    assert fired == ["due", "close behind"]
