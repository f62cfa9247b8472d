"""Real-time scheduling of the media engine's packet loop (`sip_core.media.scheduling`)."""

from __future__ import annotations

import os
import threading

import pytest

from sip_core.media import scheduling
from sip_core.media.scheduling import REALTIME_PRIORITY, Scheduling, leave_realtime, use_realtime


def test_off_leaves_the_thread_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> None:
        raise AssertionError("must not be called")

    monkeypatch.setattr(scheduling.os, "sched_setscheduler", refuse)
    assert use_realtime(False) is Scheduling.OFF


def test_asks_for_round_robin_at_its_priority(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[int, int, int]] = []

    def record(pid: int, policy: int, param: os.sched_param) -> None:
        asked.append((pid, policy, param.sched_priority))

    monkeypatch.setattr(scheduling.os, "sched_setscheduler", record)
    assert use_realtime(True) is Scheduling.REALTIME
    assert asked == [(0, os.SCHED_RR, REALTIME_PRIORITY)]


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (PermissionError(1, "not permitted"), Scheduling.NOT_PERMITTED),
        (OSError(22, "no"), Scheduling.UNAVAILABLE),
    ],
)
def test_a_refusal_says_why(
    monkeypatch: pytest.MonkeyPatch, error: OSError, expected: Scheduling
) -> None:
    def refuse(*args: object) -> None:
        raise error

    monkeypatch.setattr(scheduling.os, "sched_setscheduler", refuse)
    assert use_realtime(True) is expected


def allowed() -> bool:
    """Whether this process may use real-time scheduling (tried on a thread of its own)."""
    result: list[Scheduling] = []

    def attempt() -> None:
        result.append(use_realtime(True))

    thread = threading.Thread(target=attempt)
    thread.start()
    thread.join()
    return result == [Scheduling.REALTIME]


@pytest.mark.skipif(not allowed(), reason="this process may not use real-time scheduling")
def test_a_worker_thread_of_a_real_time_thread_leaves_it() -> None:
    """Threads inherit their creator's policy: a worker must leave it itself."""
    seen: dict[str, int] = {}

    def worker() -> None:
        seen["inherited"] = os.sched_getscheduler(0)
        leave_realtime()
        seen["after"] = os.sched_getscheduler(0)

    def packet_loop() -> None:
        assert use_realtime(True) is Scheduling.REALTIME
        seen["loop"] = os.sched_getscheduler(0)
        child = threading.Thread(target=worker)
        child.start()
        child.join()

    thread = threading.Thread(target=packet_loop)
    thread.start()
    thread.join()
    assert seen == {"loop": os.SCHED_RR, "inherited": os.SCHED_RR, "after": os.SCHED_OTHER}
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # this thread never changed
