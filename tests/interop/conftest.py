"""Fixtures for the interop tests: our runner (``python -m sip_core``) and a reference Kamailio.

``start_pbx`` is a factory: a test gives the users and devices, the fixture writes a ``pbx.yaml``,
starts ``.venv/bin/python -m sip_core --config FILE`` on a free four-digit port (sipsak needs one),
waits until it logs that it listens, and returns a :class:`RunningPbx`. At teardown it sends
SIGTERM (SIGKILL after 10 s), and fails the test if the runner logged a traceback.

``kamailio`` starts the reference registrar from ``bench/_kamailio.py`` with the same users, so
that the client helpers and sipp scenarios are checked against an independent implementation.

Run with ``python -m pytest -p no:homeassistant -m interop tests/interop``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from .clients import HOST, free_port

REPO = Path(__file__).resolve().parents[2]
DOMAIN = "home.arpa"


# -- configuration --------------------------------------------------------------------------------


@dataclass(slots=True)
class Device:
    username: str
    password: str
    label: str = "Test Phone"
    type: str = "desk"
    #: The per-device ``digest`` option; None leaves it out, so the device is on the defaults.
    #: Only a test about that option sets it.
    digest: Sequence[str] | None = None


@dataclass(slots=True)
class User:
    name: str
    extension: str
    devices: list[Device] = field(default_factory=list)


def _q(text: str) -> str:
    """A double-quoted YAML scalar."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def pbx_yaml(
    users: Sequence[User],
    *,
    port: int,
    registrar: Mapping[str, int] | None = None,
    rtp_ports: str = "40000-40999",
    domain: str = DOMAIN,
    workers: int = 0,
) -> str:
    """The runner's configuration in the documented schema (block style, quoted strings)."""
    lines = [
        "sip:",
        f"  listen: {HOST}",
        f"  port: {port}",
        f"  domain: {domain}",
        f"  workers: {workers}",
        "rtp:",
        f"  ports: {rtp_ports}",
    ]
    if registrar:
        lines.append("registrar:")
        lines += [f"  {key}: {value}" for key, value in registrar.items()]
    lines.append("users:")
    for user in users:
        lines += [
            f"  - name: {_q(user.name)}",
            f"    extension: {_q(user.extension)}",
            "    devices:",
        ]
        for device in user.devices:
            option = "" if device.digest is None else f", digest: [{', '.join(device.digest)}]"
            lines.append(
                f"      - {{username: {_q(device.username)}, password: {_q(device.password)}, "
                f"label: {_q(device.label)}, type: {device.type}{option}}}"
            )
    return "\n".join(lines) + "\n"


def users_from(devices: Mapping[str, str]) -> list[User]:
    """One user per device (username -> password); extension = username + "9" (they must differ).

    Every device is on the shipped defaults.
    """
    return [
        User(f"user{name}", f"{name}9", [Device(name, password, label=f"Phone {name}")])
        for name, password in devices.items()
    ]


# -- the runner -----------------------------------------------------------------------------------


def runner_missing() -> str | None:
    """Why the runner cannot be started yet, or None."""
    for module in ("__main__.py", "pbx.py", "config.py"):
        if not (REPO / "sip_core" / module).exists():
            return f"sip_core/{module} does not exist yet"
    return None


@dataclass
class RunningPbx:
    """A running ``python -m sip_core``: where it listens and what it logged."""

    host: str
    port: int
    config_path: Path
    process: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def log(self) -> str:
        """Everything the runner logged so far (stdout and stderr)."""
        return "\n".join(self.lines)

    def __iter__(self) -> Iterator[Any]:  # host, port, log = pbx
        return iter((self.host, self.port, self.log))

    async def wait_for_log(self, pattern: str, time_limit: float = 10.0, *, start: int = 0) -> str:
        """The first log line (from line ``start`` on) matching ``pattern``, within the limit."""
        regex = re.compile(pattern, re.IGNORECASE)
        deadline = time.monotonic() + time_limit
        while True:
            for line in self.lines[start:]:
                if regex.search(line):
                    return line
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (self.reader is not None and self.reader.done()):
                pytest.fail(
                    f"runner did not log {pattern!r} within {time_limit}s; log:\n"
                    + self.log()[-4000:]
                )
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, 0.5)):
                    await self.changed.wait()


async def _read_lines(pbx: RunningPbx) -> None:
    assert pbx.process.stdout is not None
    while raw := await pbx.process.stdout.readline():
        pbx.lines.append(raw.decode(errors="replace").rstrip("\r\n"))
        pbx.changed.set()
    pbx.changed.set()


async def _stop(pbx: RunningPbx) -> None:
    process = pbx.process
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(10):
                await process.wait()
        except TimeoutError:
            pbx.lines.append("[harness: runner still running 10 s after SIGTERM; killed]")
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        await process.wait()
    if pbx.reader is not None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await pbx.reader


StartPbx = Callable[..., Awaitable[RunningPbx]]


@pytest.fixture
async def start_pbx(tmp_path: Path) -> AsyncIterator[StartPbx]:
    """Factory: ``pbx = await start_pbx(users, registrar={"min_expires": 1})``.

    Skips the test when it is called before the runner exists (so that tests parametrized over
    Kamailio and the runner can still check the clients against Kamailio).
    """
    started: list[RunningPbx] = []

    async def start(
        users: Sequence[User],
        *,
        registrar: Mapping[str, int] | None = None,
        log_level: str = "info",
        time_limit: float = 15.0,
        workers: int = 0,
        extra_yaml: str = "",
    ) -> RunningPbx:
        reason = runner_missing()
        if reason:
            pytest.skip(f"runner not available: {reason}")
        port = free_port()
        config_path = tmp_path / f"pbx-{len(started)}.yaml"
        text = pbx_yaml(users, port=port, registrar=registrar, workers=workers) + extra_yaml
        config_path.write_text(text)
        python = REPO / ".venv" / "bin" / "python"
        executable = str(python) if python.exists() else sys.executable
        process = await asyncio.create_subprocess_exec(
            executable, "-m", "sip_core", "--config", str(config_path), "--log-level", log_level,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )  # fmt: skip
        pbx = RunningPbx(HOST, port, config_path, process)
        pbx.reader = asyncio.create_task(_read_lines(pbx))
        started.append(pbx)
        deadline = time.monotonic() + time_limit
        while not any("listening on" in line for line in pbx.lines):
            if pbx.reader.done() or process.returncode is not None:
                await _stop(pbx)
                pytest.fail(
                    f"runner exited ({process.returncode}) before listening; config:\n"
                    f"{config_path.read_text()}\nlog:\n{pbx.log()[-4000:]}"
                )
            if time.monotonic() > deadline:
                pytest.fail(
                    f"runner did not log 'listening on' within {time_limit}s:\n{pbx.log()[-4000:]}"
                )
            pbx.changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.2):
                    await pbx.changed.wait()
        return pbx

    try:
        yield start
    finally:
        for pbx in started:
            await _stop(pbx)
    for pbx in started:
        if "Traceback (most recent call last)" in pbx.log():
            pytest.fail(f"the runner logged a traceback:\n{pbx.log()[-6000:]}")


# -- the reference Kamailio -----------------------------------------------------------------------


def _load_kamailio_helper() -> ModuleType:
    path = REPO / "bench" / "_kamailio.py"
    spec = importlib.util.spec_from_file_location("callflip_bench_kamailio", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def start_kamailio() -> Iterator[Callable[..., Any]]:
    """Factory: ``kam = start_kamailio({"201": "pw"}, tcp=True, min_expires=1)``; stopped after.

    ``port`` picks the port (default: a free one)."""
    helper = _load_kamailio_helper()
    if helper.kamailio_binary() is None:
        pytest.skip("kamailio not installed")
    started: list[Any] = []

    def start(users: Mapping[str, str], **options: Any) -> Any:
        port = options.pop("port", None) or free_port()
        kam = helper.Kamailio(users=dict(users), port=port, **options)
        kam.start()
        started.append(kam)
        return kam

    try:
        yield start
    finally:
        for kam in started:
            kam.stop()
