"""More independent phones on our runner's shipped defaults: pjsua2 (PJSIP) and linphonec.

Each registers with the PBX as it comes (only the account: user, password, domain, the PBX as
registrar and outbound proxy), then makes a call to a baresip and takes one from it. As in
test_calls.py, each party plays its own tone and records what it hears; a call passes only when
each recording is the other party's tone.

The only test that sets a device option is the one about that option (``digest``): a device
configured for SHA-256 alone registers with the phones that speak it.

pjsua2 runs from ``.venv-pjsua2`` and linphonec from Debian's ``linphone-cli``, both installed by
``scripts/setup``; a machine without them skips these tests with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from . import audio
from .clients import Baresip, ClientError, LinePhone, LinphonePhone, Pjsua2Phone, pjsua2_python
from .conftest import DOMAIN, REPO, Device, RunningPbx, StartPbx, User

pytestmark = pytest.mark.interop

PHONE_HZ, BARESIP_HZ = 1000.0, 440.0

ACCOUNTS = {"201": "alice-desk-pw", "301": "bob-phone-pw"}
EXTENSION = {"201": "200", "301": "300"}


def _users(digest: Sequence[str] | None = None) -> list[User]:
    return [
        User("alice", "200", [Device("201", ACCOUNTS["201"])]),
        User("bob", "300", [Device("301", ACCOUNTS["301"], digest=digest)]),
    ]


def _phone(
    kind: str, pbx: RunningPbx, workdir: Path, tone: Path | None, *, auto_answer: bool = False
) -> LinePhone:
    """The phone under test as device 301, recording to ``workdir``/heard.wav."""
    workdir.mkdir(parents=True, exist_ok=True)
    record = workdir / "heard.wav" if tone is not None else None
    if kind == "pjsua2":
        python = pjsua2_python(REPO)
        if python is None:
            pytest.skip("pjsua2 is not installed (.venv-pjsua2 from scripts/setup)")
        return Pjsua2Phone(
            python,
            "301",
            ACCOUNTS["301"],
            pbx.port,
            domain=DOMAIN,
            tone=tone,
            record=record,
            auto_answer=auto_answer,
        )
    reason = LinphonePhone.missing()
    if reason:
        pytest.skip(reason)
    return LinphonePhone(
        "301",
        ACCOUNTS["301"],
        pbx.port,
        domain=DOMAIN,
        workdir=workdir,
        tone=tone,
        record=record,
        auto_answer=auto_answer,
    )


@contextlib.asynccontextmanager
async def registered(phone: LinePhone) -> AsyncIterator[LinePhone]:
    async with phone:
        assert await phone.wait_registered(15), f"{phone.name} did not register\n{phone.output}"
        yield phone


@pytest.fixture
def tones(tmp_path: Path) -> dict[float, Path]:
    return {hz: audio.write_tone(tmp_path / f"tone-{hz:.0f}.wav", hz, 60.0) for hz in (1000, 440)}


def _heard(path: Path) -> list[audio.Window]:
    assert path.exists(), f"nothing recorded at {path}"
    samples, rate = audio.read_wav(path)
    found = audio.windows(samples, rate)
    assert found, f"{path} holds no audio"
    return found


def _baresip_heard(ua: Baresip) -> list[audio.Window]:
    found: list[audio.Window] = []
    for path in ua.recordings("dec"):
        samples, rate = audio.read_wav(path)
        found += audio.windows(samples, rate)
    assert found, f"baresip recorded nothing: {list(ua.directory.rglob('*'))}"
    return found


def _assert_both_hear_each_other(phone_heard: Path, ua: Baresip) -> None:
    by_phone, by_baresip = _heard(phone_heard), _baresip_heard(ua)
    assert audio.tone_seconds(by_phone, BARESIP_HZ) >= 2.0, audio.describe(by_phone)
    assert audio.tone_seconds(by_baresip, PHONE_HZ) >= 2.0, audio.describe(by_baresip)
    assert audio.tone_seconds(by_phone, PHONE_HZ) == 0, audio.describe(by_phone)
    assert audio.tone_seconds(by_baresip, BARESIP_HZ) == 0, audio.describe(by_baresip)


# Lines each phone prints when a call is up and when it is over.
_CONNECTED = {"pjsua2": r"^state CONFIRMED", "linphonec": r"Call \d+ with .* connected"}
_ENDED = {"pjsua2": r"^state DISCONNECTED", "linphonec": r"Call \d+ with .* ended"}
_INCOMING = {"pjsua2": r"^incoming", "linphonec": r"Receiving new incoming call"}


@pytest.mark.parametrize("kind", ["pjsua2", "linphonec"])
async def test_phone_registers_and_calls_with_audio_both_ways(
    kind: str, start_pbx: StartPbx, tones: dict[float, Path], tmp_path: Path
) -> None:
    pbx = await start_pbx(_users())
    phone = _phone(kind, pbx, tmp_path / kind, tones[PHONE_HZ])
    callee = Baresip(
        "201",
        ACCOUNTS["201"],
        pbx.port,
        domain=DOMAIN,
        tone=tones[BARESIP_HZ],
        record=True,
        answermode="auto",
        workdir=tmp_path / "baresip",
    )
    async with callee, registered(phone):
        assert (await callee.wait_registered()).ok, callee.output
        try:
            await phone.dial(f"sip:{EXTENSION['201']}@{DOMAIN}")
            await callee.wait_event("CALL_ESTABLISHED", 15)
            await phone.wait_for(_CONNECTED[phone.name], 15)
            await asyncio.sleep(3.0)
            await phone.hangup()
            await callee.wait_event("CALL_CLOSED", 10)
            await phone.wait_for(_ENDED[phone.name], 10)
        except ClientError as error:
            pytest.fail(
                f"{error}\n--- baresip\n{callee.output[-2500:]}\n--- pbx\n{pbx.log()[-3000:]}"
            )
    assert phone.record is not None
    _assert_both_hear_each_other(phone.record, callee)


@pytest.mark.parametrize("kind", ["pjsua2", "linphonec"])
async def test_phone_answers_a_call_with_audio_both_ways(
    kind: str, start_pbx: StartPbx, tones: dict[float, Path], tmp_path: Path
) -> None:
    pbx = await start_pbx(_users())
    phone = _phone(kind, pbx, tmp_path / kind, tones[PHONE_HZ], auto_answer=True)
    caller = Baresip(
        "201",
        ACCOUNTS["201"],
        pbx.port,
        domain=DOMAIN,
        tone=tones[BARESIP_HZ],
        record=True,
        workdir=tmp_path / "baresip",
    )
    async with caller, registered(phone):
        assert (await caller.wait_registered()).ok, caller.output
        try:
            await caller.dial(f"sip:{EXTENSION['301']}@{DOMAIN}")
            await phone.wait_for(_INCOMING[phone.name], 15)
            await caller.wait_event("CALL_ESTABLISHED", 15)
            await phone.wait_for(_CONNECTED[phone.name], 15)
            await asyncio.sleep(3.0)
            await caller.hangup()
            await phone.wait_for(_ENDED[phone.name], 10)
        except ClientError as error:
            pytest.fail(
                f"{error}\n--- baresip\n{caller.output[-2500:]}\n--- pbx\n{pbx.log()[-3000:]}"
            )
    assert phone.record is not None
    _assert_both_hear_each_other(phone.record, caller)


@pytest.mark.parametrize("kind", ["pjsua2", "linphonec"])
async def test_device_configured_for_sha256_alone_registers(
    kind: str, start_pbx: StartPbx, tmp_path: Path
) -> None:
    """The ``digest`` option: a device set to SHA-256 alone is challenged with SHA-256 only and
    accepts nothing else, so a registration proves the phone answered with SHA-256."""
    pbx = await start_pbx(_users(digest=["SHA-256"]))
    async with registered(_phone(kind, pbx, tmp_path / kind, None)):
        line = await pbx.wait_for_log(r"Registration of 301 registered")
    assert "301" in line
