"""Registration with independent clients: sipsak, sipp and baresip over loopback.

Every test runs twice: against Kamailio (the reference, which proves the client helpers and sipp
scenarios right) and against our runner, ``python -m sip_core``. Bindings are read back with a
REGISTER without Contact (RFC 3261 section 10.2.3), so no test trusts a client's own word alone.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from .clients import (
    Baresip,
    Registration,
    SippResult,
    free_port,
    parse_sipp_messages,
    run_sipp,
    sipsak_register,
    sipsak_unregister,
)
from .conftest import DOMAIN, RunningPbx, StartPbx, users_from

pytestmark = pytest.mark.interop


@dataclass
class Target:
    """A registrar under test: where it listens and, for assertions, what it logged."""

    kind: str  # "kamailio", "callflip" or "callflip+worker" (the runner with sip.workers: 1)
    host: str
    port: int
    log: Callable[[], str]
    pbx: RunningPbx | None = None


MakeTarget = Callable[..., Awaitable[Target]]


@pytest.fixture(params=["kamailio", "callflip", "callflip+worker"])
def make_target(
    request: pytest.FixtureRequest,
    start_pbx: StartPbx,
    start_kamailio: Callable[..., Any],
) -> MakeTarget:
    """Factory: ``await make_target({"201": "pw"}, min_expires=1)`` on this run's registrar."""
    kind: str = request.param

    async def make(devices: Mapping[str, str], *, min_expires: int | None = None) -> Target:
        if kind == "kamailio":
            options: dict[str, Any] = {"tcp": True}
            if min_expires is not None:
                options["min_expires"] = min_expires
            kam = start_kamailio(devices, **options)
            return Target(kind, kam.host, kam.port, kam.log_text)
        registrar = None
        if min_expires is not None:
            registrar = {"min_expires": min_expires, "max_expires": 3600, "default_expires": 3600}
        workers = 1 if kind == "callflip+worker" else 0
        pbx = await start_pbx(users_from(devices), registrar=registrar, workers=workers)
        return Target(kind, pbx.host, pbx.port, pbx.log, pbx)

    return make


def _last_ok(result: SippResult) -> Any:
    finals = [m for m in result.received() if m.status == 200]
    assert finals, f"no 200 received\n{result.describe()}"
    return finals[-1]


async def bindings(target: Target, user: str, password: str) -> list[str]:
    """The Contacts the registrar lists for ``user`` now (REGISTER without Contact)."""
    result = await run_sipp("query", target.port, {user: password})
    assert result.returncode == 0, f"listing the bindings failed\n{result.describe()}"
    return _last_ok(result).contacts()


def _with_port(contacts: list[str], port: int) -> list[str]:
    return [c for c in contacts if re.search(rf"@127\.0\.0\.1:{port}\b", c)]


async def test_sipsak_registers_then_removes_its_binding(make_target: MakeTarget) -> None:
    target = await make_target({"201": "desk-secret"})
    contact_port = free_port()

    added = await sipsak_register(target.port, "201", "desk-secret", contact_port=contact_port)
    assert added.ok, added.describe()
    assert added.statuses[-1] == 200, added.describe()
    assert 401 in added.statuses, added.describe()
    assert len(_with_port(await bindings(target, "201", "desk-secret"), contact_port)) == 1

    removed = await sipsak_unregister(target.port, "201", "desk-secret", contact_port=contact_port)
    assert removed.ok, removed.describe()
    assert removed.final_status == 200, removed.describe()
    assert _with_port(await bindings(target, "201", "desk-secret"), contact_port) == []


async def test_sipp_registers_users_with_their_own_passwords(make_target: MakeTarget) -> None:
    devices = {"301": "pw-three-01", "302": "pw-three-02", "303": "pw-three-03"}
    target = await make_target(devices)

    result = await run_sipp("register", target.port, devices, rate=20)

    assert result.returncode == 0, result.describe()
    assert (result.successful, result.failed) == (3, 0), result.describe()
    assert len(result.rtts_ms) == 3, result.describe()
    for user, password in devices.items():
        assert len(await bindings(target, user, password)) == 1, user


async def test_sipp_default_digest_uri_is_accepted(make_target: MakeTarget) -> None:
    """sipp without ``-auth_uri`` puts ``sip:HOST:PORT`` (where it sends) in the digest ``uri``
    while its Request-URI is ``sip:HOST``: the same target, which a registrar must accept."""
    target = await make_target({"301": "pw-three-01"})

    result = await run_sipp(
        "register", target.port, {"301": "pw-three-01"}, domain=target.host, default_auth_uri=True
    )

    assert result.returncode == 0, result.describe()
    sent = [m for m in parse_sipp_messages(result.messages) if not m.received]
    (authorization,) = [v for m in sent for v in m.header_values("Authorization")]
    assert f'uri="sip:{target.host}:{target.port}"' in authorization, authorization
    assert sent[-1].start_line == f"REGISTER sip:{target.host} SIP/2.0", sent[-1].start_line


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_baresip_registers_and_unregisters_on_exit(
    make_target: MakeTarget, transport: str
) -> None:
    target = await make_target({"401": "soft-secret"})

    async with Baresip("401", "soft-secret", target.port, transport=transport, domain=DOMAIN) as ua:
        registration = await ua.wait_registered()
        assert registration.ok, ua.output
        during = await bindings(target, "401", "soft-secret")
        assert len(during) == 1, during
        if transport == "tcp":
            assert "transport=tcp" in during[0].lower(), during
    # leaving the block sent SIGTERM: baresip sends REGISTER with Expires 0 before exiting
    removals = [r for r in ua.sent_requests() if re.search(r"expires=0\b|^Expires: 0$", r, re.M)]
    assert removals, ua.output
    assert await bindings(target, "401", "soft-secret") == []


async def test_wrong_password_is_refused_and_logged(make_target: MakeTarget) -> None:
    target = await make_target({"501": "right-secret"})

    sipsak = await sipsak_register(target.port, "501", "wrong-secret")
    assert not sipsak.ok, sipsak.describe()
    assert sipsak.final_status in (401, 403), sipsak.describe()

    sipp = await run_sipp("register_rejected", target.port, {"501": "also-wrong"})
    assert sipp.returncode == 0, sipp.describe()
    assert sipp.successful == 1, sipp.describe()

    banned = re.compile(r"Banned 127\.0\.0\.1 ")
    async with Baresip("501", "wrong-too", target.port, domain=DOMAIN) as ua:
        # None: no answer at all (after a ban in the runner's log, a quiet 2 s is enough).
        registration: Registration | None = await ua.registration_or_silence(
            lambda: target.pbx is not None and bool(banned.search(target.log()))
        )
        if registration is not None:
            assert registration.code in (401, 403), ua.output
        else:
            await ua.kill()  # it never registered: there is nothing to unregister
    if registration is None:
        # Our runner bans an address after five failed logins (sip_core.guard): the three
        # clients from 127.0.0.1 got there, and from then on nothing is answered.
        assert target.pbx is not None, "the reference registrar never answered baresip"
        await target.pbx.wait_for_log(r"Banned 127\.0\.0\.1 .*username tried: 501", time_limit=5)
        # Nor can 127.0.0.1 ask for the bindings now; the log says none was ever made.
        assert not re.search(r"Registration of 501 ", target.log()), target.log()[-3000:]
    else:
        assert await bindings(target, "501", "right-secret") == []
    # the registrar says so in its log (one line per rejected request)
    words = r"(reject|refus|denied|forbidden|unauthori[sz]ed|bad credentials|wrong password)"
    rejected = rf"{words}.*\b501\b|\b501\b.*{words}"
    if target.pbx is not None:
        await target.pbx.wait_for_log(rejected, time_limit=5)
    else:
        assert re.search(rejected, target.log(), re.IGNORECASE), target.log()[-3000:]
    if target.kind == "callflip+worker":
        # The kernel steered the REGISTERs to the worker process, which refused them itself.
        assert re.search(rf"\[worker 1\].*{words}", target.log(), re.IGNORECASE), target.log()


async def test_unknown_user_is_refused(make_target: MakeTarget) -> None:
    target = await make_target({"601": "known-secret"})

    sipsak = await sipsak_register(target.port, "699", "known-secret")

    assert not sipsak.ok, sipsak.describe()
    assert sipsak.final_status in (401, 403, 404), sipsak.describe()


async def test_unknown_user_gets_the_same_challenge_as_a_device_on_the_defaults(
    make_target: MakeTarget,
) -> None:
    """No user enumeration by challenge: apart from the nonce, the 401 to a user name that does
    not exist carries the same WWW-Authenticate values as the 401 to a real device."""
    target = await make_target({"601": "known-secret"})

    def first_challenge(result: SippResult) -> list[str]:
        found = [m for m in result.received() if m.status == 401]
        assert found, result.describe()
        return [
            re.sub(r'nonce="[^"]*"', 'nonce="N"', value)
            for value in found[0].header_values("WWW-Authenticate")
        ]

    known = await run_sipp("register_rejected", target.port, {"601": "wrong-secret"})
    unknown = await run_sipp("register_rejected", target.port, {"699": "wrong-secret"})
    assert known.returncode == 0, known.describe()
    assert unknown.returncode == 0, unknown.describe()
    assert first_challenge(unknown) == first_challenge(known)
    assert len(first_challenge(known)) >= 1


async def test_refresh_in_the_same_registration_keeps_one_binding(make_target: MakeTarget) -> None:
    target = await make_target({"701": "refresh-secret"})
    local_port = free_port(digits=5)

    result = await run_sipp(
        "register_refresh", target.port, {"701": "refresh-secret"}, local_port=local_port
    )

    assert result.returncode == 0, result.describe()
    call_ids = {v for m in result.received() for v in m.header_values("Call-ID")}
    assert len(call_ids) == 1, call_ids  # one registration: same Call-ID throughout
    listed = _last_ok(result).contacts()
    assert len(_with_port(listed, local_port)) == 1, result.describe()
    assert len(listed) == 1, listed


async def test_expires_zero_removes_the_binding(make_target: MakeTarget) -> None:
    target = await make_target({"801": "gone-secret"})
    local_port = free_port(digits=5)

    added = await run_sipp("register", target.port, {"801": "gone-secret"}, local_port=local_port)
    assert added.returncode == 0, added.describe()
    assert len(_with_port(await bindings(target, "801", "gone-secret"), local_port)) == 1

    removed = await run_sipp(
        "register",
        target.port,
        {"801": "gone-secret"},
        local_port=local_port,
        keys={"expires": "0"},
    )
    assert removed.returncode == 0, removed.describe()
    assert await bindings(target, "801", "gone-secret") == []


async def test_short_registration_expires(make_target: MakeTarget) -> None:
    target = await make_target({"901": "short-secret"}, min_expires=1)

    added = await run_sipp("register", target.port, {"901": "short-secret"}, keys={"expires": "2"})
    assert added.returncode == 0, added.describe()
    granted = _last_ok(added).contacts()
    assert len(granted) == 1, added.describe()
    match = re.search(r";\s*expires=(\d+)", granted[0])
    assert match is not None, granted
    assert 1 <= int(match.group(1)) <= 2, granted
    assert len(await bindings(target, "901", "short-secret")) == 1

    await asyncio.sleep(3.5)

    assert await bindings(target, "901", "short-secret") == []
