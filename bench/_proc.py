"""CPU accounting the benchmarks share, read from /proc so they need nothing installed."""

from __future__ import annotations

import os
import resource
from pathlib import Path


def group_cpu(pgid: int) -> float:
    """CPU seconds (user + system) used so far by the live processes of a process group.

    The targets run in their own session (Kamailio as several worker processes), so the group
    is exactly the server.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        # after the command: state, ppid, pgrp, ... utime (index 11), stime (12)
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / ticks


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by one live process."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    """CPU seconds of this process's finished children (the sipp processes of past steps)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cpu_busy_ticks(cpus: frozenset[int]) -> tuple[int, int]:
    """(busy, total) clock ticks of these CPUs since boot, from /proc/stat.

    Busy is everything but idle and iowait; two readings give the share of a window in which the
    CPUs did any work at all, whoever it was for.
    """
    busy = total = 0
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
            continue
        ticks = [int(v) for v in values]
        total += sum(ticks[:8])
        busy += sum(ticks[:8]) - ticks[3] - ticks[4]
    return busy, total
