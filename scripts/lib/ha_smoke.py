"""Smoke run of the real Home Assistant with callflip, used by ``scripts/ha-current --smoke``.

Runs with the Python of the current-HA environment (Home Assistant installed), not the project's
.venv. Three steps, each a subcommand, because the shell script installs requirements between
them with the network that the smoke run itself must not have:

- ``prepare``: make the copied configuration safe and complete (loopback HTTP, no
  ``default_config``, a callflip config entry if nothing else sets callflip up), then print the
  requirements of the integrations that will load and are not installed yet.
- ``run``: start ``hass`` with ``--skip-pip``, wait until it answers on HTTP and has logged that it
  initialised, stop it, and judge its log.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from homeassistant import bootstrap, components
from packaging.requirements import InvalidRequirement, Requirement

DOMAIN = "callflip"
OWN_DISTRIBUTION = "callflip-sip-core"
RECORD_START = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)? (DEBUG|INFO|WARNING|ERROR|CRITICAL) "
)
# Home Assistant says this of every custom integration; it is not a fault of callflip.
EXPECTED_WARNINGS = (
    re.compile(r"We found a custom integration callflip which has not been tested"),
)
SETUP_DONE = re.compile(r"Setup of domain callflip took")
TOP_LEVEL_KEY = re.compile(r"^([a-z_][a-z0-9_]*)\s*:", re.MULTILINE)


@dataclass(slots=True)
class LogRecord:
    """One log record: its header line and the lines that continue it (tracebacks)."""

    level: str
    text: str
    # The text with this environment's own paths (venv, config copy) taken out, so that a path
    # which happens to contain "callflip" does not make an unrelated record look like ours.
    masked: str = ""

    @property
    def about_callflip(self) -> bool:
        lowered = self.masked.lower()
        return DOMAIN in lowered or "sip_core" in lowered

    @property
    def is_fault(self) -> bool:
        """Whether this record shows a problem of callflip that the smoke run must fail on."""
        if not self.about_callflip:
            return False
        if any(p.search(self.text) for p in EXPECTED_WARNINGS):
            return False
        lowered = self.text.lower()
        return (
            self.level in {"WARNING", "ERROR", "CRITICAL"}
            or "traceback" in lowered
            or "deprecat" in lowered
        )


def parse_log(text: str, own_paths: tuple[str, ...] = ()) -> list[LogRecord]:
    records = _split_records(text)
    for record in records:
        masked = record.text
        for path in sorted(own_paths, key=len, reverse=True):
            masked = masked.replace(path, "<env>")
        record.masked = masked
    return records


def _split_records(text: str) -> list[LogRecord]:
    records: list[LogRecord] = []
    for line in text.splitlines():
        match = RECORD_START.match(line)
        if match:
            records.append(LogRecord(match.group(1), line))
        elif records:
            records[-1].text += "\n" + line
        elif line.strip():
            # Output before the first record (a crash at start-up): judge it as an error.
            records.append(LogRecord("ERROR", line))
    return records


def top_level_domains(configuration: str) -> set[str]:
    return set(TOP_LEVEL_KEY.findall(configuration))


def prepare(config_dir: Path, port: int) -> list[str]:
    """Adjust the copied configuration; return the requirements still to install."""
    conf_file = config_dir / "configuration.yaml"
    conf = conf_file.read_text() if conf_file.exists() else ""
    # default_config pulls in discovery (zeroconf, ssdp, dhcp, bluetooth) and cloud integrations
    # that reach beyond this machine and need many packages; the smoke run is about callflip.
    conf = re.sub(
        r"^default_config:.*$", "# default_config: (left out by the smoke run)", conf, flags=re.M
    )
    if "http" not in top_level_domains(conf):
        conf += f"\nhttp:\n  server_host: 127.0.0.1\n  server_port: {port}\n"
    if "homeassistant" not in top_level_domains(conf):
        # A fixed location: otherwise nothing asks the network where this machine is.
        conf += (
            "\nhomeassistant:\n  name: callflip smoke\n  latitude: 52.37\n  longitude: 4.89\n"
            "  elevation: 0\n  unit_system: metric\n  time_zone: UTC\n  country: NL\n"
            "  currency: EUR\n"
        )
    conf_file.write_text(conf)
    if DOMAIN not in top_level_domains(conf):
        ensure_config_entry(config_dir)
    return missing_requirements(config_dir, top_level_domains(conf))


def ensure_config_entry(config_dir: Path) -> None:
    """Store one callflip config entry unless the configuration already has one.

    Written at storage minor version 1 with only the oldest fields: Home Assistant migrates it
    to its current layout on load, so this does not depend on the Home Assistant version.
    """
    path = config_dir / ".storage" / "core.config_entries"
    if path.exists():
        stored = json.loads(path.read_text())
        if any(e.get("domain") == DOMAIN for e in stored["data"]["entries"]):
            return
    else:
        stored = {"version": 1, "minor_version": 1, "key": "core.config_entries"}
        stored["data"] = {"entries": []}
    stored["data"]["entries"].append(
        {
            "entry_id": uuid.uuid4().hex,
            "version": 1,
            "domain": DOMAIN,
            "title": "callflip",
            "data": {},
            "options": {},
            "source": "user",
            "unique_id": None,
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(stored, indent=2))


def missing_requirements(config_dir: Path, configured: set[str]) -> list[str]:
    """Requirements of the integrations Home Assistant will set up that are not installed."""
    manifests: dict[str, dict[str, object]] = {}
    core_dir = Path(components.__file__).parent
    custom_dir = config_dir / "custom_components"

    def manifest(domain: str) -> dict[str, object]:
        if domain not in manifests:
            for base in (custom_dir, core_dir):
                file = base / domain / "manifest.json"
                if file.exists():
                    manifests[domain] = json.loads(file.read_text())
                    break
            else:
                manifests[domain] = {}
        return manifests[domain]

    wanted: set[str] = set(configured) | {DOMAIN}
    for name in ("CORE_INTEGRATIONS", "LOGGING_AND_HTTP_DEPS", "DEFAULT_INTEGRATIONS"):
        wanted |= set(getattr(bootstrap, name, set()))
    todo = list(wanted)
    while todo:
        info = manifest(todo.pop())
        for key in ("dependencies", "after_dependencies"):
            for dep in info.get(key, []) or []:  # type: ignore[attr-defined]
                if dep not in wanted:
                    wanted.add(dep)
                    todo.append(dep)
    missing: set[str] = set()
    for domain in sorted(wanted):
        for text in manifest(domain).get("requirements", []) or []:  # type: ignore[attr-defined]
            try:
                req = Requirement(text)
            except InvalidRequirement:
                continue
            if domain == DOMAIN and req.name == OWN_DISTRIBUTION:
                # The smoke run imports sip_core from the working tree (PYTHONPATH); how
                # Home Assistant installs the released distribution is the HACS install test's.
                continue
            try:
                installed = importlib.metadata.version(req.name)
            except importlib.metadata.PackageNotFoundError:
                missing.add(text)
                continue
            if req.specifier and not req.specifier.contains(installed, prereleases=True):
                missing.add(text)
    return sorted(missing)


def wait_until_up(proc: subprocess.Popen[bytes], port: int, log: Path, deadline: float) -> str:
    """Wait for HTTP and the 'initialized' log line; return '' when up, else why not."""
    http_up = False
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"hass exited early with code {proc.returncode}"
        if not http_up:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/", timeout=2)
                http_up = True
            except urllib.error.HTTPError:
                http_up = True  # 401 without a token: the server is answering
            except OSError:
                pass
        if http_up and log.exists() and "Home Assistant initialized in" in log.read_text():
            return ""
        time.sleep(1)
    return "hass did not come up in time"


def http_port(config_dir: Path) -> int:
    """The port of the configuration's http block (Home Assistant's default when it names none)."""
    conf = (config_dir / "configuration.yaml").read_text()
    match = re.search(r"^\s+server_port:\s*(\d+)", conf, re.MULTILINE)
    return int(match.group(1)) if match else 8123


def run(config_dir: Path, timeout: float) -> int:
    port = http_port(config_dir)
    log = config_dir / "home-assistant.log"
    console = config_dir / "console.log"
    cmd = [sys.executable, "-m", "homeassistant", "--config", str(config_dir), "--skip-pip"]
    cmd += ["--verbose", "--log-file", str(log)]
    started = time.monotonic()
    with console.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            why_not = wait_until_up(proc, port, log, started + timeout)
            up_after = time.monotonic() - started
            time.sleep(2)  # let late set-up messages reach the log
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
    text = log.read_text() if log.exists() else ""
    own_paths = (sys.prefix, sys.base_prefix, str(config_dir.resolve()), str(config_dir))
    own_paths += tuple(p for p in (os.environ.get("CALLFLIP_CACHE_DIR"),) if p)
    # With --verbose the console repeats the log; it matters for what comes before logging starts.
    records = parse_log(text, own_paths)
    seen = {r.text for r in records}
    records += [
        r for r in parse_log(console.read_text(errors="replace"), own_paths) if r.text not in seen
    ]
    faults = [r for r in records if r.is_fault]
    others = [r for r in records if r.level in {"ERROR", "CRITICAL"} and not r.about_callflip]
    version = importlib.metadata.version("homeassistant")
    print(f"ha-current smoke: homeassistant {version}, config {config_dir}")
    if why_not:
        print(f"ha-current smoke: FAILED: {why_not} (after {time.monotonic() - started:.0f} s)")
        for line in text.splitlines()[-30:]:
            print("  " + line)
        return 1
    print(f"ha-current smoke: hass up after {up_after:.1f} s, stopped")
    for record in others:
        print("  (not about callflip, ignored) " + record.text.splitlines()[0])
    if not SETUP_DONE.search(text):
        print("ha-current smoke: FAILED: the log does not show callflip being set up")
        faults.extend(r for r in records if r.about_callflip)
    if faults:
        print(f"ha-current smoke: FAILED: {len(faults)} log record(s) about callflip:")
        for record in faults:
            print("  " + record.text.replace("\n", "\n  "))
        return 1
    print(
        "ha-current smoke: callflip set up; no errors, tracebacks or deprecation warnings about it"
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("step", choices=["prepare", "run"])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--timeout", type=float, default=240)
    args = parser.parse_args()
    if args.step == "prepare":
        for requirement in prepare(args.config, args.port):
            print(requirement)
        return 0
    return run(args.config, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
