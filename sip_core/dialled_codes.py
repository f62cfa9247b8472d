"""Every feature code a phone dials, declared where it is configured, and the one clash check.

Why one check: the codes are configured in several sections (``flip.code``, the ``transfer``
codes, ``handoff.code``, and whatever a feature adds next), but a phone dials them all on the same
keypad. Checked section by section, each section checked the others it knew of, and a clash
between two that did not know each other got through (a transfer code equal to the handoff code).
So a settings field that holds a code says so where it is declared (`feature_code`), and
`declared_codes` finds every such field in the configuration: a new code is checked against all
the others by being declared, with nothing to add to the check.

The rules (`find_clash`):
- two codes dialled in the same place (in a call, or from an idle phone; `CodeScope`) must not
  start one another: each may be followed by more digits (a number, a device, a pilot), so the
  collector could not tell ``*2`` then ``2...`` from ``*22`` then ``...``;
- two codes dialled only in different places must still differ (one code, two meanings, is a trap
  for the person dialling);
- no code may be a number someone dials from idle: a user's extension, a device's username, a
  Personal Ring Group's pilot.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Flag, auto
from typing import Any, Final

__all__ = [
    "CodeClash",
    "CodeScope",
    "DeclaredCode",
    "DialledNumber",
    "declared_codes",
    "feature_code",
    "find_clash",
]

#: The metadata key that marks a settings field as a feature code (its value: the `CodeScope`).
_SCOPE: Final = "callflip_code_scope"


class CodeScope(Flag):
    """Where a code is dialled: its keys go to one collector there."""

    IN_CALL = auto()  # keys pressed during a call (flip, transfers, push, a consultation's)
    IDLE = auto()  # dialled from an idle phone, the whole code in the INVITE (pull, ...)
    BOTH = IN_CALL | IDLE


def feature_code(default: str, scope: CodeScope = CodeScope.IN_CALL) -> Any:
    """A settings dataclass field holding a feature code (use as the field's default).

    Declaring it so is all it takes for the code to be checked against every other code and
    every number (`declared_codes`, `find_clash`)."""
    return dataclasses.field(default=default, metadata={_SCOPE: scope})


@dataclass(frozen=True, slots=True)
class DeclaredCode:
    """One configured code: where it is set (``key_path``, e.g. ``("transfer", "blind_code")``),
    its keys and where it is dialled."""

    key_path: tuple[str | int, ...]
    code: str
    scope: CodeScope

    @property
    def name(self) -> str:
        """How messages name it: ``transfer.blind_code '*2'``."""
        path = ".".join(str(part) for part in self.key_path)
        return f"{path} {self.code!r}"

    @property
    def section(self) -> str:
        return str(self.key_path[0]) if self.key_path else ""


@dataclass(frozen=True, slots=True)
class DialledNumber:
    """A number dialled from idle that no code may be: what it is (for messages: "an
    extension"), and where it is set."""

    what: str
    key_path: tuple[str | int, ...] = ()


@dataclass(frozen=True, slots=True)
class CodeClash:
    """A code that cannot be used: where it is set, why, and what it clashes with."""

    key_path: tuple[str | int, ...]
    reason: str
    clashes_with: str


def declared_codes(config: object) -> list[DeclaredCode]:
    """Every code declared with `feature_code` in ``config``'s sections (a dataclass whose fields
    are settings dataclasses, or tuples of them), in declaration order."""
    found: list[DeclaredCode] = []
    for section in dataclasses.fields(config):  # type: ignore[arg-type]
        value = getattr(config, section.name, None)
        if isinstance(value, tuple):
            for index, item in enumerate(value):
                found.extend(_codes_in(item, (section.name, index)))
        else:
            found.extend(_codes_in(value, (section.name,)))
    return found


def _codes_in(settings: object, path: tuple[str | int, ...]) -> Iterable[DeclaredCode]:
    if not dataclasses.is_dataclass(settings) or isinstance(settings, type):
        return ()
    return [
        DeclaredCode((*path, item.name), str(getattr(settings, item.name)), item.metadata[_SCOPE])
        for item in dataclasses.fields(settings)
        if _SCOPE in item.metadata
    ]


def find_clash(
    codes: Sequence[DeclaredCode],
    numbers: Mapping[str, DialledNumber] | None = None,
    *,
    prefer: str | None = None,
) -> CodeClash | None:
    """The first clash among ``codes`` and with ``numbers`` (dialled from idle), or None.

    Of two clashing codes the one blamed is in the section ``prefer`` names (the one being edited
    in Home Assistant's options), else the later one (the earlier one was there first). Of a
    code and a number, the code is blamed, unless the number is in the section ``prefer``."""
    taken = numbers or {}
    for code in codes:
        number = taken.get(code.code)
        if number is None:
            continue
        if prefer is not None and number.key_path and number.key_path[0] == prefer:
            return CodeClash(
                number.key_path, f"{code.code!r} is also the feature code {code.name}", code.name
            )
        return CodeClash(code.key_path, f"{code.code!r} is also {number.what}", number.what)
    for index, first in enumerate(codes):
        for second in codes[index + 1 :]:
            shared = first.scope & second.scope
            if shared:
                clash = first.code.startswith(second.code) or second.code.startswith(first.code)
            else:
                clash = first.code == second.code
            if not clash:
                continue
            blamed, other = second, first
            if prefer is not None and first.section == prefer and second.section != prefer:
                blamed, other = first, second
            why = "one starts the other" if shared else "one code, two meanings"
            return CodeClash(
                blamed.key_path,
                f"{blamed.code!r} and {other.name} cannot both be codes: {why}",
                other.name,
            )
    return None
