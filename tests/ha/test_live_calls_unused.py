"""Home Assistant reads calls through snapshots only (`sip_core.call_snapshot`), never the live
`Call`/`Leg` objects the B2BUA mutates: checked on the integration's source (AST)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

INTEGRATION = Path(__file__).resolve().parents[2] / "custom_components" / "callflip"
MODULES = sorted(INTEGRATION.rglob("*.py"))
LIVE_NAMES = frozenset({"Call", "Leg"})
LIVE_METHODS = frozenset({"calls", "call"})


def live_uses(source: str) -> list[str]:
    """What in ``source`` reaches a live call: importing ``Call``/``Leg`` from
    ``sip_core.calls``, or calling a ``calls()``/``call(...)`` method (of the PBX)."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module == "sip_core.calls":
            found.extend(
                f"line {node.lineno}: imports {alias.name}"
                for alias in node.names
                if alias.name in LIVE_NAMES or alias.name == "*"
            )
        elif isinstance(node, ast.Import):
            found.extend(
                f"line {node.lineno}: imports {alias.name}"
                for alias in node.names
                if alias.name == "sip_core.calls"
            )
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in LIVE_METHODS
        ):
            found.append(f"line {node.lineno}: calls .{node.func.attr}()")
    return found


def test_modules_are_found() -> None:
    assert len(MODULES) > 20
    assert INTEGRATION / "call_view.py" in MODULES


@pytest.mark.parametrize("path", MODULES, ids=lambda path: path.name)
def test_no_live_calls(path: Path) -> None:
    assert live_uses(path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize(
    "source",
    [
        "from sip_core.calls import Call",
        "from sip_core.calls import CallState, Leg",
        "from sip_core.calls import *",
        "import sip_core.calls",
        "hub.pbx.calls()",
        "pbx.call(call_id)",
        "self._hub.pbx.call(event.call_id)",
    ],
)
def test_the_check_finds_live_uses(source: str) -> None:
    assert live_uses(source) != []


@pytest.mark.parametrize(
    "source",
    [
        "from sip_core.calls import CallOutcome, CallRecord, CallState",
        "hub.pbx.call_snapshots()",
        "hub.pbx.call_snapshot(call_id)",
        "hub.call_of(view.call_id)",
    ],
)
def test_the_check_allows_snapshots(source: str) -> None:
    assert live_uses(source) == []
