"""Runtime state kept apart from the configuration (`sip_core.state`), the runner's state file,
and the counters the leak checks read (`Pbx.stats`, `CountingClock`)."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from sip_core.__main__ import default_state_path
from sip_core.calls import CallOutcome, CallRecord, HandoffRecord, TransferKind, TransferRecord
from sip_core.clock import CountingClock, ManualClock
from sip_core.config import Device, PbxConfig, RtpSettings, SipSettings, User
from sip_core.pbx import Pbx
from sip_core.state import (
    STATE_VERSION,
    RuntimeState,
    StateFile,
    StateFileError,
    call_record_from_json,
    call_record_to_json,
    call_records_from_json,
)


def record(number: int = 1, *, handoffs: bool = True) -> CallRecord:
    call_id = f"call-{number}"
    return CallRecord(
        call_id=call_id,
        caller="401",
        caller_user="Carol",
        dialled="200",
        callee_user="Alice",
        callee_device="202",
        answered_device="201",
        started_at=1000.0 + number,
        answered_at=1002.5 + number,
        ended_at=1060.0 + number,
        outcome=CallOutcome.ANSWERED,
        reason="the caller hung up",
        handoffs=(
            (HandoffRecord(call_id, "201", "202", 1010.0, 1011.0, True, ""),) if handoffs else ()
        ),
    )


# -- RuntimeState ---------------------------------------------------------------------------------


class Dnd:
    """A stand-in for a feature's runtime setting: a set of users with do-not-disturb on."""

    def __init__(self, state: RuntimeState) -> None:
        self.users: set[str] = set()
        self._state = state
        state.register("dnd", lambda: sorted(self.users), self._restore)

    def _restore(self, value: Any) -> None:
        if not isinstance(value, list) or not all(isinstance(user, str) for user in value):
            raise TypeError("dnd must be a list of user names")
        self.users = set(value)

    def set(self, user: str) -> None:
        self.users.add(user)
        self._state.changed()


def test_sections_round_trip_and_changes_are_announced() -> None:
    state = RuntimeState()
    dnd = Dnd(state)
    saves: list[dict[str, Any]] = []
    unsubscribe = state.subscribe(lambda: saves.append(state.records()))
    dnd.set("Alice")
    assert saves == [{"dnd": ["Alice"]}]
    unsubscribe()
    dnd.set("Bob")
    assert len(saves) == 1

    restored_state = RuntimeState()
    restored = Dnd(restored_state)
    assert restored_state.restore(json.loads(json.dumps(state.records()))) == ["dnd"]
    assert restored.users == {"Alice", "Bob"}


def test_a_section_saved_before_its_feature_registers_is_restored_then_and_never_lost() -> None:
    state = RuntimeState()
    assert state.restore({"dnd": ["Alice"], "presence": {"Bob": "away"}}) == []
    # Nobody claimed them yet: they are written back as they were.
    assert state.records() == {"dnd": ["Alice"], "presence": {"Bob": "away"}}
    dnd = Dnd(state)
    assert dnd.users == {"Alice"}
    assert state.records() == {"dnd": ["Alice"], "presence": {"Bob": "away"}}
    assert state.sections() == ["dnd"]
    with pytest.raises(ValueError, match="registered already"):
        state.register("dnd", list, lambda _value: None)


def test_a_section_that_cannot_be_restored_starts_from_defaults(
    caplog: pytest.LogCaptureFixture,
) -> None:
    state = RuntimeState()
    dnd = Dnd(state)
    with caplog.at_level(logging.WARNING):
        assert state.restore({"dnd": "Alice"}) == []
    assert dnd.users == set()
    assert "cannot be restored" in caplog.text


# -- call records ---------------------------------------------------------------------------------


def test_call_records_survive_json() -> None:
    for original in (record(1), record(2, handoffs=False)):
        text = json.dumps(call_record_to_json(original))
        assert call_record_from_json(json.loads(text)) == original
    unanswered = CallRecord(
        "x", "401", None, "999", None, None, None, 5.0, None, 6.0, CallOutcome.NOT_FOUND, "404"
    )
    assert call_record_from_json(call_record_to_json(unanswered)) == unanswered


def test_the_caller_as_presented_survives_json_and_older_records_read_without_it() -> None:
    from_trunk = replace(record(3), caller_party='"Grandma" <sip:+4930123@provider.example>')
    assert call_record_from_json(call_record_to_json(from_trunk)) == from_trunk
    older = call_record_to_json(record(4))
    del older["caller_party"]  # saved before the field was kept
    assert call_record_from_json(older).caller_party == ""


@pytest.mark.parametrize(
    "broken",
    [
        {"outcome": "exploded"},
        {"started_at": "yesterday"},
        {"started_at": True},
        {"caller": 401},
        {"handoffs": "none"},
        {"handoffs": [{"from_device": "201"}]},
        {"call_id": None},
    ],
)
def test_broken_call_records_are_skipped(
    broken: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    good = call_record_to_json(record(1))
    bad = {**call_record_to_json(record(2)), **broken}
    with caplog.at_level(logging.WARNING):
        assert call_records_from_json([good, bad, "not a record", good]) == [record(1), record(1)]
    assert caplog.text.count("cannot be read") == 2


# -- the state file -------------------------------------------------------------------------------


def test_state_file_round_trip_is_atomic_and_versioned(tmp_path: Path) -> None:
    file = StateFile(tmp_path / "pbx.state.json")
    assert file.load() == {}
    file.save({"bindings": [{"username": "201"}], "history": []})
    raw = json.loads(file.path.read_text())
    assert raw["version"] == STATE_VERSION
    assert file.load() == {"bindings": [{"username": "201"}], "history": []}
    file.save({"bindings": []})
    assert file.load() == {"bindings": []}
    # Nothing but the file itself is left in the directory (the temporary file was renamed).
    assert sorted(path.name for path in tmp_path.iterdir()) == ["pbx.state.json"]


@pytest.mark.parametrize(
    "content", ['{"version": 1, "bindings": [', "[1, 2]", '{"version": 99}', "\x00\xff"]
)
def test_an_unreadable_state_file_is_moved_aside_and_the_pbx_starts_empty(
    tmp_path: Path, content: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "pbx.state.json"
    path.write_text(content, encoding="utf-8", errors="surrogateescape")
    with caplog.at_level(logging.WARNING):
        assert StateFile(path).load() == {}
    assert not path.exists()
    assert (tmp_path / "pbx.state.json.bad").read_text(errors="surrogateescape") == content
    assert "moved aside" in caplog.text


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only directory")
def test_a_state_file_that_cannot_be_written_says_so(tmp_path: Path) -> None:
    directory = tmp_path / "ro"
    directory.mkdir()
    directory.chmod(0o500)
    try:
        with pytest.raises(StateFileError, match="cannot write the state file"):
            StateFile(directory / "pbx.state.json").save({})
    finally:
        directory.chmod(0o700)


def test_a_missing_directory_is_a_state_file_error(tmp_path: Path) -> None:
    with pytest.raises(StateFileError, match="cannot write the state file"):
        StateFile(tmp_path / "missing" / "pbx.state.json").save({})


def test_the_default_state_file_sits_beside_the_configuration() -> None:
    assert default_state_path(Path("/etc/callflip/pbx.yaml")) == Path(
        "/etc/callflip/pbx.state.json"
    )


# -- counters for leak checks ---------------------------------------------------------------------


def test_counting_clock_counts_pending_timers() -> None:
    manual = ManualClock()
    clock = CountingClock(manual)
    fired: list[int] = []
    first = clock.call_later(1.0, lambda: fired.append(1))
    clock.call_later(2.0, lambda: fired.append(2))
    assert clock.pending == 2
    first.cancel()
    first.cancel()
    assert clock.pending == 1
    manual.advance(5.0)
    assert fired == [2]
    assert clock.pending == 0
    assert clock.monotonic() == manual.monotonic()
    assert clock.wall() == manual.wall()


async def test_pbx_stats_and_restored_history() -> None:
    config = PbxConfig(
        sip=SipSettings(listen="127.0.0.1", port=0, domain="home.arpa"),
        rtp=RtpSettings(47000, 47099),
        users=(User("Alice", "200", (Device("201", "pw-201-secret", "desk"),)),),
    )
    clock = CountingClock(ManualClock())
    pbx = Pbx(config, clock=clock, history=[record(1), record(2)])
    await pbx.start()
    try:
        stats = pbx.stats()
        assert stats.history == 2
        assert stats.timers is not None
        assert set(stats.open_items().values()) == {0}
        assert "timers" in stats.open_items()
        assert [item.call_id for item in pbx.history()] == ["call-1", "call-2"]
    finally:
        await pbx.stop()
    without = Pbx(config)
    assert without.stats().timers is None
    assert "timers" not in without.stats().open_items()


def test_push_pull_flip_details_and_transfers_survive_json() -> None:
    handoffs = (
        HandoffRecord(
            "call-5",
            "201",
            "202",
            1010.0,
            1011.0,
            False,
            "no answer",
            code="no_answer",
            pressed_by="201",
            keys="*0 2",
            how="menu",
        ),
        HandoffRecord(
            "call-5", "202", "203", 1020.0, 1021.0, True, "", kind="push", group="Alice everywhere"
        ),
    )
    transfers = (
        TransferRecord(
            "call-5",
            TransferKind.BLIND,
            "203",
            "401",
            "300",
            None,
            1030.0,
            1060.0,
            False,
            "no answer",
            recalled="203",
            referred_by="sip:203@pbx.example",
        ),
    )
    original = replace(record(5), handoffs=handoffs, transfers=transfers)
    text = json.dumps(call_record_to_json(original))
    assert call_record_from_json(json.loads(text)) == original
    older = call_record_to_json(record(6))
    del older["transfers"]  # saved before transfers were kept
    for handoff in older["handoffs"]:
        for key in ("kind", "group", "code", "pressed_by", "keys", "how"):
            del handoff[key]
    restored = call_record_from_json(older)
    assert restored.transfers == ()
    assert restored.handoffs == record(6).handoffs
