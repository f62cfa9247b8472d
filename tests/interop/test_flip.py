"""The flip's rules with real baresip phones, decided by what each phone recorded.

The PBX runs in this process (its media in its engine process, as always) so that a test about a
runtime setting (flip permission, Do Not Disturb) can set it through the PBX's API; every other
setting is the shipped default unless the test is about that option (flip timeout, announcement,
simultaneous ring).
Each phone plays its own tone and records what it decodes (see test_calls): the caller's tone is
1000 Hz, the desk's 440, the mobile's 700 and the softphone's 850. Prompts are speech: audible
windows that are no phone's tone. The error tone is 950, 1400 and 1800 Hz (ITU-T E.180), the
announcement a 1000 Hz beep.

Alice has a desk (201), a mobile (202) and a softphone (203); Bob (301) calls her desk directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import pytest

from sip_core.config import PbxConfig, UserFlipOptions, parse_config
from sip_core.pbx import Pbx

from . import audio
from .clients import Baresip, ClientError, free_port
from .conftest import DOMAIN, Device, User, pbx_yaml

pytestmark = pytest.mark.interop

CALLER_HZ, DESK_HZ, MOBILE_HZ, SOFT_HZ = 1000.0, 440.0, 700.0, 850.0
TONES = {"301": CALLER_HZ, "201": DESK_HZ, "202": MOBILE_HZ, "203": SOFT_HZ}
ERROR_HZ = (950.0, 1400.0, 1800.0)
ACCOUNTS = {
    "201": "alice-desk-pw",
    "202": "alice-mobile-pw",
    "203": "alice-soft-pw",
    "301": "bob-kitchen-pw",
}
FINE = 0.1  # seconds: windows short enough to catch a 200 ms beep and 330 ms tone segments


def _users() -> list[User]:
    return [
        User(
            "alice",
            "200",
            [
                Device("201", ACCOUNTS["201"], "Desk", "desk"),
                Device("202", ACCOUNTS["202"], "Mobile", "mobile"),
                Device("203", ACCOUNTS["203"], "Soft", "softphone"),
            ],
        ),
        User("bob", "300", [Device("301", ACCOUNTS["301"], "Kitchen", "desk")]),
    ]


def _config(port: int, options: UserFlipOptions | None = None) -> PbxConfig:
    low = random.randrange(41000, 44000, 2)
    config = parse_config(pbx_yaml(_users(), port=port, rtp_ports=f"{low}-{low + 99}"))
    if options is None:
        return config
    alice, *others = config.users
    return replace(config, users=(replace(alice, flip_options=options), *others))


@contextlib.asynccontextmanager
async def running(options: UserFlipOptions | None = None) -> AsyncIterator[Pbx]:
    port = free_port()
    pbx = Pbx(_config(port, options))
    await pbx.start()
    try:
        yield pbx
    finally:
        await pbx.stop()


@contextlib.asynccontextmanager
async def phone(
    pbx: Pbx, user: str, tones: dict[str, Path], workdir: Path, *, answermode: str = "manual"
) -> AsyncIterator[Baresip]:
    ua = Baresip(
        user,
        ACCOUNTS[user],
        pbx.local_address.port,
        domain=DOMAIN,
        tone=tones[user],
        record=True,
        answermode=answermode,
        workdir=workdir / user,
    )
    async with ua:
        registration = await ua.wait_registered()
        assert registration.ok, f"{user} did not register:\n{ua.output[-3000:]}"
        yield ua


@pytest.fixture
def tones(tmp_path: Path) -> dict[str, Path]:
    return {
        user: audio.write_tone(tmp_path / f"tone-{hz:.0f}.wav", hz, 60.0)
        for user, hz in TONES.items()
    }


def heard(ua: Baresip, length: float = 0.2) -> list[audio.Window]:
    found: list[audio.Window] = []
    for path in ua.recordings("dec"):
        samples, rate = audio.read_wav(path)
        found += audio.windows(samples, rate, length=length)
    assert found, f"{ua.user} recorded nothing"
    return found


def speech_seconds(found: list[audio.Window], *tones_hz: float) -> float:
    """Audible windows that are none of the phones' tones (a prompt), in seconds."""
    return 0.2 * sum(
        1 for w in found if w.rms >= 0.01 and not any(w.is_tone(hz) for hz in tones_hz)
    )


def error_tone_heard(ua: Baresip) -> bool:
    found = heard(ua, FINE)
    return all(any(w.is_tone(hz, tolerance=20) for w in found) for hz in ERROR_HZ)


def last_tone(found: list[audio.Window], *tones_hz: float) -> float | None:
    """The last of ``tones_hz`` the recording holds."""
    hits = [hz for w in found for hz in tones_hz if w.is_tone(hz)]
    return hits[-1] if hits else None


async def _call(caller: Baresip, desk: Baresip) -> None:
    await caller.dial(f"sip:201@{DOMAIN}")
    await desk.wait_event("CALL_ESTABLISHED", 15)
    await caller.wait_event("CALL_ESTABLISHED", 15)
    await asyncio.sleep(1.5)


def _fail(error: ClientError, *uas: Baresip) -> None:
    text = "\n".join(f"--- baresip {ua.user}\n{ua.output[-2500:]}" for ua in uas)
    pytest.fail(f"{error}\n{text}")


async def test_menu_with_three_devices_pressing_2_moves_the_call_to_the_second(
    tones: dict[str, Path], tmp_path: Path
) -> None:
    """*0 plays "press 1 for your mobile, press 2 for your soft phone" to the desk alone; 2
    (barge-in; 201-203 start with 2, so it is taken after the inter-digit timeout) rings the
    softphone, which takes the call; the desk is hung up."""
    async with (
        running() as pbx,
        phone(pbx, "301", tones, tmp_path) as caller,
        phone(pbx, "201", tones, tmp_path, answermode="auto") as desk,
        phone(pbx, "202", tones, tmp_path, answermode="auto") as mobile,
        phone(pbx, "203", tones, tmp_path, answermode="auto") as soft,
    ):
        try:
            await _call(caller, desk)
            await desk.send_dtmf("*0")
            await asyncio.sleep(2.5)  # the menu plays
            await desk.send_dtmf("2")
            await soft.wait_event("CALL_ESTABLISHED", 15)
            await desk.wait_event("CALL_CLOSED", 10)
            await asyncio.sleep(2.5)
            await caller.hangup()
            await soft.wait_event("CALL_CLOSED", 10)
        except ClientError as error:
            _fail(error, caller, desk, soft)
        (record,) = pbx.history()[-1:]
    assert mobile.call_events("CALL_ESTABLISHED") == []
    assert [(h.to_device, h.how, h.keys, h.succeeded) for h in record.handoffs] == [
        ("203", "menu", "*0 2", True)
    ]
    by_desk, by_caller = heard(desk), heard(caller)
    # the desk heard the prompt (speech where the caller's tone was) ...
    assert speech_seconds(by_desk, CALLER_HZ) >= 1.5, audio.describe(by_desk)
    assert audio.tone_seconds(by_desk, CALLER_HZ) >= 1.0, audio.describe(by_desk)
    # ... the caller never did: the desk's tone, then the softphone's, nothing spoken
    assert speech_seconds(by_caller, DESK_HZ, SOFT_HZ) <= 0.6, audio.describe(by_caller)
    assert audio.tone_seconds(by_caller, SOFT_HZ) >= 1.5, audio.describe(by_caller)
    assert last_tone(by_caller, DESK_HZ, SOFT_HZ) == SOFT_HZ
    assert audio.tone_seconds(heard(soft), CALLER_HZ) >= 1.5
    assert not error_tone_heard(desk)  # what the desk heard was the prompt, not a refusal


async def test_star_zero_and_a_device_number_flips_to_that_device(
    tones: dict[str, Path], tmp_path: Path
) -> None:
    async with (
        running() as pbx,
        phone(pbx, "301", tones, tmp_path) as caller,
        phone(pbx, "201", tones, tmp_path, answermode="auto") as desk,
        phone(pbx, "202", tones, tmp_path, answermode="auto") as mobile,
        phone(pbx, "203", tones, tmp_path, answermode="auto") as soft,
    ):
        try:
            await _call(caller, desk)
            await desk.send_dtmf("*0203")
            await soft.wait_event("CALL_ESTABLISHED", 15)
            await desk.wait_event("CALL_CLOSED", 10)
            await asyncio.sleep(2.5)
            await caller.hangup()
        except ClientError as error:
            _fail(error, caller, desk, soft)
        (record,) = pbx.history()[-1:]
    assert mobile.call_events("CALL_ESTABLISHED") == []
    assert [(h.to_device, h.how, h.keys) for h in record.handoffs] == [("203", "direct", "*0 203")]
    by_caller = heard(caller)
    assert audio.tone_seconds(by_caller, SOFT_HZ) >= 1.5, audio.describe(by_caller)
    assert caller.received_dtmf() == ""  # no key reached the caller


async def test_no_answer_fails_back_and_the_desk_hears_the_failure_tone(
    tones: dict[str, Path], tmp_path: Path
) -> None:
    """A flip timeout of 3 s (the option under test); the mobile never answers."""
    async with (
        running(UserFlipOptions(timeout=3)) as pbx,
        phone(pbx, "301", tones, tmp_path) as caller,
        phone(pbx, "201", tones, tmp_path, answermode="auto") as desk,
        phone(pbx, "202", tones, tmp_path) as mobile,
    ):
        try:
            await _call(caller, desk)
            await desk.send_dtmf("*0")
            await mobile.wait_event("CALL_INCOMING", 10)
            await mobile.wait_event("CALL_CLOSED", 10)  # cancelled after the timeout
            await asyncio.sleep(4.0)
            assert caller.call_events("CALL_CLOSED") == []
            assert desk.call_events("CALL_CLOSED") == []
            await caller.hangup()
        except ClientError as error:
            _fail(error, caller, desk, mobile)
        (record,) = pbx.history()[-1:]
    assert [(h.to_device, h.code) for h in record.handoffs] == [("202", "no_answer")]
    assert error_tone_heard(desk), audio.describe(heard(desk, FINE))
    by_caller = heard(caller)
    # the caller still talks to the desk after the failed flip
    assert last_tone(by_caller, DESK_HZ, MOBILE_HZ) == DESK_HZ
    assert audio.tone_seconds(by_caller, MOBILE_HZ) == 0.0
    by_desk = heard(desk)
    assert last_tone(by_desk, CALLER_HZ) == CALLER_HZ


async def _refused(
    tones: dict[str, Path], tmp_path: Path, setting: Callable[[Pbx], None], keys: str
) -> tuple[Baresip, Baresip, Baresip, list[str]]:
    async with (
        running() as pbx,
        phone(pbx, "301", tones, tmp_path) as caller,
        phone(pbx, "201", tones, tmp_path, answermode="auto") as desk,
        phone(pbx, "202", tones, tmp_path, answermode="auto") as mobile,
    ):
        setting(pbx)
        try:
            await _call(caller, desk)
            await desk.send_dtmf(keys)
            await asyncio.sleep(4.0)
            await caller.hangup()
            await desk.wait_event("CALL_CLOSED", 10)
        except ClientError as error:
            _fail(error, caller, desk, mobile)
        (record,) = pbx.history()[-1:]
    return caller, desk, mobile, [h.code for h in record.handoffs]


async def test_flip_disabled_is_refused_with_the_failure_tone(
    tones: dict[str, Path], tmp_path: Path
) -> None:
    caller, desk, mobile, codes = await _refused(tones, tmp_path, _disable_flip, "*0")
    assert codes == ["flip_disabled"]
    assert mobile.call_events("CALL_INCOMING") == []
    assert error_tone_heard(desk), audio.describe(heard(desk, FINE))
    assert not any(w.is_tone(hz, tolerance=20) for w in heard(caller, FINE) for hz in ERROR_HZ)


async def test_a_target_in_do_not_disturb_is_refused(
    tones: dict[str, Path], tmp_path: Path
) -> None:
    caller, desk, mobile, codes = await _refused(tones, tmp_path, _dnd_mobile, "*0")
    assert codes == ["target_unavailable"]
    assert mobile.call_events("CALL_INCOMING") == []
    assert error_tone_heard(desk), audio.describe(heard(desk, FINE))
    assert caller.received_dtmf() == ""


async def test_a_device_in_do_not_disturb_is_not_offered(
    tones: dict[str, Path], tmp_path: Path
) -> None:
    """The softphone is in DND: the mobile is the only candidate, so *0 flips to it at once."""
    async with (
        running() as pbx,
        phone(pbx, "301", tones, tmp_path) as caller,
        phone(pbx, "201", tones, tmp_path, answermode="auto") as desk,
        phone(pbx, "202", tones, tmp_path, answermode="auto") as mobile,
        phone(pbx, "203", tones, tmp_path, answermode="auto") as soft,
    ):
        _dnd(pbx, "203")
        try:
            await _call(caller, desk)
            await desk.send_dtmf("*0")
            await mobile.wait_event("CALL_ESTABLISHED", 15)
            await asyncio.sleep(2.0)
            await caller.hangup()
        except ClientError as error:
            _fail(error, caller, desk, mobile, soft)
        (record,) = pbx.history()[-1:]
    assert soft.call_events("CALL_INCOMING") == []
    assert [(h.to_device, h.how) for h in record.handoffs] == [("202", "automatic")]
    assert audio.tone_seconds(heard(caller), MOBILE_HZ) >= 1.0


def _disable_flip(pbx: Pbx) -> None:
    pbx.set_user_flip("alice", False)  # the person's own setting (a switch in Home Assistant)


def _dnd(pbx: Pbx, device: str) -> None:
    pbx.set_dnd(device, True)


def _dnd_mobile(pbx: Pbx) -> None:
    _dnd(pbx, "202")


async def test_the_announcement_tone_reaches_the_caller_at_the_switch(
    tones: dict[str, Path], tmp_path: Path
) -> None:
    async with (
        running(UserFlipOptions(announcement=True)) as pbx,
        phone(pbx, "301", tones, tmp_path) as caller,
        phone(pbx, "201", tones, tmp_path, answermode="auto") as desk,
        phone(pbx, "202", tones, tmp_path, answermode="auto") as mobile,
    ):
        try:
            await _call(caller, desk)
            await desk.send_dtmf("*0")
            await mobile.wait_event("CALL_ESTABLISHED", 15)
            await asyncio.sleep(2.5)
            await caller.hangup()
        except ClientError as error:
            _fail(error, caller, desk, mobile)
    found = heard(caller, FINE)
    beeps = [w.start for w in found if w.is_tone(CALLER_HZ, tolerance=20)]
    assert beeps, audio.describe(found)
    first_mobile = min(w.start for w in found if w.is_tone(MOBILE_HZ))
    assert abs(beeps[0] - first_mobile) <= 1.0, audio.describe(found)  # at the switch
    assert len(beeps) <= 3, audio.describe(found)  # one 200 ms beep, not a tone


async def test_without_the_announcement_the_caller_hears_no_beep(
    tones: dict[str, Path], tmp_path: Path
) -> None:
    """The shipped default (announcement off): the same flip, no 1000 Hz in the recording."""
    async with (
        running() as pbx,
        phone(pbx, "301", tones, tmp_path) as caller,
        phone(pbx, "201", tones, tmp_path, answermode="auto") as desk,
        phone(pbx, "202", tones, tmp_path, answermode="auto") as mobile,
    ):
        try:
            await _call(caller, desk)
            await desk.send_dtmf("*0")
            await mobile.wait_event("CALL_ESTABLISHED", 15)
            await asyncio.sleep(2.5)
            await caller.hangup()
        except ClientError as error:
            _fail(error, caller, desk, mobile)
    found = heard(caller, FINE)
    assert audio.tone_seconds(found, MOBILE_HZ, length=FINE) >= 1.5, audio.describe(found)
    assert not any(w.is_tone(CALLER_HZ, tolerance=20) for w in found), audio.describe(found)


async def test_simultaneous_ring_rings_both_devices_and_the_first_answer_wins(
    tones: dict[str, Path], tmp_path: Path
) -> None:
    async with (
        running(UserFlipOptions(simultaneous_ring=True)) as pbx,
        phone(pbx, "301", tones, tmp_path) as caller,
        phone(pbx, "201", tones, tmp_path, answermode="auto") as desk,
        phone(pbx, "202", tones, tmp_path) as mobile,
        phone(pbx, "203", tones, tmp_path) as soft,
    ):
        try:
            await _call(caller, desk)
            await desk.send_dtmf("*0")
            await mobile.wait_event("CALL_INCOMING", 10)
            await soft.wait_event("CALL_INCOMING", 10)
            await soft.accept()
            await soft.wait_event("CALL_ESTABLISHED", 10)
            await mobile.wait_event("CALL_CLOSED", 10)  # the other one was cancelled
            await desk.wait_event("CALL_CLOSED", 10)
            await asyncio.sleep(2.5)
            await caller.hangup()
        except ClientError as error:
            _fail(error, caller, desk, mobile, soft)
        (record,) = pbx.history()[-1:]
    assert mobile.call_events("CALL_ESTABLISHED") == []
    assert [(h.to_device, h.how) for h in record.handoffs] == [("203", "simultaneous")]
    by_caller = heard(caller)
    assert audio.tone_seconds(by_caller, SOFT_HZ) >= 1.5, audio.describe(by_caller)
    assert last_tone(by_caller, DESK_HZ, SOFT_HZ) == SOFT_HZ
