"""Group Presence by feature code between real baresip phones through our runner (shipped
defaults: ``*61`` present, ``*60`` absent), decided by recorded audio.

The group "Home" (pilot 250) is Alice's desk 201, her mobile 202 and Bob's phone 301; Carol (401)
calls the pilot. Bob makes himself absent with ``*60`` from his idle phone, so Carol's group call
rings only Alice's two phones; while it rings Bob dials ``*61`` and his phone must start ringing
within 4 s of that (the group call re-checks who may ring). He answers, and Carol and Bob must
hear each other's tones. Each code is answered with the confirmation tone (1200 Hz bursts), which
Bob's recording holds, and the change is in the runner's state file.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from . import audio
from .clients import Baresip, ClientError
from .conftest import DOMAIN, StartPbx
from .test_handoff import BOB_HZ, CALLER_HZ, _group, heard, phones

pytestmark = pytest.mark.interop

CONFIRM_HZ = 1200.0
#: The rule: a member made present while a group call rings starts ringing within 4 s.
WITHIN = 4.0


def _absent(tmp_path: Path) -> dict[str, Any]:
    """The runner's saved Group Presence (its state file, written a moment after a change)."""
    path = tmp_path / "pbx-0.state.json"
    if not path.exists():
        return {}
    saved = json.loads(path.read_text())
    groups = saved.get("state", {}).get("groups", {})
    absent: dict[str, Any] = groups.get("absent", {})
    return absent


async def _until(condition: Any, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.1)
    return bool(condition())


async def _dial_code(phone: Baresip, code: str, calls_before: int) -> None:
    """Dial a code from the idle phone: the PBX answers, confirms and hangs up."""
    await phone.dial(f"sip:{code}@{DOMAIN}")
    await phone.wait_event("CALL_ESTABLISHED", 10, count=calls_before + 1)
    await phone.wait_event("CALL_CLOSED", 10, count=calls_before + 1)


def _heard_confirmation(found: list[audio.Window]) -> bool:
    """A burst of the confirmation tone: 160 ms of 1200 Hz fills most of a 200 ms window."""
    return any(
        abs(w.dominant - CONFIRM_HZ) <= 15 and w.share >= 0.8 and w.rms >= 0.01 for w in found
    )


async def test_a_member_made_present_by_code_mid_ring_rings_within_four_seconds(
    start_pbx: StartPbx, tmp_path: Path
) -> None:
    async with phones(start_pbx, tmp_path, _group()) as p:
        try:
            desk = await p.add("201")
            mobile = await p.add("202")
            bob = await p.add("301")
            caller = await p.add("401")
            await _dial_code(bob, "*60", 0)
            assert await _until(lambda: _absent(tmp_path) == {"Home": ["301"]}), _absent(tmp_path)
            await caller.dial(f"sip:250@{DOMAIN}")
            await desk.wait_event("CALL_INCOMING", 10)
            await mobile.wait_event("CALL_INCOMING", 10)
            await asyncio.sleep(4.5)  # more than a re-check: the absent member is not rung
            assert bob.call_events("CALL_INCOMING") == [], p.failure()
            changed = time.monotonic()  # before the INVITE leaves: the change comes after it
            await bob.dial(f"sip:*61@{DOMAIN}")
            await bob.wait_event("CALL_INCOMING", WITHIN)
            rang_after = time.monotonic() - changed
            await bob.wait_event("CALL_CLOSED", 10, count=2)  # the code's call is over
            await bob.accept()
            await bob.wait_event("CALL_ESTABLISHED", 10, count=3)
            await caller.wait_event("CALL_ESTABLISHED", 10)
            await desk.wait_event("CALL_CLOSED", 10)
            await mobile.wait_event("CALL_CLOSED", 10)
            await asyncio.sleep(3.0)
            await caller.hangup()
            await bob.wait_event("CALL_CLOSED", 10, count=3)
            assert await _until(lambda: _absent(tmp_path) == {}), _absent(tmp_path)
        except ClientError as error:
            pytest.fail(f"{error}\n{p.failure()}")
        assert rang_after <= WITHIN
        by_caller = heard(caller)
        assert audio.tone_seconds(by_caller, BOB_HZ) >= 2.0, audio.describe(by_caller)
        by_bob = heard(bob)
        assert audio.tone_seconds(by_bob, CALLER_HZ) >= 2.0, audio.describe(by_bob)
        assert _heard_confirmation(by_bob), audio.describe(by_bob)
        assert "Call from 401 to group Home rings 201, 202" in p.pbx.log(), p.failure()


async def test_a_phone_in_no_group_hears_the_error_tone(
    start_pbx: StartPbx, tmp_path: Path
) -> None:
    async with phones(start_pbx, tmp_path, _group()) as p:
        try:
            caller = await p.add("401")
            await caller.dial(f"sip:*60@{DOMAIN}")
            await caller.wait_event("CALL_CLOSED", 10)
        except ClientError as error:
            pytest.fail(f"{error}\n{p.failure()}")
        assert caller.call_events("CALL_ESTABLISHED") == []
        closed = caller.call_events("CALL_CLOSED")[0]
        assert "403" in json.dumps(closed), closed
        found = heard(caller)
        assert audio.tone_seconds(found, 950.0) >= 0.2, audio.describe(found)
        assert "not a member of a ring group" in p.pbx.log(), p.failure()
