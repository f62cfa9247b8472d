"""Take the README's pictures from the real demo: Home Assistant, callflip, real phones, a flip.

``scripts/screenshots`` runs this with the project's Python. Every step is what a person would do:

1. Copy the demo configuration (develop_config) to a fresh folder with free ports on 127.0.0.1,
   start the real ``hass`` on it and complete onboarding through its HTTP API (an owner account,
   then the remaining steps), which also gives the access token the browser uses.
2. Register three demo phones with baresip (Alice's desk phone and mobile answer automatically),
   call Alice's desk phone from Bob's, and take pictures of the integration page and Alice's page
   while she talks.
3. Press "Flip to Alice's Mobile" (the button, through Home Assistant's API), wait for the mobile
   to take the call, and take pictures of the logbook and of the options flow.

The browser is headless Chromium driven over the DevTools protocol (aiohttp, which Home Assistant
already brings, speaks its WebSocket); it runs with a fresh profile and without any of its
background network traffic. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.interop.audio import write_tone  # noqa: E402
from tests.interop.clients import Baresip, ClientError  # noqa: E402

HOST = "127.0.0.1"
WIDTH, HEIGHT = 1280, 800
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
)
OWNER = {"name": "Demo Owner", "username": "demo", "password": "demo-screenshots-owner"}


def free_port() -> int:
    """A port free for UDP and TCP on 127.0.0.1, outside the demo's RTP range."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((HOST, 0))
            port = int(udp.getsockname()[1])
            if 40000 <= port <= 40999:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((HOST, port))
                except OSError:
                    continue
            return port


async def stop_process(process: asyncio.subprocess.Process, time_limit: float) -> None:
    """SIGTERM, then SIGKILL the process group if it does not exit in time."""
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    try:
        await asyncio.wait_for(process.wait(), time_limit)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()


def say(text: str) -> None:
    print(f"screenshots: {text}", flush=True)


# -- the demo Home Assistant ---------------------------------------------------------------------


def prepare_config(directory: Path, http_port: int, sip_port: int) -> None:
    """The demo configuration with this run's ports; callflip from this checkout.

    Onboarding is marked done except for the owner account: its other steps would set up
    integrations (weather, radio, text-to-speech) that reach for the network.
    """
    storage = directory / ".storage"
    storage.mkdir()
    (storage / "onboarding").write_text(
        json.dumps(
            {
                "version": 4,
                "minor_version": 1,
                "key": "onboarding",
                "data": {"done": ["analytics", "core_config", "integration"]},
            }
        )
    )
    source = ROOT / "develop_config"
    configuration = (source / "configuration.yaml").read_text()
    configuration = re.sub(r"server_port: \d+", f"server_port: {http_port}", configuration)
    (directory / "configuration.yaml").write_text(configuration)
    household = (source / "callflip.yaml").read_text()
    household = re.sub(r"(?m)^  port: 5060$", f"  port: {sip_port}", household)
    (directory / "callflip.yaml").write_text(household)
    (directory / "dashboard.yaml").symlink_to(ROOT / "docs" / "dashboard.yaml")
    (directory / "custom_components").mkdir()
    (directory / "custom_components" / "callflip").symlink_to(
        ROOT / "custom_components" / "callflip"
    )


class HomeAssistant:
    """The real ``hass`` on a configuration folder, and its HTTP API once onboarded."""

    def __init__(self, config: Path, port: int) -> None:
        self.config = config
        self.url = f"http://{HOST}:{port}"
        self.client_id = f"{self.url}/"
        self.process: asyncio.subprocess.Process | None = None
        self.tokens: dict[str, Any] = {}
        self.session: aiohttp.ClientSession | None = None

    async def start(self, time_limit: float = 180) -> None:
        environment = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "homeassistant",
            "-c",
            str(self.config),
            "--skip-pip",
            env=environment,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        self.session = aiohttp.ClientSession()
        deadline = time.monotonic() + time_limit
        while time.monotonic() < deadline:
            if self.process.returncode is not None:
                raise RuntimeError("hass exited; see its home-assistant.log")
            with contextlib.suppress(aiohttp.ClientError):
                async with self.session.get(f"{self.url}/api/onboarding") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(1)
        raise RuntimeError("Home Assistant did not answer in time")

    async def onboard(self) -> None:
        """Create the owner (the one onboarding step left) and take their token."""
        assert self.session is not None
        async with self.session.post(
            f"{self.url}/api/onboarding/users",
            json={**OWNER, "client_id": self.client_id, "language": "en"},
        ) as response:
            response.raise_for_status()
            code = (await response.json())["auth_code"]
        async with self.session.post(
            f"{self.url}/auth/token",
            data={"grant_type": "authorization_code", "code": code, "client_id": self.client_id},
        ) as response:
            response.raise_for_status()
            self.tokens = await response.json()

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens['access_token']}"}

    async def api(self, method: str, path: str, body: Any = None) -> Any:
        assert self.session is not None
        async with self.session.request(
            method, f"{self.url}/api/{path}", json=body, headers=self.auth
        ) as response:
            response.raise_for_status()
            return await response.json(content_type=None)

    async def state(self, entity_id: str) -> str:
        """The entity's state; "missing" while it does not exist (yet)."""
        assert self.session is not None
        async with self.session.get(
            f"{self.url}/api/states/{entity_id}", headers=self.auth
        ) as response:
            if response.status == 404:
                return "missing"
            response.raise_for_status()
            return str((await response.json())["state"])

    async def wait_state(self, entity_id: str, wanted: str, time_limit: float = 30) -> None:
        deadline = time.monotonic() + time_limit
        while (state := await self.state(entity_id)) != wanted:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{entity_id} is {state!r}, not {wanted!r}")
            await asyncio.sleep(0.5)

    async def device_id(self, entity_id: str) -> str:
        assert self.session is not None
        async with self.session.post(
            f"{self.url}/api/template",
            json={"template": f"{{{{ device_id('{entity_id}') }}}}"},
            headers=self.auth,
        ) as response:
            response.raise_for_status()
            return (await response.text()).strip()

    def browser_tokens(self) -> str:
        """The frontend's saved login (localStorage ``hassTokens``) for this owner."""
        return json.dumps(
            {
                "access_token": self.tokens["access_token"],
                "refresh_token": self.tokens["refresh_token"],
                "token_type": "Bearer",
                "expires_in": self.tokens["expires_in"],
                "expires": int(time.time() * 1000) + self.tokens["expires_in"] * 1000,
                "hassUrl": self.url,
                "clientId": self.client_id,
            }
        )

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()
        if self.process is not None:
            await stop_process(self.process, 60)


# -- the browser ---------------------------------------------------------------------------------

# Finds an element by its visible text through every shadow root (Home Assistant's frontend is
# made of nested web components) and clicks it.
_CLICK_TEXT = """
(text) => {
  const seen = [];
  const walk = (root) => {
    for (const el of root.querySelectorAll('*')) {
      if (el.shadowRoot) walk(el.shadowRoot);
      const own = Array.from(el.childNodes)
        .filter((n) => n.nodeType === Node.TEXT_NODE).map((n) => n.textContent).join('').trim();
      if (own === text) seen.push(el);
    }
  };
  walk(document);
  if (!seen.length) return false;
  const target = seen[0].closest('button, ha-button, mwc-button, ha-list-item, a') || seen[0];
  target.click();
  return true;
}
"""


# Whether some text node anywhere on the page, shadow roots included, contains the text.
_HAS_TEXT = """
(text) => {
  const walk = (root) => {
    const nodes = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
    while (nodes.nextNode()) if (nodes.currentNode.textContent.includes(text)) return true;
    for (const el of root.querySelectorAll('*')) {
      if (el.shadowRoot && walk(el.shadowRoot)) return true;
    }
    return false;
  };
  return walk(document);
}
"""


class Browser:
    """Headless Chromium with one page, driven over the DevTools protocol."""

    def __init__(self, profile: Path) -> None:
        self.profile = profile
        self.process: asyncio.subprocess.Process | None = None
        self.session: aiohttp.ClientSession | None = None
        self.socket: aiohttp.ClientWebSocketResponse | None = None
        self._next_id = 0

    async def start(self) -> None:
        binary = shutil.which("chromium")
        if binary is None:
            raise RuntimeError("chromium is not installed")
        port = free_port()
        self.process = await asyncio.create_subprocess_exec(
            binary,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={self.profile}",
            f"--remote-debugging-address={HOST}",
            f"--remote-debugging-port={port}",
            f"--window-size={WIDTH},{HEIGHT}",
            "about:blank",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        self.session = aiohttp.ClientSession()
        deadline = time.monotonic() + 30
        pages: list[dict[str, Any]] = []
        while not pages:
            if time.monotonic() > deadline:
                raise RuntimeError("chromium did not open its DevTools port")
            with contextlib.suppress(aiohttp.ClientError):
                async with self.session.get(f"http://{HOST}:{port}/json/list") as response:
                    pages = [p for p in await response.json() if p.get("type") == "page"]
            await asyncio.sleep(0.3)
        self.socket = await self.session.ws_connect(
            pages[0]["webSocketDebuggerUrl"], max_msg_size=0
        )
        await self.send("Page.enable")
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
        )

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        assert self.socket is not None
        self._next_id += 1
        ident = self._next_id
        await self.socket.send_json({"id": ident, "method": method, "params": params or {}})
        while True:
            message = await self.socket.receive_json(timeout=60)
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result

    async def evaluate(self, expression: str) -> Any:
        result = await self.send(
            "Runtime.evaluate", {"expression": expression, "awaitPromise": True}
        )
        return result.get("result", {}).get("value")

    async def open(self, url: str, *texts: str, settle: float = 1.5) -> None:
        """Go to ``url`` and wait until the page shows every one of ``texts``."""
        await self.send("Page.navigate", {"url": url})
        await self.wait_for_text(*texts, settle=settle)

    async def wait_for_text(self, *texts: str, settle: float = 1.5, time_limit: float = 60) -> None:
        """Wait until the page shows every text, then a little longer for the last drawing."""
        deadline = time.monotonic() + time_limit
        for text in texts:
            while not await self.evaluate(f"({_HAS_TEXT})({json.dumps(text)})"):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the page never showed {text!r}")
                await asyncio.sleep(0.3)
        await asyncio.sleep(settle)

    async def click_text(self, text: str, *then: str) -> None:
        """Click what reads ``text``, then wait until the page shows every one of ``then``."""
        await self.wait_for_text(text, settle=0.5)
        if not await self.evaluate(f"({_CLICK_TEXT})({json.dumps(text)})"):
            raise RuntimeError(f"nothing on the page reads {text!r}")
        await self.wait_for_text(*then)

    async def screenshot(self, path: Path) -> None:
        result = await self.send("Page.captureScreenshot", {"format": "png"})
        picture = base64.b64decode(result["data"])
        await asyncio.to_thread(path.write_bytes, picture)
        say(f"wrote {path.name} ({len(picture) // 1024} KiB)")

    async def stop(self) -> None:
        if self.socket is not None:
            await self.socket.close()
        if self.session is not None:
            await self.session.close()
        if self.process is not None:
            await stop_process(self.process, 10)


# -- the run -------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def phones(sip_port: int, workdir: Path) -> AsyncIterator[dict[str, Baresip]]:
    """Alice's desk phone and mobile (both answer by themselves) and Bob's desk phone, each
    sending a tone of its own."""
    started: dict[str, Baresip] = {}
    try:
        for user, answer, frequency in (
            ("201", "auto", 440.0),
            ("202", "auto", 660.0),
            ("301", "manual", 880.0),
        ):
            for attempt in range(3):
                phone = Baresip(
                    user,
                    f"demo-{user}",
                    sip_port,
                    domain="home.arpa",
                    answermode=answer,
                    call_control=True,
                    tone=write_tone(workdir / f"{user}.wav", frequency, 120),
                )
                try:
                    started[user] = await phone.start()
                    break
                except ClientError:
                    # baresip also binds the port above its SIP port (TLS), which another
                    # program may hold: pick other ports.
                    await phone.stop(time_limit=1)
                    if attempt == 2:
                        raise
        for user, phone in started.items():
            registration = await phone.wait_registered(time_limit=15)
            if not registration.ok:
                raise RuntimeError(f"{user} did not register: {registration.line}")
        yield started
    except BaseException:
        for user, phone in started.items():
            print(f"--- baresip {user}\n{phone.output[-30000:]}", file=sys.stderr)
        raise
    finally:
        for phone in started.values():
            await phone.stop(time_limit=5)


async def run(output: Path, workdir: Path, http_port: int, sip_port: int) -> None:
    """Start everything, take the pictures into ``output``, stop everything."""
    config = workdir / "config"
    hass = HomeAssistant(config, http_port)
    browser = Browser(workdir / "chromium")
    try:
        say(f"starting Home Assistant on {hass.url}, the PBX on {HOST}:{sip_port}")
        await hass.start()
        await hass.onboard()
        await hass.wait_state("sensor.callflip_home_arpa_registered_devices", "0", 60)
        await browser.start()
        await browser.open(hass.url)
        await browser.evaluate(
            f"localStorage.setItem('hassTokens', {json.dumps(hass.browser_tokens())})"
        )
        async with phones(sip_port, workdir) as phone:
            await hass.wait_state("binary_sensor.alice_reachable", "on")
            say("Bob calls Alice's desk phone")
            await phone["301"].dial("sip:201@home.arpa")
            await hass.wait_state("sensor.alice_active_call", "talking")
            # A fresh Home Assistant announces its own backup integration as "New devices
            # discovered"; that is not callflip's, and an owner would dismiss it first too.
            await hass.api(
                "POST",
                "services/persistent_notification/dismiss",
                {"notification_id": "config_entry_discovery"},
            )
            integration = f"{hass.url}/config/integrations/integration/callflip"
            await browser.open(integration, "callflip home.arpa", "8 devices")
            await browser.screenshot(output / "integration.png")
            alice = await hass.device_id("sensor.alice_active_call")
            await browser.open(
                f"{hass.url}/config/devices/device/{alice}", "Flip to Alice's Mobile", "Talking"
            )
            await browser.screenshot(output / "user-during-call.png")

            say("pressing Flip to Alice's Mobile")
            await hass.api(
                "POST",
                "services/button/press",
                {"entity_id": "button.alice_flip_to_alice_s_mobile"},
            )
            await phone["202"].wait_event("CALL_ESTABLISHED", time_limit=20)
            deadline = time.monotonic() + 20
            while not (await hass.state("sensor.alice_last_handoff")).startswith("Call moved"):
                if time.monotonic() > deadline:
                    raise RuntimeError("the flip did not complete")
                await asyncio.sleep(0.5)
            await asyncio.sleep(2)  # the recorder commits every second
            await browser.open(f"{hass.url}/logbook", "moved the call from")
            await browser.screenshot(output / "logbook.png")
            await browser.open(
                f"{hass.url}/callflip-phones/phones", "Call moved from", "To the mobile"
            )
            await browser.screenshot(output / "dashboard.png")

            await browser.open(integration, "callflip home.arpa")
            await browser.click_text("Configure", "Add a device")
            await browser.click_text("Add a device", "Leave empty to use the username")
            await browser.screenshot(output / "options-add-device.png")
            await phone["301"].hangup()
    finally:
        await browser.stop()
        await hass.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "images")
    args = parser.parse_args()
    output: Path = args.output.resolve()
    output.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="callflip-screenshots-"))
    http_port, sip_port = free_port(), free_port()
    (workdir / "config").mkdir()
    prepare_config(workdir / "config", http_port, sip_port)
    try:
        asyncio.run(run(output, workdir, http_port, sip_port))
    except BaseException:
        say(f"kept {workdir} (Home Assistant's log is config/home-assistant.log)")
        raise
    shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
