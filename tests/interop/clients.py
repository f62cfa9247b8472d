"""Drive independent SIP clients (sipsak, sipp, baresip, pjsua2, linphonec) from asyncio tests.

Every helper runs its client as an asyncio subprocess in a process group of its own, with a bounded
timeout, and kills and reaps the whole group on the way out, also when the test fails or is
cancelled. Output is captured so that a failure message can show what the client saw.

Everything talks to 127.0.0.1 only. Known client quirks this module works around (docs/phones.md
lists them for users):

- sipsak cuts five-digit ports short in the Request-URI: its registrar port must have four digits
  (``free_port`` picks four-digit ports); it answers only the first digest challenge (the default
  challenge, MD5 alone, suits it). Without ``-u`` it sends ``username="201@"``, so we always pass
  ``-u``.
- sipp's ``[authentication username=[field0]]`` does not expand the field; the whole keyword is put
  in the CSV instead (``[authentication username=U password=P]`` as field 2), which gives each user
  their own password (sipp 3.6's ``-au``/``-ap`` give one password to the whole process). sipp
  computes the digest ``uri`` from the remote address (``sip:HOST:PORT``) unless ``-auth_uri`` is
  given; we pass the Request-URI's domain, except in the test of that default. By default sipp
  answers an unexpected response with a BYE; ``-default_behaviors abortunexp`` stops that. sipp
  measures time in whole milliseconds.
- baresip reads accounts only with the ``account`` module and prints registration results only
  with the ``menu`` module; it unregisters (Expires 0) when it gets SIGTERM, not when killed.
- pjsua2 has wheels for Python 3.11 and 3.12 only: it runs as a peer process
  (``pjsua_peer.py``) in its own environment, ``.venv-pjsua2``, built by ``scripts/setup``.
- linphonec starts no SIP stack when it cannot open its call-history database under ``$HOME``:
  each instance gets a ``HOME`` of its own with that folder made.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import os
import re
import secrets
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
SIPP_DIR = Path(__file__).parent / "sipp"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_STATUS_LINE = re.compile(r"^SIP/2\.0 (\d{3}) ", re.MULTILINE)


class ClientError(AssertionError):
    """A client could not be run or did not behave; the message carries its output."""


def free_port(*, digits: int = 4, tcp: bool = True, host: str = HOST, span: int = 1) -> int:
    """A port that is free for UDP (and TCP) on ``host`` right now, with the ``span - 1`` ports
    after it (baresip opens its TLS listener on its SIP port + 1).

    Four digits by default (2000-9999): sipsak cannot address a five-digit port. Five-digit ports
    are taken below 32768, out of Linux's default range for outgoing connections: on a busy
    machine thousands of sockets wait out TIME-WAIT there, and a client that binds without
    SO_REUSEADDR (baresip's TLS listener) would find its port taken between our check and its
    bind.
    """
    low, high = (2000, 9999) if digits == 4 else (10000, 32767)
    for _ in range(500):
        port = low + secrets.randbelow(high - low + 2 - span)
        kinds = (socket.SOCK_DGRAM, socket.SOCK_STREAM) if tcp else (socket.SOCK_DGRAM,)
        socks: list[socket.socket] = []
        try:
            for number in range(port, port + span):
                for kind in kinds:
                    sock = socket.socket(socket.AF_INET, kind)
                    socks.append(sock)
                    sock.bind((host, number))
        except OSError:
            continue
        else:
            return port
        finally:
            for sock in socks:
                sock.close()
    raise ClientError(f"no free {digits}-digit port on {host}")


def _tail(text: str, limit: int = 4000) -> str:
    return text if len(text) <= limit else "...\n" + text[-limit:]


# -- processes ------------------------------------------------------------------------------------


@dataclass(slots=True)
class ProcessResult:
    """What a finished client process did."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    duration: float

    def describe(self) -> str:
        """A block of text for an assertion message."""
        return (
            f"$ {' '.join(self.argv)}\nexit status {self.returncode} after {self.duration:.2f}s\n"
            f"--- stdout\n{_tail(self.stdout)}\n--- stderr\n{_tail(self.stderr)}"
        )


async def _kill_group(process: asyncio.subprocess.Process) -> None:
    """SIGKILL the process group and reap the leader (idempotent)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        await process.wait()


async def run_process(
    argv: Sequence[str], *, time_limit: float, cwd: Path | str | None = None
) -> ProcessResult:
    """Run ``argv`` to completion within ``time_limit`` seconds; kill its group on timeout or
    cancel."""
    binary = shutil.which(argv[0])
    if binary is None:
        raise ClientError(f"{argv[0]} is not installed")
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
        start_new_session=True,
    )
    try:
        async with asyncio.timeout(time_limit):
            out, err = await process.communicate()
    except TimeoutError:
        await _kill_group(process)
        raise ClientError(f"$ {' '.join(argv)}\ndid not finish within {time_limit}s") from None
    finally:
        await _kill_group(process)  # also reaps leftovers of a finished leader; no-op otherwise
    return ProcessResult(
        argv=list(argv),
        returncode=process.returncode if process.returncode is not None else -1,
        stdout=out.decode(errors="replace"),
        stderr=err.decode(errors="replace"),
        duration=time.monotonic() - started,
    )


# -- sipsak ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class SipsakResult:
    """One sipsak usrloc run: its process and the responses it printed (with -vvv)."""

    process: ProcessResult
    statuses: list[int]  # status codes of the responses received, in order

    @property
    def ok(self) -> bool:
        return self.process.returncode == 0

    @property
    def final_status(self) -> int | None:
        return self.statuses[-1] if self.statuses else None

    def describe(self) -> str:
        return f"responses {self.statuses}\n{self.process.describe()}"


async def sipsak_register(
    port: int,
    user: str,
    password: str,
    *,
    host: str = HOST,
    expires: int = 3600,
    contact_port: int | None = None,
    auth_user: str | None = None,
    time_limit: float = 20.0,
) -> SipsakResult:
    """REGISTER ``user`` at ``host:port`` with sipsak (MD5 digest); ``expires=0`` removes it.

    The Contact is ``sip:USER@127.0.0.1:CONTACT_PORT``: give the same ``contact_port`` to remove
    a binding made before. sipsak's Request-URI, From and To use ``host:port`` as the domain.
    """
    if not 0 < port < 10000:
        raise ValueError(f"sipsak cannot address port {port}: use a four-digit port")
    local = contact_port if contact_port is not None else free_port()
    argv = [
        "sipsak", "-U", "-vvv", "-i",
        "-s", f"sip:{user}@{host}:{port}",
        "-C", f"sip:{user}@{HOST}:{local}",
        "-x", str(expires),
        "-u", auth_user or user,
        "-a", password,
        "-H", HOST, "-l", str(local),
    ]  # fmt: skip
    result = await run_process(argv, time_limit=time_limit)
    statuses = [int(code) for code in _STATUS_LINE.findall(result.stdout)]
    return SipsakResult(result, statuses)


async def sipsak_unregister(
    port: int, user: str, password: str, *, contact_port: int, **kwargs: object
) -> SipsakResult:
    """Remove the binding ``sipsak_register`` made with the same ``contact_port`` (Expires 0)."""
    return await sipsak_register(
        port,
        user,
        password,
        expires=0,
        contact_port=contact_port,
        **kwargs,  # type: ignore[arg-type]
    )


# -- sipp -----------------------------------------------------------------------------------------


@dataclass(slots=True)
class SippResult:
    """One sipp run: exit status, final statistics, response times and (if traced) messages."""

    process: ProcessResult
    stats: dict[str, str]  # the last row of -trace_stat, column name -> value
    rtts_ms: list[float]  # every rtd sample (-trace_rtt), whole milliseconds
    messages: str  # -trace_msg log ("" unless trace_messages)
    errors: str  # -trace_err log

    @property
    def returncode(self) -> int:
        return self.process.returncode

    @property
    def successful(self) -> int:
        return int(self.stats.get("SuccessfulCall(C)", "0") or 0)

    @property
    def failed(self) -> int:
        return int(self.stats.get("FailedCall(C)", "0") or 0)

    def received(self) -> list[SipMessage]:
        """The SIP messages sipp received, parsed from the message log."""
        return [m for m in parse_sipp_messages(self.messages) if m.received]

    def describe(self) -> str:
        keep = ("SuccessfulCall(C)", "FailedCall(C)", "Retransmissions(C)",
                "FailedTimeoutOnRecv(C)",
                "FailedUnexpectedMessage(C)", "FailedMaxUDPRetrans(C)")  # fmt: skip
        stats = ", ".join(f"{k}={self.stats.get(k)}" for k in keep)
        return (
            f"sipp stats: {stats}\n{self.process.describe()}\n--- errors\n{_tail(self.errors)}\n"
            f"--- messages\n{_tail(self.messages, 6000)}"
        )


@dataclass(slots=True)
class SipMessage:
    """A SIP message from a client's trace, just enough for assertions."""

    received: bool
    start_line: str
    headers: list[tuple[str, str]] = field(default_factory=list)

    @property
    def status(self) -> int | None:
        match = re.match(r"SIP/2\.0 (\d{3})", self.start_line)
        return int(match.group(1)) if match else None

    def header_values(self, name: str) -> list[str]:
        compact = {"contact": "m", "via": "v", "call-id": "i", "from": "f", "to": "t"}
        names = {name.lower(), compact.get(name.lower(), name.lower())}
        return [value for key, value in self.headers if key.lower() in names]

    def contacts(self) -> list[str]:
        """Contact values, split on commas outside <> and quotes."""
        out: list[str] = []
        for value in self.header_values("Contact"):
            depth, quoted, current = 0, False, ""
            for ch in value:
                if ch == '"':
                    quoted = not quoted
                elif not quoted and ch == "<":
                    depth += 1
                elif not quoted and ch == ">":
                    depth -= 1
                if ch == "," and depth == 0 and not quoted:
                    out.append(current.strip())
                    current = ""
                else:
                    current += ch
            if current.strip():
                out.append(current.strip())
        return out


def parse_sipp_messages(log: str) -> list[SipMessage]:
    """Split sipp's -trace_msg log into messages (direction, start line, headers)."""
    messages: list[SipMessage] = []
    for block in re.split(r"^-{20,}.*$", log, flags=re.MULTILINE):
        lines = [line.rstrip("\r") for line in block.strip("\n").splitlines()]
        if not lines:
            continue
        first = lines[0].lower()
        if "message received" in first or "message sent" in first:
            received = "received" in first
            body = lines[1:]
        else:
            continue
        while body and not body[0].strip():
            body.pop(0)
        if not body:
            continue
        message = SipMessage(received=received, start_line=body[0].strip())
        for line in body[1:]:
            if not line.strip():
                break
            name, sep, value = line.partition(":")
            if sep:
                message.headers.append((name.strip(), value.strip()))
        messages.append(message)
    return messages


def write_sipp_users(
    path: Path, users: Mapping[str, str], *, domain: str, order: str = "SEQUENTIAL"
) -> Path:
    """The -inf CSV for our scenarios: user;domain;[authentication username=U password=P]."""
    lines = [order]
    for user, password in users.items():
        for text in (user, domain, password):
            if any(ch in text for ch in "; ]\n"):
                raise ValueError(f"sipp CSV cannot carry {text!r}")
        lines.append(f"{user};{domain};[authentication username={user} password={password}]")
    path.write_text("\n".join(lines) + "\n")
    return path


def sipp_argv(
    scenario: str | Path,
    port: int,
    users_csv: Path,
    *,
    domain: str,
    host: str = HOST,
    transport: str = "udp",
    calls: int = 1,
    rate: float = 10.0,
    local_port: int | None = None,
    keys: Mapping[str, str] | None = None,
    trace_messages: bool = True,
    time_limit: float = 30.0,
    extra: Sequence[str] = (),
    default_auth_uri: bool = False,
) -> list[str]:
    """The sipp command line for one of our scenarios (the files go to the working directory).

    The digest ``uri`` is ``sip:DOMAIN`` (``-auth_uri``), the scenarios' Request-URI; with
    ``default_auth_uri`` sipp computes it itself: ``sip:HOST:PORT``, the address it sends to.
    """
    scenario_path = Path(scenario)
    if not scenario_path.is_absolute() and not scenario_path.exists():
        scenario_path = SIPP_DIR / scenario_path
    if not scenario_path.name.endswith(".xml"):
        scenario_path = scenario_path.with_name(scenario_path.name + ".xml")
    if not host.startswith("127."):
        raise ValueError("loopback targets only")
    argv = [
        "sipp", f"{host}:{port}",
        "-sf", str(scenario_path),
        "-inf", str(users_csv),
        "-t", {"udp": "u1", "tcp": "t1"}[transport],
        "-i", HOST, "-p", str(local_port or free_port(digits=5, tcp=transport == "tcp")),
        "-m", str(calls), "-r", f"{rate:g}",
        "-nostdin", "-default_behaviors", "abortunexp",
        "-timeout", f"{time_limit:g}s", "-timeout_error",
        "-recv_timeout", "10s",
        "-trace_stat", "-stf", "stats.csv", "-fd", "1",
        "-trace_rtt", "-rtt_freq", "1",
        "-trace_err", "-error_file", "errors.log",
    ]  # fmt: skip
    if not default_auth_uri:
        argv += ["-auth_uri", domain]
    if trace_messages:
        argv += ["-trace_msg", "-message_file", "messages.log"]
    for name, value in (keys or {}).items():
        argv += ["-key", name, value]
    argv += list(extra)
    return argv


def read_sipp_outputs(workdir: Path) -> tuple[dict[str, str], list[float], str, str]:
    """Final statistics row, rtt samples, message log and error log from a sipp working dir."""
    stats: dict[str, str] = {}
    stats_file = workdir / "stats.csv"
    if stats_file.exists():
        rows = list(csv.reader(stats_file.read_text(errors="replace").splitlines(), delimiter=";"))
        if len(rows) >= 2:
            stats = dict(zip(rows[0], rows[-1], strict=False))
    rtts: list[float] = []
    for rtt_file in sorted(workdir.glob("*_rtt.csv")):
        for line in rtt_file.read_text(errors="replace").splitlines()[1:]:
            parts = line.split(";")
            if len(parts) >= 2:
                with contextlib.suppress(ValueError):
                    rtts.append(float(parts[1]))
    messages_file = workdir / "messages.log"
    errors_file = workdir / "errors.log"
    messages = messages_file.read_text(errors="replace") if messages_file.exists() else ""
    errors = errors_file.read_text(errors="replace") if errors_file.exists() else ""
    return stats, rtts, messages, errors


async def run_sipp(
    scenario: str | Path,
    port: int,
    users: Mapping[str, str],
    *,
    domain: str = "home.arpa",
    host: str = HOST,
    transport: str = "udp",
    calls: int | None = None,
    rate: float = 10.0,
    local_port: int | None = None,
    keys: Mapping[str, str] | None = None,
    time_limit: float = 30.0,
    default_auth_uri: bool = False,
) -> SippResult:
    """Run one sipp UAC scenario from tests/interop/sipp against ``host:port``.

    ``users`` maps usernames to passwords; one call per user by default, in order. The result
    carries the exit status (0: every call succeeded, 1: some failed), statistics, response times
    and the message trace.
    """
    with tempfile.TemporaryDirectory(prefix="callflip-sipp-") as tmp:
        workdir = Path(tmp)
        users_csv = write_sipp_users(workdir / "users.csv", users, domain=domain)
        argv = sipp_argv(
            scenario, port, users_csv, domain=domain, host=host, transport=transport,
            calls=calls if calls is not None else len(users), rate=rate, local_port=local_port,
            keys={"expires": "3600", **(keys or {})}, time_limit=time_limit,
            default_auth_uri=default_auth_uri,
        )  # fmt: skip
        result = await run_process(argv, time_limit=time_limit + 10, cwd=workdir)
        stats, rtts, messages, errors = read_sipp_outputs(workdir)
    return SippResult(result, stats, rtts, messages, errors)


# -- baresip --------------------------------------------------------------------------------------

_BARESIP_REG = re.compile(r"^(?P<aor>\S+): \{\d+/(?P<tp>\w+)/v\d\} (?P<code>\d{3}) (?P<reason>.*)$")
_BARESIP_REG_FAIL = re.compile(r"^reg: (?P<aor>\S+): (?P<code>\d{3}) (?P<reason>.*)$")
_BARESIP_REG_ERR = re.compile(r"^reg: (?P<aor>\S+): (?P<reason>.*)$")

BARESIP_MODULES = ("/usr/lib/baresip/modules", "/usr/lib/x86_64-linux-gnu/baresip/modules")


@dataclass(slots=True)
class Registration:
    """What baresip printed about one registration attempt."""

    code: int | None  # None: failed without a response (timeout, transport error)
    line: str

    @property
    def ok(self) -> bool:
        return self.code is not None and 200 <= self.code < 300


class Baresip:
    """One baresip user agent with one account, registering at a loopback registrar.

    ``async with Baresip(...) as ua:`` starts it; ``await ua.wait_registered()`` waits for the
    first registration result; leaving the block stops it with SIGTERM, which makes baresip send
    a REGISTER with Expires 0 first (a kill would not), and kills it if it does not exit in time.
    """

    def __init__(
        self,
        user: str,
        password: str,
        registrar_port: int,
        *,
        transport: str = "udp",
        domain: str | None = None,
        registrar_host: str = HOST,
        regint: int = 3600,
        listen_port: int | None = None,
        tone: Path | None = None,
        record: bool = False,
        answermode: str = "manual",
        call_control: bool = False,
        workdir: Path | None = None,
    ) -> None:
        if transport not in ("udp", "tcp"):
            raise ValueError(transport)
        if answermode not in ("manual", "auto"):
            raise ValueError(answermode)
        if not registrar_host.startswith("127."):
            raise ValueError("loopback registrars only")
        self.user = user
        self.password = password
        self.registrar = f"{registrar_host}:{registrar_port}"
        self.transport = transport
        self.domain = domain
        self.regint = regint
        self.listen_port = listen_port
        self.tone = tone
        self.record = record
        self.answermode = answermode
        self.call_control = call_control or record or tone is not None or answermode != "manual"
        self.workdir = workdir
        self.events: list[dict[str, Any]] = []
        self.ctrl_port: int | None = None
        self.cons_port: int | None = None
        self._ctrl: CtrlConnection | None = None
        self.lines: list[str] = []
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._changed = asyncio.Event()

    # -- configuration
    def _write_config(self, directory: Path) -> None:
        module_path = next((p for p in BARESIP_MODULES if os.path.isdir(p)), BARESIP_MODULES[0])
        port = self.listen_port or free_port(digits=5, span=2)
        self.listen_port = port
        # Loopback only: listen, interface and DNS all on 127.0.0.1; no module that reaches out
        # (stun, turn, ice, natpmp, mwi, presence) is loaded. Audio is a file sink and a sine.
        (directory / "config").write_text(
            "poll_method\t\tepoll\n"
            f"sip_listen\t\t{HOST}:{port}\n"
            f"net_interface\t\t{HOST}\n"
            f"dns_server\t\t{HOST}:53\n"
            "audio_player\t\taufile,/dev/null\n"
            "audio_alert\t\taufile,/dev/null\n"
            + (
                f"audio_source\t\taufile,{self.tone}\n"
                if self.tone
                else "audio_source\t\tausine,440\n"
            )
            + f"module_path\t\t{module_path}\n"
            "module\t\t\tg711.so\n"
            "module\t\t\taufile.so\n"
            "module\t\t\tausine.so\n"
            "module_app\t\taccount.so\n"
            "module_app\t\tmenu.so\n" + self._call_config(directory)
        )
        for text in (self.user, self.password, self.domain or ""):
            if any(ch in text for ch in ';"<>\n '):
                raise ValueError(f"baresip account cannot carry {text!r}")
        if self.domain:
            aor = f"sip:{self.user}@{self.domain};transport={self.transport}"
            outbound = f';outbound="sip:{self.registrar};transport={self.transport}"'
        else:
            aor = f"sip:{self.user}@{self.registrar};transport={self.transport}"
            outbound = ""
        answer = f";answermode={self.answermode}" if self.call_control else ""
        (directory / "accounts").write_text(
            f"<{aor}>;auth_user={self.user};auth_pass={self.password};regint={self.regint}"
            f"{outbound}{answer}\n"
        )

    def _call_config(self, directory: Path) -> str:
        """Modules for calls: ctrl_tcp (commands and events), cons (keys: DTMF), sndfile."""
        if not self.call_control:
            return ""
        self.ctrl_port = free_port(digits=5)
        self.cons_port = free_port(digits=5)
        lines = [
            "module\t\t\tcons.so",
            f"cons_listen\t\t{HOST}:{self.cons_port}",
            "module_app\t\tctrl_tcp.so",
            f"ctrl_tcp_listen\t\t{HOST}:{self.ctrl_port}",
        ]
        if self.record:
            (directory / "recordings").mkdir(exist_ok=True)
            lines += ["module\t\t\tsndfile.so", f"snd_path\t\t{directory / 'recordings'}"]
        return "\n".join(lines) + "\n"

    # -- life cycle
    async def start(self) -> Baresip:
        if shutil.which("baresip") is None:
            raise ClientError("baresip is not installed")
        if self.workdir is not None:
            directory = self.workdir
            directory.mkdir(parents=True, exist_ok=True)
        else:
            self._tmp = tempfile.TemporaryDirectory(prefix="callflip-baresip-")
            directory = Path(self._tmp.name)
        self.directory = directory
        self._write_config(directory)
        self._process = await asyncio.create_subprocess_exec(
            "baresip", "-f", str(directory), "-4", "-s",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=directory,
            start_new_session=True,
        )  # fmt: skip
        self._reader = asyncio.create_task(self._read(self._process))
        if self.call_control:
            await self.wait_for(r"baresip is ready", time_limit=10)
            assert self.ctrl_port is not None
            self._ctrl = await CtrlConnection.open(self.ctrl_port, self._on_event)
        return self

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        while True:
            raw = await process.stdout.readline()
            if not raw:
                break
            self.lines.append(_ANSI.sub("", raw.decode(errors="replace")).rstrip("\r\n"))
            self._changed.set()
        self._changed.set()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def registrations(self) -> list[Registration]:
        """Every registration result baresip printed so far, in order."""
        found: list[Registration] = []
        for line in self.lines:
            if match := _BARESIP_REG.match(line) or _BARESIP_REG_FAIL.match(line):
                found.append(Registration(int(match.group("code")), line))
            elif match := _BARESIP_REG_ERR.match(line):
                found.append(Registration(None, line))
        return found

    def sent_requests(self, method: str = "REGISTER") -> list[str]:
        """The requests baresip's SIP trace (-s) shows it sent, as text blocks."""
        blocks: list[str] = []
        current: list[str] | None = None
        for line in self.lines:
            if re.match(r"^(UDP|TCP) \S+ -> \S+$", line):
                current = []
                blocks.append("")
                continue
            if current is not None:
                current.append(line)
                blocks[-1] = "\n".join(current)
        return [b for b in blocks if b.startswith(f"{method} ")]

    async def wait_for(self, pattern: str, time_limit: float = 10.0) -> re.Match[str]:
        """Wait for an output line matching ``pattern``; ClientError with the output if none."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + time_limit
        seen = 0
        while True:
            for line in self.lines[seen:]:
                if match := regex.search(line):
                    return match
            seen = len(self.lines)
            if self._process is None or self._reader is None or self._reader.done():
                raise ClientError(
                    f"baresip exited before printing {pattern!r}\n{_tail(self.output)}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ClientError(
                    f"baresip did not print {pattern!r} in {time_limit}s\n{_tail(self.output)}"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._changed.wait()

    async def wait_registered(self, time_limit: float = 10.0) -> Registration:
        """The first registration result (success or failure) baresip reports."""
        await self.wait_for(r"^(\S+: \{\d+/\w+/v\d\} \d{3} |reg: )", time_limit)
        return self.registrations()[0]

    async def registration_or_silence(
        self, silent: Callable[[], bool], *, quiet: float = 2.0, time_limit: float = 10.0
    ) -> Registration | None:
        """The first registration result, or None once the registrar is known not to answer.

        ``silent()`` says the registrar has stopped answering (a ban in its log, say). From then
        on, once baresip's first REGISTER has gone unanswered for ``quiet`` seconds (over UDP
        that covers its retransmissions at 0.5 and 1.5 s; on loopback an answer takes
        milliseconds), None. Without ``silent()``, None only after ``time_limit``.
        """
        deadline = time.monotonic() + time_limit
        first_sent: float | None = None
        while True:
            if found := self.registrations():
                return found[0]
            now = time.monotonic()
            if first_sent is None and self.sent_requests("REGISTER"):
                first_sent = now
            if first_sent is not None and now - first_sent >= quiet and silent():
                return None
            if now >= deadline:
                return None
            if self._reader is None or self._reader.done():
                raise ClientError(f"baresip exited before registering\n{_tail(self.output)}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.2):
                    await self._changed.wait()

    async def stop(self, time_limit: float = 10.0) -> int | None:
        """SIGTERM (baresip unregisters, then exits), SIGKILL after ``time_limit`` s; reap."""
        process, self._process = self._process, None
        if self._ctrl is not None:
            await self._ctrl.close()
            self._ctrl = None
        code: int | None = None
        if process is not None:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
                try:
                    async with asyncio.timeout(time_limit):
                        code = await process.wait()
                except TimeoutError:
                    self.lines.append(
                        f"[harness: baresip still running {time_limit}s after SIGTERM]"
                    )
            await _kill_group(process)
            code = process.returncode if code is None else code
        if self._reader is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                async with asyncio.timeout(5):
                    await self._reader
            self._reader.cancel()
            self._reader = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        return code

    async def kill(self) -> None:
        """Kill without letting baresip unregister (for tests of expiry)."""
        if self._process is not None:
            await _kill_group(self._process)
        await self.stop(time_limit=1)

    # -- calls (needs call_control, or tone/record/answermode, at construction)
    def _on_event(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        self._changed.set()

    async def command(self, name: str, params: str = "", time_limit: float = 5.0) -> str:
        """Run one long command (``dial``, ``accept``, ``hangup`` ...) through ctrl_tcp.

        Returns its output text; ClientError when baresip answers ``ok: false``.
        """
        if self._ctrl is None:
            raise ClientError("baresip was started without call control")
        reply = await self._ctrl.command(name, params, time_limit)
        if not reply.get("ok"):
            raise ClientError(f"baresip /{name} {params} failed: {reply}\n{_tail(self.output)}")
        return str(reply.get("data", ""))

    async def dial(self, uri: str) -> None:
        """Start a call (through the outbound proxy when the account has one)."""
        if not re.fullmatch(r"sips?:[^\s<>\"]+", uri):
            raise ValueError(uri)
        await self.command("dial", uri)

    async def accept(self) -> None:
        await self.command("accept")

    async def hangup(self) -> None:
        await self.command("hangup")

    async def send_dtmf(self, digits: str, *, hold: float = 0.12, gap: float = 0.2) -> None:
        """Press keys on the console: in a call, baresip sends each as RFC 4733 events.

        Each key is held ``hold`` seconds, then released (the release ends the event).
        """
        if self.cons_port is None:
            raise ClientError("baresip was started without call control")
        if not re.fullmatch(r"[0-9*#]+", digits):
            raise ValueError(digits)
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, remote_addr=(HOST, self.cons_port)
        )
        try:
            for digit in digits:
                transport.sendto(digit.encode())
                await asyncio.sleep(hold)
                transport.sendto(b"\x04")  # the console's key-release code
                await asyncio.sleep(gap)
        finally:
            transport.close()

    def call_events(self, kind: str | None = None) -> list[dict[str, Any]]:
        """The ctrl_tcp events so far (``CALL_INCOMING``, ``CALL_ESTABLISHED``, ...)."""
        return [e for e in self.events if kind is None or e.get("type") == kind]

    async def wait_event(
        self, kind: str, time_limit: float = 10.0, *, count: int = 1
    ) -> dict[str, Any]:
        """Wait until ``count`` events of type ``kind`` arrived; return the last of them."""
        deadline = time.monotonic() + time_limit
        while True:
            found = self.call_events(kind)
            if len(found) >= count:
                return found[count - 1]
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._reader is None or self._reader.done():
                seen = [e.get("type") for e in self.events]
                raise ClientError(
                    f"baresip {self.user}: no {kind} #{count} within {time_limit}s "
                    f"(events {seen})\n{_tail(self.output)}"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, 0.5)):
                    await self._changed.wait()

    def received_dtmf(self) -> str:
        """Digits baresip reported receiving as telephone-events (one per key, at its end)."""
        return "".join(
            m.group(1)
            for line in self.lines
            for m in re.finditer(r"received event: '(.)' \(end=1\)", line)
        )

    def recordings(self, kind: str = "dec") -> list[Path]:
        """sndfile's WAV files, oldest first: ``dec`` = heard from the far end, ``enc`` = sent."""
        directory = getattr(self, "directory", None)
        if directory is None:
            return []
        return sorted((Path(directory) / "recordings").glob(f"dump-*-{kind}.wav"))

    async def __aenter__(self) -> Baresip:
        try:
            return await self.start()
        except BaseException:
            await self.stop(time_limit=1)
            raise

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class CtrlConnection:
    """baresip's ctrl_tcp: netstring-framed JSON commands, responses and pushed events."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_event: Any,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._on_event = on_event
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._serial = 0
        self._task = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, port: int, on_event: Any, time_limit: float = 5.0) -> CtrlConnection:
        deadline = time.monotonic() + time_limit
        while True:
            try:
                reader, writer = await asyncio.open_connection(HOST, port)
            except OSError:
                if time.monotonic() > deadline:
                    raise ClientError(f"baresip ctrl_tcp did not accept on {port}") from None
                await asyncio.sleep(0.1)
            else:
                return cls(reader, writer, on_event)

    async def _read(self) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                length = int((await self._reader.readuntil(b":"))[:-1])
                payload = await self._reader.readexactly(length + 1)
                message = json.loads(payload[:-1])
                if message.get("event"):
                    self._on_event(message)
                    continue
                future = self._pending.pop(str(message.get("token")), None)
                if future is not None and not future.done():
                    future.set_result(message)

    async def command(self, name: str, params: str, time_limit: float) -> dict[str, Any]:
        self._serial += 1
        token = f"t{self._serial}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[token] = future
        body = json.dumps({"command": name, "params": params, "token": token}).encode()
        self._writer.write(str(len(body)).encode() + b":" + body + b",")
        await self._writer.drain()
        try:
            async with asyncio.timeout(time_limit):
                return await future
        except TimeoutError:
            raise ClientError(f"baresip did not answer /{name} within {time_limit}s") from None
        finally:
            self._pending.pop(token, None)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()


# -- sipp calls -----------------------------------------------------------------------------------


def write_sipp_callers(
    path: Path,
    callers: Sequence[tuple[str, str, str]],
    *,
    domain: str,
    order: str = "SEQUENTIAL",
) -> Path:
    """The -inf CSV of uac_call.xml: caller;domain;[authentication ...];dialled per line.

    ``callers`` holds (caller username, caller password, what to dial) triples.
    """
    lines = [order]
    for user, password, dialled in callers:
        for text in (user, password, dialled, domain):
            if any(ch in text for ch in "; ]\n"):
                raise ValueError(f"sipp CSV cannot carry {text!r}")
        lines.append(
            f"{user};{domain};[authentication username={user} password={password}];{dialled}"
        )
    path.write_text("\n".join(lines) + "\n")
    return path


def sipp_uas_argv(
    local_port: int,
    *,
    calls: int,
    time_limit: float,
    scenario: str = "uas_call",
    trace_messages: bool = False,
) -> list[str]:
    """sipp answering calls on ``local_port`` (uas_call.xml) until ``calls`` calls ended."""
    trace = ["-trace_msg", "-message_file", "messages.log"] if trace_messages else []
    return [
        "sipp", "-sf", str(SIPP_DIR / f"{scenario}.xml"),
        "-t", "u1", "-i", HOST, "-p", str(local_port), "-mi", HOST,
        "-m", str(calls), "-nostdin",
        "-timeout", f"{time_limit:g}s", "-timeout_error",
        "-trace_stat", "-stf", "stats.csv", "-fd", "1",
        "-trace_err", "-error_file", "errors.log",
        *trace,
    ]  # fmt: skip


def sipp_uac_call_argv(
    target_port: int,
    callers_csv: Path,
    *,
    calls: int,
    rate: float,
    hold_ms: int = 200,
    target_host: str = HOST,
    local_port: int | None = None,
    time_limit: float = 30.0,
    trace_messages: bool = False,
    auth_uri: str | None = None,
    limit: int | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """sipp placing ``calls`` calls at ``rate``/s (uac_call.xml), each held ``hold_ms`` ms.

    ``auth_uri`` is the dialled ``user@domain``: sipp puts ``sip:`` + it into the digest ``uri``
    (without it sipp uses its remote address, which a server that checks the uri against the
    Request-URI, as ours does, refuses); so one sipp process dials one Request-URI. ``limit``
    caps the calls in progress (``-l``): 1 keeps a single callee device from ever being busy.
    """
    if not target_host.startswith("127."):
        raise ValueError("loopback targets only")
    argv = [
        "sipp", f"{target_host}:{target_port}",
        "-sf", str(SIPP_DIR / "uac_call.xml"),
        "-inf", str(callers_csv),
        "-t", "u1", "-i", HOST, "-mi", HOST,
        "-p", str(local_port or free_port(digits=5)),
        "-m", str(calls), "-r", f"{rate:g}", "-d", str(hold_ms),
        "-nostdin", "-default_behaviors", "abortunexp",
        "-timeout", f"{time_limit:g}s", "-timeout_error",
        "-recv_timeout", "10s",
        "-trace_stat", "-stf", "stats.csv", "-fd", "1",
        "-trace_rtt", "-rtt_freq", "1",
        "-trace_err", "-error_file", "errors.log",
    ]  # fmt: skip
    if auth_uri is not None:
        argv += ["-auth_uri", auth_uri]
    if limit is not None:
        argv += ["-l", str(limit)]
    if trace_messages:
        argv += ["-trace_msg", "-message_file", "messages.log"]
    return argv + list(extra)


# -- peers driven line by line (pjsua2, linphonec) ----------------------------------------------


class LineClient:
    """A client process read line by line and commanded through its standard input.

    ``wait_for`` finds a line matching a pattern (from line ``start`` on); ``send`` writes one
    command; ``stop`` sends ``quit`` (the clients unregister on it), then kills the process group
    if it has not exited in time. Used as ``async with``.
    """

    name = "client"

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    def argv(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def prepare(self) -> None:
        """Write configuration files before the process starts."""

    async def start(self) -> LineClient:
        self.prepare()
        self._process = await asyncio.create_subprocess_exec(
            *self.argv(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=self.env(),
            start_new_session=True,
        )
        self._reader = asyncio.create_task(self._read(self._process))
        return self

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        while raw := await process.stdout.readline():
            self.lines.append(_ANSI.sub("", raw.decode(errors="replace")).rstrip("\r\n"))
            self._changed.set()
        self._changed.set()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    async def send(self, command: str) -> None:
        process = self._process
        if process is None or process.stdin is None or process.returncode is not None:
            raise ClientError(f"{self.name} is not running\n{_tail(self.output)}")
        process.stdin.write(command.encode() + b"\n")
        with contextlib.suppress(ConnectionError):
            await process.stdin.drain()

    async def wait_for(
        self, pattern: str, time_limit: float = 10.0, *, start: int = 0
    ) -> re.Match[str]:
        """The first output line (from line ``start`` on) matching ``pattern``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + time_limit
        seen = start
        while True:
            for line in self.lines[seen:]:
                if match := regex.search(line):
                    return match
            seen = max(seen, len(self.lines))
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._reader is None or self._reader.done():
                raise ClientError(
                    f"{self.name} did not print {pattern!r} within {time_limit}s\n"
                    f"{_tail(self.output)}"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, 0.5)):
                    await self._changed.wait()

    async def stop(self, time_limit: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is not None:
            if process.returncode is None and process.stdin is not None:
                with contextlib.suppress(ConnectionError):
                    process.stdin.write(b"quit\n")
                    await process.stdin.drain()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(time_limit):
                        await process.wait()
            await _kill_group(process)
        if self._reader is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                async with asyncio.timeout(5):
                    await self._reader
            self._reader = None

    async def __aenter__(self) -> LineClient:
        try:
            return await self.start()
        except BaseException:
            await self.stop(time_limit=1)
            raise

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def pjsua2_python(repo: Path) -> Path | None:
    """The interpreter of the pjsua2 environment ``scripts/setup`` builds, if it is there."""
    python = repo / ".venv-pjsua2" / "bin" / "python"
    return python if python.exists() else None


class Pjsua2Phone(LineClient):
    """PJSIP's pjsua2 as a phone: ``tests/interop/pjsua_peer.py`` in the pjsua2 environment.

    Registers ``user`` through the PBX (as outbound proxy) on PJSIP's defaults; in a call it plays
    ``tone`` and records the far end to ``record``.
    """

    name = "pjsua2"

    def __init__(
        self,
        python: Path,
        user: str,
        password: str,
        pbx_port: int,
        *,
        domain: str,
        tone: Path | None = None,
        record: Path | None = None,
        auto_answer: bool = False,
    ) -> None:
        super().__init__()
        self.python = python
        self.user = user
        self.password = password
        self.pbx_port = pbx_port
        self.domain = domain
        self.tone = tone
        self.record = record
        self.auto_answer = auto_answer

    def argv(self) -> list[str]:
        argv = [
            str(self.python), str(Path(__file__).with_name("pjsua_peer.py")),
            "--user", self.user, "--password", self.password, "--domain", self.domain,
            "--proxy", f"{HOST}:{self.pbx_port}", "--host", HOST,
            "--port", str(free_port(digits=5)), "--rtp-port", str(free_port(digits=5)),
            "--log-level", "3",
        ]  # fmt: skip
        if self.tone is not None:
            argv += ["--tone", str(self.tone)]
        if self.record is not None:
            argv += ["--record", str(self.record)]
        if self.auto_answer:
            argv.append("--auto-answer")
        return argv

    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONUNBUFFERED": "1"}

    async def wait_registered(self, time_limit: float = 10.0) -> bool:
        """Whether the first registration result is a success."""
        code = int((await self.wait_for(r"^registered (\d{3}) ", time_limit)).group(1))
        return 200 <= code < 300

    async def dial(self, uri: str) -> None:
        if not re.fullmatch(r"sips?:[^\s<>\"]+", uri):
            raise ValueError(uri)
        await self.send(f"call {uri}")

    async def hangup(self) -> None:
        await self.send("hangup")


class LinphonePhone(LineClient):
    """Linphone's console client ``linphonec`` (Debian ``linphone-cli``) as a phone.

    Its account is the usual ``linphonerc`` proxy section (the PBX as registrar and outbound
    route); audio comes from and goes to WAV files (``soundcard use files``, ``play``,
    ``record``), so no sound card is needed. ``auto_answer`` is linphonec's ``-a``.
    """

    name = "linphonec"

    def __init__(
        self,
        user: str,
        password: str,
        pbx_port: int,
        *,
        domain: str,
        workdir: Path,
        tone: Path | None = None,
        record: Path | None = None,
        auto_answer: bool = False,
    ) -> None:
        super().__init__()
        for text in (user, password, domain):
            if any(ch in text for ch in "\n<>;= "):
                raise ValueError(f"linphonerc cannot carry {text!r}")
        self.user = user
        self.password = password
        self.pbx_port = pbx_port
        self.domain = domain
        self.workdir = workdir
        self.tone = tone
        self.record = record
        self.auto_answer = auto_answer

    @staticmethod
    def missing() -> str | None:
        return (
            None if shutil.which("linphonec") else "linphonec (Debian linphone-cli) not installed"
        )

    def prepare(self) -> None:
        # linphonec keeps its call history in $HOME/.local/share/linphone and starts no SIP
        # stack at all when it cannot open that database.
        (self.workdir / ".local" / "share" / "linphone").mkdir(parents=True, exist_ok=True)
        pbx = f"sip:{HOST}:{self.pbx_port};transport=udp"
        (self.workdir / "linphonerc").write_text(
            "[sip]\n"
            f"sip_port={free_port(digits=5)}\n"
            "sip_tcp_port=0\n"
            "sip_tls_port=0\n"
            "default_proxy=0\n"
            "[rtp]\n"
            f"audio_rtp_port={free_port(digits=5)}\n"
            "[video]\n"
            "enabled=0\n"
            "capture=0\n"
            "display=0\n"
            "automatically_initiate=0\n"
            "automatically_accept=0\n"
            "[proxy_0]\n"
            f"reg_proxy=<{pbx}>\n"
            f"reg_route=<{pbx};lr>\n"
            f"reg_identity=sip:{self.user}@{self.domain}\n"
            "reg_expires=3600\n"
            "reg_sendregister=1\n"
            "[auth_info_0]\n"
            f"username={self.user}\n"
            f"passwd={self.password}\n"
            f"domain={self.domain}\n"
        )

    def argv(self) -> list[str]:
        argv = ["linphonec", "-c", str(self.workdir / "linphonerc")]
        return [*argv, "-a"] if self.auto_answer else argv

    def env(self) -> dict[str, str]:
        return {**os.environ, "HOME": str(self.workdir)}

    async def start(self) -> LinphonePhone:
        await super().start()
        await self.send("soundcard use files")
        if self.tone is not None:
            await self.send(f"play {self.tone}")
        if self.record is not None:
            await self.send(f"record {self.record}")
        return self

    async def wait_registered(self, time_limit: float = 10.0) -> bool:
        """Poll ``status register`` until linphonec says it is registered (or time is up)."""
        deadline = time.monotonic() + time_limit
        while True:
            start = len(self.lines)
            await self.send("status register")
            # "registered, identity=... duration=..." once registered, else "registered=-1"
            # (trying or refused) or "registered=0" (not asked to register).
            match = await self.wait_for(
                r"^(?:linphonec> )?registered(?:=(-?\d+)|, )", 5, start=start
            )
            if match.group(1) is None:
                return True
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.3)

    async def dial(self, uri: str) -> None:
        if not re.fullmatch(r"sips?:[^\s<>\"]+", uri):
            raise ValueError(uri)
        await self.send(f"call {uri}")

    async def hangup(self) -> None:
        await self.send("terminate")


LinePhone = Pjsua2Phone | LinphonePhone
