"""sip_core's import rules, checked on the source (AST) without importing anything.

The layer table is docs/architecture.md's, encoded here. A module that is not in the table fails the
test on purpose: whoever adds one must decide where it belongs (and update the document too).

Rules:
- no module imports Home Assistant (sip_core runs on its own and is published without it);
- a module imports only modules of its own layer or below, never a higher one;
- sip_core imports only the standard library and itself, except for the few third-party modules
  that ALLOWED_THIRD_PARTY names for one module each (PyYAML, for the runner's file).
Imports under ``if TYPE_CHECKING:`` and inside functions count like any other: a dependency on a
higher layer is one whether or not it is executed at import time.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "sip_core"
PACKAGE_DIR = Path(__file__).resolve().parents[2] / PACKAGE

# docs/architecture.md, "Layers of sip_core". `__init__` is the package itself: every import of a
# sip_core module runs it, so it must sit below everything and import nothing of its own.
LAYERS: dict[str, int] = {
    "__init__": 0,
    # 0 support
    "clock": 0,
    "limits": 0,
    "yaml_file": 0,
    # 1 message
    "uri": 1,
    "headers": 1,
    "message": 1,
    "framing": 1,
    "sdp": 1,
    "rtp": 1,
    "dtmf": 1,
    # 1 audio (a subpackage: its `__init__` is the package itself)
    "audio.__init__": 1,
    "audio.clip": 1,
    "audio.g711": 1,
    "audio.g722": 1,
    "audio.codecs": 1,
    "audio.tones": 1,
    "audio.sources": 1,
    "audio.resample": 1,
    "audio.wav": 1,
    "audio.assets": 1,
    "audio.playback": 1,
    "audio.collector": 1,
    "audio.mix": 1,
    # 2 transport
    "transport": 2,
    "tls": 2,
    # 2 media (a subpackage: its `__init__` is the package itself)
    "media.__init__": 2,
    "media.client": 2,
    "media.engine": 2,
    "media.fastpath": 2,
    "media.packets": 2,
    "media.ports": 2,
    "media.protocol": 2,
    "media.relay": 2,
    "media.scheduling": 2,
    "media.udp_peer": 2,
    # 3 transaction
    "transaction": 3,
    # 4 dialog / auth
    "dialog": 4,
    "digest": 4,
    "digest_client": 4,
    # 5 model, and the services below call control (guard, presence, forwarding, trunks, state)
    "config": 5,
    "tls_settings": 5,
    "dialled_codes": 5,
    "calls": 5,
    "call_snapshot": 6,
    "events": 5,
    "registrar": 5,
    "guard": 5,
    "forwarding": 5,
    "presence": 5,
    "call_audio": 6,
    "state": 5,
    "stats": 5,
    # 1 phone identity
    "useragent": 1,
    # 5 discovery
    "phones": 5,
    "plugplay": 5,
    "provisioning": 5,
    "provision_http": 5,
    # 5 trunks
    "trunk.__init__": 5,
    "trunk.config": 5,
    "trunk.registration": 5,
    "trunk.ingress": 5,
    "trunk.egress": 5,
    "prg.__init__": 5,
    "prg.model": 5,
    "prg.presence": 5,
    # 6 call control (a subpackage: its `__init__` is the package itself)
    "call.__init__": 6,
    "call.messages": 6,
    "call.session_timer": 6,
    "call.digits": 6,
    "call.fork": 6,
    "call.negotiation": 6,
    "call.control": 6,
    "call.targets": 6,
    "call.dial": 6,
    "call.originate": 6,
    "call.activity": 6,
    # 8 features (a subpackage)
    "features.__init__": 8,
    "features.codes": 8,
    "features.flip": 8,
    "features.attended": 8,
    "features.refer": 8,
    "features.handoff": 8,
    "features.ring_group": 8,
    "features.group_presence_codes": 8,
    "features.flip_menu": 8,
    "features.registry": 8,
    "features.replaces": 8,
    "features.transfer": 8,
    "features.announce": 8,
    "features.click_to_dial": 8,
    # 9 facade / runner
    "b2bua": 9,
    "pbx": 9,
    "workers": 9,
    "__main__": 9,
    "trunk.nat": 5,
    "trunk.tls": 5,
}
FORBIDDEN_ROOTS = frozenset({"homeassistant", "custom_components"})
# The runtime dependencies in pyproject.toml, and the one module that may use each.
ALLOWED_THIRD_PARTY: dict[str, frozenset[str]] = {"yaml_file": frozenset({"yaml"})}


@dataclass(frozen=True, slots=True)
class ImportedName:
    """One import statement's target: a dotted module name, absolute after resolution."""

    module: str
    line: int


def module_name(path: Path, root: Path) -> str:
    """`sip_core/transport.py` -> `transport`; a subpackage module -> `sub.module`."""
    return ".".join(path.relative_to(root).with_suffix("").parts)


def imported_modules(source: str, module: str) -> list[ImportedName]:
    """Every module an import statement in `source` names, relative imports made absolute.

    `from sip_core import x` names `sip_core.x`: it may be a module or a name in `__init__`, and
    `resolve_internal` decides which.
    """
    tree = ast.parse(source)
    package_parts = [PACKAGE, *module.split(".")[:-1]]
    found: list[ImportedName] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(ImportedName(alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package_parts[: len(package_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base == PACKAGE or (node.level and not node.module):
                found.extend(
                    ImportedName(f"{base}.{alias.name}", node.lineno) for alias in node.names
                )
            else:
                found.append(ImportedName(base, node.lineno))
    return found


def resolve_internal(dotted: str, known: set[str]) -> str:
    """The sip_core module a `sip_core...` import depends on (its `__init__` for plain names)."""
    parts = dotted.split(".")[1:]
    while parts:
        candidate = ".".join(parts)
        if candidate in known:
            return candidate
        if f"{candidate}.__init__" in known:  # a subpackage
            return f"{candidate}.__init__"
        parts.pop()
    return "__init__"


def violations(module: str, source: str, known: set[str]) -> list[str]:
    """Every rule that `module` (whose text is `source`) breaks; empty when it is clean."""
    problems: list[str] = []
    if module not in LAYERS:
        problems.append(
            f"{module}: not in the layer table; place it in docs/architecture.md and in LAYERS"
        )
        return problems
    layer = LAYERS[module]
    for imported in imported_modules(source, module):
        root = imported.module.split(".")[0]
        where = f"{module}:{imported.line}"
        if root in FORBIDDEN_ROOTS:
            problems.append(f"{where}: imports {imported.module} (sip_core must not use HA)")
        elif root == PACKAGE:
            target = resolve_internal(imported.module, known)
            target_layer = LAYERS.get(target)
            if target_layer is None:
                problems.append(f"{where}: imports {target}, which is not in the layer table")
            elif target_layer > layer:
                problems.append(
                    f"{where}: layer {layer} imports {target} of higher layer {target_layer}"
                )
        elif root not in sys.stdlib_module_names and root not in ALLOWED_THIRD_PARTY.get(
            module, frozenset()
        ):
            problems.append(
                f"{where}: imports {imported.module}, which is not the standard library"
            )
    return problems


def _package_modules() -> dict[str, Path]:
    return {module_name(path, PACKAGE_DIR): path for path in sorted(PACKAGE_DIR.rglob("*.py"))}


def test_the_table_is_what_the_architecture_document_says() -> None:
    """Keeps LAYERS honest: every module the document's table names is in it, at that layer."""
    document = (PACKAGE_DIR.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    table_rows = [line for line in document.splitlines() if line.startswith("| ") and "`" in line]
    documented: dict[str, int] = {}
    for row in table_rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        if not cells[0][:1].isdigit():
            continue
        layer = int(cells[0].split()[0])
        for name in cells[1].split(","):
            documented[name.strip().strip("`")] = layer
    assert documented, "no layer table found in docs/architecture.md"
    # The document names a subpackage by itself (`audio`), the table by its `audio.__init__`.
    assert documented == {
        name.removesuffix(".__init__"): layer
        for name, layer in LAYERS.items()
        if name != "__init__"
    }


def test_sip_core_modules_follow_the_layer_rules() -> None:
    modules = _package_modules()
    assert "transport" in modules  # the scan really looks at the package
    known = set(modules)
    problems = [
        problem
        for name, path in modules.items()
        for problem in violations(name, path.read_text(encoding="utf-8"), known)
    ]
    assert problems == []


# The checker itself, on made-up modules: each rule must catch what it is there for.

KNOWN = {
    "__init__",
    "clock",
    "message",
    "framing",
    "transport",
    "transaction",
    "pbx",
    "calls",
    "call.control",
    "call.fork",
    "features.__init__",
    "features.flip",
}


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("transport", "import homeassistant.core\n", "must not use HA"),
        ("clock", "from homeassistant.util import dt\n", "must not use HA"),
        ("pbx", "from custom_components.callflip import x\n", "must not use HA"),
        ("message", "from sip_core.transport import Address\n", "higher layer 2"),
        ("message", "from . import transaction\n", "higher layer 3"),
        ("transport", "from .pbx import Pbx\n", "higher layer 9"),
        ("clock", "import sip_core.message\n", "higher layer 1"),
        (
            "transport",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .transaction import T\n",
            "higher layer 3",
        ),
        ("transport", "def f():\n    from sip_core import pbx\n", "higher layer 9"),
        ("transport", "import yaml\n", "not the standard library"),
        ("config", "from yaml import safe_load\n", "not the standard library"),
        ("pbx", "from aiohttp import web\n", "not the standard library"),
        ("newthing", "import asyncio\n", "not in the layer table"),
        # call control never imports a feature, nor does the model import call control
        ("call.control", "from sip_core.features.flip import Flip\n", "higher layer 8"),
        ("call.fork", "from sip_core import features\n", "higher layer 8"),
        ("call.control", "from ..features import FlipError\n", "higher layer 8"),
        ("calls", "from sip_core.call.control import CallControl\n", "higher layer 6"),
    ],
)
def test_the_checker_catches(module: str, source: str, expected: str) -> None:
    problems = violations(module, source, KNOWN)
    assert len(problems) == 1
    assert expected in problems[0]


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("transport", "import asyncio\nfrom collections.abc import Callable\n"),
        ("transport", "from __future__ import annotations\nfrom sip_core.message import Request\n"),
        ("transport", "from .clock import Clock\nfrom . import framing\n"),
        ("transport", "from sip_core import __version__\n"),
        ("message", "from .framing import StreamFramer\n"),
        ("yaml_file", "import yaml\nfrom yaml.nodes import MappingNode\n"),
        ("pbx", "from sip_core import transaction, transport\nimport sip_core.clock\n"),
        ("features.flip", "from sip_core.call.control import CallControl\n"),
        ("call.control", "from sip_core.calls import Call, Operation\n"),
    ],
)
def test_the_checker_allows(module: str, source: str) -> None:
    assert violations(module, source, KNOWN) == []
