"""What a loaded callflip config entry carries at run time."""

from __future__ import annotations

from dataclasses import dataclass

from homeassistant.config_entries import ConfigEntry

from .hub import CallflipHub
from .label_speech import LabelSpeech
from .runtime_state import RuntimeStateStore
from .security import SecurityMonitor
from .trunks import TrunkMonitor


@dataclass(slots=True)
class CallflipData:
    """The runtime data of a loaded entry (calls join it when the B2BUA lands)."""

    hub: CallflipHub
    security: SecurityMonitor
    runtime: RuntimeStateStore | None = None
    """DND, Make Busy, Call Forward Always and flip settings (`sip_core.presence`), persisted."""
    trunks: TrunkMonitor | None = None
    """The SIP trunks: live changes, their state sensors and repair issues (`trunks.py`)."""
    labels: LabelSpeech | None = None
    """Device labels spoken by a TTS engine for the flip menu (`label_speech.py`)."""


type CallflipConfigEntry = ConfigEntry[CallflipData]
