"""Keypad transfers between real baresip phones, decided by what each phone recorded.

The PBX runs in this process (media in its engine process, as always), so a test can read the
call's history afterwards; the phones are baresip, each playing its own tone and recording what it
decodes (see test_calls). Bob (301) calls Alice (200), whose desk (201) answers and passes Bob on
to Carol (400): Bob must end up hearing Carol's tone, Carol Bob's, and the desk must be released.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sip_core.calls import CallRecord
from sip_core.config import parse_config
from sip_core.pbx import Pbx

from . import audio
from .clients import (
    Baresip,
    ClientError,
    ProcessResult,
    free_port,
    run_process,
    run_sipp,
    sipp_argv,
    sipp_uas_argv,
    write_sipp_users,
)
from .conftest import DOMAIN, pbx_yaml
from .test_calls import _EXTENSION, ACCOUNTS, CallTarget, _failure, _users, heard, phone

pytestmark = pytest.mark.interop

BOB_HZ, DESK_HZ, CAROL_HZ = 1000.0, 600.0, 800.0
RINGBACK_HZ = 425.0


@pytest.fixture
def tones(tmp_path: Path) -> dict[float, Path]:
    return {
        hz: audio.write_tone(tmp_path / f"tone-{hz:.0f}.wav", hz, 60.0)
        for hz in (BOB_HZ, DESK_HZ, CAROL_HZ)
    }


async def start(extra_yaml: str = "") -> tuple[Pbx, CallTarget]:
    port = free_port()
    low = random.randrange(41000, 44000, 2)
    text = pbx_yaml(_users(), port=port, rtp_ports=f"{low}-{low + 99}") + extra_yaml
    pbx = Pbx(parse_config(text))
    await pbx.start()
    return pbx, CallTarget("callflip", port, lambda device: _EXTENSION[device], lambda: "")


def last_record(pbx: Pbx) -> CallRecord:
    records = pbx.history()
    assert records, "no call was recorded"
    return records[-1]


@dataclass
class Household:
    """The PBX of one test with Bob (301), Alice's desk (201, answers by itself) and Carol (401)."""

    pbx: Pbx
    target: CallTarget
    bob: Baresip
    desk: Baresip
    carol: Baresip | None


@contextlib.asynccontextmanager
async def household(
    tones: dict[float, Path], tmp_path: Path, extra_yaml: str = "", *, carol: str | None = "auto"
) -> AsyncIterator[Household]:
    """Start the PBX and the phones (Carol with answer mode ``carol``; None: no Carol).

    A ClientError inside fails the test with every phone's output and the PBX's log. The phones
    are stopped (their recordings complete) and the PBX too when the block ends.
    """
    pbx, target = await start(extra_yaml)
    try:
        async with contextlib.AsyncExitStack() as stack:
            bob = await stack.enter_async_context(
                phone(target, "301", tones[BOB_HZ], tmp_path / "bob")
            )
            desk = await stack.enter_async_context(
                phone(target, "201", tones[DESK_HZ], tmp_path / "desk", answermode="auto")
            )
            carol_ua = None
            if carol is not None:
                carol_ua = await stack.enter_async_context(
                    phone(target, "401", tones[CAROL_HZ], tmp_path / "carol", answermode=carol)
                )
            try:
                yield Household(pbx, target, bob, desk, carol_ua)
            except ClientError as error:
                uas = [ua for ua in (bob, desk, carol_ua) if ua is not None]
                pytest.fail(f"{error}\n{_failure(target, *uas)}")
    finally:
        await pbx.stop()


async def call_the_desk(home: Household, settle: float = 1.5) -> None:
    """Bob dials Alice's desk, both see the call up, then ``settle`` seconds of talk."""
    await home.bob.dial(f"sip:{home.target.dial('201')}@{DOMAIN}")
    await home.desk.wait_event("CALL_ESTABLISHED", 15)
    await home.bob.wait_event("CALL_ESTABLISHED", 15)
    await asyncio.sleep(settle)


async def still_in_call(home: Household, *uas: Baresip, talk: float = 3.0) -> None:
    """``talk`` more seconds (recorded), after which none of ``uas`` has had its call closed."""
    await asyncio.sleep(talk)
    for ua in uas:
        assert ua.call_events("CALL_CLOSED") == [], _failure(home.target, ua)


def tones_in_order(found: list[audio.Window], *frequencies: float) -> list[float]:
    """The clean tones of ``frequencies`` heard, in order, each run counted once."""
    runs: list[float] = []
    for window in found:
        for hz in frequencies:
            if window.is_tone(hz) and (not runs or runs[-1] != hz):
                runs.append(hz)
    return runs


async def blind_transfer(
    tones: dict[float, Path], tmp_path: Path, extra_yaml: str, keys: str
) -> tuple[Pbx, Baresip, Baresip, Baresip]:
    """Bob calls Alice; her desk dials ``keys``; Carol (auto-answer) takes the call."""
    async with household(tones, tmp_path, extra_yaml) as home:
        bob, desk, carol = home.bob, home.desk, home.carol
        assert carol is not None
        await call_the_desk(home)
        await desk.send_dtmf(keys)
        await desk.wait_event("CALL_CLOSED", 10)
        await carol.wait_event("CALL_ESTABLISHED", 15)
        await still_in_call(home, bob)
        await bob.hangup()
        await carol.wait_event("CALL_CLOSED", 10)
    return home.pbx, bob, desk, carol


def assert_passed_to_carol(pbx: Pbx, bob: Baresip, carol: Baresip) -> None:
    by_bob, by_carol = heard(bob), heard(carol)
    assert audio.tone_seconds(by_bob, DESK_HZ) >= 1.0, audio.describe(by_bob)
    assert audio.tone_seconds(by_bob, CAROL_HZ) >= 2.0, audio.describe(by_bob)
    # the desk first, then Carol, never back
    assert tones_in_order(by_bob, DESK_HZ, CAROL_HZ) == [DESK_HZ, CAROL_HZ], audio.describe(by_bob)
    assert audio.tone_seconds(by_carol, BOB_HZ) >= 2.0, audio.describe(by_carol)
    assert audio.tone_seconds(by_carol, DESK_HZ) == 0, audio.describe(by_carol)
    assert len(bob.call_events("CALL_ESTABLISHED")) == 1, bob.events
    (transfer,) = last_record(pbx).transfers
    assert transfer.succeeded
    assert (transfer.transferring, transfer.transferred, transfer.to_device) == (
        "201",
        "301",
        "401",
    )


async def test_blind_transfer_star_two_number_hash(
    tones: dict[float, Path], tmp_path: Path
) -> None:
    pbx, bob, _desk, carol = await blind_transfer(tones, tmp_path, "", "*2400#")
    assert_passed_to_carol(pbx, bob, carol)


async def test_blind_transfer_with_the_voipnow_preset(
    tones: dict[float, Path], tmp_path: Path
) -> None:
    """The option under test: ``transfer.preset: voipnow`` makes ``#1`` the blind code."""
    pbx, bob, _desk, carol = await blind_transfer(
        tones, tmp_path, "transfer:\n  preset: voipnow\n", "#1400#"
    )
    assert_passed_to_carol(pbx, bob, carol)


async def test_no_answer_rings_the_transferring_desk_back(
    tones: dict[float, Path], tmp_path: Path
) -> None:
    """The option under test: ``transfer.timeout`` (4 s here, to keep the test short).

    Carol never answers; Bob hears ringback meanwhile; the desk (auto-answer) is rung back and
    takes the call again, and Bob hears the desk once more.
    """
    async with household(tones, tmp_path, "transfer:\n  timeout: 4\n", carol="manual") as home:
        pbx, bob, desk, carol = home.pbx, home.bob, home.desk, home.carol
        assert carol is not None
        await call_the_desk(home)
        await desk.send_dtmf("*2400#")
        await desk.wait_event("CALL_CLOSED", 10)
        await carol.wait_event("CALL_INCOMING", 10)
        await desk.wait_event("CALL_ESTABLISHED", 15, count=2)
        await still_in_call(home, bob)
        await bob.hangup()
        await desk.wait_event("CALL_CLOSED", 10, count=2)
    by_bob = heard(bob)
    assert audio.tone_seconds(by_bob, RINGBACK_HZ) >= 0.6, audio.describe(by_bob)
    assert tones_in_order(by_bob, DESK_HZ, RINGBACK_HZ) == [DESK_HZ, RINGBACK_HZ, DESK_HZ], (
        audio.describe(by_bob)
    )
    assert carol.call_events("CALL_ESTABLISHED") == []
    (transfer,) = last_record(pbx).transfers
    assert not transfer.succeeded
    assert transfer.recalled == "201"
    assert "did not answer within 4 s" in transfer.reason


async def test_a_wrong_number_keeps_the_call(tones: dict[float, Path], tmp_path: Path) -> None:
    """``*2`` + a number nobody has: the desk hears the error tone, Bob keeps the desk."""
    async with household(tones, tmp_path, carol=None) as home:
        pbx, bob, desk = home.pbx, home.bob, home.desk
        await call_the_desk(home, settle=1.0)
        await desk.send_dtmf("*2999#")
        await still_in_call(home, desk)
        await bob.hangup()
        await desk.wait_event("CALL_CLOSED", 10)
    by_desk = heard(desk)
    # the special information tone's three notes reached the desk, and Bob's tone around them
    assert any(w.is_tone(950.0, tolerance=30) for w in by_desk), audio.describe(by_desk)
    assert any(w.is_tone(1800.0, tolerance=30) for w in by_desk), audio.describe(by_desk)
    assert audio.tone_seconds(by_desk, BOB_HZ) >= 2.0, audio.describe(by_desk)
    assert last_record(pbx).transfers == ()


def between(found: list[audio.Window], first: float, then: float) -> list[audio.Window]:
    """The windows after the last clean ``first`` tone that precedes the first ``then`` tone."""
    start = next(i for i, w in enumerate(found) if w.is_tone(then))
    last = max(i for i, w in enumerate(found[:start]) if w.is_tone(first))
    return found[last + 1 : start]


@pytest.mark.parametrize(
    ("extra_yaml", "keys"),
    [("", "**400#"), ("transfer:\n  preset: voipnow\n", "*2400#")],
    ids=["default", "voipnow"],
)
async def test_attended_transfer_completes_when_the_desk_hangs_up(
    tones: dict[float, Path], tmp_path: Path, extra_yaml: str, keys: str
) -> None:
    """The desk consults Carol (Bob on hold with music), then hangs up: Bob and Carol talk.

    Bob's recording: the desk, then held (audible, but neither the desk's nor Carol's tone, for
    the whole consultation), then Carol. Carol's: the desk, then Bob. The desk's: Bob, then
    Carol. (``voipnow``: the option under test is the preset, whose attended code is ``*2``.)
    """
    async with household(tones, tmp_path, extra_yaml) as home:
        pbx, bob, desk, carol = home.pbx, home.bob, home.desk, home.carol
        assert carol is not None
        await call_the_desk(home)
        await desk.send_dtmf(keys)
        await carol.wait_event("CALL_ESTABLISHED", 15)
        await asyncio.sleep(3.0)
        await desk.hangup()
        await desk.wait_event("CALL_CLOSED", 10)
        await still_in_call(home, bob, carol)
        await bob.hangup()
        await carol.wait_event("CALL_CLOSED", 10)
    by_bob, by_carol, by_desk = heard(bob), heard(carol), heard(desk)
    assert tones_in_order(by_bob, DESK_HZ, CAROL_HZ) == [DESK_HZ, CAROL_HZ], audio.describe(by_bob)
    held = between(by_bob, DESK_HZ, CAROL_HZ)
    assert len(held) * 0.2 >= 3.0, audio.describe(by_bob)  # the whole consultation, held
    assert sum(0.2 for w in held if w.rms >= 0.01) >= 2.0, audio.describe(held)  # music
    assert audio.tone_seconds(by_bob, CAROL_HZ) >= 2.0, audio.describe(by_bob)
    assert tones_in_order(by_carol, DESK_HZ, BOB_HZ) == [DESK_HZ, BOB_HZ], audio.describe(by_carol)
    assert audio.tone_seconds(by_carol, DESK_HZ) >= 2.0, audio.describe(by_carol)
    assert audio.tone_seconds(by_carol, BOB_HZ) >= 2.0, audio.describe(by_carol)
    assert tones_in_order(by_desk, BOB_HZ, CAROL_HZ) == [BOB_HZ, CAROL_HZ], audio.describe(by_desk)
    assert audio.tone_seconds(by_desk, CAROL_HZ) >= 2.0, audio.describe(by_desk)
    (transfer,) = last_record(pbx).transfers
    assert transfer.succeeded
    assert (transfer.kind, transfer.to_device) == ("attended", "401")


async def test_attended_transfer_cancel_code_returns_to_the_held_party(
    tones: dict[float, Path], tmp_path: Path
) -> None:
    """The desk consults Carol, then keys the cancel code: Carol is released, Bob and the desk
    talk again, and Bob never heard Carol."""
    async with household(tones, tmp_path) as home:
        pbx, bob, desk, carol = home.pbx, home.bob, home.desk, home.carol
        assert carol is not None
        await call_the_desk(home)
        await desk.send_dtmf("**400#")
        await carol.wait_event("CALL_ESTABLISHED", 15)
        await asyncio.sleep(2.0)
        await desk.send_dtmf("*4")
        await carol.wait_event("CALL_CLOSED", 10)
        await still_in_call(home, bob)
        await bob.hangup()
        await desk.wait_event("CALL_CLOSED", 10)
    by_bob, by_desk = heard(bob), heard(desk)
    assert audio.tone_seconds(by_bob, CAROL_HZ) == 0, audio.describe(by_bob)
    # the desk, a hold of at least the consultation's length with music, the desk again
    desk_at = [i for i, w in enumerate(by_bob) if w.is_tone(DESK_HZ)]
    gap, after = max((b - a, a) for a, b in itertools.pairwise(desk_at))
    held = by_bob[after + 1 : after + gap]
    assert len(held) * 0.2 >= 2.0, audio.describe(by_bob)
    assert sum(0.2 for w in held if w.rms >= 0.01) >= 1.5, audio.describe(by_bob)
    assert sum(0.2 for i in desk_at if i > after + gap) >= 2.0, audio.describe(by_bob)
    assert tones_in_order(by_desk, BOB_HZ, CAROL_HZ) == [BOB_HZ, CAROL_HZ, BOB_HZ], audio.describe(
        by_desk
    )
    (transfer,) = last_record(pbx).transfers
    assert not transfer.succeeded
    assert transfer.reason == "cancelled"


async def test_blind_refer_from_baresip(tones: dict[float, Path], tmp_path: Path) -> None:
    """The desk's own transfer command (baresip sends REFER): the PBX transfers Bob to Carol,
    reports it with NOTIFYs, and the desk's call ends."""
    async with household(tones, tmp_path) as home:
        pbx, bob, desk, carol = home.pbx, home.bob, home.desk, home.carol
        assert carol is not None
        await call_the_desk(home)
        await desk.command("transfer", f"sip:400@{DOMAIN}")
        await carol.wait_event("CALL_ESTABLISHED", 15)
        await desk.wait_event("CALL_CLOSED", 10)
        await still_in_call(home, bob)
        await bob.hangup()
        await carol.wait_event("CALL_CLOSED", 10)
    assert_passed_to_carol(pbx, bob, carol)
    assert desk.sent_requests("REFER"), desk.output[-3000:]
    # The SIP trace shows both directions: the NOTIFYs the PBX sent the desk, in order.
    notifies = desk.sent_requests("NOTIFY")
    frags = [
        line for block in notifies for line in block.splitlines() if line.startswith("SIP/2.0")
    ]
    assert frags[:1] == ["SIP/2.0 100 Trying"], "\n".join(notifies)
    assert frags[-1:] == ["SIP/2.0 200 OK"], "\n".join(notifies)
    assert all("Event: refer" in block for block in notifies), "\n".join(notifies)


# -- the phone's attended transfer and take-over, played by sipp -----------------------------------


async def test_sipp_phone_refer_with_replaces_joins_its_two_calls(
    tones: dict[float, Path], tmp_path: Path
) -> None:
    """Alice's phones are sipp: Carol calls 202 (a plain UAS answers), Bob calls 201, which sends
    REFER in Bob's dialog with Replaces naming the PBX's dialog with 202 (Alice's attended
    transfer). The PBX joins Bob and Carol (they hear each other); 201 sees 202 Accepted, NOTIFY
    100 Trying, NOTIFY 200 OK (terminated) and a BYE (its scenario checks each), 202 a BYE."""
    pbx, target = await start()
    ports = {"201": free_port(digits=5), "202": free_port(digits=5)}
    for device, port in ports.items():
        registered = await run_sipp(
            "register", target.port, {device: ACCOUNTS[device]}, local_port=port
        )
        assert registered.returncode == 0, registered.describe()
    workdir = tmp_path / "phone"
    workdir.mkdir()
    (workdir / "fields.csv").write_text(f"SEQUENTIAL\n{DOMAIN};402\n")
    (tmp_path / "other").mkdir()
    other_run = asyncio.create_task(
        run_process(sipp_uas_argv(ports["202"], calls=1, time_limit=40), time_limit=45,
                    cwd=tmp_path / "other")
    )  # fmt: skip
    phone_run: asyncio.Task[ProcessResult] | None = None
    try:
        async with (
            phone(target, "301", tones[BOB_HZ], tmp_path / "bob") as bob,
            phone(target, "401", tones[CAROL_HZ], tmp_path / "carol") as carol,
        ):
            try:
                await carol.dial(f"sip:202@{DOMAIN}")
                await carol.wait_event("CALL_ESTABLISHED", 15)
                (other_call,) = pbx.calls()
                assert other_call.callee is not None
                dialog = other_call.callee.dialog
                assert dialog is not None
                keys = {
                    "callid2": dialog.call_id,
                    "pbxtag2": dialog.local_tag,
                    "mytag2": dialog.remote_tag,
                }
                argv = [
                    *sipp_uas_argv(ports["201"], calls=1, time_limit=40,
                                   scenario="phone_refer_replaces", trace_messages=True),
                    "-inf", str(workdir / "fields.csv"),
                    *(item for name, value in keys.items() for item in ("-key", name, value)),
                ]  # fmt: skip
                phone_run = asyncio.create_task(run_process(argv, time_limit=45, cwd=workdir))
                await asyncio.sleep(0.5)
                await bob.dial(f"sip:201@{DOMAIN}")
                await bob.wait_event("CALL_ESTABLISHED", 15)
                result = await phone_run
                other = await other_run
                await asyncio.sleep(3.0)
                assert bob.call_events("CALL_CLOSED") == [], _failure(target, bob)
                assert carol.call_events("CALL_CLOSED") == [], _failure(target, carol)
                await bob.hangup()
                await carol.wait_event("CALL_CLOSED", 10)
            except ClientError as error:
                pytest.fail(f"{error}\n{_failure(target, bob, carol)}")
    finally:
        for task in (phone_run, other_run):
            if task is not None and not task.done():
                task.cancel()
        await pbx.stop()
    messages = (workdir / "messages.log").read_text(errors="replace")
    assert result.returncode == 0, result.describe() + messages[-6000:]
    assert other.returncode == 0, other.describe()
    by_bob, by_carol = heard(bob), heard(carol)
    assert audio.tone_seconds(by_bob, CAROL_HZ) >= 2.0, audio.describe(by_bob)
    assert audio.tone_seconds(by_carol, BOB_HZ) >= 2.0, audio.describe(by_carol)
    record = next(r for r in pbx.history() if r.transfers)
    (transfer,) = record.transfers
    assert transfer.succeeded
    assert (transfer.transferring, transfer.transferred, transfer.to_device) == (
        "201",
        "301",
        "401",
    )
    assert transfer.referred_by == f"<sip:201@{DOMAIN}>"


async def test_sipp_invite_with_replaces_takes_the_call_over(
    tones: dict[float, Path], tmp_path: Path
) -> None:
    """Bob talks to Alice's desk (baresip). The same INVITE with Replaces naming the desk's
    dialog: from Carol's device (sipp, 401, another user) it gets 403 and nothing changes; from
    Alice's other device (sipp, 202) it gets 200, the desk gets BYE and Bob stays, now with 202."""
    pbx, target = await start()
    try:
        async with (
            phone(target, "301", tones[BOB_HZ], tmp_path / "bob") as bob,
            phone(target, "201", tones[DESK_HZ], tmp_path / "desk", answermode="auto") as desk,
        ):
            try:
                await bob.dial(f"sip:{target.dial('201')}@{DOMAIN}")
                await desk.wait_event("CALL_ESTABLISHED", 15)
                await bob.wait_event("CALL_ESTABLISHED", 15)
                (call,) = pbx.calls()
                assert call.callee is not None
                assert call.callee.dialog is not None
                dialog = call.callee.dialog
                replaces = (
                    f"{dialog.call_id};to-tag={dialog.local_tag};from-tag={dialog.remote_tag}"
                )
                refused = await _sipp_replaces(
                    tmp_path / "refused", target.port, "401", replaces, "invite_replaces_refused"
                )
                assert refused.returncode == 0, refused.describe()
                assert desk.call_events("CALL_CLOSED") == [], _failure(target, desk)
                taken = await _sipp_replaces(
                    tmp_path / "taken", target.port, "202", replaces, "invite_replaces"
                )
                assert taken.returncode == 0, taken.describe()
                await desk.wait_event("CALL_CLOSED", 10)
                await bob.wait_event("CALL_CLOSED", 10)  # sipp hung up at the end
            except ClientError as error:
                pytest.fail(f"{error}\n{_failure(target, bob, desk)}")
    finally:
        await pbx.stop()
    assert len(bob.call_events("CALL_ESTABLISHED")) == 1
    (record,) = pbx.history()
    assert record.callee_device == "202"
    assert record.reason == "202 hung up"


async def _sipp_replaces(
    workdir: Path, port: int, device: str, replaces: str, scenario: str
) -> ProcessResult:
    workdir.mkdir()  # noqa: ASYNC240 (a fresh test directory)
    csv = write_sipp_users(workdir / "users.csv", {device: ACCOUNTS[device]}, domain=DOMAIN)
    argv = sipp_argv(
        scenario, port, csv, domain=f"200@{DOMAIN}", keys={"replaces": replaces}, time_limit=20
    )
    return await run_process(argv, time_limit=30, cwd=workdir)


@pytest.mark.parametrize("how", ["declines", "hangs_up"])
async def test_attended_transfer_target_failing_returns_to_the_held_party(
    tones: dict[float, Path], tmp_path: Path, how: str
) -> None:
    """Carol declines the consultation call (or answers and hangs up): the desk is back with
    Bob, who heard hold music meanwhile and never Carol, and the call goes on."""
    answermode = "manual" if how == "declines" else "auto"
    async with household(tones, tmp_path, carol=answermode) as home:
        pbx, bob, desk, carol = home.pbx, home.bob, home.desk, home.carol
        assert carol is not None
        await call_the_desk(home)
        await desk.send_dtmf("**400#")
        if how == "declines":
            await carol.wait_event("CALL_INCOMING", 15)
            await asyncio.sleep(1.5)
            await carol.hangup()  # rejects the ringing call
        else:
            await carol.wait_event("CALL_ESTABLISHED", 15)
            await asyncio.sleep(2.0)
            await carol.hangup()
        await carol.wait_event("CALL_CLOSED", 10)
        await still_in_call(home, bob, desk)
        await bob.hangup()
        await desk.wait_event("CALL_CLOSED", 10)
    by_bob = heard(bob)
    assert audio.tone_seconds(by_bob, CAROL_HZ) == 0, audio.describe(by_bob)
    desk_at = [i for i, w in enumerate(by_bob) if w.is_tone(DESK_HZ)]
    gap, after = max((b - a, a) for a, b in itertools.pairwise(desk_at))
    held = by_bob[after + 1 : after + gap]
    assert len(held) * 0.2 >= 1.0, audio.describe(by_bob)
    assert sum(0.2 for w in held if w.rms >= 0.01) >= 0.8, audio.describe(by_bob)
    assert sum(0.2 for i in desk_at if i > after + gap) >= 2.0, audio.describe(by_bob)
    (transfer,) = last_record(pbx).transfers
    assert not transfer.succeeded
    # (baresip refuses a ringing call with 486 Busy Here)
    expected = ("400 is busy", "400 declined") if how == "declines" else ("401 hung up",)
    assert any(text in transfer.reason for text in expected), transfer.reason
