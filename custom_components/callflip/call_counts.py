"""Counting the call history: calls today and missed calls, per user and for the whole PBX.

A call is a user's when they called or were called (``caller_user`` / ``callee_user``); it is
missed by a user when it was for them and ended with no answer, busy or declined (a caller who
gave up while it rang, ``cancelled``, is not counted: the brief ring of a mistaken dial is not a
missed call). The whole PBX counts every call, and as missed every call for a user that was.
"Today" starts at local midnight, by Home Assistant's time zone. Counts come from the persisted
history (`history.CallHistory`), so they survive a restart; it keeps the newest 200 calls, which
bounds a day's count on a very busy PBX.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sip_core.calls import CallOutcome, CallRecord

MISSED_OUTCOMES = frozenset({CallOutcome.NO_ANSWER, CallOutcome.BUSY, CallOutcome.DECLINED})


def involves(record: CallRecord, user: str | None) -> bool:
    """Whether the call is ``user``'s (every call is the PBX's: ``user`` None)."""
    return user is None or user in (record.caller_user, record.callee_user)


def is_missed(record: CallRecord, user: str | None) -> bool:
    """Whether ``user`` (None: any user) missed this call."""
    if record.outcome not in MISSED_OUTCOMES or record.callee_user is None:
        return False
    return user is None or record.callee_user == user


@dataclass(frozen=True, slots=True)
class CallCounts:
    """A day's calls of a user or of the PBX, and the missed ones among them (oldest first)."""

    calls: tuple[CallRecord, ...]
    missed: tuple[CallRecord, ...]


def count_since(records: Iterable[CallRecord], since: float, user: str | None) -> CallCounts:
    """The calls of ``user`` (None: all) that started at or after ``since`` (Unix time)."""
    calls = tuple(r for r in records if r.started_at >= since and involves(r, user))
    return CallCounts(calls, tuple(r for r in calls if is_missed(r, user)))


def last_of(records: Iterable[CallRecord], user: str | None) -> CallRecord | None:
    """The newest call of ``user`` (None: of anyone)."""
    found: CallRecord | None = None
    for record in records:
        if involves(record, user):
            found = record
    return found
