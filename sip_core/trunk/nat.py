"""What we advertise towards a trunk when the PBX sits behind NAT (``Trunk.public_address``).

A provider on the internet cannot reach the private address the PBX sends from: answers to a Via
naming it, requests to a Contact naming it and RTP to an SDP connection address naming it would
all be lost (a call that rings but has no audio, or that is cut after 32 s because our 200 OK is
never acknowledged). With ``public_address`` set, everything towards that trunk names the public
address instead: the REGISTER's Via and Contact (`trunk.registration`), and in calls the Via,
Contact and SDP of the trunk's leg (the B2BUA asks `TrunkIngress.endpoint_for` for the leg's
`LocalEndpoint`, and the SDP takes its address from that endpoint). Legs towards our own devices
keep the LAN address. The router must forward the SIP port (to ``public_address``'s port, or the
same port) and the RTP port range to the PBX.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sip_core.dialog import LocalEndpoint

if TYPE_CHECKING:
    from sip_core.transport import TransportKind
    from sip_core.trunk.config import Trunk

__all__ = ["advertised_endpoint"]


def advertised_endpoint(trunk: Trunk, local_port: int, kind: TransportKind) -> LocalEndpoint | None:
    """How we appear to ``trunk``'s provider when it has a public address; None: as usual
    (the address we send from)."""
    public = trunk.public_address
    if public is None:
        return None
    return LocalEndpoint(public.host, public.port or local_port, kind)
