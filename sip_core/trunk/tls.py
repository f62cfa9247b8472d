"""The TLS client settings of trunks (``transport: tls``), handed to the transport layer.

Each TLS trunk's next hop (its host, or its outbound proxy) gets a client context built from the
trunk's ``ca_file`` and ``verify`` (`sip_core.tls.client_context`); the transport uses it for
every connection it opens to that address, registration and calls alike, and checks the
certificate's name against the host as configured. When a trunk's TLS settings change, the
connection made under the old ones is closed, so that nothing keeps trusting what the new
settings no longer trust.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from sip_core.tls import TlsSetupError, client_context
from sip_core.transport import Address
from sip_core.trunk.config import TrunkTransport

if TYPE_CHECKING:
    from sip_core.transport import TransportLayer
    from sip_core.trunk.config import Trunk

__all__ = ["TrunkTlsClients"]

_LOGGER = logging.getLogger(__name__)


class TrunkTlsClients:
    """Keeps the transport's TLS client contexts in step with the TLS trunks."""

    def __init__(self, transport: TransportLayer) -> None:
        self._transport = transport
        self._applied: dict[Address, tuple[str | None, bool]] = {}

    def apply(self, trunks: Iterable[Trunk]) -> None:
        """Set a context for each TLS trunk's next hop; drop those of trunks gone or no longer
        TLS, and close connections made under settings that changed."""
        wanted: dict[Address, tuple[str | None, bool]] = {}
        for trunk in trunks:
            if trunk.transport is TrunkTransport.TLS:
                hop = trunk.next_hop
                wanted[Address(hop.host, hop.port)] = (trunk.ca_file, trunk.verify)
        for address, settings in self._applied.items():
            if wanted.get(address) != settings:
                self._transport.set_tls_client(address, None)
                self._transport.close_connections_to(address)
        for address, (ca_file, verify) in wanted.items():
            if self._applied.get(address) == (ca_file, verify):
                continue
            try:
                context = client_context(ca_file, verify=verify)
            except TlsSetupError as exc:  # checked when loaded; the file may have gone since
                _LOGGER.warning("TLS to %s: the CA file %s", address, exc)
                continue
            if not verify:
                _LOGGER.warning(
                    "TLS to %s: the provider's certificate is not checked (verify: false)", address
                )
            self._transport.set_tls_client(address, context)
        self._applied = wanted
