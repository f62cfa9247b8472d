"""The PBX's configuration: frozen dataclasses, and the one loader that checks and builds them.

The same rules apply whether the configuration comes from a YAML file (the runner,
:func:`load_config`, :func:`parse_config`, read with PyYAML by :mod:`sip_core.yaml_file`) or from
Home Assistant (:func:`config_from_mapping`): both go through :func:`config_from_mapping`'s checks,
so the integration cannot accept a household that the runner would refuse. From a file, each error
also names the line.

Schema (``pbx.example.yaml`` at the repository root documents every key)::

    sip: {listen: 0.0.0.0, port: 5060, domain: home.arpa}
    rtp: {ports: 40000-40999, timeout: 60, music_on_hold: null, realtime: true}
    users:
      - name: alice
        extension: "200"
        flip: user          # or enabled / disabled: the administrator forces the user's flip
        devices:
          - {username: "201", password: "...", label: Office Desk Phone, type: desk,
             priority: 0, digest: [MD5], flip_number: "11"}
        flip_options: {timeout: 30, auto_hangup: true, announcement: false,
                       simultaneous_ring: false}
    registrar: {min_expires: 60, max_expires: 3600, default_expires: 3600, max_contacts: 5}
    auth: {nonce_lifetime: 300}
    calls: {no_answer_timeout: 30}
    flip: {code: "*0", timeout: 30, menu_timeout: 8, digit_timeout: 3}
    security: {max_failures: 5, failure_window: 300, ban_time: 1800, never_ban: [],
               allow_public: false}
    log_level: info
    transfer: {preset: default, blind_code: "*2", attended_code: "**", timeout: 30,
               recall_timeout: 30, complete_code: "*3", cancel_code: "*4"}
    groups:
      - {name: Alice everywhere, pilot: "250", members: ["201", "202"], ring_timer: 20,
         no_answer: "user:bob"}
    handoff: {code: "*5"}
    group_presence: {present_code: "*61", absent_code: "*60"}

Required: ``name`` and ``extension`` of each user, ``username`` and ``password`` of each device.
Everything else has the default shown (no ``flip_number``; a user's flip timeout is
``flip.timeout``). A key that is present but empty counts as absent, except
for ``flip.code`` (an unquoted ``#1`` is a comment, so an empty code is almost surely that). In the
file, an unquoted ``*0`` is the text ``*0`` (not a YAML alias) and ``0200`` the text ``0200``.
Unknown keys are errors: a misspelt ``pasword`` must not silently leave a device without one.

The dataclasses themselves do not check anything, so that tests can build unusual ones (port 0 to
let the system pick, say); the loader is where the rules live.
"""

import difflib
import ipaddress
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NoReturn

from .audio.wav import WavError, load_wav
from .dialled_codes import DeclaredCode, DialledNumber, declared_codes, feature_code, find_clash
from .digest import DEFAULT_ALGORITHMS, DigestAlgorithm
from .prg.model import (
    DEFAULT_RING_TIMER,
    GroupPresenceCodes,
    HandoffSettings,
    NoAnswerKind,
    NoAnswerTarget,
    RingGroup,
)
from .yaml_file import YamlError, read_yaml

if TYPE_CHECKING:
    from .tls_settings import TlsSettings
    from .trunk.config import Trunking

__all__ = [
    "AuthSettings",
    "CallSettings",
    "CodeConflict",
    "ConfigError",
    "Device",
    "DeviceType",
    "DigestAlgorithm",
    "FlipSettings",
    "GroupPresenceCodes",
    "HandoffSettings",
    "NoAnswerKind",
    "NoAnswerTarget",
    "PbxConfig",
    "RegistrarSettings",
    "RingGroup",
    "RtpSettings",
    "SecuritySettings",
    "SipSettings",
    "TransferSettings",
    "User",
    "UserFlipOptions",
    "check_feature_codes",
    "config_from_mapping",
    "format_path",
    "load_config",
    "parse_config",
    "security_settings",
    "transfer_settings",
]

type KeyPath = tuple[str | int, ...]

#: Many phones read only the first WWW-Authenticate challenge, and most of those know only MD5,
#: so MD5 comes first unless a device's configuration says otherwise.
DEFAULT_DIGEST: Final = DEFAULT_ALGORITHMS
MIN_PASSWORD_LENGTH: Final = 8
LOG_LEVELS: Final = ("debug", "info", "warning", "error", "critical")
REDACTED: Final = "**REDACTED**"


class DeviceType(StrEnum):
    """What kind of device a phone is; the flip logic and Home Assistant use it to pick targets."""

    DESK = "desk"
    MOBILE = "mobile"
    SOFTPHONE = "softphone"
    HOME = "home"
    CONFERENCE = "conference"


class FlipPermission(StrEnum):
    """An administrator's say over a user's flip (``users[].flip``): ``user`` lets the user's
    own setting (a runtime setting, `sip_core.presence`) decide; ``enabled`` and ``disabled``
    force it, whatever the user chose."""

    USER = "user"
    ENABLED = "enabled"
    DISABLED = "disabled"


class ConfigError(ValueError):
    """The configuration cannot be used; the message says where and why.

    ``str(error)`` reads ``[source: ]path: reason[ (line N)]``, for example
    ``pbx.yaml: users[0].devices[1].password: required (line 12)``.
    """

    def __init__(
        self,
        reason: str,
        *,
        key_path: Sequence[str | int] = (),
        line: int | None = None,
        source: str | None = None,
    ) -> None:
        self.reason = reason
        self.key_path: KeyPath = tuple(key_path)
        self.line = line
        self.source = source
        super().__init__(self.__str__())

    @property
    def path(self) -> str:
        """The key path as written in messages, e.g. ``users[0].devices[1].password``."""
        return format_path(self.key_path)

    def __str__(self) -> str:
        text = f"{self.path}: {self.reason}" if self.key_path else self.reason
        if self.line is not None:
            text = f"{text} (line {self.line})"
        return f"{self.source}: {text}" if self.source else text


class CodeConflict(ConfigError):
    """A feature code clashes with another code (one starts the other) or with an extension or
    a device's username: each is fine alone, together they cannot be told apart (Home
    Assistant's options form says so apart from a badly written code). ``clashes_with`` names
    the other code (``handoff.code '*5'``), or the number, it clashes with."""

    def __init__(self, reason: str, *, key_path: Sequence[str | int] = (), clashes_with: str = ""):
        super().__init__(reason, key_path=key_path)
        self.clashes_with = clashes_with


def format_path(path: Sequence[str | int]) -> str:
    """Write a key path the way a person reads it: ``users[0].devices[1].password``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z0-9_-]+", part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part, ensure_ascii=False)}]"
    return out


MAX_WORKERS = 16


@dataclass(frozen=True, slots=True)
class SipSettings:
    """Where the PBX listens (UDP and TCP on one port) and the domain its users belong to."""

    listen: str = "0.0.0.0"
    port: int = 5060
    domain: str = "home.arpa"
    workers: int = 0
    """Extra processes that take REGISTER over UDP off the main one (`sip_core.workers`); only
    the standalone runner starts them, and only where the platform has SO_REUSEPORT."""


@dataclass(frozen=True, slots=True)
class DiscoverySettings:
    """Finding desk phones (`sip_core.plugplay`, `sip_core.phones`) and provisioning them.

    ``plug_and_play``: listen for RFC 6080 SUBSCRIBEs on 224.0.1.75:5060 (only observed, never
    answered, unless a phone is adopted). ``provision``: MAC address (12 lower-case hex digits) to
    device username; the standalone runner arms an adoption for each at start, answered at the
    phone's next boot. ``http_port``: where the runner serves the configuration files (0: pick a
    free port; Home Assistant serves them itself and ignores it).
    """

    plug_and_play: bool = True
    provision: tuple[tuple[str, str], ...] = ()
    http_port: int = 8060


@dataclass(frozen=True, slots=True)
class RtpSettings:
    """The UDP ports the media relay may use; RTP takes the even port of a pair, RTCP the odd.

    ``music_on_hold``: a WAV file played to whoever is held by the PBX, instead of the bundled
    loop (None). The loader reads it once to refuse a file that cannot be played.
    ``timeout``: seconds without RTP or RTCP from a phone whose media arrived before, after which
    its call is ended (0: never); a call on hold is exempt.
    ``realtime``: the media engine's packet loop asks for real-time scheduling, so that other
    work on the host cannot hold up a call's audio (`sip_core.media.scheduling`); where the
    system does not allow it, the engine runs normally scheduled.
    """

    port_min: int = 40000
    port_max: int = 40999
    music_on_hold: str | None = None
    timeout: int = 60
    realtime: bool = True

    @property
    def pair_count(self) -> int:
        """How many RTP/RTCP pairs fit in the range (each relayed call leg needs one)."""
        return (self.port_max - self.port_min + 1) // 2


@dataclass(frozen=True, slots=True)
class Device:
    """One SIP account a phone registers with.

    ``priority``: smaller numbers are preferred when the PBX picks a device (0 first, ties in
    file order). ``digest``: the algorithms it is challenged with, in the order offered.
    """

    username: str
    password: str
    label: str
    type: DeviceType = DeviceType.DESK
    priority: int = 0
    digest: tuple[DigestAlgorithm, ...] = DEFAULT_DIGEST
    flip_number: str | None = None
    """A short number (2 to 8 digits) its owner may key after the flip code to pick it; its
    username, when all digits, works too (`sip_core.features.flip_menu`)."""

    def to_mapping(self, *, redact: bool = False) -> dict[str, Any]:
        """The device in the configuration schema (``redact`` hides the password)."""
        mapping: dict[str, Any] = {
            "username": self.username,
            "password": REDACTED if redact else self.password,
            "label": self.label,
            "type": self.type.value,
            "priority": self.priority,
            "digest": [algorithm.value for algorithm in self.digest],
        }
        if self.flip_number is not None:
            mapping["flip_number"] = self.flip_number
        return mapping


@dataclass(frozen=True, slots=True)
class UserFlipOptions:
    """One user's flip settings (``users[].flip_options``).

    ``timeout``: how long a flip's target rings, in seconds (None: ``flip.timeout``);
    ``auto_hangup``: the device the call left is hung up (off: its dialog stays up, without
    media, until it hangs up itself); ``announcement``: the other party hears a short tone at the
    switch; ``simultaneous_ring``: the flip code rings every other available device at once,
    first answer wins, instead of offering a menu.
    """

    timeout: int | None = None
    auto_hangup: bool = True
    announcement: bool = False
    simultaneous_ring: bool = False

    def to_mapping(self) -> dict[str, Any]:
        mapping: dict[str, Any] = {
            "auto_hangup": self.auto_hangup,
            "announcement": self.announcement,
            "simultaneous_ring": self.simultaneous_ring,
        }
        if self.timeout is not None:
            mapping["timeout"] = self.timeout
        return mapping


@dataclass(frozen=True, slots=True)
class User:
    """A person: reachable on ``extension``, which rings their devices."""

    name: str
    extension: str
    devices: tuple[Device, ...] = ()
    flip: FlipPermission = FlipPermission.USER
    flip_options: UserFlipOptions = field(default_factory=UserFlipOptions)

    def to_mapping(self, *, redact: bool = False) -> dict[str, Any]:
        """The user in the configuration schema."""
        mapping: dict[str, Any] = {
            "name": self.name,
            "extension": self.extension,
            "devices": [device.to_mapping(redact=redact) for device in self.devices],
        }
        if self.flip is not FlipPermission.USER:
            mapping["flip"] = self.flip.value
        if self.flip_options != UserFlipOptions():
            mapping["flip_options"] = self.flip_options.to_mapping()
        return mapping


@dataclass(frozen=True, slots=True)
class RegistrarSettings:
    """Registration lifetimes in seconds, and how many contacts one device may register."""

    min_expires: int = 60
    max_expires: int = 3600
    default_expires: int = 3600
    max_contacts: int = 5


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """How long a digest nonce stays valid, in seconds."""

    nonce_lifetime: int = 300


@dataclass(frozen=True, slots=True)
class CallSettings:
    """How long a call rings before it is given up, in seconds."""

    no_answer_timeout: int = 30


@dataclass(frozen=True, slots=True)
class FlipSettings:
    """The in-call code that moves a call to another of the user's devices; how long that rings.

    ``menu_timeout``: seconds the flip menu waits for a choice once its prompt has ended;
    ``digit_timeout``: seconds it waits for the next digit of a device number.
    """

    code: str = feature_code("*0")
    timeout: int = 30
    menu_timeout: int = 8
    digit_timeout: int = 3


#: Keypad transfer codes by preset: seed 000's hosted PBX (the default) and 4PSA VoipNow's.
TRANSFER_PRESETS: Final[dict[str, tuple[str, str]]] = {
    "default": ("*2", "**"),
    "voipnow": ("#1", "*2"),
}


@dataclass(frozen=True, slots=True)
class TransferSettings:
    """Keypad transfers: the blind and attended codes (each followed by a number), how long the
    target rings, how long the transferring device is rung back when it does not answer, and the
    two codes of an attended transfer's consultation (complete now, cancel).

    ``preset`` names where the codes came from (`TRANSFER_PRESETS`); a code given explicitly in
    the configuration overrides the preset's.
    """

    blind_code: str = feature_code("*2")
    attended_code: str = feature_code("**")
    timeout: int = 30
    recall_timeout: int = 30
    preset: str = "default"
    complete_code: str = feature_code(
        "*3"
    )  # during an attended transfer's consultation: hand over now
    cancel_code: str = feature_code("*4")  # ... and: back to the held party


@dataclass(frozen=True, slots=True)
class SecuritySettings:
    """Who may use the PBX, and when a source address that keeps failing to log in is banned.

    ``max_failures`` failed authentications from one address within ``failure_window`` seconds ban
    it for ``ban_time`` seconds. ``never_ban`` lists networks (CIDR) that are never banned (empty
    by default: a phone on the home network guessing wrong is as suspicious as anyone, and loopback
    stays bannable so that a scanner on the same host is stopped too). ``allow_public`` lets
    addresses outside loopback, private and link-local networks register and call.
    """

    max_failures: int = 5
    failure_window: int = 300
    ban_time: int = 1800
    never_ban: tuple[str, ...] = ()
    allow_public: bool = False


@dataclass(frozen=True, slots=True)
class PbxConfig:
    """The whole configuration. Build it with :func:`config_from_mapping` or :func:`load_config`.

    ``log_level`` is one of :data:`LOG_LEVELS`, lower case.
    """

    sip: SipSettings = field(default_factory=SipSettings)
    rtp: RtpSettings = field(default_factory=RtpSettings)
    users: tuple[User, ...] = ()
    registrar: RegistrarSettings = field(default_factory=RegistrarSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    calls: CallSettings = field(default_factory=CallSettings)
    flip: FlipSettings = field(default_factory=FlipSettings)
    log_level: str = "info"
    discovery: DiscoverySettings = field(default_factory=DiscoverySettings)
    security: SecuritySettings = field(default_factory=SecuritySettings)
    #: The ``trunks`` and ``dialplan`` sections (``sip_core.trunk.config``); None: no trunks.
    trunking: "Trunking | None" = None
    transfer: TransferSettings = field(default_factory=TransferSettings)
    groups: tuple[RingGroup, ...] = ()
    handoff: HandoffSettings = field(default_factory=HandoffSettings)
    group_presence: GroupPresenceCodes = field(default_factory=GroupPresenceCodes)
    #: The ``tls`` section, our TLS listener (``sip_core.tls_settings``); None: no TLS listener.
    tls: "TlsSettings | None" = None
    _by_username: dict[str, tuple[User, Device]] = field(
        init=False, repr=False, compare=False, hash=False
    )
    _by_extension: dict[str, User] = field(init=False, repr=False, compare=False, hash=False)
    _by_name: dict[str, User] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        # Lookups happen on every REGISTER and INVITE: index once. The first entry wins if a
        # hand-built config has duplicates (the loader refuses them).
        by_username: dict[str, tuple[User, Device]] = {}
        by_extension: dict[str, User] = {}
        for user in self.users:
            by_extension.setdefault(user.extension, user)
            for device in user.devices:
                by_username.setdefault(device.username, (user, device))
        object.__setattr__(self, "_by_username", by_username)
        object.__setattr__(self, "_by_extension", by_extension)
        object.__setattr__(self, "_by_name", {user.name: user for user in reversed(self.users)})

    def device(self, username: str) -> Device | None:
        """The device with this SIP username (compared exactly, as SIP compares user parts)."""
        found = self._by_username.get(username)
        return found[1] if found else None

    def user_for_device(self, username: str) -> User | None:
        """The user who owns the device with this SIP username."""
        found = self._by_username.get(username)
        return found[0] if found else None

    def user(self, name: str) -> User | None:
        """The user with this name (compared exactly)."""
        return self._by_name.get(name)

    def user_by_extension(self, extension: str) -> User | None:
        """The user reachable on this extension."""
        return self._by_extension.get(extension)

    def group(self, name: str) -> RingGroup | None:
        """The Personal Ring Group with this name."""
        for group in self.groups:
            if group.name == name:
                return group
        return None

    def group_by_pilot(self, pilot: str) -> RingGroup | None:
        """The Personal Ring Group whose pilot number this is."""
        for group in self.groups:
            if group.pilot == pilot:
                return group
        return None

    def groups_of(self, device: str) -> tuple[RingGroup, ...]:
        """The groups ``device`` is a member of, in file order."""
        return tuple(group for group in self.groups if device in group.members)

    def devices(self) -> Iterator[tuple[User, Device]]:
        """Every device with its owner, in file order."""
        for user in self.users:
            for device in user.devices:
                yield user, device

    def to_mapping(self, *, redact: bool = False) -> dict[str, Any]:
        """The configuration as plain data in the file's schema, every key written out.

        ``config_from_mapping(config.to_mapping()) == config``; ``redact`` hides passwords (for
        diagnostics and logs; the result then no longer loads as the same configuration).
        """
        return {
            "sip": {
                "listen": self.sip.listen,
                "port": self.sip.port,
                "domain": self.sip.domain,
                "workers": self.sip.workers,
            },
            "rtp": {
                "ports": f"{self.rtp.port_min}-{self.rtp.port_max}",
                "timeout": self.rtp.timeout,
                "realtime": self.rtp.realtime,
                **(
                    {}
                    if self.rtp.music_on_hold is None
                    else {"music_on_hold": self.rtp.music_on_hold}
                ),
            },
            "users": [user.to_mapping(redact=redact) for user in self.users],
            "registrar": {
                "min_expires": self.registrar.min_expires,
                "max_expires": self.registrar.max_expires,
                "default_expires": self.registrar.default_expires,
                "max_contacts": self.registrar.max_contacts,
            },
            "auth": {"nonce_lifetime": self.auth.nonce_lifetime},
            "calls": {"no_answer_timeout": self.calls.no_answer_timeout},
            "flip": {
                "code": self.flip.code,
                "timeout": self.flip.timeout,
                "menu_timeout": self.flip.menu_timeout,
                "digit_timeout": self.flip.digit_timeout,
            },
            "security": {
                "max_failures": self.security.max_failures,
                "failure_window": self.security.failure_window,
                "ban_time": self.security.ban_time,
                "never_ban": list(self.security.never_ban),
                "allow_public": self.security.allow_public,
            },
            "log_level": self.log_level,
            "discovery": {
                "plug_and_play": self.discovery.plug_and_play,
                "provision": dict(self.discovery.provision),
                "http_port": self.discovery.http_port,
            },
            **({} if self.trunking is None else self.trunking.to_mapping(redact=redact)),
            **({} if self.tls is None else {"tls": self.tls.to_mapping()}),
            "transfer": {
                "preset": self.transfer.preset,
                "blind_code": self.transfer.blind_code,
                "attended_code": self.transfer.attended_code,
                "timeout": self.transfer.timeout,
                "recall_timeout": self.transfer.recall_timeout,
                "complete_code": self.transfer.complete_code,
                "cancel_code": self.transfer.cancel_code,
            },
            "groups": [group.to_mapping() for group in self.groups],
            "handoff": {"code": self.handoff.code},
            "group_presence": {
                "present_code": self.group_presence.present_code,
                "absent_code": self.group_presence.absent_code,
            },
        }


# --- loading ---------------------------------------------------------------------------------


def load_config(path: str | PathLike[str]) -> PbxConfig:
    """Read and check a YAML configuration file; every problem is a :class:`ConfigError`."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", source=source) from None
    except IsADirectoryError:
        raise ConfigError("is a directory, not a file", source=source) from None
    except UnicodeDecodeError as err:
        line = err.object[: err.start].count(b"\n") + 1
        raise ConfigError("not UTF-8 text", line=line, source=source) from None
    except OSError as err:
        raise ConfigError(f"cannot read: {err.strerror or err}", source=source) from None
    return parse_config(text, source)


def parse_config(text: str, source_name: str = "<config>") -> PbxConfig:
    """Parse and check configuration text; errors name ``source_name``, the key path and line."""
    try:
        document = read_yaml(text, source_name)
    except YamlError as err:
        raise ConfigError(err.message, line=err.line, source=source_name) from None
    if document.data is None:
        raise ConfigError("the configuration is empty", source=source_name)
    lines = document.lines
    try:
        return config_from_mapping(document.data)
    except ConfigError as err:
        raise ConfigError(
            err.reason,
            key_path=err.key_path,
            line=_line_for(lines, err.key_path),
            source=source_name,
        ) from None


def _line_for(lines: Mapping[KeyPath, int], path: KeyPath) -> int | None:
    """The line of ``path``, or of its nearest written parent (a missing key's mapping)."""
    while path not in lines and path:
        path = path[:-1]
    return lines.get(path)


def config_from_mapping(data: Mapping[str, Any]) -> PbxConfig:
    """Check plain configuration data (the file's schema) and build the configuration.

    Errors name the key path; this is the entry point Home Assistant uses.
    """
    root = _section(data, (), _TOP_KEYS, what="the configuration")
    sip = _sip(root.get("sip"))
    rtp = _rtp(root.get("rtp"), sip)
    users = _users(root.get("users"))
    registrar = _registrar(root.get("registrar"))
    auth_data = _section(root.get("auth"), ("auth",), ("nonce_lifetime",))
    auth = AuthSettings(_int(auth_data, "nonce_lifetime", ("auth",), 300, (10, 86400)))
    calls_data = _section(root.get("calls"), ("calls",), ("no_answer_timeout",))
    calls = CallSettings(_int(calls_data, "no_answer_timeout", ("calls",), 30, (1, 3600)))
    flip = _flip(root.get("flip"))
    log_level = _log_level(root.get("log_level"))
    discovery = _discovery(root.get("discovery"), users)
    transfer = _transfer(root.get("transfer"))
    security = _security(root.get("security"))
    handoff = _handoff(root.get("handoff"))
    group_presence = _group_presence(root.get("group_presence"))
    from .tls_settings import tls_from_mapping  # noqa: PLC0415  (builds on this module)

    tls = tls_from_mapping(root.get("tls"), sip.port)
    config = PbxConfig(
        sip,
        rtp,
        users,
        registrar,
        auth,
        calls,
        flip,
        log_level,
        discovery,
        security=security,
        transfer=transfer,
        handoff=handoff,
        group_presence=group_presence,
        tls=tls,
    )
    codes = {declared.code: declared.name for declared in check_feature_codes(config)}
    groups = _groups(root.get("groups"), users, codes)
    trunking = _trunking(
        root,
        users,
        (*codes, *(group.pilot for group in groups)),
        groups=[group.name for group in groups],
    )
    _check_presence_with_pilots(group_presence, users, groups)
    return replace(config, groups=groups, trunking=trunking)


def _trunking(
    root: Mapping[str, Any],
    users: Sequence[User],
    numbers: Sequence[str] = (),
    *,
    groups: Sequence[str] = (),
) -> "Trunking | None":
    """The trunks and dial plan, checked by ``sip_core.trunk.config``.

    Imported here rather than at the top because that module builds on this one's helpers.
    """
    from .trunk.config import trunking_from_mapping  # noqa: PLC0415

    internal = [user.extension for user in users]
    internal += [device.username for user in users for device in user.devices]
    internal.extend(numbers)  # every feature code and the groups' pilots
    return trunking_from_mapping(
        root.get("trunks"), root.get("dialplan"), users, internal, groups=groups
    )


_TOP_KEYS: Final = (
    "sip",
    "rtp",
    "users",
    "registrar",
    "auth",
    "calls",
    "flip",
    "security",
    "log_level",
    "discovery",
    "trunks",
    "dialplan",
    "transfer",
    "groups",
    "handoff",
    "group_presence",
    "tls",
)
_USER_PART: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
_HOST_LABEL: Final = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_PORT_RANGE: Final = re.compile(r"\s*([0-9]{1,6})\s*-\s*([0-9]{1,6})\s*")
_FLIP_CODE: Final = re.compile(r"[0-9*#]{1,8}")
_FLIP_NUMBER: Final = re.compile(r"[0-9]{2,8}")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_MAX_NAME: Final = 64


def _fail(path: KeyPath, reason: str) -> NoReturn:
    raise ConfigError(reason, key_path=path)


def _describe(value: Any) -> str:
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the text {value!r}"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"


def _section(
    data: Any, path: KeyPath, keys: Sequence[str], *, what: str = "", required: bool = False
) -> Mapping[str, Any]:
    """A mapping with only the known keys; an absent or empty section is an empty mapping."""
    if data is None and not required:
        return {}
    if not isinstance(data, Mapping):
        _fail(path, f"{what} must be a mapping (key: value), not {_describe(data)}".strip())
    for key in data:
        if not isinstance(key, str):
            _fail(path, f"keys must be text, not {_describe(key)}")
        if key not in keys:
            close = difflib.get_close_matches(key, keys, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(keys)}"
            _fail((*path, key), f"unknown key; {hint}")
    return data


def _list(data: Any, path: KeyPath, what: str) -> Sequence[Any]:
    if data is None:
        return ()
    if not isinstance(data, list | tuple):
        _fail(path, f"must be a list of {what}, not {_describe(data)}")
    return data


def _int(
    section: Mapping[str, Any], key: str, path: KeyPath, default: int, bounds: tuple[int, int]
) -> int:
    lowest, highest = bounds
    value = section.get(key)
    if value is None:
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # number fields of Home Assistant forms give 10.0 for 10
    if isinstance(value, bool) or not isinstance(value, int):
        hint = ""
        if isinstance(value, str) and value.strip().isdigit():
            digits = value.strip()
            # From a file, an unquoted 0200 is text too (never octal): say what to change.
            leading_zero = len(digits) > 1 and digits.startswith("0")
            hint = " (write it without leading zeros)" if leading_zero else " (remove the quotes)"
        _fail((*path, key), f"must be a whole number, not {_describe(value)}{hint}")
    if not lowest <= value <= highest:
        _fail((*path, key), f"must be between {lowest} and {highest}, not {value}")
    return value


def _text(
    section: Mapping[str, Any],
    key: str,
    path: KeyPath,
    *,
    default: str | None = None,
    numbers: bool = False,
) -> str:
    """A text value; ``numbers``: an unquoted number counts as its digits (extensions, PINs)."""
    value = section.get(key)
    if value is None:
        if default is None:
            _fail((*path, key), "required")
        return default
    if numbers and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        _fail((*path, key), f"must be text, not {_describe(value)} (quote it)")
    if not value:
        _fail((*path, key), "must not be empty")
    return value


def _name(value: str, path: KeyPath) -> str:
    """A human name or label: trimmed, printable, not too long."""
    trimmed = value.strip()
    if not trimmed:
        _fail(path, "must not be blank")
    if _CONTROL.search(trimmed):
        _fail(path, "must not contain control characters")
    if len(trimmed) > _MAX_NAME:
        _fail(path, f"must be at most {_MAX_NAME} characters")
    return trimmed


def _user_part(value: str, path: KeyPath) -> str:
    if not _USER_PART.fullmatch(value):
        _fail(
            path,
            f"{value!r} is not a valid SIP user name: use 1 to 64 letters, digits, '.', '_' or '-'",
        )
    return value


def _sip(data: Any) -> SipSettings:
    path: KeyPath = ("sip",)
    section = _section(data, path, ("listen", "port", "domain", "workers"))
    return SipSettings(
        listen=_listen(_text(section, "listen", path, default="0.0.0.0"), (*path, "listen")),
        port=_int(section, "port", path, 5060, (1, 65535)),
        domain=_domain(_text(section, "domain", path, default="home.arpa"), (*path, "domain")),
        workers=_int(section, "workers", path, 0, (0, MAX_WORKERS)),
    )


def _listen(value: str, path: KeyPath) -> str:
    if value.lower() == "localhost":
        return "localhost"
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    if value.startswith("[") and value.endswith("]"):
        _fail(path, f"write the IPv6 address without brackets: {value[1:-1]}")
    _fail(
        path,
        f"must be an IP address (such as 0.0.0.0, 127.0.0.1 or ::) or localhost, not {value!r}",
    )


def _domain(value: str, path: KeyPath) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    name = value.lower().removesuffix(".")
    if len(name) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in name.split(".")):
        _fail(path, f"must be a domain name (such as home.arpa) or an IP address, not {value!r}")
    return name


def _discovery(data: Any, users: Sequence[User]) -> DiscoverySettings:
    path: KeyPath = ("discovery",)
    section = _section(data, path, ("plug_and_play", "provision", "http_port"))
    listen = section.get("plug_and_play", True)
    if not isinstance(listen, bool):
        _fail((*path, "plug_and_play"), f"must be true or false, not {_describe(listen)}")
    raw = section.get("provision")
    provision: list[tuple[str, str]] = []
    if raw is not None:
        if not isinstance(raw, Mapping):
            _fail(
                (*path, "provision"),
                f"must be a mapping of MAC address to device username, not {_describe(raw)}",
            )
        known = {device.username for user in users for device in user.devices}
        for key, value in raw.items():
            where = (*path, "provision", str(key))
            digits = re.sub(r"[:.\-]", "", str(key)).lower()
            if not re.fullmatch(r"[0-9a-f]{12}", digits):
                _fail(where, f"must be a MAC address such as 00:04:13:ab:cd:ef, not {key!r}")
            if not isinstance(value, str) or value not in known:
                _fail(where, f"must be the username of a configured device, not {value!r}")
            provision.append((digits, value))
    return DiscoverySettings(
        plug_and_play=listen,
        provision=tuple(provision),
        http_port=_int(section, "http_port", path, 8060, (0, 65535)),
    )


def _rtp(data: Any, sip: SipSettings) -> RtpSettings:
    path: KeyPath = ("rtp", "ports")
    section = _section(data, ("rtp",), ("ports", "music_on_hold", "timeout", "realtime"))
    music = _music_on_hold(section)
    timeout = _int(section, "timeout", ("rtp",), 60, (0, 3600))
    realtime = _bool(section, "realtime", ("rtp",), True)
    value = section.get("ports")
    if value is None:
        return RtpSettings(music_on_hold=music, timeout=timeout, realtime=realtime)
    match = _PORT_RANGE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        _fail(path, f"must be a port range such as 40000-40999, not {_describe(value)}")
    low, high = int(match.group(1)), int(match.group(2))
    if not (1024 <= low <= 65535 and 1024 <= high <= 65535):
        _fail(path, f"ports must be between 1024 and 65535 (got {low}-{high})")
    if low >= high:
        _fail(
            path, f"the first port must be below the last, for at least one pair (got {low}-{high})"
        )
    if low % 2:
        _fail(path, f"must start on an even port: RTP uses the even port, RTCP the odd (got {low})")
    if low <= sip.port <= high:
        _fail(path, f"must not include the SIP port {sip.port}")
    return RtpSettings(low, high, music, timeout, realtime)


def _music_on_hold(section: Mapping[str, Any]) -> str | None:
    """The music file's path, once it is known to load (a bad file is refused now, not at the
    first hold). The engine converts it again for its own use; this read only checks it."""
    path: KeyPath = ("rtp", "music_on_hold")
    value = section.get("music_on_hold")
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        _fail(path, f"must be the path of a WAV file, not {_describe(value)}")
    try:
        load_wav(value, 8000)
    except WavError as err:
        _fail(path, str(err))
    return value


def _users(data: Any) -> tuple[User, ...]:
    users: list[User] = []
    # Names, extensions and usernames share one namespace (compared without case) so that what
    # is dialled, and who registers, is never ambiguous.
    names: dict[str, KeyPath] = {}
    numbers: dict[str, KeyPath] = {}

    def claim(taken: dict[str, KeyPath], value: str, path: KeyPath) -> None:
        previous = taken.setdefault(value.casefold(), path)
        if previous != path:
            _fail(path, f"{value!r} is already used by {format_path(previous)}")

    for index, item in enumerate(_list(data, ("users",), "users")):
        path: KeyPath = ("users", index)
        section = _section(
            item, path, ("name", "extension", "devices", "flip", "flip_options"), required=True
        )
        name = _name(_text(section, "name", path, numbers=True), (*path, "name"))
        claim(names, name, (*path, "name"))
        extension = _user_part(
            _text(section, "extension", path, numbers=True), (*path, "extension")
        )
        claim(numbers, extension, (*path, "extension"))
        devices: list[Device] = []
        for number, raw in enumerate(_list(section.get("devices"), (*path, "devices"), "devices")):
            device = _device(raw, (*path, "devices", number))
            claim(numbers, device.username, (*path, "devices", number, "username"))
            devices.append(device)
        _check_flip_numbers(devices, (*path, "devices"))
        flip = _choice(section, "flip", path, FlipPermission, FlipPermission.USER)
        options = _flip_options(section.get("flip_options"), (*path, "flip_options"))
        users.append(User(name, extension, tuple(devices), flip, options))
    return tuple(users)


def _flip_options(data: Any, path: KeyPath) -> UserFlipOptions:
    keys = ("timeout", "auto_hangup", "announcement", "simultaneous_ring")
    section = _section(data, path, keys)
    timeout = None
    if section.get("timeout") is not None:
        timeout = _int(section, "timeout", path, 30, (1, 3600))
    return UserFlipOptions(
        timeout=timeout,
        auto_hangup=_bool(section, "auto_hangup", path, True),
        announcement=_bool(section, "announcement", path, False),
        simultaneous_ring=_bool(section, "simultaneous_ring", path, False),
    )


def _bool(section: Mapping[str, Any], key: str, path: KeyPath, default: bool) -> bool:
    value = section.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        _fail((*path, key), f"must be true or false, not {_describe(value)}")
    return value


def _check_flip_numbers(devices: Sequence[Device], path: KeyPath) -> None:
    """A user's device numbers (flip numbers, all-digit usernames) must tell the devices apart
    after the flip code: a flip number may not be another of the user's device numbers."""
    numbers: dict[str, int] = {}
    for index, device in enumerate(devices):
        if device.username.isdigit():
            numbers.setdefault(device.username, index)
    for index, device in enumerate(devices):
        number = device.flip_number
        if number is None:
            continue
        other = numbers.setdefault(number, index)
        if other != index:
            _fail(
                (*path, index, "flip_number"),
                f"{number!r} is already the number of devices[{other}]",
            )


def _device(data: Any, path: KeyPath) -> Device:
    keys = ("username", "password", "label", "type", "priority", "digest", "flip_number")
    section = _section(data, path, keys, required=True)
    username = _user_part(_text(section, "username", path, numbers=True), (*path, "username"))
    password = _text(section, "password", path, numbers=True)
    if len(password) < MIN_PASSWORD_LENGTH:
        _fail((*path, "password"), f"too short: use at least {MIN_PASSWORD_LENGTH} characters")
    label = _name(_text(section, "label", path, default=username, numbers=True), (*path, "label"))
    kind = _choice(section, "type", path, DeviceType, DeviceType.DESK)
    priority = _int(section, "priority", path, 0, (0, 1000))
    flip_number: str | None = None
    if section.get("flip_number") is not None:
        flip_number = _text(section, "flip_number", path, numbers=True)
        if not _FLIP_NUMBER.fullmatch(flip_number):
            _fail(
                (*path, "flip_number"),
                f"must be 2 to 8 digits (one digit would be a menu choice), not {flip_number!r}",
            )
    digest = _digest(section.get("digest"), path)
    return Device(username, password, label, kind, priority, digest, flip_number)


def _choice[E: StrEnum](
    section: Mapping[str, Any], key: str, path: KeyPath, enum: type[E], default: E
) -> E:
    value = section.get(key)
    return default if value is None else _member(value, (*path, key), enum)


def _member[E: StrEnum](value: Any, path: KeyPath, enum: type[E]) -> E:
    """The enum member spelt ``value`` (any case)."""
    if isinstance(value, str):
        for member in enum:
            if member.value.lower() == value.lower():
                return member
    allowed = ", ".join(member.value for member in enum)
    _fail(path, f"must be one of {allowed}, not {_describe(value)}")


def _digest(data: Any, path: KeyPath) -> tuple[DigestAlgorithm, ...]:
    path = (*path, "digest")
    if data is None:
        return DEFAULT_DIGEST
    if not isinstance(data, list | tuple):
        _fail(path, f"must be a list such as [MD5, SHA-256], not {_describe(data)}")
    if not data:
        _fail(path, "must name at least one algorithm")
    algorithms: list[DigestAlgorithm] = []
    for index, value in enumerate(data):
        algorithm = _member(value, (*path, index), DigestAlgorithm)
        if algorithm in algorithms:
            _fail((*path, index), f"lists {algorithm.value} twice")
        algorithms.append(algorithm)
    return tuple(algorithms)


def _registrar(data: Any) -> RegistrarSettings:
    path: KeyPath = ("registrar",)
    keys = ("min_expires", "max_expires", "default_expires", "max_contacts")
    section = _section(data, path, keys)
    week = 7 * 86400
    settings = RegistrarSettings(
        min_expires=_int(section, "min_expires", path, 60, (1, week)),
        max_expires=_int(section, "max_expires", path, 3600, (1, week)),
        default_expires=_int(section, "default_expires", path, 3600, (1, week)),
        max_contacts=_int(section, "max_contacts", path, 5, (1, 100)),
    )
    if settings.max_expires < settings.min_expires:
        _fail(
            (*path, "max_expires"),
            f"must not be below min_expires ({settings.min_expires}), not {settings.max_expires}",
        )
    if not settings.min_expires <= settings.default_expires <= settings.max_expires:
        _fail(
            (*path, "default_expires"),
            f"must be between min_expires ({settings.min_expires}) and max_expires"
            f" ({settings.max_expires}), not {settings.default_expires}",
        )
    return settings


def _keypad_code(section: Mapping[str, Any], key: str, path: KeyPath, default: str) -> str:
    """A feature code of ``section`` (``default`` when absent): 1 to 8 keypad keys, written as
    text. Only its form is checked here; its clashes are `check_feature_codes`'s."""
    if key not in section:
        return default
    if section[key] is None:
        _fail(
            (*path, key),
            "required (quote a code that starts with '#' or '*': an unquoted '#' starts a comment)",
        )
    code = _text(section, key, path, numbers=True)
    if not _FLIP_CODE.fullmatch(code):
        _fail((*path, key), f"must be 1 to 8 keypad keys (0-9, * and #), not {code!r}")
    return code


def _flip(data: Any) -> FlipSettings:
    path: KeyPath = ("flip",)
    section = _section(data, path, ("code", "timeout", "menu_timeout", "digit_timeout"))
    return FlipSettings(
        _keypad_code(section, "code", path, "*0"),
        _int(section, "timeout", path, 30, (1, 3600)),
        _int(section, "menu_timeout", path, 8, (1, 120)),
        _int(section, "digit_timeout", path, 3, (1, 30)),
    )


def _log_level(value: Any) -> str:
    if value is None:
        return "info"
    if isinstance(value, str) and value.lower() in LOG_LEVELS:
        return value.lower()
    _fail(("log_level",), f"must be one of {', '.join(LOG_LEVELS)}, not {_describe(value)}")


def security_settings(data: Mapping[str, Any] | None) -> SecuritySettings:
    """Check the ``security`` section alone (Home Assistant's options keep it apart)."""
    return _security(data)


def _security(data: Any) -> SecuritySettings:
    path: KeyPath = ("security",)
    keys = ("max_failures", "failure_window", "ban_time", "never_ban", "allow_public")
    section = _section(data, path, keys)
    networks: list[str] = []
    for index, value in enumerate(
        _list(section.get("never_ban"), (*path, "never_ban"), "networks")
    ):
        where = (*path, "never_ban", index)
        if not isinstance(value, str):
            _fail(where, f"must be a network such as 192.168.1.0/24, not {_describe(value)}")
        try:
            network = ipaddress.ip_network(value.strip(), strict=False)
        except ValueError:
            _fail(where, f"must be a network such as 192.168.1.0/24, not {value!r}")
        if str(network) not in networks:
            networks.append(str(network))
    allow_public = section.get("allow_public")
    if allow_public is None:
        allow_public = False
    elif not isinstance(allow_public, bool):
        _fail((*path, "allow_public"), f"must be true or false, not {_describe(allow_public)}")
    day = 86400
    return SecuritySettings(
        max_failures=_int(section, "max_failures", path, 5, (1, 1000)),
        failure_window=_int(section, "failure_window", path, 300, (1, day)),
        ban_time=_int(section, "ban_time", path, 1800, (1, 30 * day)),
        never_ban=tuple(networks),
        allow_public=allow_public,
    )


def check_feature_codes(config: PbxConfig, *, prefer: str | None = None) -> list[DeclaredCode]:
    """The one check of every feature code (`sip_core.dialled_codes`: declared with
    `feature_code`) against the others and the numbers dialled from idle (extensions, device
    usernames, group pilots). Raises `CodeConflict` on the code to blame -- in the section
    ``prefer`` names when it is one of the two (the one Home Assistant's form edits)."""
    taken = "an extension or a device's username"
    numbers: dict[str, DialledNumber] = {}
    for index, group in enumerate(config.groups):
        what = f"the pilot of group {group.name!r}"
        numbers[group.pilot] = DialledNumber(what, ("groups", index, "pilot"))
    for index, user in enumerate(config.users):
        numbers[user.extension] = DialledNumber(taken, ("users", index, "extension"))
        for number, device in enumerate(user.devices):
            where: KeyPath = ("users", index, "devices", number, "username")
            numbers[device.username] = DialledNumber(taken, where)
    codes = declared_codes(config)
    clash = find_clash(codes, numbers, prefer=prefer)
    if clash is not None:
        raise CodeConflict(clash.reason, key_path=clash.key_path, clashes_with=clash.clashes_with)
    return codes


def transfer_settings(
    data: Mapping[str, Any] | None, config: PbxConfig, *, prefer: str = "transfer"
) -> TransferSettings:
    """Check the ``transfer`` section alone, against every other code and number of ``config``
    (Home Assistant's options keep it apart). Raises `ConfigError` (`CodeConflict` for clashes,
    blamed on what is in the section ``prefer`` names when it is one of the two)."""
    settings = _transfer(data)
    check_feature_codes(replace(config, transfer=settings), prefer=prefer)
    return settings


def _transfer(data: Any) -> TransferSettings:
    path: KeyPath = ("transfer",)
    keys = (
        "preset",
        "blind_code",
        "attended_code",
        "timeout",
        "recall_timeout",
        "complete_code",
        "cancel_code",
    )
    section = _section(data, path, keys)
    preset = "default"
    if section.get("preset") is not None:
        preset = _text(section, "preset", path).lower()
        if preset not in TRANSFER_PRESETS:
            _fail(
                (*path, "preset"),
                f"must be one of {', '.join(TRANSFER_PRESETS)}, not {section['preset']!r}",
            )
    codes = dict(zip(("blind_code", "attended_code"), TRANSFER_PRESETS[preset], strict=True))
    codes |= {"complete_code": "*3", "cancel_code": "*4"}
    codes = {key: _keypad_code(section, key, path, default) for key, default in codes.items()}
    # Clashes with other codes and with numbers: `check_feature_codes`, over every code at once.
    return TransferSettings(
        blind_code=codes["blind_code"],
        attended_code=codes["attended_code"],
        timeout=_int(section, "timeout", path, 30, (1, 3600)),
        recall_timeout=_int(section, "recall_timeout", path, 30, (1, 3600)),
        preset=preset,
        complete_code=codes["complete_code"],
        cancel_code=codes["cancel_code"],
    )


# --- Personal Ring Groups (sip_core.prg.model) ---------------------------------------------------


def _handoff(data: Any) -> HandoffSettings:
    path: KeyPath = ("handoff",)
    section = _section(data, path, ("code",))
    code = _keypad_code(section, "code", path, HandoffSettings().code)
    # Clashes with other codes and with numbers: `check_feature_codes`, over every code at once.
    return HandoffSettings(code)


def _groups(data: Any, users: Sequence[User], codes: Mapping[str, str]) -> tuple[RingGroup, ...]:
    """Personal Ring Groups; their names and pilots share the users' namespace (no case), and
    no pilot may be a feature code (``codes``: each code to its name in messages)."""
    numbers = {user.extension.casefold() for user in users} | {
        device.username.casefold() for user in users for device in user.devices
    }
    devices = {device.username for user in users for device in user.devices}
    user_names = {user.name for user in users}
    names: dict[str, KeyPath] = {}
    pilots: dict[str, KeyPath] = {}
    raw_targets: list[tuple[KeyPath, Any]] = []
    groups: list[RingGroup] = []
    keys = ("name", "pilot", "members", "ring_timer", "no_answer")
    for index, item in enumerate(_list(data, ("groups",), "groups")):
        path: KeyPath = ("groups", index)
        section = _section(item, path, keys, required=True)
        name = _name(_text(section, "name", path, numbers=True), (*path, "name"))
        previous = names.setdefault(name.casefold(), (*path, "name"))
        if previous != (*path, "name"):
            _fail((*path, "name"), f"{name!r} is already used by {format_path(previous)}")
        pilot = _user_part(_text(section, "pilot", path, numbers=True), (*path, "pilot"))
        if pilot.casefold() in numbers:
            _fail((*path, "pilot"), f"{pilot!r} is already an extension or a device's username")
        if pilot in codes:
            raise CodeConflict(
                f"{pilot!r} is also the feature code {codes[pilot]}",
                key_path=(*path, "pilot"),
                clashes_with=codes[pilot],
            )
        previous = pilots.setdefault(pilot.casefold(), (*path, "pilot"))
        if previous != (*path, "pilot"):
            _fail((*path, "pilot"), f"{pilot!r} is already used by {format_path(previous)}")
        raw_members = _list(section.get("members"), (*path, "members"), "device usernames")
        if not raw_members:
            _fail((*path, "members"), "a group needs at least one member device")
        members: list[str] = []
        for number, item_value in enumerate(raw_members):
            member_path: KeyPath = (*path, "members", number)
            member = item_value
            if isinstance(member, int) and not isinstance(member, bool):
                member = str(member)
            if not isinstance(member, str):
                _fail(member_path, f"must be a device's username, not {_describe(member)}")
            if member not in devices:
                _fail(member_path, f"no device is called {member!r}")
            if member in members:
                _fail(member_path, f"{member!r} is listed twice")
            members.append(member)
        ring_timer = _int(section, "ring_timer", path, DEFAULT_RING_TIMER, (1, 3600))
        raw_targets.append(((*path, "no_answer"), section.get("no_answer")))
        groups.append(RingGroup(name, pilot, tuple(members), ring_timer))
    # Targets are checked once every group is known (a group may forward to a later one).
    group_names = {group.name for group in groups}
    for (path, raw), group in zip(raw_targets, groups, strict=True):
        known = {
            NoAnswerKind.USER: user_names,
            NoAnswerKind.DEVICE: devices,
            NoAnswerKind.GROUP: group_names,
        }
        target = _no_answer(raw, path, known, group.name)
        if target is not None:
            groups[groups.index(group)] = RingGroup(
                group.name, group.pilot, group.members, group.ring_timer, target
            )
    return tuple(groups)


def _no_answer(
    value: Any, path: KeyPath, known: Mapping[NoAnswerKind, set[str]], own: str
) -> NoAnswerTarget | None:
    usage = "'user:<name>', 'device:<username>', 'group:<name>' or 'none'"
    if value is None:
        return None
    if not isinstance(value, str):
        _fail(path, f"must be {usage}, not {_describe(value)}")
    if value.strip().lower() == "none":
        return None
    kind_text, sep, name = value.partition(":")
    kind = next((k for k in NoAnswerKind if k.value == kind_text.strip().lower()), None)
    name = name.strip()
    if not sep or not name or kind is None:
        _fail(path, f"must be {usage}, not {value!r}")
    if name not in known[kind]:
        _fail(path, f"no {kind.value} is called {name!r}")
    if kind is NoAnswerKind.GROUP and name == own:
        _fail(path, "a group cannot forward its unanswered calls to itself")
    return NoAnswerTarget(kind, name)


def _group_presence(data: Any) -> GroupPresenceCodes:
    """The Group Presence codes, dialled from an idle phone alone or followed by a pilot.

    Only their form is checked here: their clashes with every other code and number are the one
    check of `check_feature_codes` (both are declared idle codes), and what a code followed by a
    pilot may not be is `_check_presence_with_pilots`, once the groups are known."""
    path: KeyPath = ("group_presence",)
    keys = ("present_code", "absent_code")
    section = _section(data, path, keys)
    defaults = GroupPresenceCodes()
    return GroupPresenceCodes(
        _keypad_code(section, keys[0], path, defaults.present_code),
        _keypad_code(section, keys[1], path, defaults.absent_code),
    )


def _check_presence_with_pilots(
    presence: GroupPresenceCodes, users: Sequence[User], groups: Sequence[RingGroup]
) -> None:
    """A Group Presence code followed by a pilot (one group only) must not be someone's number:
    the phone dials it whole, and the PBX could not tell the two apart."""
    numbers = {user.extension for user in users} | {
        device.username for user in users for device in user.devices
    }
    for key in ("present_code", "absent_code"):
        code = getattr(presence, key)
        for group in groups:
            if code + group.pilot in numbers:
                raise CodeConflict(
                    f"{code + group.pilot!r} ({code!r} then the pilot of {group.name}) is also an"
                    " extension or a device's username",
                    key_path=("group_presence", key),
                )
