"""Constants shared by the callflip integration."""

from __future__ import annotations

from enum import StrEnum
from typing import Final

DOMAIN: Final = "callflip"

CONF_LISTEN: Final = "listen"
CONF_SIP_PORT: Final = "port"
CONF_SIP_DOMAIN: Final = "domain"
CONF_RTP_PORT_MIN: Final = "rtp_port_min"
CONF_RTP_PORT_MAX: Final = "rtp_port_max"

CONF_USERS: Final = "users"
CONF_DEVICES: Final = "devices"
CONF_ID: Final = "id"
CONF_NAME: Final = "name"
CONF_EXTENSION: Final = "extension"
CONF_FLIP_PERMISSION: Final = "flip"
"""A user's flip permission set by the administrator (sip_core.config.FlipPermission)."""
CONF_USERNAME: Final = "username"
CONF_PASSWORD: Final = "password"
CONF_LABEL: Final = "label"
CONF_TYPE: Final = "type"
CONF_PRIORITY: Final = "priority"

DEFAULT_LISTEN: Final = "0.0.0.0"
DEFAULT_SIP_PORT: Final = 5060
DEFAULT_SIP_DOMAIN: Final = "callflip.home.arpa"
DEFAULT_RTP_PORT_MIN: Final = 40000
DEFAULT_RTP_PORT_MAX: Final = 40999
DEFAULT_PRIORITY: Final = 0

MIN_PRIORITY: Final = 0
MAX_PRIORITY: Final = 1000
MIN_PASSWORD_LENGTH: Final = 12
MIN_RTP_PORT: Final = 1024
GENERATED_PASSWORD_LENGTH: Final = 20

BINDINGS_STORAGE_VERSION: Final = 1

MANUFACTURER: Final = "callflip"

EVENT_CALL: Final = "callflip_call"
"""Fired on the event bus for every change of a call's state."""
EVENT_HANDOFF: Final = "callflip_handoff"
"""Fired on the event bus when a flip starts, succeeds or fails."""
EVENT_PHONE_DISCOVERED: Final = "callflip_phone_discovered"
EVENT_GROUP_PRESENCE: Final = "callflip_group_presence"
"""Fired on the event bus when a phone dials a Group Presence code (changed or refused)."""
"""Fired on the event bus when a phone that is not configured yet is found on the network."""

SERVICE_FLIP: Final = "flip"
SERVICE_HANGUP: Final = "hangup"
SERVICE_TRANSFER: Final = "transfer"
ATTR_NUMBER: Final = "number"
# Fired for each step of a transfer (keypad, REFER or the transfer action); ``type`` is one of
# TransferEventType.
EVENT_TRANSFER: Final = "callflip_transfer"
SERVICE_PUSH: Final = "push"
SERVICE_PULL: Final = "pull"
ATTR_TARGET_DEVICE_ID: Final = "target_device_id"
ATTR_TIMEOUT: Final = "timeout"
MIN_FLIP_TIMEOUT: Final = 5
MAX_FLIP_TIMEOUT: Final = 300


class HandoffType(StrEnum):
    """The handoff event entity's event types (and ``type`` of the handoff bus event)."""

    STARTED = "flip_started"
    SUCCEEDED = "flip_succeeded"
    FAILED = "flip_failed"
    PUSH_STARTED = "push_started"
    PUSHED = "pushed"
    PUSH_UNANSWERED = "push_unanswered"
    PULL_STARTED = "pull_started"
    PULLED = "pulled"
    HANDOFF_FAILED = "handoff_failed"
    """A push or pull that was refused or did not work (the reason says why)."""


class DeviceKind(StrEnum):
    """The kinds of SIP device a user can own; the values are sip_core's DeviceType values."""

    DESK = "desk"
    MOBILE = "mobile"
    SOFTPHONE = "softphone"
    HOME = "home"
    CONFERENCE = "conference"


DEVICE_MODELS: Final[dict[str, str]] = {
    DeviceKind.DESK: "Desk phone",
    DeviceKind.MOBILE: "Mobile phone",
    DeviceKind.SOFTPHONE: "Softphone",
    DeviceKind.HOME: "Home phone",
    DeviceKind.CONFERENCE: "Conference phone",
}
"""The device registry model of each kind of SIP device."""


class TransferEventType(StrEnum):
    """The ``type`` of the transfer bus event (and the user's device trigger types)."""

    STARTED = "transfer_started"
    SUCCEEDED = "transfer_succeeded"
    FAILED = "transfer_failed"
