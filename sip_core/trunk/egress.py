"""Calls going out through a trunk: which trunk a dialled number takes, who may dial it, and how
the INVITE to the provider is addressed and authenticated.

The dial plan (``trunk.config.DialPlan``) picks the trunk; a user without permission to call out
gets 403, except for emergency numbers, which always go out. The INVITE is addressed to the
number at the trunk's domain, from the trunk's caller ID (never an internal extension: a provider
refuses or rewrites numbers it did not assign), and sent to the trunk's next hop (its outbound
proxy, named in a Route header, or its host). Each trunk has one ``DigestClient`` for its calls,
so that a provider's 401/407 is answered with the trunk's credentials and later calls reuse the
nonce.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sip_core.digest_client import ClientCredentials, DigestClient
from sip_core.transport import Address, TransportKind
from sip_core.uri import SipUri

if TYPE_CHECKING:
    from sip_core.config import PbxConfig
    from sip_core.trunk.config import Trunk

__all__ = ["OutboundRefusal", "OutboundTarget", "TrunkEgress"]


@dataclass(frozen=True, slots=True)
class OutboundTarget:
    """Everything needed to send one call out through ``trunk``."""

    trunk: str
    number: str
    emergency: bool
    uri: SipUri
    to_value: str
    from_value: str  # without tag
    destination: Address
    kind: TransportKind
    routes: tuple[str, ...]
    digest: DigestClient


@dataclass(frozen=True, slots=True)
class OutboundRefusal:
    """A number that would go out, dialled by someone who may not call out."""

    status: int
    reason: str


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class TrunkEgress:
    """Plans outgoing trunk calls; keeps one digest client per trunk (by name and password)."""

    def __init__(self, config: Callable[[], PbxConfig]) -> None:
        self._config = config
        self._clients: dict[tuple[str, str, str], DigestClient] = {}

    def plan(
        self, dialled: str, caller_user: str | None, *, internal: bool
    ) -> OutboundTarget | OutboundRefusal | None:
        """Where ``dialled`` goes out, dialled by ``caller_user`` (a user's name; None for a
        caller who is nobody's device); None when the dial plan does not send it out."""
        trunking = self._config().trunking
        if trunking is None:
            return None
        plan = trunking.dialplan
        call = plan.outbound(dialled, internal=internal)
        if call is None:
            return None
        if not plan.may_call_out(caller_user, call):
            return OutboundRefusal(403, "not allowed to call out")
        trunk = trunking.trunk(call.trunk)
        if trunk is None:  # the loader checks route trunks; a hand-built config may not
            return None
        return self._target(trunk, call.number, emergency=call.emergency)

    def _target(self, trunk: Trunk, number: str, *, emergency: bool) -> OutboundTarget:
        domain = _host(trunk.aor_domain)
        uri = SipUri.parse(f"sip:{number}@{domain}")
        hop = trunk.next_hop
        routes = () if trunk.outbound_proxy is None else (f"<sip:{hop};lr>",)
        kind = trunk.transport.kind
        return OutboundTarget(
            trunk=trunk.name,
            number=number,
            emergency=emergency,
            uri=uri,
            to_value=f"<{uri}>",
            from_value=f"<sip:{trunk.presented_id}@{domain}>",
            destination=Address(hop.host, hop.port),
            kind=kind,
            routes=routes,
            digest=self._client(trunk),
        )

    def _client(self, trunk: Trunk) -> DigestClient:
        key = (trunk.name, trunk.auth_user, trunk.password)
        client = self._clients.get(key)
        if client is None:
            client = DigestClient(ClientCredentials(trunk.auth_user, trunk.password, trunk.realm))
            self._clients = {k: v for k, v in self._clients.items() if k[0] != trunk.name}
            self._clients[key] = client
        return client
