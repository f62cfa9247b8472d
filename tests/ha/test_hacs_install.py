"""The HACS install path, end to end, with the real ``hass`` and its own package installer.

HACS copies only ``custom_components/callflip`` into the configuration directory; Home Assistant
then installs the manifest's requirement (``callflip-sip-core==<version>``) itself when the
integration is first loaded. This test does what a user's installation does, with nothing of the
repository on ``sys.path``:

1. builds the ``sip_core`` wheel from a copy of the sources (the repository stays untouched);
2. makes a Python environment holding Home Assistant and its dependencies but not our package
   (a venv whose site-packages links every entry of Home Assistant's environment except ours);
3. makes a fresh configuration directory holding only a copy of ``custom_components/callflip``;
4. starts ``python -m homeassistant`` WITHOUT ``--skip-pip``; the only source Home Assistant's
   installer (uv, or pip on older releases) may use is the folder with the wheel (index off);
5. onboards an owner through the HTTP API, gets a token, completes the config flow;
6. sends SIP OPTIONS to the PBX and expects 200, then stops ``hass`` and reads its log.

The interpreter whose Home Assistant runs is this test's own, or ``CALLFLIP_HASS_PYTHON`` (so a
run can test a newer Home Assistant than the one its test plugin pins).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from awesomeversion import AwesomeVersion
from homeassistant.core import HomeAssistant

REPO = Path(__file__).resolve().parents[2]
DISTRIBUTION = "callflip-sip-core"
# Entries of Home Assistant's site-packages that belong to this project (an editable install of
# the development environment, for one): left out of the environment hass runs in.
OUR_ENTRIES = ("callflip", "__editable__.callflip", "__editable___callflip", "sip_core")
# What the wheel build needs from the repository (pyproject names the readme and the licence;
# setup.py adds the optional compiled packet path).
BUILD_INPUTS = ("pyproject.toml", "setup.py", "README.md", "LICENSE", "sip_core")
STARTUP_TIMEOUT = 150.0


def quiet_port() -> int:
    """A port free on 127.0.0.1 (UDP and TCP) below the kernel's ephemeral range.

    hass needs a minute to start on a busy machine; an ephemeral port chosen now could be taken
    by any outgoing connection meanwhile, a port below that range only by an explicit bind.
    """
    low = 20000
    try:
        high = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0]) - 1
    except (OSError, ValueError, IndexError):
        high = 32767
    for _ in range(200):
        port = random.randint(low, max(low, high))
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
            socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp,
        ):
            try:
                udp.bind(("127.0.0.1", port))
                tcp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port on 127.0.0.1 below the ephemeral range")


def _version() -> str:
    with (REPO / "pyproject.toml").open("rb") as file:
        return str(tomllib.load(file)["project"]["version"])


@dataclass
class Hass:
    """A running ``hass`` of this test and where its pieces are."""

    process: subprocess.Popen[bytes]
    config: Path
    site_packages: Path
    http_port: int
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


def build_wheel(python: str, work: Path) -> Path:
    """Build the distribution from a copy of its sources; return the folder holding the wheel."""
    src = work / "src"
    src.mkdir()
    for name in BUILD_INPUTS:
        path = REPO / name
        if path.is_dir():
            # Not what an in-place build left here: the wheel builds its own extension.
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
        else:
            shutil.copy2(path, src / name)
    wheels = work / "wheels"
    subprocess.run(
        [python, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(src)],
        check=True,
        cwd=work,
        stdin=subprocess.DEVNULL,
        capture_output=True,
    )
    built = sorted(wheels.glob("callflip_sip_core-*.whl"))
    assert len(built) == 1
    # With a compiler the wheel carries the compiled packet path and is for this interpreter and
    # platform; without one it is the pure-Python wheel (the extension is optional).
    tag = built[0].name.removeprefix(f"callflip_sip_core-{_version()}-")
    interpreter = f"cp{sys.version_info[0]}{sys.version_info[1]}-"
    assert tag == "py3-none-any.whl" or tag.startswith(interpreter)
    return wheels


def _interpreter_facts(python: str) -> dict[str, str]:
    code = (
        "import json, sys, sysconfig; print(json.dumps({'base': sys._base_executable,"
        " 'purelib': sysconfig.get_path('purelib'), 'scripts': sysconfig.get_path('scripts'),"
        " 'version': f'{sys.version_info[0]}.{sys.version_info[1]}'}))"
    )
    out = subprocess.run(
        [python, "-c", code], check=True, capture_output=True, env=_clean_env(), cwd="/"
    )
    return dict(json.loads(out.stdout))


def make_environment(python: str, work: Path) -> tuple[Path, Path]:
    """A venv that sees Home Assistant's packages but not ours; return (its python, site)."""
    facts = _interpreter_facts(python)
    venv = work / "venv"
    subprocess.run(
        [facts["base"], "-m", "venv", "--without-pip", str(venv)],
        check=True,
        env=_clean_env(),
        capture_output=True,
    )
    site = venv / "lib" / f"python{facts['version']}" / "site-packages"
    assert site.is_dir(), site
    for entry in Path(facts["purelib"]).iterdir():
        name = entry.name.lower().replace("-", "_")
        if any(name.startswith(ours.replace("-", "_")) for ours in OUR_ENTRIES):
            continue
        if entry.name.endswith(".pth") and "cov" in entry.name:
            continue  # the coverage hook of the test environment
        (site / entry.name).symlink_to(entry)
    # Home Assistant runs the uv binary that sits next to its interpreter.
    uv = Path(facts["scripts"]) / "uv"
    if uv.exists():
        (venv / "bin" / "uv").symlink_to(uv)
    return venv / "bin" / "python", site


def _clean_env() -> dict[str, str]:
    """The environment without anything that would put the repository on sys.path."""
    return {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")
        and not key.startswith(("PYTEST", "COV_CORE"))
    }


def pip_sources(python: str) -> dict[str, list[str]]:
    """The package sources pip is configured with here (files and PIP_* variables).

    Home Assistant's installer is uv, which does not read pip's configuration: a machine whose pip
    uses a mirror or a local index must hand the same sources to uv for the other packages
    Home Assistant installs on first start.
    """
    out = subprocess.run(
        [python, "-m", "pip", "config", "list"],
        check=False,
        capture_output=True,
        text=True,
        env=_clean_env(),
        cwd="/",
    ).stdout
    sources: dict[str, list[str]] = {"index-url": [], "extra-index-url": [], "find-links": []}
    for line in out.splitlines():
        key, _, value = line.partition("=")
        name = key.rsplit(".", 1)[-1]
        if name in sources:
            for item in value.strip().strip("'\"").split():
                if item not in sources[name]:
                    sources[name].append(item)
    return sources


def installer_env(
    venv_python: Path, wheels: Path, work: Path, sources: dict[str, list[str]]
) -> dict[str, str]:
    """What hass runs with: the wheel folder first, then the index this machine's pip uses.

    Our distribution is on no index: Home Assistant can only find it in the wheel folder (the
    test then checks that the installed files are the wheel's, byte for byte).
    """
    env = _clean_env()
    for key in list(env):
        if key.startswith(("UV_", "PIP_INDEX", "PIP_EXTRA_INDEX", "PIP_FIND_LINKS")):
            del env[key]
    find_links = [str(wheels), *sources["find-links"]]
    env.update(
        {
            "VIRTUAL_ENV": str(venv_python.parent.parent),
            # uv (Home Assistant 2024.x and later)
            "UV_NO_CONFIG": "1",
            "UV_FIND_LINKS": ",".join(find_links),
            "UV_CACHE_DIR": str(work / "uv-cache"),
            # pip (older releases)
            "PIP_FIND_LINKS": " ".join(find_links),
        }
    )
    if sources["index-url"]:
        env["UV_INDEX_URL"] = env["PIP_INDEX_URL"] = sources["index-url"][0]
    if sources["extra-index-url"]:
        env["UV_EXTRA_INDEX_URL"] = env["PIP_EXTRA_INDEX_URL"] = " ".join(
            sources["extra-index-url"]
        )
    return env


def make_config(work: Path, http_port: int) -> Path:
    """A fresh configuration directory: a minimal configuration.yaml and a copy of the folder."""
    config = work / "config"
    (config / "custom_components").mkdir(parents=True)
    shutil.copytree(
        REPO / "custom_components" / "callflip",
        config / "custom_components" / "callflip",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    (config / "configuration.yaml").write_text(
        "homeassistant:\n"
        "  name: Install test\n"
        "  latitude: 52.37\n"
        "  longitude: 4.89\n"
        "  elevation: 0\n"
        "  unit_system: metric\n"
        "  time_zone: UTC\n"
        "  country: NL\n"
        "http:\n"
        "  server_host: 127.0.0.1\n"
        f"  server_port: {http_port}\n"
        "api:\n"
        "config:\n"
        "onboarding:\n"
        "logger:\n"
        "  default: warning\n"
        "  logs:\n"
        "    homeassistant.util.package: info\n"
        "    homeassistant.requirements: info\n",
        encoding="utf-8",
    )
    return config


def start_hass(python: Path, site: Path, config: Path, env: dict[str, str], http_port: int) -> Hass:
    log = config / "hass-stdout.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(python), "-m", "homeassistant", "--config", str(config), "--log-no-color"],
            cwd=config,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Hass(process, config, site, http_port, log)


def stop_hass(hass: Hass) -> None:
    if hass.process.poll() is None:
        os.killpg(hass.process.pid, signal.SIGTERM)
        try:
            hass.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(hass.process.pid, signal.SIGKILL)
            hass.process.wait(timeout=10)


def _request(
    hass: Hass,
    method: str,
    path: str,
    *,
    body: dict[str, Any] | None = None,
    form: dict[str, str] | None = None,
    token: str | None = None,
) -> tuple[int, Any]:
    headers = {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if form is not None:
        data = urllib.parse.urlencode(form).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(hass.base + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


def _get_bytes(hass: Hass, path: str, token: str) -> tuple[int, bytes]:
    request = urllib.request.Request(hass.base + path, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def wait_until_up(hass: Hass) -> None:
    """Wait for the HTTP API; fail early with the log if hass exits."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if hass.process.poll() is not None:
            pytest.fail(f"hass exited ({hass.process.returncode}):\n{_tail(hass)}")
        if "core failed to initialize" in _tail(hass):
            break
        try:
            status, _ = _request(hass, "GET", "/api/onboarding")
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
            continue
        if status == 200:
            return
        time.sleep(0.5)
        if "core failed to initialize" in _tail(hass):
            break
    pytest.fail(f"hass did not answer on {hass.base} within {STARTUP_TIMEOUT} s:\n{_tail(hass)}")


def _record(lines: str) -> dict[str, str]:
    """A RECORD file's hash of each file of the package (path -> sha256=...)."""
    rows = (line.split(",") for line in lines.splitlines() if line)
    return {row[0]: row[1] for row in rows if row[0].startswith("sip_core/")}


def same_files_as_wheel(wheels: Path, site: Path) -> bool:
    """Whether the installed package is exactly the wheel we built (hashes of every file)."""
    (wheel,) = wheels.glob("callflip_sip_core-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        (record,) = (name for name in archive.namelist() if name.endswith(".dist-info/RECORD"))
        built = _record(archive.read(record).decode())
    installed_records = list(site.glob("callflip_sip_core-*.dist-info/RECORD"))
    if len(installed_records) != 1:
        return False
    installed = _record(installed_records[0].read_text())
    return bool(built) and built == installed


def _tail(hass: Hass) -> str:
    text = hass.log.read_text(errors="replace") if hass.log.exists() else ""
    return "\n".join(text.splitlines()[-60:])


def onboard(hass: Hass) -> str:
    """Create the owner as the onboarding page does and return an access token."""
    client_id = f"{hass.base}/"
    status, answer = _request(
        hass,
        "POST",
        "/api/onboarding/users",
        body={
            "client_id": client_id,
            "name": "Owner",
            "username": "owner",
            "password": uuid.uuid4().hex,
            "language": "en",
        },
    )
    assert status == 200, answer
    status, tokens = _request(
        hass,
        "POST",
        "/auth/token",
        form={
            "grant_type": "authorization_code",
            "code": answer["auth_code"],
            "client_id": client_id,
        },
    )
    assert status == 200, tokens
    return str(tokens["access_token"])


def configure_callflip(hass: Hass, token: str) -> tuple[dict[str, Any], int]:
    """Run the config flow as the UI does: open it, submit the server form on loopback.

    Returns the flow's result and the SIP port. A port some other program took between choosing
    and submitting it gets the form's own "port in use" answer; another port is then tried.
    """
    status, form = _request(
        hass,
        "POST",
        "/api/config/config_entries/flow",
        body={"handler": "callflip", "show_advanced_options": False},
        token=token,
    )
    assert status == 200, f"{form}\n{_tail(hass)}"
    assert form["type"] == "form", form
    assert form["step_id"] == "user", form
    defaults = {
        field["name"]: (field.get("description") or {}).get("suggested_value")
        for field in form["data_schema"]
    }
    for _ in range(3):
        sip_port = quiet_port()
        status, result = _request(
            hass,
            "POST",
            f"/api/config/config_entries/flow/{form['flow_id']}",
            body={**defaults, "listen": "127.0.0.1", "port": sip_port},
            token=token,
        )
        assert status == 200, f"{result}\n{_tail(hass)}"
        if result.get("errors") != {"port": "port_in_use"}:
            break
    return dict(result), sip_port


def sip_options(port: int) -> str:
    """Send one OPTIONS over UDP and return the status line of the answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        local = sock.getsockname()[1]
        branch = "z9hG4bK" + uuid.uuid4().hex
        message = (
            f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch={branch};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:installcheck@127.0.0.1>;tag={uuid.uuid4().hex[:8]}\r\n"
            f"To: <sip:127.0.0.1:{port}>\r\n"
            f"Call-ID: {uuid.uuid4().hex}@127.0.0.1\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Accept: application/sdp\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
        sock.settimeout(0.5)
        for _ in range(10):  # the UDP retransmission a client does, roughly
            sock.sendto(message, ("127.0.0.1", port))
            try:
                data, _ = sock.recvfrom(65535)
            except TimeoutError:
                continue
            return data.split(b"\r\n", 1)[0].decode()
    return "no answer"


def run_install(python: str, work: Path) -> dict[str, Any]:
    """The whole path; returns what the test asserts on (hass is stopped in every case)."""
    wheels = build_wheel(python, work)
    venv_python, site = make_environment(python, work)
    http_port = quiet_port()
    config = make_config(work, http_port)
    env = installer_env(venv_python, wheels, work, pip_sources(python))
    hass = start_hass(venv_python, site, config, env, http_port)
    try:
        wait_until_up(hass)
        token = onboard(hass)
        result, sip_port = configure_callflip(hass, token)
        answer = sip_options(sip_port)
        _, entries = _request(hass, "GET", "/api/config/config_entries/entry", token=token)
        _, config_api = _request(hass, "GET", "/api/config", token=token)
        # Home Assistant 2026.3 and later serve a custom integration's own brand images.
        brand = _get_bytes(
            hass, "/api/brands/integration/callflip/icon.png?placeholder=no", token=token
        )
    finally:
        stop_hass(hass)
    installed = sorted(path.name for path in site.glob("callflip_sip_core-*.dist-info"))
    package = site / "sip_core"
    return {
        "result": result,
        "options_answer": answer,
        "entries": entries,
        "ha_version": config_api.get("version") if isinstance(config_api, dict) else None,
        "installed": installed,
        "package_is_copy": package.is_dir() and not package.is_symlink(),
        "same_files_as_wheel": same_files_as_wheel(wheels, site),
        "brand_icon": brand,
        "log": (config / "home-assistant.log").read_text(errors="replace")
        if (config / "home-assistant.log").exists()
        else hass.log.read_text(errors="replace"),
    }


@pytest.mark.timeout(300)
async def test_hacs_install_path(hass: HomeAssistant, tmp_path: Path) -> None:
    """A fresh Home Assistant installs the wheel from the manifest and runs the PBX."""
    python = os.environ.get("CALLFLIP_HASS_PYTHON") or sys.executable
    outcome = await hass.async_add_executor_job(run_install, python, tmp_path)
    log = outcome["log"]
    version = _version()

    assert outcome["result"]["type"] == "create_entry", outcome["result"]
    assert outcome["options_answer"] == "SIP/2.0 200 OK", log
    ours = [entry for entry in outcome["entries"] if entry["domain"] == "callflip"]
    assert [entry["state"] for entry in ours] == ["loaded"]
    # Home Assistant's installer put the wheel into the environment hass runs in.
    assert outcome["installed"] == [f"callflip_sip_core-{version}.dist-info"]
    assert outcome["package_is_copy"]
    assert outcome["same_files_as_wheel"]
    assert f"Attempting install of {DISTRIBUTION}=={version}" in log
    if AwesomeVersion(outcome["ha_version"]) >= AwesomeVersion("2026.3.0"):
        status, icon = outcome["brand_icon"]
        assert status == 200
        assert icon == (REPO / "custom_components" / "callflip" / "brand" / "icon.png").read_bytes()
    problems = [
        line
        for line in log.splitlines()
        if "callflip" in line.lower()
        and any(level in line for level in (" ERROR ", " CRITICAL ", "Traceback"))
    ]
    assert problems == []
