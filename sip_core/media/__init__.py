"""Media: the RTP relay, run in an engine process of its own and driven from the SIP side.

`sip_core.media.client` is what call control uses (`MediaRelay`, `MediaSession`, `MediaLeg`);
`engine` is the child process, `protocol` the control channel between the two, `relay` and
`packets` the relay itself (what the engine runs), `ports` and `udp_peer` its sockets.
"""

from .client import (
    PLAY_FINISHED,
    EngineLost,
    EngineStatus,
    LegStats,
    MediaLeg,
    MediaRelay,
    MediaSession,
    Playing,
    Side,
)
from .ports import PortAllocator, PortsExhaustedError, RelayError

__all__ = [
    "PLAY_FINISHED",
    "EngineLost",
    "EngineStatus",
    "LegStats",
    "MediaLeg",
    "MediaRelay",
    "MediaSession",
    "Playing",
    "PortAllocator",
    "PortsExhaustedError",
    "RelayError",
    "Side",
]
