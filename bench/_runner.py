"""Our runner (``python -m sip_core``) as a child process, for bench/loss, bench/soak, bench/fuzz.

`Runner.start` writes a configuration (users with one or two devices each), starts the runner with
``--count-timers`` (optionally under ``ip netns exec``), waits for it to listen, and keeps its log
lines. `Runner.stats` sends SIGUSR1 and reads the ``stats`` line it logs (`Pbx.stats` plus the
loop's task count); `Runner.idle_stats` polls until everything that must drain has drained.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
KEPT_LINES = 20_000
PASSWORD = "reliability-secret"

#: Counters that are not zero when idle: bindings and history; the loop's own tasks (the runner's
#: main task waits for a signal) and timers (binding expiry) are compared with the idle PBX before
#: the run instead (`leaks`).
NOT_OPEN = frozenset({"bindings", "history", "tasks", "timers"})


def rtp_ports(sip_port: int, pairs: int) -> str:
    """An RTP range of ``pairs`` port pairs that differs from run to run with the SIP port (so
    parallel runs seldom meet) and never includes it (the runner refuses that)."""
    low = 20000 + 2 * (sip_port % 4000)
    high = low + 2 * pairs - 1
    if low <= sip_port <= high:
        low = sip_port + 2 - sip_port % 2  # the first even port above the SIP port
        high = low + 2 * pairs - 1
    return f"{low}-{high}"


@dataclass(slots=True)
class Household:
    """Users ``u<i>`` with extension ``1<i>``; devices ``d<i>a`` (and ``d<i>b``)."""

    users: int
    two_devices: bool = True

    def devices(self, user: int) -> list[str]:
        names = [f"d{user}a"]
        if self.two_devices:
            names.append(f"d{user}b")
        return names

    def all_devices(self) -> list[str]:
        return [name for user in range(self.users) for name in self.devices(user)]

    def yaml(self, host: str, port: int, rtp: str, extra: str = "") -> str:
        lines = [
            "sip:",
            f"  listen: {host}",
            f"  port: {port}",
            "  domain: home.arpa",
            "rtp:",
            f"  ports: {rtp}",
        ]
        if extra:
            lines.append(extra.rstrip("\n"))
        lines.append("users:")
        for user in range(self.users):
            lines += [f'  - name: "u{user}"', f'    extension: "1{user:03d}"', "    devices:"]
            for kind, name in zip(("desk", "mobile"), self.devices(user), strict=False):
                lines.append(
                    f'      - {{username: "{name}", password: "{PASSWORD}", label: "{name}", '
                    f"type: {kind}, digest: [MD5]}}"
                )
        return "\n".join(lines) + "\n"


@dataclass
class Runner:
    """One ``python -m sip_core`` process."""

    config_path: Path
    host: str
    port: int
    process: asyncio.subprocess.Process | None = None
    lines: list[str] = field(default_factory=list)
    total: int = 0  # lines read so far; ``lines`` keeps the last `KEPT_LINES`
    errors: list[str] = field(default_factory=list)  # ERROR and CRITICAL lines, tracebacks
    tracebacks_text: list[str] = field(default_factory=list)  # lines after the first errors
    reader: asyncio.Task[None] | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    state_path: Path | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(
        self, *, netns: str | None = None, log_level: str = "info", time_limit: float = 20.0
    ) -> Runner:
        argv = [sys.executable, "-m", "sip_core", "--config", str(self.config_path)]
        argv += ["--log-level", log_level, "--count-timers"]
        if self.state_path is not None:
            argv += ["--state", str(self.state_path)]
        if netns is not None:
            argv = ["ip", "netns", "exec", netns, *argv]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}
        self.lines.clear()
        self.total = 0
        start = 0
        self.process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=REPO,
            env=env,
            start_new_session=True,
        )
        self.reader = asyncio.get_running_loop().create_task(self._read())
        if log_level in ("debug", "info"):
            await self.wait_for("listening on", time_limit, start)
        else:
            await self._probe(time_limit)
        return self

    async def _probe(self, time_limit: float) -> None:
        """Wait until an OPTIONS over UDP gets an answer (the runner logs nothing when quiet)."""
        loop = asyncio.get_running_loop()
        answered = asyncio.Event()

        class Probe(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                answered.set()

        transport, _ = await loop.create_datagram_endpoint(
            Probe, remote_addr=(self.host, self.port)
        )
        try:
            deadline = time.monotonic() + time_limit
            while not answered.is_set():
                if time.monotonic() > deadline or (self.reader and self.reader.done()):
                    raise RuntimeError(f"runner does not answer:\n{self.log()[-3000:]}")
                local = transport.get_extra_info("sockname")
                transport.sendto(
                    (
                        f"OPTIONS sip:{self.host}:{self.port} SIP/2.0\r\n"
                        f"Via: SIP/2.0/UDP {local[0]}:{local[1]};"
                        f"branch=z9hG4bKprobe{time.time_ns()}\r\n"
                        "Max-Forwards: 70\r\nFrom: <sip:probe@home.arpa>;tag=p\r\n"
                        "To: <sip:probe@home.arpa>\r\nCall-ID: probe\r\nCSeq: 1 OPTIONS\r\n"
                        "Content-Length: 0\r\n\r\n"
                    ).encode()
                )
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.3):
                        await answered.wait()
        finally:
            transport.close()

    async def _read(self) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        capture = 0
        while raw := await self.process.stdout.readline():
            line = raw.decode(errors="replace").rstrip("\r\n")
            self.lines.append(line)
            self.total += 1
            if len(self.lines) > 2 * KEPT_LINES:
                del self.lines[:KEPT_LINES]
            if " ERROR " in line or " CRITICAL " in line or line.startswith("Traceback"):
                self.errors.append(line)
                capture = 40
            elif capture > 0 and len(self.tracebacks_text) < 200:
                self.tracebacks_text.append(line)
            capture -= 1
            self.changed.set()
        self.changed.set()

    def log(self) -> str:
        return "\n".join(self.lines)

    async def wait_for(self, pattern: str, time_limit: float = 10.0, start: int = 0) -> str:
        """The first line matching ``pattern`` from line number ``start`` (of `total`) on."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + time_limit
        while True:
            first = len(self.lines) - (self.total - start)
            for line in self.lines[max(0, first) :]:
                if regex.search(line):
                    return line
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (self.reader is not None and self.reader.done()):
                raise RuntimeError(
                    f"runner did not log {pattern!r} within {time_limit}s:\n{self.log()[-3000:]}"
                )
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, 0.5)):
                    await self.changed.wait()

    async def stats(self) -> dict[str, Any]:
        """The runner's counters now (SIGUSR1, then its ``stats`` log line)."""
        start = self.total
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGUSR1)
        line = await self.wait_for(r" stats \{", 10.0, start)
        stats: dict[str, Any] = json.loads(line.split(" stats ", 1)[1])
        return stats

    async def idle_stats(self, time_limit: float = 45.0) -> tuple[dict[str, Any], float]:
        """Poll until every open item is zero (transactions wait out 64*T1 = 32 s); returns the
        last counters and how long draining took."""
        began = time.monotonic()
        while True:
            stats = await self.stats()
            if not open_items(stats) or time.monotonic() - began > time_limit:
                return stats, time.monotonic() - began
            await asyncio.sleep(2.0)

    def tracebacks(self) -> int:
        return sum(1 for line in self.errors if line.startswith("Traceback"))

    async def stop(self, time_limit: float = 15.0) -> int | None:
        process = self.process
        if process is None:
            return None
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(time_limit):
                    await process.wait()
            except TimeoutError:
                self.lines.append("[runner still running after SIGTERM; killed]")
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            await process.wait()
        if self.reader is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self.reader
        return process.returncode


def leaks(stats: dict[str, Any], baseline: dict[str, Any]) -> dict[str, int]:
    """Open items, plus tasks and timers beyond what the PBX had before anything registered
    (``baseline``), allowing the one timer that expires bindings once there are bindings."""
    found = open_items(stats)
    allowed = {
        "tasks": baseline.get("tasks") or 0,
        "timers": (baseline.get("timers") or 0) + (1 if stats.get("bindings") else 0),
    }
    for name, limit in allowed.items():
        extra = (stats.get(name) or 0) - limit
        if extra > 0:
            found[name] = extra
    return found


def open_items(stats: dict[str, Any]) -> dict[str, int]:
    """The counters that are not zero but should be once the PBX is idle."""
    return {
        name: value
        for name, value in stats.items()
        if name not in NOT_OPEN and isinstance(value, int) and value != 0
    }


DOCS = REPO / "docs" / "benchmarks.md"
RELIABILITY = "## Reliability"


def write_docs(name: str, text: str) -> None:
    """Put ``text`` between ``name``'s markers inside the Reliability section of the docs."""
    begin, end = f"<!-- {name}: begin -->", f"<!-- {name}: end -->"
    block = f"{begin}\n{text.rstrip()}\n{end}"
    content = DOCS.read_text()
    if begin in content and end in content:
        start = content.index(begin)
        stop = content.index(end) + len(end)
        content = content[:start] + block + content[stop:]
    else:
        if RELIABILITY not in content:
            content = content.rstrip("\n") + f"\n\n{RELIABILITY}\n"
        content = content.rstrip("\n") + "\n\n" + block + "\n"
    DOCS.write_text(content)


def table(rows: list[tuple[str, object]]) -> str:
    """A two-column Markdown table of figures."""
    lines = ["| figure | value |", "|---|---:|"]
    lines += [f"| {label} | {value} |" for label, value in rows]
    return "\n".join(lines)


def machine() -> str:
    """One line about where this ran (the machine is shared: numbers are noisy)."""
    load = os.getloadavg()
    return (
        f"{os.cpu_count()} cores, load average at the end {load[0]:.2f} (the machine was shared "
        "with other work during the run)"
    )
