"""Attended transfers from phones that key by SIP INFO, and a held party that hangs up during
the consultation, with real clients (baresip, sipp), decided by recorded audio and the records.

Bob (301) calls Alice's desk (201), which consults Carol (device 401) with ``**401#``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from . import audio
from .clients import ClientError, ProcessResult, free_port, run_process, run_sipp, sipp_uas_argv
from .conftest import DOMAIN
from .test_calls import ACCOUNTS, _failure, heard, phone
from .test_transfer import BOB_HZ, CAROL_HZ, DESK_HZ, last_record, start, tones_in_order

pytestmark = pytest.mark.interop


@pytest.fixture
def tones(tmp_path: Path) -> dict[float, Path]:
    return {
        hz: audio.write_tone(tmp_path / f"tone-{hz:.0f}.wav", hz, 60.0)
        for hz in (BOB_HZ, DESK_HZ, CAROL_HZ)
    }


async def test_attended_transfer_keyed_by_sip_info(
    tones: dict[float, Path], tmp_path: Path
) -> None:
    """The desk is sipp keying by INFO: ``**401#`` holds Bob and rings Carol, ``*3`` during the
    consultation hands Bob over (the desk gets its BYE, checked by the scenario: keys that
    reached Bob instead would leave it waiting). Bob and Carol then hear each other, and the
    record names the handover."""
    pbx, target = await start()
    port = free_port(digits=5)
    registered = await run_sipp("register", target.port, {"201": ACCOUNTS["201"]}, local_port=port)
    assert registered.returncode == 0, registered.describe()
    workdir = tmp_path / "desk"
    workdir.mkdir()
    (workdir / "fields.csv").write_text(f"SEQUENTIAL\n{DOMAIN};\n")
    argv = [
        *sipp_uas_argv(port, calls=1, time_limit=40, scenario="phone_info_attended",
                       trace_messages=True),
        "-inf", str(workdir / "fields.csv"),
    ]  # fmt: skip
    desk_run: asyncio.Task[ProcessResult] | None = None
    try:
        async with (
            phone(target, "301", tones[BOB_HZ], tmp_path / "bob") as bob,
            phone(target, "401", tones[CAROL_HZ], tmp_path / "carol", answermode="auto") as carol,
        ):
            try:
                desk_run = asyncio.create_task(run_process(argv, time_limit=45, cwd=workdir))
                await asyncio.sleep(0.5)
                await bob.dial(f"sip:201@{DOMAIN}")
                await bob.wait_event("CALL_ESTABLISHED", 15)
                await carol.wait_event("CALL_ESTABLISHED", 15)
                result = await desk_run
                await asyncio.sleep(3.0)
                assert bob.call_events("CALL_CLOSED") == [], _failure(target, bob)
                assert carol.call_events("CALL_CLOSED") == [], _failure(target, carol)
                await bob.hangup()
                await carol.wait_event("CALL_CLOSED", 10)
            except ClientError as error:
                pytest.fail(f"{error}\n{_failure(target, bob, carol)}")
    finally:
        if desk_run is not None and not desk_run.done():
            desk_run.cancel()
        await pbx.stop()
    messages = (workdir / "messages.log").read_text(errors="replace")
    assert result.returncode == 0, result.describe() + messages[-6000:]
    by_bob, by_carol = heard(bob), heard(carol)
    assert audio.tone_seconds(by_bob, CAROL_HZ) >= 2.0, audio.describe(by_bob)
    assert audio.tone_seconds(by_carol, BOB_HZ) >= 2.0, audio.describe(by_carol)
    (transfer,) = last_record(pbx).transfers
    assert transfer.succeeded
    assert (transfer.kind, transfer.transferring, transfer.transferred, transfer.to_device) == (
        "attended",
        "201",
        "301",
        "401",
    )


async def test_the_held_party_hanging_up_leaves_the_consultation_talking(
    tones: dict[float, Path], tmp_path: Path
) -> None:
    """Bob hangs up while on hold: the desk and Carol go on talking as the call (each hears the
    other after Bob left), until the desk hangs up; the record says Bob hung up on hold."""
    pbx, target = await start()
    try:
        async with (
            phone(target, "301", tones[BOB_HZ], tmp_path / "bob") as bob,
            phone(target, "201", tones[DESK_HZ], tmp_path / "desk", answermode="auto") as desk,
            phone(target, "401", tones[CAROL_HZ], tmp_path / "carol", answermode="auto") as carol,
        ):
            try:
                await bob.dial(f"sip:201@{DOMAIN}")
                await desk.wait_event("CALL_ESTABLISHED", 15)
                await bob.wait_event("CALL_ESTABLISHED", 15)
                await asyncio.sleep(1.5)
                await desk.send_dtmf("**401#")
                await carol.wait_event("CALL_ESTABLISHED", 15)
                await asyncio.sleep(2.0)
                await bob.hangup()
                await bob.wait_event("CALL_CLOSED", 10)
                await asyncio.sleep(4.0)
                assert desk.call_events("CALL_CLOSED") == [], _failure(target, desk)
                assert carol.call_events("CALL_CLOSED") == [], _failure(target, carol)
                (call,) = pbx.calls()
                assert call.operation is None
                await desk.hangup()
                await carol.wait_event("CALL_CLOSED", 10)
            except ClientError as error:
                pytest.fail(f"{error}\n{_failure(target, bob, desk, carol)}")
    finally:
        await pbx.stop()
    by_desk, by_carol = heard(desk), heard(carol)
    # Carol: the desk through the consultation and after Bob left; never Bob.
    assert audio.tone_seconds(by_carol, DESK_HZ) >= 4.0, audio.describe(by_carol)
    assert audio.tone_seconds(by_carol, BOB_HZ) == 0, audio.describe(by_carol)
    # The desk: Bob, then Carol until the end.
    assert tones_in_order(by_desk, BOB_HZ, CAROL_HZ) == [BOB_HZ, CAROL_HZ], audio.describe(by_desk)
    assert audio.tone_seconds(by_desk, CAROL_HZ) >= 4.0, audio.describe(by_desk)
    record = last_record(pbx)
    (transfer,) = record.transfers
    assert not transfer.succeeded
    assert transfer.reason == "301 hung up while on hold; 201 and 401 talk on"
    assert record.reason == "201 hung up"
