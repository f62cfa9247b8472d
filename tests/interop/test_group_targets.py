"""A Personal Ring Group's pilot as a transfer target, and a trunk number that rings a group,
between real baresip phones through our runner on its shipped defaults, decided by audio.

The group "Home" (pilot 250: Alice's desk 201, her mobile 202, Bob's phone 301) as in
test_handoff. Each phone plays its own tone and records what it hears, so "the caller and the
member who answered hear each other" is read from the recordings, not from signalling.

- Blind ``*2`` + pilot + ``#``: Carol (401) talks to the desk, which passes her to the group; the
  mobile and Bob's phone ring, Bob answers, the mobile stops ringing, and Carol and Bob hear each
  other (the desk is released at once).
- A trunk DID routed to the group: a second runner is the provider (as in test_trunk), the
  trunk's number rings the group's members, Bob answers, and the "PSTN" party and Bob hear each
  other.
- Attended ``**`` + pilot: the consultation rings the group; ``**`` + an outside number: the
  consultation goes out through the trunk (the second runner as provider); either way the held
  caller ends up talking to whoever answered once the desk hangs up.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from . import audio
from .clients import HOST, ClientError
from .conftest import DOMAIN, StartPbx, User
from .test_handoff import (
    BOB_HZ,
    CALLER_HZ,
    DESK_HZ,
    Phones,
    _caller_talks_to_desk,
    _group,
    _users,
    first_index,
    heard,
    last_index,
    phones,
)
from .test_transfer import between, tones_in_order
from .test_trunk import (
    ACCOUNT,
    ACCOUNT_PASSWORD,
    PROVIDER_USER,
    PSTN_DEVICE,
    PSTN_HZ,
    PSTN_PASSWORD,
    PSTN_USER,
    _baresip,
    _runner_provider_users,
    _wait_trunk_registered,
)

pytestmark = pytest.mark.interop

OUTSIDE_HZ = 1200.0  # the PSTN party of the attended transfer out (no phone of ours plays it)


async def test_blind_transfer_to_the_pilot_rings_the_group_and_the_answer_talks(
    start_pbx: StartPbx, tmp_path: Path
) -> None:
    async with phones(start_pbx, tmp_path, _group()) as p:
        try:
            mobile = await p.add("202")
            bob = await p.add("301")
            caller, desk = await _caller_talks_to_desk(p)
            await desk.send_dtmf("*2250#")
            await desk.wait_event("CALL_CLOSED", 10)  # released at once
            await mobile.wait_event("CALL_INCOMING", 10)
            await bob.wait_event("CALL_INCOMING", 10)
            await bob.accept()
            await bob.wait_event("CALL_ESTABLISHED", 10)
            await mobile.wait_event("CALL_CLOSED", 10)  # first answer wins
            await asyncio.sleep(3.0)
            assert caller.call_events("CALL_CLOSED") == [], p.failure()
            await caller.hangup()
            await bob.wait_event("CALL_CLOSED", 10)
        except ClientError as error:
            pytest.fail(f"{error}\n{p.failure()}")
        assert mobile.call_events("CALL_ESTABLISHED") == []
        by_caller = heard(caller)
        described = audio.describe(by_caller)
        assert audio.tone_seconds(by_caller, DESK_HZ) >= 1.0, described
        assert audio.tone_seconds(by_caller, BOB_HZ) >= 2.0, described
        assert last_index(by_caller, DESK_HZ) < first_index(by_caller, BOB_HZ), described
        by_bob = heard(bob)
        assert audio.tone_seconds(by_bob, CALLER_HZ) >= 2.0, audio.describe(by_bob)
        assert audio.tone_seconds(by_bob, DESK_HZ) == 0, audio.describe(by_bob)
        assert len(caller.call_events("CALL_ESTABLISHED")) == 1  # never re-dialled
        assert "transfers 401 to 250" in p.pbx.log()


def _trunk_to_group(provider_port: int) -> str:
    """Our trunk at the provider runner (shipped defaults but the account), its number ringing
    the group Home."""
    return (
        "trunks:\n"
        "  - name: provider\n"
        f"    host: {HOST}\n"
        f"    port: {provider_port}\n"
        f'    username: "{ACCOUNT}"\n'
        f'    password: "{ACCOUNT_PASSWORD}"\n'
        "    dids:\n"
        f'      - {{number: "{ACCOUNT}", destination: "group:Home"}}\n'
    )


async def test_a_trunk_number_routed_to_the_group_rings_its_members(
    start_pbx: StartPbx, tmp_path: Path
) -> None:
    provider = await start_pbx(_runner_provider_users())
    users: list[User] = _users()
    pbx = await start_pbx(users, extra_yaml=_group() + _trunk_to_group(provider.port))
    await _wait_trunk_registered(pbx)
    pstn_tone = audio.write_tone(tmp_path / "tone-pstn.wav", PSTN_HZ, 60.0)
    async with contextlib.AsyncExitStack() as stack:
        p = Phones(pbx, tmp_path, stack)
        desk = await p.add("201")
        bob = await p.add("301")
        pstn = await stack.enter_async_context(
            _baresip(
                PSTN_DEVICE,
                PSTN_PASSWORD,
                provider.port,
                pstn_tone,
                tmp_path / "pstn",
                answermode="manual",
            )
        )
        try:
            await pstn.dial(f"sip:{PROVIDER_USER}@{DOMAIN}")
            await desk.wait_event("CALL_INCOMING", 15)
            await bob.wait_event("CALL_INCOMING", 15)
            await bob.accept()
            await bob.wait_event("CALL_ESTABLISHED", 10)
            await pstn.wait_event("CALL_ESTABLISHED", 10)
            await desk.wait_event("CALL_CLOSED", 10)  # first answer wins
            await asyncio.sleep(3.0)
            await pstn.hangup()
            await bob.wait_event("CALL_CLOSED", 10)
        except ClientError as error:
            pytest.fail(f"{error}\n{p.failure()}\n--- provider\n{provider.log()[-3000:]}")
        assert desk.call_events("CALL_ESTABLISHED") == []
        by_pstn, by_bob = heard(pstn), heard(bob)
        assert audio.tone_seconds(by_pstn, BOB_HZ) >= 2.0, audio.describe(by_pstn)
        assert audio.tone_seconds(by_bob, PSTN_HZ) >= 2.0, audio.describe(by_bob)
        assert audio.tone_seconds(by_pstn, DESK_HZ) == 0, audio.describe(by_pstn)
        assert "to group Home rings" in pbx.log()


async def test_attended_transfer_to_the_pilot_consults_the_group(
    start_pbx: StartPbx, tmp_path: Path
) -> None:
    """``**250#``: the caller is held, the group's free members ring, Bob answers and talks with
    the desk, the desk hangs up, and the caller and Bob talk; the caller never hears Bob before
    the handover."""
    async with phones(start_pbx, tmp_path, _group()) as p:
        try:
            mobile = await p.add("202")
            bob = await p.add("301")
            caller, desk = await _caller_talks_to_desk(p)
            await desk.send_dtmf("**250#")
            await mobile.wait_event("CALL_INCOMING", 10)
            await bob.wait_event("CALL_INCOMING", 10)
            await bob.accept()
            await bob.wait_event("CALL_ESTABLISHED", 10)
            await mobile.wait_event("CALL_CLOSED", 10)
            await asyncio.sleep(3.0)  # the consultation
            await desk.hangup()
            await desk.wait_event("CALL_CLOSED", 10)
            await asyncio.sleep(3.0)
            assert caller.call_events("CALL_CLOSED") == [], p.failure()
            await caller.hangup()
            await bob.wait_event("CALL_CLOSED", 10)
        except ClientError as error:
            pytest.fail(f"{error}\n{p.failure()}")
        by_caller, by_bob, by_desk = heard(caller), heard(bob), heard(desk)
        assert tones_in_order(by_caller, DESK_HZ, BOB_HZ) == [DESK_HZ, BOB_HZ], audio.describe(
            by_caller
        )
        held = between(by_caller, DESK_HZ, BOB_HZ)
        assert len(held) * 0.2 >= 3.0, audio.describe(by_caller)  # held the whole consultation
        assert audio.tone_seconds(by_caller, BOB_HZ) >= 2.0, audio.describe(by_caller)
        assert audio.tone_seconds(by_desk, BOB_HZ) >= 2.0, audio.describe(by_desk)  # consulted
        assert tones_in_order(by_bob, DESK_HZ, CALLER_HZ) == [DESK_HZ, CALLER_HZ], audio.describe(
            by_bob
        )
        assert mobile.call_events("CALL_ESTABLISHED") == []


def _trunk_out(provider_port: int) -> str:
    """Our trunk at the provider runner, with the outside-line prefix 0 (shipped defaults
    otherwise: every user may call out)."""
    return (
        "trunks:\n"
        "  - name: provider\n"
        f"    host: {HOST}\n"
        f"    port: {provider_port}\n"
        f'    username: "{ACCOUNT}"\n'
        f'    password: "{ACCOUNT_PASSWORD}"\n'
        "dialplan:\n"
        "  routes:\n"
        '    - {prefix: "0", trunk: provider, strip: true}\n'
    )


async def test_attended_transfer_to_an_outside_number_goes_through_the_trunk(
    start_pbx: StartPbx, tmp_path: Path
) -> None:
    """``**0`` + the PSTN party's number: the consultation rings out through the provider (a
    second runner), the desk and the PSTN party talk, the desk hangs up, and the caller and the
    PSTN party hear each other; the caller was held meanwhile."""
    provider = await start_pbx(_runner_provider_users())
    pbx = await start_pbx(_users(), extra_yaml=_trunk_out(provider.port))
    await _wait_trunk_registered(pbx)
    pstn_tone = audio.write_tone(tmp_path / "tone-pstn.wav", OUTSIDE_HZ, 60.0)
    async with contextlib.AsyncExitStack() as stack:
        p = Phones(pbx, tmp_path, stack)
        pstn = await stack.enter_async_context(
            _baresip(PSTN_DEVICE, PSTN_PASSWORD, provider.port, pstn_tone, tmp_path / "pstn")
        )
        try:
            caller, desk = await _caller_talks_to_desk(p)
            await desk.send_dtmf(f"**0{PSTN_USER}#")
            await pstn.wait_event("CALL_ESTABLISHED", 15)
            await asyncio.sleep(3.0)  # the consultation
            await desk.hangup()
            await desk.wait_event("CALL_CLOSED", 10)
            await asyncio.sleep(3.0)
            assert caller.call_events("CALL_CLOSED") == [], p.failure()
            assert pstn.call_events("CALL_CLOSED") == [], p.failure()
            await caller.hangup()
            await pstn.wait_event("CALL_CLOSED", 10)
        except ClientError as error:
            pytest.fail(f"{error}\n{p.failure()}\n--- provider\n{provider.log()[-3000:]}")
        by_caller, by_pstn, by_desk = heard(caller), heard(pstn), heard(desk)
        assert tones_in_order(by_caller, DESK_HZ, OUTSIDE_HZ) == [DESK_HZ, OUTSIDE_HZ], (
            audio.describe(by_caller)
        )
        assert audio.tone_seconds(by_caller, OUTSIDE_HZ) >= 2.0, audio.describe(by_caller)
        assert audio.tone_seconds(by_desk, OUTSIDE_HZ) >= 2.0, audio.describe(by_desk)
        assert tones_in_order(by_pstn, DESK_HZ, CALLER_HZ) == [DESK_HZ, CALLER_HZ], audio.describe(
            by_pstn
        )
