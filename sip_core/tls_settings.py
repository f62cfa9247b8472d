"""The ``tls`` section of the configuration: our own TLS listener (RFC 3261 §26.3.1).

In the file::

    tls:
      certificate: /etc/callflip/sip.pem   # PEM: our certificate, then its chain
      key: /etc/callflip/sip.key           # default: the key is in the certificate file
      port: 5061                           # default

Without the section the PBX does not listen for TLS (a certificate is needed, and there is no
sensible one to make up). Trunks over TLS work without it: the PBX is the client there, and the
provider's requests come back on the connection our registration opened. With it, phones and a
provider that open their own connections can reach us over TLS too. Both files are loaded once
here, so a certificate that does not match its key, or a file that cannot be read, is refused
with the key's path rather than when the PBX starts.

This module builds on ``sip_core.config``'s checking helpers; ``sip_core.config`` calls
:func:`tls_from_mapping` when the file has a ``tls`` section.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sip_core.config import KeyPath, _fail, _int, _section, _text
from sip_core.tls import DEFAULT_TLS_PORT, TlsSetupError, server_context

__all__ = ["TlsSettings", "tls_from_mapping"]


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """Our TLS listener: ``certificate`` and ``key`` files (PEM; ``key`` None: in the
    certificate file) and the ``port`` (0: any free one, for tests)."""

    certificate: str
    key: str | None = None
    port: int = DEFAULT_TLS_PORT

    def to_mapping(self) -> dict[str, Any]:
        return {"certificate": self.certificate, "key": self.key, "port": self.port}


def tls_from_mapping(data: Any, sip_port: int) -> TlsSettings | None:
    """Check the ``tls`` section; None when there is none. ``sip_port`` is the UDP/TCP port,
    which TLS cannot share (both are TCP)."""
    if data is None:
        return None
    path: KeyPath = ("tls",)
    section = _section(data, path, ("certificate", "key", "port"))
    certificate = _absolute(_text(section, "certificate", path), (*path, "certificate"))
    key = None
    if section.get("key") is not None:
        key = _absolute(_text(section, "key", path), (*path, "key"))
    port = _int(section, "port", path, DEFAULT_TLS_PORT, (0, 65535))
    if port != 0 and port == sip_port:
        _fail((*path, "port"), f"must differ from sip.port ({sip_port}): both are TCP")
    try:
        server_context(certificate, key)
    except TlsSetupError as exc:
        _fail((*path, "key" if key is not None and "key" in str(exc) else "certificate"), str(exc))
    return TlsSettings(certificate, key, port)


def _absolute(value: str, path: KeyPath) -> str:
    if not value.startswith("/"):
        _fail(path, f"must be an absolute path to a PEM file, not {value!r}")
    return value
