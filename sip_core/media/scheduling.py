"""Real-time scheduling for the media engine's packet loop.

Why: a packet waits for its relay to be scheduled. The engine's own work is small (see
`sip_core.media.fastpath`), but with normal scheduling it shares its core with whatever else the
host runs, and a busy neighbour (Home Assistant's own work, a backup, a compile) makes it wait
whole time slices: milliseconds that a caller hears. Under SCHED_RR the engine runs as soon as a
packet wakes it, ahead of every normally scheduled process, as audio servers and media relays do.
Its priority is low among real-time ones (kernel threads and audio servers sit higher), and the
kernel still keeps a share of every core for normal processes (`sched_rt_runtime_us`).

Only the packet loop's thread is real-time: the engine's worker threads (G.722 encoding, reading
a WAV file) call `leave_realtime`, so that long work never runs ahead of the packets.

It needs the right to (root, CAP_SYS_NICE, or an RLIMIT_RTPRIO of at least the priority); where
that is missing the engine runs as before and says so once (`Scheduling` in its Hello).
"""

from __future__ import annotations

import contextlib
import os
from enum import StrEnum
from typing import Final

__all__ = ["REALTIME_PRIORITY", "Scheduling", "leave_realtime", "use_realtime"]

REALTIME_PRIORITY: Final = 10


class Scheduling(StrEnum):
    """How the engine's packet loop is scheduled."""

    REALTIME = f"real-time (SCHED_RR, priority {REALTIME_PRIORITY})"
    OFF = "normal (real-time scheduling is off: rtp.realtime)"
    NOT_PERMITTED = (
        "normal (real-time scheduling not permitted: needs CAP_SYS_NICE or RLIMIT_RTPRIO)"
    )
    UNAVAILABLE = "normal (this system has no real-time scheduling)"


def use_realtime(wanted: bool) -> Scheduling:
    """Make the calling thread real-time if `wanted` and allowed; how it is scheduled now."""
    if not wanted:
        return Scheduling.OFF
    if not hasattr(os, "sched_setscheduler") or not hasattr(os, "SCHED_RR"):
        return Scheduling.UNAVAILABLE
    try:
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(REALTIME_PRIORITY))
    except PermissionError:
        return Scheduling.NOT_PERMITTED
    except OSError:
        return Scheduling.UNAVAILABLE
    return Scheduling.REALTIME


def leave_realtime() -> None:
    """Schedule the calling thread normally again (a worker thread of the real-time engine)."""
    if hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_OTHER"):
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
