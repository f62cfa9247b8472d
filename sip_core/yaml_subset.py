"""A reader (and a small writer) for the subset of YAML that configuration files actually use.

``sip_core`` has no runtime dependencies, so PyYAML is not an option. Rather than a partial general
YAML parser that fails in surprising ways, this module reads a *named* subset completely and turns
everything outside it into a :class:`YamlError` that names the line, never a Python exception.

The subset:

- block mappings and block sequences, with any indentation as long as it is consistent within one
  collection (a sequence may sit at its key's indentation, as in ``users:\\n- name: alice``), and
  compact nesting (``- name: alice`` starts a mapping inside a sequence entry);
- flow mappings and sequences (``{a: b, c: d}``, ``[x, y]``), nested, and allowed to span lines;
- plain, single-quoted (``''`` for a quote) and double-quoted scalars (backslash escapes:
  ``\\0 \\a \\b \\t \\n \\v \\f \\r \\e \\" \\/ \\\\ \\N \\_ \\L \\P \\xXX \\uXXXX \\UXXXXXXXX``);
  every scalar fits on one line;
- comments, an optional ``---`` at the start, a leading byte order mark, CRLF line ends.

Scalars resolve like YAML 1.2's core schema, narrowed so that nothing is guessed:

- empty, ``~`` and ``null`` (``Null``, ``NULL``) are None; ``true``/``false`` (also ``True``,
  ``TRUE`` ...) are booleans; ``yes``/``no``/``on``/``off`` stay text;
- integers are decimal without leading zeros (``0``, ``200``, ``-5``): ``0200`` stays the text
  ``"0200"`` rather than becoming octal 128 or the number 200, so an extension keeps its zero;
- everything else, floats included, is text. Quoted scalars are always text.
- mapping keys are always text (``200: x`` has the key ``"200"``).

Outside the subset, each with its own message: anchors (``&a``), aliases (``*a``), tags (``!t``),
block scalars (``|``, ``>``), directives (``%YAML``), complex keys (``? ``), a second document or
``...``, tabs in indentation, duplicate keys, multi-line scalars, control characters, and nesting
deeper than :data:`MAX_DEPTH`.

A choice worth knowing: an unquoted ``*0`` (the default call-flip code) is an alias in YAML. It is
rejected with a message that says to quote it, rather than read as text, so that a file this reader
accepts means the same to every other YAML tool (Home Assistant's included).
"""

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

#: How deeply collections may nest; far beyond any configuration, and well inside Python's stack.
MAX_DEPTH: Final = 64
#: An unquoted integer longer than this is refused rather than handed to ``int()``.
MAX_INT_DIGITS: Final = 100

type Path = tuple[str | int, ...]
type ScalarValue = str | int | bool | None
type Node = ScalarNode | MappingNode | SequenceNode


class YamlError(ValueError):
    """The text is not in the YAML subset; ``line`` is 1-based (None when no line applies)."""

    def __init__(self, message: str, line: int | None = None, source: str | None = None) -> None:
        self.message = message
        self.line = line
        self.source = source
        super().__init__(self.__str__())

    def __str__(self) -> str:
        text = self.message if self.line is None else f"{self.message} (line {self.line})"
        return f"{self.source}: {text}" if self.source else text


@dataclass(frozen=True, slots=True)
class ScalarNode:
    """A scalar as resolved (see the module docstring), with the line it is on."""

    value: ScalarValue
    line: int
    quoted: bool = False


@dataclass(frozen=True, slots=True)
class MappingEntry:
    """One ``key: value`` pair; ``key_line`` is where the key is written."""

    key: str
    key_line: int
    value: Node


@dataclass(frozen=True, slots=True)
class MappingNode:
    """A mapping in the order written; ``line`` is where it starts."""

    entries: tuple[MappingEntry, ...]
    line: int

    def get(self, key: str) -> Node | None:
        """Return the value for ``key``, or None if the key is absent."""
        return next((entry.value for entry in self.entries if entry.key == key), None)


@dataclass(frozen=True, slots=True)
class SequenceNode:
    """A sequence; ``line`` is where it starts."""

    items: tuple[Node, ...]
    line: int


def parse(text: str, source: str | None = None) -> Node:
    """Parse one document of the subset into nodes (an empty document is a null scalar).

    ``source`` (a file name, say) is put in front of error messages.
    """
    return _Parser(text, source).document()


def load(text: str, source: str | None = None) -> Any:
    """Parse and return plain Python data: dicts, lists, str, int, bool and None."""
    return to_python(parse(text, source))


def to_python(node: Node) -> Any:
    """Return a node's plain Python value (dicts keep the written key order)."""
    match node:
        case ScalarNode():
            return node.value
        case MappingNode():
            return {entry.key: to_python(entry.value) for entry in node.entries}
        case SequenceNode():
            return [to_python(item) for item in node.items]


def line_map(node: Node) -> dict[Path, int]:
    """Map every path in the document to its line, for error messages about the data.

    A mapping entry's path gives the line of its key, a sequence item's the line where the item
    starts; the empty path is the document's first line.
    """
    lines: dict[Path, int] = {(): node.line}

    def walk(current: Node, path: Path) -> None:
        if isinstance(current, MappingNode):
            for entry in current.entries:
                lines[(*path, entry.key)] = entry.key_line
                walk(entry.value, (*path, entry.key))
        elif isinstance(current, SequenceNode):
            for index, item in enumerate(current.items):
                lines[(*path, index)] = item.line
                walk(item, (*path, index))

    walk(node, ())
    return lines


# --- reading ---------------------------------------------------------------------------------

_NULLS: Final = frozenset({"", "~", "null", "Null", "NULL"})
_TRUES: Final = frozenset({"true", "True", "TRUE"})
_FALSES: Final = frozenset({"false", "False", "FALSE"})
_INT: Final = re.compile(r"0|-?[1-9][0-9]*")
# C0 controls but tab and line feed, DEL, C1 controls but NEL, surrogates, and the two
# non-characters at the end of the basic plane: YAML does not allow them raw (escape them).
_FORBIDDEN: Final = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x84\x86-\x9f\ud800-\udfff\ufffe\uffff]")
_HEX: Final = re.compile(r"[0-9A-Fa-f]+")
_ESCAPES: Final = {
    "0": "\0",
    "a": "\a",
    "b": "\b",
    "t": "\t",
    "\t": "\t",
    "n": "\n",
    "v": "\v",
    "f": "\f",
    "r": "\r",
    "e": "\x1b",
    " ": " ",
    '"': '"',
    "/": "/",
    "\\": "\\",
    "N": "\x85",
    "_": "\xa0",
    "L": "\u2028",
    "P": "\u2029",
}
_HEX_ESCAPES: Final = {"x": 2, "u": 4, "U": 8}
_FLOW_INDICATORS: Final = ",[]{}"
_ALIAS_NAME: Final = re.compile(r"[^\s,\[\]{}]*")
_BAD_INDENT: Final = (
    "unexpected indentation (entries must line up with the ones before them,"
    " and a value must fit on one line)"
)


def _resolve(text: str) -> ScalarValue:
    if text in _NULLS:
        return None
    if text in _TRUES:
        return True
    if text in _FALSES:
        return False
    if _INT.fullmatch(text):
        return int(text)
    return text


def _is_sep(line: str, index: int) -> bool:
    """True at the end of the line or on a space or tab (what must follow ``-`` and ``:``)."""
    return index >= len(line) or line[index] in " \t"


def _skip_blanks(line: str, index: int) -> int:
    while index < len(line) and line[index] in " \t":
        index += 1
    return index


def _is_comment_at(line: str, index: int) -> bool:
    return line[index] == "#" and (index == 0 or line[index - 1] in " \t")


def _is_marker(line: str, marker: str) -> bool:
    return line.startswith(marker) and _is_sep(line, len(marker))


def _show(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")


class _Parser:
    """Recursive descent over lines; ``self.pos`` is the index of the next unconsumed line."""

    def __init__(self, text: str, source: str | None) -> None:
        self.source = source
        text = text.removeprefix("\ufeff")
        self.lines = [line.removesuffix("\r") for line in text.split("\n")]
        self.pos = 0
        self.depth = 0
        for index, line in enumerate(self.lines):
            found = _FORBIDDEN.search(line)
            if found:
                raise self._error(
                    f"the character U+{ord(found.group()):04X} is not allowed here"
                    " (inside double quotes it can be written as an escape)",
                    index,
                )

    def _error(self, message: str, index: int) -> YamlError:
        return YamlError(message, index + 1, self.source)

    # document and block structure

    def document(self) -> Node:
        index = 0
        while index < len(self.lines) and self._is_blank(index):
            index += 1
        if index < len(self.lines):
            line = self.lines[index]
            if line.startswith("%"):
                raise self._error("directives such as %YAML are not supported", index)
            if _is_marker(line, "---"):
                rest = _skip_blanks(line, 3)
                if rest < len(line) and not _is_comment_at(line, rest):
                    raise self._error("put the document's content on the line after '---'", index)
                index += 1
        self.pos = index
        indent = self._peek()
        if indent is None:
            return ScalarNode(None, 1)
        node = self._node_at(self.pos, indent)
        if self._peek() is not None:
            hint = ""
            if isinstance(node, ScalarNode) and ":" in str(node.value):
                hint = " (put a space after ':' to write 'key: value')"
            raise self._error(
                f"unexpected content after the end of the top-level value{hint}", self.pos
            )
        return node

    def _is_blank(self, index: int) -> bool:
        line = self.lines[index]
        start = _skip_blanks(line, 0)
        return start == len(line) or line[start] == "#"

    def _peek(self) -> int | None:
        """Move to the next line with content and return its indentation (None at the end)."""
        while self.pos < len(self.lines):
            if self._is_blank(self.pos):
                self.pos += 1
                continue
            line = self.lines[self.pos]
            content = line.lstrip(" ")
            if content.startswith("\t"):
                raise self._error("tabs are not allowed for indentation; use spaces", self.pos)
            if _is_marker(line, "---"):
                raise self._error("only one document is supported (found a second '---')", self.pos)
            if _is_marker(line, "..."):
                raise self._error("the document end marker '...' is not supported", self.pos)
            return len(line) - len(content)
        return None

    def _enter(self, index: int) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self._error(f"nesting deeper than {MAX_DEPTH} levels is not supported", index)

    def _is_entry(self, index: int, column: int) -> bool:
        line = self.lines[index]
        return line.startswith("-", column) and _is_sep(line, column + 1)

    def _node_at(self, index: int, column: int) -> Node:
        """The block node that starts at ``column`` of line ``index``."""
        if self._is_entry(index, column):
            return self._block_sequence(index, column)
        if self._starts_key(index, column):
            return self._block_mapping(index, column)
        node, end_index, end_column = self._inline(index, column, flow=False)
        self._finish_line(end_index, end_column, node, in_value=False)
        return node

    def _starts_key(self, index: int, column: int) -> bool:
        line = self.lines[index]
        char = line[column]
        if char in "\"'":
            _, end = self._quoted(index, column)
            after = _skip_blanks(line, end)
            return after < len(line) and line[after] == ":"
        if char in "[{":
            return False
        self._check_plain_start(index, column, flow=False)
        _, stop = self._plain(line, column, flow=False)
        return stop < len(line) and line[stop] == ":"

    def _block_value(self, indent: int, owner: int, *, same_indent_sequence: bool) -> Node:
        """The value of a key or an entry whose line ends after ``:`` or ``-``."""
        following = self._peek()
        if following is not None:
            if following > indent:
                return self._node_at(self.pos, following)
            if following == indent and same_indent_sequence and self._is_entry(self.pos, indent):
                return self._block_sequence(self.pos, indent)
        return ScalarNode(None, owner + 1)

    def _block_sequence(self, index: int, indent: int) -> SequenceNode:
        self._enter(index)
        items: list[Node] = []
        current = index
        while True:
            line = self.lines[current]
            start = _skip_blanks(line, indent + 1)
            if start >= len(line) or _is_comment_at(line, start):
                self.pos = current + 1
                items.append(self._block_value(indent, current, same_indent_sequence=False))
            else:
                items.append(self._node_at(current, start))
            following = self._peek()
            if following is None or following < indent:
                break
            if following > indent:
                raise self._error(_BAD_INDENT, self.pos)
            if not self._is_entry(self.pos, indent):
                break
            current = self.pos
        self.depth -= 1
        return SequenceNode(tuple(items), index + 1)

    def _block_mapping(self, index: int, indent: int) -> MappingNode:
        self._enter(index)
        entries: list[MappingEntry] = []
        seen: dict[str, int] = {}
        current = index
        while True:
            key, after = self._block_key(current, indent)
            if key in seen:
                raise self._error(
                    f"duplicate key {_show(key)} (first on line {seen[key]})", current
                )
            seen[key] = current + 1
            line = self.lines[current]
            start = _skip_blanks(line, after)
            if start >= len(line) or (start > after and line[start] == "#"):
                self.pos = current + 1
                value = self._block_value(indent, current, same_indent_sequence=True)
            else:
                value = self._inline_value(current, start)
            entries.append(MappingEntry(key, current + 1, value))
            following = self._peek()
            if following is None or following < indent:
                break
            if following > indent:
                raise self._error(_BAD_INDENT, self.pos)
            current = self.pos
            if self._is_entry(current, indent):
                raise self._error(
                    "expected 'key: value' here, not a sequence entry ('- ')", current
                )
        self.depth -= 1
        return MappingNode(tuple(entries), index + 1)

    def _block_key(self, index: int, column: int) -> tuple[str, int]:
        """Read ``key:`` at ``column``; return the key and the index just after the colon."""
        line = self.lines[index]
        char = line[column]
        if char in "\"'":
            key, end = self._quoted(index, column)
            after = _skip_blanks(line, end)
            if after < len(line) and line[after] == ":":
                return key, after + 1
            raise self._error(f"expected ':' after the key {_show(key)}", index)
        if char in "[{":
            raise self._error("flow collections cannot be used as keys", index)
        self._check_plain_start(index, column, flow=False)
        text, stop = self._plain(line, column, flow=False)
        if stop < len(line) and line[stop] == ":":
            return text, stop + 1
        hint = " (put a space after ':')" if ":" in text else ""
        raise self._error(f"expected 'key: value', found {_show(text)}{hint}", index)

    def _inline_value(self, index: int, column: int) -> Node:
        """A value on the same line as its key: a scalar or a flow collection."""
        if self._is_entry(index, column):
            raise self._error(
                "a sequence cannot start on the same line as its key; start it below", index
            )
        node, end_index, end_column = self._inline(index, column, flow=False)
        self._finish_line(end_index, end_column, node, in_value=True)
        return node

    def _finish_line(self, index: int, column: int, node: Node, *, in_value: bool) -> None:
        """After a value only a comment may follow on its line; then go to the next line."""
        line = self.lines[index]
        rest = _skip_blanks(line, column)
        if rest < len(line) and not _is_comment_at(line, rest):
            if line[rest] == ":":
                if not isinstance(node, ScalarNode):
                    raise self._error("flow collections cannot be used as keys", index)
                if in_value:
                    raise self._error(
                        "a mapping cannot start on the same line as its key"
                        " (quote the value if it contains ': ')",
                        index,
                    )
            if isinstance(node, ScalarNode) and node.quoted:
                hint = " (write '' for a quote inside single quotes)" if "'" in line else ""
                raise self._error(f"unexpected text after the quoted value{hint}", index)
            if line[rest] == "#":
                raise self._error("a comment needs a space before '#'", index)
            raise self._error(f"unexpected text {_show(line[rest:])} after the value", index)
        self.pos = index + 1

    # scalars

    def _inline(self, index: int, column: int, *, flow: bool) -> tuple[Node, int, int]:
        """A scalar or flow collection at ``column``; returns it and where it ends."""
        line = self.lines[index]
        char = line[column]
        if char in "[{":
            return self._flow(index, column)
        if char in "\"'":
            value, end = self._quoted(index, column)
            return ScalarNode(value, index + 1, quoted=True), index, end
        self._check_plain_start(index, column, flow=flow)
        text, stop = self._plain(line, column, flow=flow)
        return ScalarNode(self._resolve(text, index), index + 1), index, stop

    def _resolve(self, text: str, index: int) -> ScalarValue:
        if len(text) > MAX_INT_DIGITS and _INT.fullmatch(text):
            raise self._error(
                f"integers longer than {MAX_INT_DIGITS} digits are not supported", index
            )
        return _resolve(text)

    def _check_plain_start(self, index: int, column: int, *, flow: bool) -> None:
        """Refuse, with a reason, the characters YAML reserves at the start of a plain scalar."""
        line = self.lines[index]
        char = line[column]
        ends = _is_sep(line, column + 1) or (flow and line[column + 1] in _FLOW_INDICATORS)
        if char == "*":
            name = _ALIAS_NAME.match(line, column)
            text = name.group() if name else char
            raise self._error(
                f"{text!r} is a YAML alias, which is not supported;"
                f' if you meant the text, quote it: "{text}"',
                index,
            )
        if char == "&":
            raise self._error("anchors (&name) are not supported", index)
        if char == "!":
            raise self._error("tags (!tag) are not supported; quote the value if it is text", index)
        if char in "|>":
            raise self._error(
                f"block scalars ({char!r}) are not supported; write the value on one line,"
                " quoted if needed",
                index,
            )
        if char in "%@`":
            raise self._error(f"{char!r} cannot start an unquoted value; quote it", index)
        if char == "#":
            raise self._error("a comment needs a space before '#'", index)
        if char in _FLOW_INDICATORS:
            raise self._error(f"unexpected {char!r}", index)
        if ends and char == "?":
            raise self._error("complex keys ('? ') are not supported", index)
        if ends and char == ":":
            raise self._error("missing key before ':'", index)
        if ends and char == "-":
            raise self._error("a sequence entry ('- ') is not allowed here", index)

    @staticmethod
    def _plain(line: str, column: int, *, flow: bool) -> tuple[str, int]:
        """Scan a plain scalar; return its text (trimmed) and the index where scanning stopped.

        It stops at ``: `` (or ``:`` at the end), at `` #``, at the end of the line and, inside a
        flow collection, at a flow indicator or a ``:`` before one.
        """
        index = end = column
        while index < len(line):
            char = line[index]
            if char == ":" and (
                _is_sep(line, index + 1) or (flow and line[index + 1] in _FLOW_INDICATORS)
            ):
                break
            if char == "#" and index > column and line[index - 1] in " \t":
                break
            if flow and char in _FLOW_INDICATORS:
                break
            index += 1
            if char not in " \t":
                end = index
        return line[column:end], index

    def _quoted(self, index: int, column: int) -> tuple[str, int]:
        """Read a quoted scalar; return its value and the index just after the closing quote."""
        line = self.lines[index]
        if line[column] == "'":
            parts: list[str] = []
            start = column + 1
            while True:
                quote = line.find("'", start)
                if quote < 0:
                    raise self._error(
                        "unterminated single-quoted value (it must end on its line)", index
                    )
                parts.append(line[start:quote])
                if line.startswith("'", quote + 1):
                    parts.append("'")
                    start = quote + 2
                    continue
                return "".join(parts), quote + 1
        out: list[str] = []
        position = column + 1
        while position < len(line):
            char = line[position]
            if char == '"':
                return "".join(out), position + 1
            if char != "\\":
                out.append(char)
                position += 1
                continue
            if position + 1 >= len(line):
                break
            code = line[position + 1]
            if code in _ESCAPES:
                out.append(_ESCAPES[code])
                position += 2
                continue
            width = _HEX_ESCAPES.get(code)
            if width is None:
                raise self._error(
                    f"unknown escape '\\{code}' in a double-quoted value (write '\\\\' for a"
                    " backslash)",
                    index,
                )
            digits = line[position + 2 : position + 2 + width]
            if len(digits) != width or not _HEX.fullmatch(digits):
                raise self._error(f"the escape '\\{code}' needs {width} hexadecimal digits", index)
            point = int(digits, 16)
            if point > 0x10FFFF or 0xD800 <= point <= 0xDFFF:
                raise self._error(f"the escape '\\{code}{digits}' is not a valid character", index)
            out.append(chr(point))
            position += 2 + width
        raise self._error("unterminated double-quoted value (it must end on its line)", index)

    # flow collections

    def _flow(self, index: int, column: int) -> tuple[Node, int, int]:
        """Read ``[...]`` or ``{...}`` (possibly over several lines); return it and its end."""
        self._enter(index)
        is_sequence = self.lines[index][column] == "["
        close = "]" if is_sequence else "}"
        kind = "flow sequence" if is_sequence else "flow mapping"
        items: list[Node] = []
        entries: list[MappingEntry] = []
        seen: dict[str, int] = {}
        at = self._flow_skip(index, column + 1, index, close)
        while self.lines[at[0]][at[1]] != close:
            row, col = at
            if is_sequence:
                item, row, col = self._flow_item(row, col)
                items.append(item)
            else:
                key_row = row
                key, row, col = self._flow_key(row, col)
                if key in seen:
                    raise self._error(
                        f"duplicate key {_show(key)} (first on line {seen[key]})", key_row
                    )
                seen[key] = key_row + 1
                row, col = self._flow_skip(row, col, index, close)
                if self.lines[row][col] != ":":
                    hint = " (put a space after ':')" if ":" in key else ""
                    raise self._error(f"expected ':' after the key {_show(key)}{hint}", row)
                row, col = self._flow_skip(row, col + 1, index, close)
                value: Node
                if self.lines[row][col] in ",}":
                    value = ScalarNode(None, key_row + 1)
                else:
                    value, row, col = self._flow_item(row, col)
                entries.append(MappingEntry(key, key_row + 1, value))
            row, col = self._flow_skip(row, col, index, close)
            char = self.lines[row][col]
            if char == ",":
                at = self._flow_skip(row, col + 1, index, close)
            elif char == close:
                at = (row, col)
            elif char == ":" and is_sequence:
                raise self._error("write a mapping inside a flow sequence in braces: [{a: b}]", row)
            else:
                raise self._error(
                    f"expected ',' or '{close}' in the {kind} opened on line {index + 1}", row
                )
        self.depth -= 1
        node: Node = (
            SequenceNode(tuple(items), index + 1)
            if is_sequence
            else MappingNode(tuple(entries), index + 1)
        )
        return node, at[0], at[1] + 1

    def _flow_skip(self, index: int, column: int, opened: int, close: str) -> tuple[int, int]:
        """Skip blanks, comments and line ends inside a flow collection."""
        while index < len(self.lines):
            line = self.lines[index]
            column = _skip_blanks(line, column)
            if column < len(line) and not _is_comment_at(line, column):
                return index, column
            index, column = index + 1, 0
        raise self._error(f"unterminated flow collection: '{close}' is missing", opened)

    def _flow_item(self, index: int, column: int) -> tuple[Node, int, int]:
        return self._inline(index, column, flow=True)

    def _flow_key(self, index: int, column: int) -> tuple[str, int, int]:
        line = self.lines[index]
        char = line[column]
        if char in "[{":
            raise self._error("flow collections cannot be used as keys", index)
        if char in "\"'":
            key, end = self._quoted(index, column)
            return key, index, end
        self._check_plain_start(index, column, flow=True)
        text, stop = self._plain(line, column, flow=True)
        return text, index, stop


# --- writing ---------------------------------------------------------------------------------

_PLAIN_SAFE: Final = re.compile(r"[A-Za-z0-9_./](?:[A-Za-z0-9_./@+ -]*[A-Za-z0-9_./@+-])?")
_ESCAPE_OUT: Final = {
    "\\": "\\\\",
    '"': '\\"',
    "\0": "\\0",
    "\t": "\\t",
    "\n": "\\n",
    "\r": "\\r",
    "\x1b": "\\e",
}


def dump(data: Any) -> str:
    """Write plain data (what :func:`load` returns) as block YAML that :func:`load` reads back.

    Strings are written plain when that is unambiguous, double-quoted otherwise; mapping keys
    must be strings (or ints, written as text).
    """
    out: list[str] = []
    _dump_block(data, 0, out)
    return "\n".join(out) + "\n"


def _is_block(value: Any) -> bool:
    return isinstance(value, Mapping | list | tuple) and len(value) > 0


def _dump_block(value: Any, indent: int, out: list[str]) -> None:
    pad = " " * indent
    if isinstance(value, Mapping) and value:
        for key, item in value.items():
            if isinstance(key, bool) or not isinstance(key, str | int):
                raise TypeError(f"mapping keys must be strings, not {type(key).__name__}")
            written = _dump_text(str(key))
            if _is_block(item):
                out.append(f"{pad}{written}:")
                _dump_block(item, indent + 2, out)
            else:
                out.append(f"{pad}{written}: {_dump_inline(item)}")
    elif isinstance(value, list | tuple) and value:
        for item in value:
            if _is_block(item):
                nested: list[str] = []
                _dump_block(item, indent + 2, nested)
                out.append(f"{pad}- {nested[0][indent + 2 :]}")
                out.extend(nested[1:])
            else:
                out.append(f"{pad}- {_dump_inline(item)}")
    else:
        out.append(pad + _dump_inline(value))


def _dump_inline(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _dump_text(value)
    if isinstance(value, Mapping) and not value:
        return "{}"
    if isinstance(value, Sequence) and not value:
        return "[]"
    raise TypeError(f"cannot write {type(value).__name__} values")


def _dump_text(text: str) -> str:
    if _PLAIN_SAFE.fullmatch(text) and isinstance(_resolve(text), str):
        return text
    out = ['"']
    for char in text:
        point = ord(char)
        if char in _ESCAPE_OUT:
            out.append(_ESCAPE_OUT[char])
        elif 0xD800 <= point <= 0xDFFF:
            raise ValueError("a lone surrogate cannot be written")
        elif point < 0x20 or 0x7F <= point <= 0x9F or char in "\u2028\u2029\ufeff\ufffe\uffff":
            out.append(f"\\u{point:04x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)
