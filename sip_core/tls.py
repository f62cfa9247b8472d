"""TLS for SIP (RFC 3261 §26.3.1, RFC 5922): the contexts the transport uses, and their errors.

Why it is shaped like this:

- A client context verifies the server: its certificate must chain to a trusted authority (the
  system's, or the CA file configured for a trunk) and name the host we connect to (the trunk's
  host or outbound proxy as configured, also sent as SNI). Python's ``ssl`` checks both when
  ``check_hostname`` is on, IP addresses against IP subjectAltNames included. Turning
  verification off is possible for a trunk (``verify: false``) for a box in the house with a
  self-signed certificate, never the default.
- A server context (our own TLS listener) presents a certificate and key from files; clients are
  not asked for certificates (a provider or phone is recognised as with TCP: by address, digest).
- Errors come out as one-line reasons a person can act on ("certificate verify failed:
  unable to get local issuer certificate"), for the trunk's state and the log, instead of
  OpenSSL's bracketed codes.
- TLS 1.2 is the floor: every SIP provider that offers TLS speaks it, and older versions are
  broken.
"""

from __future__ import annotations

import ssl
from typing import Final

__all__ = [
    "DEFAULT_TLS_PORT",
    "TlsSetupError",
    "client_context",
    "failure_reason",
    "server_context",
]

DEFAULT_TLS_PORT: Final = 5061
"""SIP over TLS (RFC 3261 §19.1.2, §26.3.1)."""


class TlsSetupError(ValueError):
    """A CA file, certificate or key that cannot be used; the text says why."""


def client_context(ca_file: str | None = None, *, verify: bool = True) -> ssl.SSLContext:
    """A context for connecting to a TLS server: its certificate checked against ``ca_file``
    (PEM, one or more authorities) or the system's trusted authorities, and its name against
    the host we connect to; ``verify=False`` checks nothing (encryption without authentication).

    Raises ``TlsSetupError`` when ``ca_file`` cannot be read or holds no certificate.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if ca_file is None:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        return context
    try:
        context.load_verify_locations(cafile=ca_file)
    except FileNotFoundError as exc:
        raise TlsSetupError(f"no such file: {ca_file}") from exc
    except PermissionError as exc:
        raise TlsSetupError(f"cannot be read: {ca_file}") from exc
    except IsADirectoryError as exc:
        raise TlsSetupError(f"is a directory, not a file: {ca_file}") from exc
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise TlsSetupError(f"holds no PEM certificate: {ca_file}") from exc
    if not context.get_ca_certs():
        raise TlsSetupError(f"holds no CA certificate: {ca_file}")
    return context


def server_context(certificate: str, key: str | None = None) -> ssl.SSLContext:
    """A context for our TLS listener: ``certificate`` (PEM, the chain after the leaf) and its
    private ``key`` (None: in the certificate file). Raises ``TlsSetupError``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certificate, key)
    except FileNotFoundError as exc:
        raise TlsSetupError(f"no such file: {exc.filename or certificate}") from exc
    except PermissionError as exc:
        raise TlsSetupError(f"cannot be read: {exc.filename or certificate}") from exc
    except ssl.SSLError as exc:
        raise TlsSetupError(f"the certificate or key cannot be used: {_short(exc)}") from exc
    except (OSError, ValueError) as exc:
        raise TlsSetupError(f"the certificate or key cannot be used: {exc}") from exc
    return context


def failure_reason(exc: BaseException) -> str:
    """A connection's TLS failure in one line: "certificate verify failed: <why>" for a server
    certificate we refused, else the handshake's error without OpenSSL's decoration."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = exc.verify_message or _short(exc)
        return f"certificate verify failed: {why}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {_short(exc)}"
    return str(exc)


def _short(exc: ssl.SSLError) -> str:
    """OpenSSL's reason ("wrong version number") rather than "[SSL: X] y (_ssl.c:1000)"."""
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str) and reason:
        return reason.replace("_", " ").lower()
    text = str(exc)
    if "] " in text:
        text = text.split("] ", 1)[1]
    return text.split(" (_ssl.c", 1)[0]
