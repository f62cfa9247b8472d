"""Counters of what a running PBX holds open, for leak checks and diagnostics.

A PBX that runs for months must give back everything a call or a request took: the soak benchmark
and the reliability tests read these counters after the last call has ended and the transactions
have waited out their timers, and expect every one of them but ``bindings`` to be zero.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["PbxStats"]


@dataclass(frozen=True, slots=True)
class PbxStats:
    """One snapshot of `Pbx.stats`; ``timers`` is None unless the PBX runs on a `CountingClock`."""

    calls: int  # calls in progress (not yet ended)
    dialogs: int  # B2BUA legs known by dialog id
    invites: int  # incoming INVITE transactions still tied to a call
    collectors: int  # feature-code digit collectors
    call_tasks: int  # asyncio tasks the B2BUA started
    server_transactions: int
    client_transactions: int
    pending_2xx: int  # 2xx responses retransmitted until their ACK
    transaction_timers: int  # transactions waiting on the shared expiry wheel
    connections: int  # open TCP connections
    media_sessions: int
    media_ports: int  # RTP/RTCP port pairs in use
    bindings: int
    history: int  # call records kept
    timers: int | None  # clock timers pending (every component's)

    def open_items(self) -> dict[str, int]:
        """Every counter that must return to zero when the PBX is idle, by name."""
        counts = asdict(self)
        counts.pop("bindings")
        counts.pop("history")
        if counts["timers"] is None:
            counts.pop("timers")
        return counts

    def as_dict(self) -> dict[str, int | None]:
        return asdict(self)
