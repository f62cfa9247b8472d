"""A throw-away Kamailio registrar with digest authentication, for reference and client checks.

It writes a minimal ``kamailio.cfg`` into a private temporary directory and runs
``kamailio -DD -E -f CFG -P PIDFILE`` in its own process group: no database (passwords come
from an in-memory htable filled by the configuration itself, or one password for every user),
registrar and usrloc in memory, UDP (and TCP when asked) on a loopback address only, logging to
stderr (captured into ``kamailio.log`` in the temporary directory). It never touches the system
service, its configuration or its runtime directory.

Used by ``bench/register`` (the reference the benchmark compares against) and by the interop
tests (to check that the SIP client helpers and sipp scenarios work against an independent
registrar before blaming ours). Standard library only.

    with Kamailio(users={"201": "desk-secret"}) as kam:
        ...  # kam.host, kam.port
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

__all__ = ["Kamailio", "KamailioError", "find_module_path", "free_port", "kamailio_binary"]

MODULE_PATH_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/kamailio/modules",
    "/usr/lib/aarch64-linux-gnu/kamailio/modules",
    "/usr/lib/kamailio/modules",
    "/usr/lib64/kamailio/modules",
    "/usr/local/lib64/kamailio/modules",
    "/usr/local/lib/kamailio/modules",
)


class KamailioError(RuntimeError):
    """Kamailio is missing, would not start, or did not answer in time."""


def kamailio_binary() -> str | None:
    """The kamailio executable (Debian puts it in /usr/sbin, often not on a user's PATH)."""
    found = shutil.which("kamailio")
    if found:
        return found
    for candidate in ("/usr/sbin/kamailio", "/usr/local/sbin/kamailio"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def find_module_path() -> str:
    """The directory holding registrar.so and friends."""
    candidates = [*MODULE_PATH_CANDIDATES, *sorted(glob.glob("/usr/lib/*/kamailio/modules"))]
    for candidate in candidates:
        if os.path.isfile(os.path.join(candidate, "registrar.so")):
            return candidate
    raise KamailioError(
        "kamailio modules not found (looked for registrar.so in " + ", ".join(candidates) + ")"
    )


def free_port(
    host: str = "127.0.0.1", *, low: int = 2000, high: int = 9999, tcp: bool = True
) -> int:
    """A port free for UDP (and TCP) on ``host``, in [low, high].

    Four-digit by default: sipsak truncates five-digit ports in the Request-URI.
    """
    for _ in range(500):
        port = low + secrets.randbelow(high - low + 1)
        socks: list[socket.socket] = []
        try:
            kinds = (socket.SOCK_DGRAM, socket.SOCK_STREAM) if tcp else (socket.SOCK_DGRAM,)
            for kind in kinds:
                sock = socket.socket(socket.AF_INET, kind)
                socks.append(sock)
                sock.bind((host, port))
        except OSError:
            continue
        else:
            return port
        finally:
            for sock in socks:
                sock.close()
    raise KamailioError(f"no free port in {low}-{high} on {host}")


def _quote(text: str) -> str:
    if any(ch in text for ch in '"\\\r\n'):
        raise ValueError(f"unsupported character in {text!r}")
    return text


@dataclass
class Kamailio:
    """One Kamailio registrar. ``start()``/``stop()`` or use it as a context manager."""

    users: Mapping[str, str] = field(default_factory=dict)  # username -> password
    default_password: str | None = None  # for any username not in ``users``; None = refuse them
    host: str = "127.0.0.1"
    port: int = 0  # 0 = pick a free four-digit port
    tcp: bool = False
    realm: str = "home.arpa"
    children: int = 2  # UDP worker processes
    min_expires: int = 10
    max_expires: int = 3600
    default_expires: int = 3600
    shm_mb: int = 256
    pkg_mb: int = 16
    debug: int = 1  # kamailio log level: -1 alert .. 1 notice .. 3 debug
    log_registrations: bool = True  # one log line per REGISTER outcome (off for benchmarks)
    startup_timeout: float = 10.0

    workdir: Path | None = field(default=None, init=False)
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _tmp: tempfile.TemporaryDirectory[str] | None = field(default=None, init=False, repr=False)
    _log_file: object | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.host.startswith("127."):
            raise ValueError("Kamailio here listens on loopback only")

    # -- configuration ------------------------------------------------------------------

    def config_text(self) -> str:
        """The kamailio.cfg for this instance."""
        mpath = find_module_path()
        listen = [f"listen=udp:{self.host}:{self.port}"]
        if self.tcp:
            listen.append(f"listen=tcp:{self.host}:{self.port}")
        init_lines = "\n".join(
            f'    $sht(users=>{_quote(user)}) = "{_quote(password)}";'
            for user, password in self.users.items()
        )
        if self.default_password is None:
            fallback = "        $var(known) = 0;  # no such user: challenge forever\n"
        else:
            fallback = f'        $var(pw) = "{_quote(self.default_password)}";\n'
        log_ok = (
            '        xlog("L_NOTICE", "REGISTER $fU from $si:$sp accepted ($hdr(Expires))\\n");\n'
            if self.log_registrations
            else ""
        )
        log_reject = (
            '        if (is_present_hf("Authorization")) {\n'
            '            xlog("L_NOTICE", "REGISTER $fU from $si:$sp rejected: '
            'bad credentials\\n");\n'
            "        }\n"
            if self.log_registrations
            else ""
        )
        return f"""#!KAMAILIO
# Written by bench/_kamailio.py for one run; not the system configuration.
debug={self.debug}
log_stderror=yes
fork=yes
children={self.children}
{chr(10).join(listen)}
{"" if self.tcp else "disable_tcp=yes"}
disable_sctp=yes
enable_tls=no
auto_aliases=no
dns=no
rev_dns=no
use_dns_cache=no
mpath="{mpath}"
alias="{self.realm}"

loadmodule "kex.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "htable.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "auth.so"

modparam("usrloc", "db_mode", 0)
modparam("registrar", "min_expires", {self.min_expires})
modparam("registrar", "max_expires", {self.max_expires})
modparam("registrar", "default_expires", {self.default_expires})
modparam("auth", "nonce_expire", 300)
modparam("htable", "htable", "users=>size=8;autoexpire=0;")

event_route[htable:mod-init] {{
    $var(x) = 0;
{init_lines}
}}

request_route {{
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    if (is_method("OPTIONS")) {{
        sl_send_reply("200", "OK");
        exit;
    }}
    if (!is_method("REGISTER")) {{
        sl_send_reply("405", "Method Not Allowed");
        exit;
    }}
    $var(known) = 1;
    if ($sht(users=>$fU) != $null) {{
        $var(pw) = $sht(users=>$fU);
    }} else {{
{fallback}    }}
    if ($var(known) == 0 || !pv_auth_check("{self.realm}", "$var(pw)", "0", "1")) {{
{log_reject}        auth_challenge("{self.realm}", "1");
        exit;
    }}
    consume_credentials();
    if (!save("location")) {{
        sl_reply_error();
        exit;
    }}
{log_ok}    exit;
}}
"""

    # -- life cycle --------------------------------------------------------------------

    def start(self) -> Kamailio:
        binary = kamailio_binary()
        if binary is None:
            raise KamailioError("kamailio not installed (Debian package: kamailio)")
        if self.port == 0:
            self.port = free_port(self.host, tcp=self.tcp)
        self._tmp = tempfile.TemporaryDirectory(prefix="callflip-kamailio-")
        self.workdir = Path(self._tmp.name)
        cfg = self.workdir / "kamailio.cfg"
        cfg.write_text(self.config_text())
        rundir = self.workdir / "run"
        rundir.mkdir()
        log_path = self.workdir / "kamailio.log"
        self._log_file = log_path.open("wb")
        command = [
            binary, "-DD", "-E", "-f", str(cfg), "-P", str(self.workdir / "kamailio.pid"),
            "-Y", str(rundir), "-w", str(self.workdir),
            "-m", str(self.shm_mb), "-M", str(self.pkg_mb),
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,  # type: ignore[arg-type]
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() reaps every child
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.startup_timeout
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((self.host, 0))
            sock.settimeout(0.2)
            local_port = sock.getsockname()[1]
            attempt = 0
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise KamailioError(
                        f"kamailio exited with {self.process.returncode}:\n"
                        + self.log_text()[-3000:]
                    )
                attempt += 1
                probe = (
                    f"OPTIONS sip:{self.host}:{self.port} SIP/2.0\r\n"
                    f"Via: SIP/2.0/UDP {self.host}:{local_port}"
                    f";branch=z9hG4bK-probe{attempt};rport\r\n"
                    "Max-Forwards: 70\r\n"
                    f"From: <sip:probe@{self.host}>;tag=probe\r\n"
                    f"To: <sip:{self.host}:{self.port}>\r\n"
                    f"Call-ID: probe-{attempt}@{self.host}\r\n"
                    f"CSeq: {attempt} OPTIONS\r\n"
                    "Content-Length: 0\r\n\r\n"
                ).encode()
                sock.sendto(probe, (self.host, self.port))
                try:
                    data = sock.recv(4096)
                except (TimeoutError, ConnectionRefusedError):
                    time.sleep(0.05)
                    continue
                if data.startswith(b"SIP/2.0 200"):
                    return
        raise KamailioError(
            f"kamailio did not answer OPTIONS on {self.host}:{self.port}:\n"
            + self.log_text()[-3000:]
        )

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL it after 5 s, reap, and remove the temp dir."""
        process, self.process = self.process, None
        if process is not None:
            for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(process.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    process.wait(timeout=wait)
                    # children may outlive the main process for a moment
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    break
                except subprocess.TimeoutExpired:
                    continue
            if process.poll() is None:
                process.wait(timeout=5)
        if self._log_file is not None:
            self._log_file.close()  # type: ignore[attr-defined]
            self._log_file = None
        self._final_log = self.log_text()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def log_text(self) -> str:
        """What kamailio wrote to stderr so far (kept after stop())."""
        if self.workdir is not None and (self.workdir / "kamailio.log").exists():
            return (self.workdir / "kamailio.log").read_text(errors="replace")
        return getattr(self, "_final_log", "")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> Kamailio:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


if __name__ == "__main__":  # manual check: python bench/_kamailio.py
    with Kamailio(users={"201": "desk-secret"}, default_password="bench") as kam:
        print(f"kamailio registrar on udp:{kam.host}:{kam.port}; Ctrl-C to stop")
        try:
            while kam.running:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        print(kam.log_text()[-2000:])
