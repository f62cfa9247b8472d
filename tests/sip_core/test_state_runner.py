"""The runner restarts mid-registration and mid-call: bindings are kept, the call it cut short is
ended (both phones get a BYE) with a record saying why, and that record outlives the restart.

The runner is the real ``python -m sip_core`` process with its state file; the phones are
`bench/_phones.py` (sip_core's transport and transaction layers, over UDP on 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from sip_core.transport import Address

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from interop.clients import free_port  # noqa: E402


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"callflip_bench{name}", BENCH / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


phones = _load("_phones")
runners = _load("_runner")
HOST = "127.0.0.1"


@pytest.fixture
async def runner(tmp_path: Path) -> AsyncIterator[Any]:
    household = runners.Household(users=2, two_devices=True)
    port = free_port(digits=5)
    config = tmp_path / "pbx.yaml"
    low = 20000 + 2 * (port % 4000)
    config.write_text(household.yaml(HOST, port, f"{low}-{low + 39}"))
    started = runners.Runner(config, HOST, port)
    yield started
    await started.stop()
    assert not started.tracebacks(), "\n".join(started.tracebacks_text)


def saved(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


async def test_restart_mid_registration_and_mid_call(runner: Any, tmp_path: Path) -> None:
    state_path = tmp_path / "pbx.state.json"  # the default: beside pbx.yaml
    await runner.start()
    server = Address(HOST, runner.port)
    opened = [
        await phones.open_phone(name, runners.PASSWORD, server, HOST)
        for name in ("d0a", "d1a", "d1b", "d0b")
    ]
    caller, desk, mobile, late = opened
    try:
        for phone in (caller, desk, mobile):
            assert (await phone.register()).status == 200
        call = await caller.call("d1a")
        async with asyncio.timeout(10):
            answered = await desk.incoming.get()
        challenge = await late.register_once(600, [])
        assert challenge.status == 401

        # The restart: SIGTERM, then the same configuration again.
        assert await runner.stop() == 0
        async with asyncio.timeout(10):
            await call.ended.wait()
            await answered.ended.wait()
        state = saved(state_path)
        assert {record["username"] for record in state["bindings"]} == {"d0a", "d1a", "d1b"}
        [interrupted] = state["history"]
        assert interrupted["reason"] == "the PBX is stopping"
        assert interrupted["outcome"] == "failed"
        assert (interrupted["caller"], interrupted["callee_device"]) == ("d0a", "d1a")
        assert interrupted["answered_at"] is not None
        await runner.start()

        # The registration under way: its answer to the old challenge is stale, the retry works.
        stale = await late.register_once(600, late.register_answer(challenge))
        assert stale.status == 401
        assert any("stale=true" in v.lower() for v in stale.headers.get_all("WWW-Authenticate"))
        assert (await late.register_once(600, late.register_answer(stale))).status == 200

        # The bindings were kept: a call reaches d1b, which has not registered since.
        second = await caller.call("d1b")
        async with asyncio.timeout(10):
            other = await mobile.incoming.get()
        bye = await caller.hangup(second)
        assert bye is not None
        assert bye.status == 200
        async with asyncio.timeout(10):
            await other.ended.wait()
        stats = await runner.stats()
        assert stats["history"] == 2
        assert stats["bindings"] == 4
    finally:
        await phones.close_all(opened)
    assert await runner.stop() == 0
    state = saved(state_path)
    assert len(state["history"]) == 2
    assert state["history"][0]["reason"] == "the PBX is stopping"
    assert {record["username"] for record in state["bindings"]} == {"d0a", "d0b", "d1a", "d1b"}


async def test_the_state_file_path_is_configurable_and_a_corrupt_one_is_set_aside(
    runner: Any, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "var" / "callflip.json"
    elsewhere.parent.mkdir()
    elsewhere.write_text("{not json")
    runner.state_path = elsewhere
    await runner.start()
    assert "moved aside" in runner.log()
    phone = await phones.open_phone("d0a", runners.PASSWORD, Address(HOST, runner.port), HOST)
    try:
        assert (await phone.register()).status == 200
    finally:
        await phones.close_all([phone])
    assert await runner.stop() == 0
    assert [record["username"] for record in saved(elsewhere)["bindings"]] == ["d0a"]
    assert (elsewhere.parent / "callflip.json.bad").read_text() == "{not json"
    assert not (tmp_path / "pbx.state.json").exists()
