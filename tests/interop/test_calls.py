"""Calls between real clients through our runner's B2BUA, checked from the audio they recorded.

Each baresip plays its own tone (``audio.write_tone``) through the ``aufile`` source and records
what it decodes from the far end with ``sndfile``; a test passes only if each party's recording is
the other party's tone, so signalling alone (a 200 OK, an ACK) proves nothing here. DTMF is sent
as RFC 4733 telephone-events by pressing keys on baresip's console.

Every test runs against two targets:
- ``kamailio``: Kamailio as registrar and record-routing proxy (``bench/_kamailio_proxy.py``),
  media end to end. It checks the harness itself (tones, recordings, call control, DTMF, the
  sipp call scenarios) against independent software, so a failure on ``callflip`` alone points
  at our runner.
- ``callflip``: our runner (``python -m sip_core``), media through its relay. These fail, never
  skip, when the runner refuses or mishandles a call.
The flip test needs our B2BUA (a proxy cannot flip) and runs on ``callflip`` only.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from . import audio
from .clients import (
    Baresip,
    ClientError,
    free_port,
    read_sipp_outputs,
    run_process,
    run_sipp,
    sipp_uac_call_argv,
    sipp_uas_argv,
    write_sipp_callers,
)
from .conftest import DOMAIN, REPO, Device, StartPbx, User

pytestmark = pytest.mark.interop

CALLER_HZ, CALLEE_HZ, SECOND_DEVICE_HZ = 1000.0, 440.0, 700.0

# alice (extension 200) has two devices; bob (300) one; "uas" devices are the sipp UAS.
ACCOUNTS = {
    "201": "alice-desk-pw",
    "202": "alice-mobile-pw",
    "301": "bob-kitchen-pw",
    "401": "sipp-caller-pw",
    "501": "sipp-callee-pw",
}


@dataclass
class CallTarget:
    """Where devices register and how a user is dialled there."""

    kind: str  # "kamailio" or "callflip"
    port: int
    dial: Callable[[str], str]  # device username -> what a caller dials to reach its user
    log: Callable[[], str]


def _users() -> list[User]:
    return [
        User("alice", "200", [Device("201", ACCOUNTS["201"]), Device("202", ACCOUNTS["202"])]),
        User("bob", "300", [Device("301", ACCOUNTS["301"])]),
        User("carol", "400", [Device("401", ACCOUNTS["401"])]),
        User("dave", "500", [Device("501", ACCOUNTS["501"])]),
    ]


_EXTENSION = {"201": "200", "202": "200", "301": "300", "401": "400", "501": "500"}


def _load_proxy() -> Any:
    """bench/_kamailio_proxy.py (bench/ is not a package; it imports bench/_kamailio.py)."""
    bench = str(REPO / "bench")
    if bench not in sys.path:
        sys.path.insert(0, bench)
    return importlib.import_module("_kamailio_proxy")


@pytest.fixture
def kamailio_proxy() -> Iterator[Callable[[], Any]]:
    """Factory: a Kamailio registrar + proxy knowing ACCOUNTS; stopped after the test."""
    module = _load_proxy()
    started: list[Any] = []

    def start() -> Any:
        if importlib.import_module("_kamailio").kamailio_binary() is None:
            pytest.skip("kamailio not installed")
        # One worker: two can relay a callee's 180 and 200 out of order, and sipp fails the call.
        proxy = module.KamailioProxy(
            users=dict(ACCOUNTS), port=free_port(), min_expires=1, children=1, tcp=True
        )
        proxy.start()
        started.append(proxy)
        return proxy

    try:
        yield start
    finally:
        for proxy in started:
            proxy.stop()


MakeCallTarget = Callable[[], Awaitable[CallTarget]]


@pytest.fixture(params=["kamailio", "callflip"])
def make_call_target(
    request: pytest.FixtureRequest, start_pbx: StartPbx, kamailio_proxy: Callable[[], Any]
) -> MakeCallTarget:
    kind: str = request.param

    async def make() -> CallTarget:
        if kind == "kamailio":
            proxy = kamailio_proxy()
            return CallTarget(kind, proxy.port, lambda device: device, proxy.log_text)
        pbx = await start_pbx(_users())
        return CallTarget(kind, pbx.port, lambda device: _EXTENSION[device], pbx.log)

    return make


@pytest.fixture
def tones(tmp_path: Path) -> dict[float, Path]:
    return {
        hz: audio.write_tone(tmp_path / f"tone-{hz:.0f}.wav", hz, 60.0)
        for hz in (CALLER_HZ, CALLEE_HZ, SECOND_DEVICE_HZ)
    }


@contextlib.asynccontextmanager
async def phone(
    target: CallTarget,
    user: str,
    tone: Path,
    workdir: Path,
    *,
    answermode: str = "manual",
    transport: str = "udp",
) -> AsyncIterator[Baresip]:
    """A registered baresip playing ``tone`` and recording what it hears."""
    ua = Baresip(
        user,
        ACCOUNTS[user],
        target.port,
        transport=transport,
        domain=DOMAIN,
        tone=tone,
        record=True,
        answermode=answermode,
        workdir=workdir,
    )
    async with ua:
        registration = await ua.wait_registered()
        assert registration.ok, f"{user} did not register:\n{ua.output[-3000:]}"
        yield ua


def heard(ua: Baresip) -> list[audio.Window]:
    """The windows of everything ``ua`` recorded from its far ends, in order."""
    found: list[audio.Window] = []
    for path in ua.recordings("dec"):
        samples, rate = audio.read_wav(path)
        found += audio.windows(samples, rate)
    assert found, f"{ua.user} recorded nothing: {list(ua.directory.rglob('*'))}"
    return found


def _failure(target: CallTarget, *uas: Baresip) -> str:
    text = "\n".join(f"--- baresip {ua.user}\n{ua.output[-2500:]}" for ua in uas)
    return f"{text}\n--- {target.kind} log\n{target.log()[-3000:]}"


@pytest.mark.parametrize("callee_transport", ["udp", "tcp"])
async def test_basic_call_each_side_hears_the_other(
    make_call_target: MakeCallTarget,
    tones: dict[float, Path],
    tmp_path: Path,
    callee_transport: str,
) -> None:
    """Over TCP the callee's Contact names its listening port, not the port of the connection it
    registered on: the call follows the Contact."""
    target = await make_call_target()
    async with (
        phone(target, "301", tones[CALLER_HZ], tmp_path / "caller") as caller,
        phone(
            target,
            "201",
            tones[CALLEE_HZ],
            tmp_path / "callee",
            answermode="auto",
            transport=callee_transport,
        ) as callee,
    ):
        try:
            await caller.dial(f"sip:{target.dial('201')}@{DOMAIN}")
            await callee.wait_event("CALL_ESTABLISHED", 15)
            await caller.wait_event("CALL_ESTABLISHED", 15)
            await asyncio.sleep(3.0)
            await caller.hangup()
            await callee.wait_event("CALL_CLOSED", 10)
        except ClientError as error:
            pytest.fail(f"{error}\n{_failure(target, caller, callee)}")

    by_caller, by_callee = heard(caller), heard(callee)
    assert audio.tone_seconds(by_caller, CALLEE_HZ) >= 2.0, audio.describe(by_caller)
    assert audio.tone_seconds(by_callee, CALLER_HZ) >= 2.0, audio.describe(by_callee)
    # nobody hears themselves: the relay must not reflect a leg back to its sender
    assert audio.tone_seconds(by_caller, CALLER_HZ) == 0, audio.describe(by_caller)
    assert audio.tone_seconds(by_callee, CALLEE_HZ) == 0, audio.describe(by_callee)


async def _press_keys_in_a_call(
    target: CallTarget, tones: dict[float, Path], tmp_path: Path, keys: str, *, linger: float
) -> tuple[Baresip, Baresip]:
    """301 calls 201 (auto-answer), presses ``keys`` as DTMF, waits ``linger`` seconds for the
    last events to arrive, hangs up; returns both phones (caller, callee) to read back."""
    async with (
        phone(target, "301", tones[CALLER_HZ], tmp_path / "caller") as caller,
        phone(target, "201", tones[CALLEE_HZ], tmp_path / "callee", answermode="auto") as callee,
    ):
        await caller.dial(f"sip:{target.dial('201')}@{DOMAIN}")
        await caller.wait_event("CALL_ESTABLISHED", 15)
        await asyncio.sleep(0.5)
        await caller.send_dtmf(keys)
        await asyncio.sleep(linger)
        await caller.hangup()
        await callee.wait_event("CALL_CLOSED", 10)
    return caller, callee


async def test_dtmf_digits_reach_the_callee_as_telephone_events(
    make_call_target: MakeCallTarget, tones: dict[float, Path], tmp_path: Path
) -> None:
    target = await make_call_target()
    if target.kind == "callflip":
        pytest.skip("a PBX may consume keypad digits; this checks the DTMF helper on the proxy")
    caller, callee = await _press_keys_in_a_call(target, tones, tmp_path, "*0#5", linger=0.5)
    assert callee.received_dtmf() == "*0#5", callee.output[-3000:]
    offers = [r for r in caller.sent_requests("INVITE") if "telephone-event/8000" in r]
    assert offers, caller.output[-3000:]


async def test_the_flip_code_stops_at_the_pbx_and_other_digits_go_on(
    make_call_target: MakeCallTarget, tones: dict[float, Path], tmp_path: Path
) -> None:
    """baresip's telephone-events stop at our relay; digits that are no code are sent again.

    "5" cannot start the code and goes on at once; "*0" is the flip code (bob has no other
    device registered, so it does nothing but must not be heard); the "*" after it is held until
    "5" shows that "*5" is no code, then both go on. The callee must decode "5*5" from the
    events our relay generated.
    """
    target = await make_call_target()
    if target.kind != "callflip":
        pytest.skip("a proxy passes every digit on: this needs our feature codes")
    _, callee = await _press_keys_in_a_call(target, tones, tmp_path, "5*0*5", linger=1.0)
    assert callee.received_dtmf() == "5*5", callee.output[-3000:]


async def test_flip_moves_the_call_to_the_other_device(
    make_call_target: MakeCallTarget, tones: dict[float, Path], tmp_path: Path
) -> None:
    target = await make_call_target()
    if target.kind != "callflip":
        pytest.skip("a proxy cannot flip a call: this needs our B2BUA")
    async with (
        phone(target, "301", tones[CALLER_HZ], tmp_path / "caller") as caller,
        phone(target, "201", tones[CALLEE_HZ], tmp_path / "desk", answermode="auto") as desk,
    ):
        try:
            await caller.dial(f"sip:{target.dial('201')}@{DOMAIN}")
            await desk.wait_event("CALL_ESTABLISHED", 15)
            await caller.wait_event("CALL_ESTABLISHED", 15)
            # the second device registers only now, so it cannot have answered the first ring
            async with phone(
                target, "202", tones[SECOND_DEVICE_HZ], tmp_path / "mobile", answermode="auto"
            ) as mobile:
                await asyncio.sleep(1.5)
                await desk.send_dtmf("*0")
                await mobile.wait_event("CALL_ESTABLISHED", 15)
                await desk.wait_event("CALL_CLOSED", 10)
                await asyncio.sleep(3.0)
                assert caller.call_events("CALL_CLOSED") == [], _failure(target, caller)
                await caller.hangup()
                await mobile.wait_event("CALL_CLOSED", 10)
        except ClientError as error:
            pytest.fail(f"{error}\n{_failure(target, caller, desk)}")

    assert len(caller.call_events("CALL_ESTABLISHED")) == 1, caller.events
    answered = mobile.call_events("CALL_ESTABLISHED")
    assert [e.get("direction") for e in answered] == ["incoming"], mobile.events
    by_caller = heard(caller)
    sequence = [w.dominant for w in by_caller if w.is_tone(CALLEE_HZ) or w.is_tone(700.0)]
    assert audio.tone_seconds(by_caller, CALLEE_HZ) >= 1.0, audio.describe(by_caller)
    assert audio.tone_seconds(by_caller, SECOND_DEVICE_HZ) >= 2.0, audio.describe(by_caller)
    # first the desk, then the mobile, never back: the last tone heard is the mobile's
    first_mobile = next(i for i, hz in enumerate(sequence) if abs(hz - SECOND_DEVICE_HZ) < 15)
    assert all(abs(hz - SECOND_DEVICE_HZ) < 15 for hz in sequence[first_mobile:]), audio.describe(
        by_caller
    )
    by_mobile = heard(mobile)
    assert audio.tone_seconds(by_mobile, CALLER_HZ) >= 2.0, audio.describe(by_mobile)


#: 127.0.0.2 stands for a phone's private address behind NAT: a Contact host that is not where the
#: REGISTER came from. It is loopback all the same, so a PBX that wrongly sends there reaches
#: nobody (the UAS listens on 127.0.0.1) and the test fails instead of leaving the machine.
NAT_PRIVATE_HOST = "127.0.0.2"


async def _register_uas(target: CallTarget, uas_port: int, how: str) -> None:
    """Register the callee device 501 for the sipp UAS that will listen on ``uas_port``.

    - ``same-port``: from the UAS's own port, Contact naming it (the usual phone).
    - ``another-process``: by a separate sipp process from another port, Contact naming the UAS
      port (a phone that registers from one port and listens on another, or a registration made
      on a device's behalf): the calls must follow the Contact (RFC 3261 §10.3).
    - ``nat``: from the UAS's port, Contact naming a private address the PBX cannot reach: the
      calls must go back to where the REGISTER came from.
    """
    account = {"501": ACCOUNTS["501"]}
    if how == "same-port":
        result = await run_sipp("register", target.port, account, local_port=uas_port)
    elif how == "another-process":
        keys = {"contact_host": "127.0.0.1", "contact_port": str(uas_port)}
        result = await run_sipp("register_contact", target.port, account, keys=keys)
    else:
        keys = {"contact_host": NAT_PRIVATE_HOST, "contact_port": "5060"}
        result = await run_sipp(
            "register_contact", target.port, account, keys=keys, local_port=uas_port
        )
    assert result.returncode == 0, f"sipp did not register the UAS ({how})\n{result.describe()}"


@pytest.mark.parametrize("path", ["direct", "same-port", "another-process", "nat"])
async def test_sipp_calls_complete(
    make_call_target: MakeCallTarget, path: str, tmp_path: Path
) -> None:
    calls = 10
    uas_port = free_port(digits=5)
    (tmp_path / "uas").mkdir()
    (tmp_path / "uac").mkdir()
    target = await make_call_target()
    if path == "direct" and target.kind == "callflip":
        pytest.skip("the direct path does not involve the target; run once (with kamailio)")
    if path == "nat" and target.kind == "kamailio":
        pytest.skip("the reference proxy is set up without NAT handling: it routes to the Contact")
    if path != "direct":
        await _register_uas(target, uas_port, path)
    uas = asyncio.create_task(
        run_process(sipp_uas_argv(uas_port, calls=calls, time_limit=40, trace_messages=True),
                    time_limit=50,
                    cwd=tmp_path / "uas")
    )  # fmt: skip
    try:
        await asyncio.sleep(0.3)
        callers = write_sipp_callers(
            tmp_path / "uac" / "callers.csv",
            [("401", ACCOUNTS["401"], target.dial("501"))],
            domain=DOMAIN,
        )
        port = uas_port if path == "direct" else target.port
        argv = sipp_uac_call_argv(
            port, callers, calls=calls, rate=10, trace_messages=True, limit=1,
            auth_uri=f"{target.dial('501')}@{DOMAIN}",
        )  # fmt: skip
        result = await run_process(argv, time_limit=40, cwd=tmp_path / "uac")
        stats, rtts, messages, errors = read_sipp_outputs(tmp_path / "uac")
        detail = (
            f"{result.describe()}\n{errors[-2000:]}\n{messages[-4000:]}\n"
            f"--- {target.kind} log\n{target.log()[-2000:]}\n--- sipp UAS messages\n"
            f"{read_sipp_outputs(tmp_path / 'uas')[2][-3000:]}"
        )
        assert result.returncode == 0, detail
        assert stats.get("SuccessfulCall(C)") == str(calls), detail
        assert len(rtts) == calls, detail
        served = await asyncio.wait_for(uas, 15)
        assert served.returncode == 0, served.describe()
    finally:
        uas.cancel()
        with contextlib.suppress(asyncio.CancelledError, ClientError):
            await uas
