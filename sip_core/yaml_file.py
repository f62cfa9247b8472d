"""Reading the runner's YAML file with PyYAML, with every scalar kept as the text written.

PyYAML does the parsing (it is what Home Assistant itself uses, so every install has it); this
module decides what the values mean, because YAML 1.1's guesses are wrong for a telephone system:
``0200`` would be the octal number 128, ``yes`` a boolean, ``1:30`` the number 90, and the default
call-flip code ``*0`` an alias to an anchor that does not exist. Here:

- quoted and block scalars are text, always;
- a plain (unquoted) scalar is None if empty, ``~`` or ``null``; a boolean if ``true`` or
  ``false`` (any of YAML 1.2's three spellings); an integer if it is a decimal number without a
  leading zero or plus sign (``0``, ``200``, ``-5``); and text otherwise, as written: ``0200``,
  ``yes``, ``1.5``, ``0x10`` and ``1:30`` stay text, so an extension keeps its zero and a schema
  that wants a number can say "not the text '1.5'";
- mapping keys are text, whatever they look like (``200: x`` has the key ``"200"``);
- anchors and aliases are not used: ``*0`` and ``&x`` read as the text ``*0`` and ``&x``, as a
  value and as a key, because in a PBX file a leading ``*`` is a feature code, never an alias;
- tags (``!secret``, ``!!int``) and duplicate keys are refused: Home Assistant's ``!secret`` means
  nothing here, and a second ``sip:`` must not silently replace the first.

Errors are :class:`YamlError` with the line (from PyYAML's marks); :func:`read_yaml` also gives
the line of every key and sequence item, so that the schema's errors can name the line too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

__all__ = ["MAX_DEPTH", "KeyPath", "YamlDocument", "YamlError", "read_yaml"]

#: How deeply collections may nest; far beyond any configuration, and well inside Python's stack.
MAX_DEPTH: Final = 64

type KeyPath = tuple[str | int, ...]

_NULLS: Final = frozenset({"", "~", "null", "Null", "NULL"})
_TRUES: Final = frozenset({"true", "True", "TRUE"})
_FALSES: Final = frozenset({"false", "False", "FALSE"})
_INT: Final = re.compile(r"0|-?[1-9][0-9]{0,99}")
_STR: Final = "tag:yaml.org,2002:str"
_SEQ: Final = "tag:yaml.org,2002:seq"
_MAP: Final = "tag:yaml.org,2002:map"


class YamlError(ValueError):
    """The text is not YAML this reader accepts; ``line`` is 1-based (None when none applies)."""

    def __init__(self, message: str, line: int | None = None, source: str | None = None) -> None:
        self.message = message
        self.line = line
        self.source = source
        super().__init__(self.__str__())

    def __str__(self) -> str:
        text = self.message if self.line is None else f"{self.message} (line {self.line})"
        return f"{self.source}: {text}" if self.source else text


@dataclass(frozen=True, slots=True)
class YamlDocument:
    """The data (dicts, lists, str, int, bool, None; None for an empty document) and its lines.

    ``lines`` maps a key path to the line of that key, or of the start of that sequence item;
    the empty path is the document's first line.
    """

    data: Any
    lines: dict[KeyPath, int]


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader without type guessing, and with ``*`` and ``&`` read as text."""

    # No implicit resolvers: every untagged plain scalar composes as text (see _Converter.scalar).
    yaml_implicit_resolvers: dict[Any, list[tuple[str, re.Pattern[str]]]] = {}

    def fetch_alias(self) -> None:
        self.fetch_plain()

    def fetch_anchor(self) -> None:
        self.fetch_plain()


def read_yaml(text: str, source: str | None = None) -> YamlDocument:
    """Parse one YAML document (see the module docstring for what values mean)."""
    text = text.removeprefix("\ufeff")
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as err:
        message, line = _syntax_error(err)
        raise YamlError(message, line, source) from None
    except yaml.reader.ReaderError as err:
        line = text[: err.position].count("\n") + 1
        raise YamlError(
            f"the character U+{err.character:04X} is not allowed in YAML"
            if isinstance(err.character, int)
            else "the file holds characters YAML does not allow",
            line,
            source,
        ) from None
    except RecursionError:
        raise YamlError(f"nesting deeper than {MAX_DEPTH} levels is not supported") from None
    if root is None:
        return YamlDocument(None, {(): 1})
    lines: dict[KeyPath, int] = {(): _line(root)}
    return YamlDocument(_Converter(source, lines).value(root, (), 0), lines)


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _syntax_error(err: yaml.MarkedYAMLError) -> tuple[str, int | None]:
    """PyYAML's complaint in words a person editing the file can act on, and its line."""
    problem = err.problem or "not valid YAML"
    context = err.context or ""
    line = err.problem_mark.line + 1 if err.problem_mark else None
    context_line = err.context_mark.line + 1 if err.context_mark else None
    if "'\\t'" in problem:
        return "tabs are not allowed for indentation; use spaces", line
    if "quoted scalar" in context and "end of stream" in problem:
        return "a quoted value is not closed (add the closing quote)", context_line or line
    if problem == "mapping values are not allowed here":
        message = (
            "a ':' followed by a space cannot appear here (quote a value that contains ': ', or"
            " check the indentation)"
        )
        return message, line
    if problem.startswith("expected <block end>"):
        message = (
            "unexpected content here (check the indentation, and quote a value that has special"
            " characters)"
        )
        return message, line
    if "expected a single document" in context:
        return "only one document is allowed (found a second '---')", line
    if context and context_line is not None and context_line != line:
        return f"{problem} ({context} on line {context_line})", line
    return (f"{problem} ({context})" if context else problem), line


class _Converter:
    """Turns composed nodes into plain data, recording lines and refusing what is refused."""

    def __init__(self, source: str | None, lines: dict[KeyPath, int]) -> None:
        self.source = source
        self.lines = lines

    def error(self, message: str, node: Node) -> YamlError:
        return YamlError(message, _line(node), self.source)

    def value(self, node: Node, path: KeyPath, depth: int) -> Any:
        if isinstance(node, ScalarNode):
            return self.scalar(node)
        if depth >= MAX_DEPTH:
            raise self.error(f"nesting deeper than {MAX_DEPTH} levels is not supported", node)
        if isinstance(node, SequenceNode):
            self.check_tag(node, _SEQ)
            items = []
            for index, item in enumerate(node.value):
                self.lines[(*path, index)] = _line(item)
                items.append(self.value(item, (*path, index), depth + 1))
            return items
        if isinstance(node, MappingNode):
            self.check_tag(node, _MAP)
            mapping: dict[str, Any] = {}
            first: dict[str, int] = {}
            for key_node, value_node in node.value:
                key = self.key(key_node)
                if key in first:
                    raise self.error(
                        f"duplicate key {key!r} (first on line {first[key]})", key_node
                    )
                first[key] = _line(key_node)
                self.lines[(*path, key)] = _line(key_node)
                mapping[key] = self.value(value_node, (*path, key), depth + 1)
            return mapping
        raise self.error("unexpected YAML node", node)  # pragma: no cover - PyYAML has three

    def check_tag(self, node: Node, expected: str) -> None:
        if node.tag != expected:
            tag = str(node.tag).replace("tag:yaml.org,2002:", "!!")
            raise self.error(
                f"tags such as {tag!r} are not supported in this file"
                " (quote the value if it is text)",
                node,
            )

    def key(self, node: Node) -> str:
        if not isinstance(node, ScalarNode):
            raise self.error("keys must be plain text, not a list or a mapping", node)
        self.check_tag(node, _STR)
        return str(node.value)

    def scalar(self, node: ScalarNode) -> str | int | bool | None:
        self.check_tag(node, _STR)
        text = str(node.value)
        if node.style:  # quoted ('"), literal (|) or folded (>): text as written
            return text
        if text in _NULLS:
            return None
        if text in _TRUES:
            return True
        if text in _FALSES:
            return False
        if _INT.fullmatch(text):
            return int(text)
        return text
