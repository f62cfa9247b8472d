"""What a loaded callflip config entry carries at run time."""

from __future__ import annotations

from dataclasses import dataclass

from homeassistant.config_entries import ConfigEntry

from .hub import CallflipHub
from .runtime_state import RuntimeStateStore
from .security import SecurityMonitor


@dataclass(slots=True)
class CallflipData:
    """The runtime data of a loaded entry (calls join it when the B2BUA lands)."""

    hub: CallflipHub
    security: SecurityMonitor
    runtime: RuntimeStateStore | None = None
    """DND, Make Busy, Call Forward Always and flip settings (`sip_core.presence`), persisted."""


type CallflipConfigEntry = ConfigEntry[CallflipData]
