"""The standalone runner's HTTP server for provisioning files (Home Assistant has its own view).

Phones fetch their configuration with a plain HTTP GET of the URL the plug-and-play NOTIFY gave
them (``/provision/<token>/<file>``). sip_core has no runtime dependencies, so this is a minimal
HTTP/1.1 responder on asyncio streams: one GET per connection, a bounded request head read with a
timeout, ``Connection: close``. Everything it serves comes from `Provisioner.fetch`, which decides
(once per adoption, for the right phone only); anything else is 404, other methods 405, a
malformed request 400.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final
from urllib.parse import unquote

from .provisioning import Provisioner

__all__ = ["PROVISION_PATH", "ProvisioningServer"]

_LOGGER = logging.getLogger(__name__)

PROVISION_PATH: Final = "/provision"
_MAX_HEAD: Final = 8192
_READ_TIMEOUT: Final = 10.0
_REASONS: Final = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}


class ProvisioningServer:
    """Serves `Provisioner.fetch` over HTTP on ``host``:``port`` (0: a free port)."""

    def __init__(self, provisioner: Provisioner, host: str, port: int) -> None:
        self._provisioner = provisioner
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        sockets = self._server.sockets
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        _LOGGER.info(
            "Serving provisioning files on http://%s:%d%s/", self.host, self.port, PROVISION_PATH
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        host = str(peer[0]) if peer else ""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _READ_TIMEOUT)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, OSError):
            writer.close()
            return
        status, content_type, body = self.answer(head[:_MAX_HEAD], host)
        reason = _REASONS.get(status, "Error")
        lines = [
            f"HTTP/1.1 {status} {reason}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}",
            "Cache-Control: no-store",
            "Connection: close",
            "",
            "",
        ]
        with contextlib.suppress(OSError):
            writer.write("\r\n".join(lines).encode("ascii") + body)
            await writer.drain()
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

    def answer(self, head: bytes, host: str) -> tuple[int, str, bytes]:
        """Status, content type and body for a request head from ``host``."""
        try:
            request_line = head.split(b"\r\n", 1)[0].decode("ascii")
            method, target, version = request_line.split(" ")
        except (UnicodeDecodeError, ValueError):
            return 400, "text/plain", b"bad request\n"
        if not version.startswith("HTTP/1."):
            return 400, "text/plain", b"bad request\n"
        if method != "GET":  # not even HEAD: every answer spends the adoption
            return 405, "text/plain", b"method not allowed\n"
        path = unquote(target.split("?", 1)[0])
        prefix = PROVISION_PATH + "/"
        if not path.startswith(prefix):
            return 404, "text/plain", b"not found\n"
        token, _, name = path[len(prefix) :].partition("/")
        if not token or not name or "/" in name:
            return 404, "text/plain", b"not found\n"
        found = self._provisioner.fetch(token, name, host)
        if found is None:
            return 404, "text/plain", b"not found\n"
        return 200, found.content_type, found.body
