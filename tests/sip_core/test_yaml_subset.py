"""The YAML subset reader on its own: structure, scalars, line numbers, refusals, and fuzzing."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sip_core.yaml_subset import (
    MAX_DEPTH,
    MappingNode,
    ScalarNode,
    SequenceNode,
    YamlError,
    dump,
    line_map,
    load,
    parse,
)


def typed(value: Any) -> Any:
    """Make True and 1 (and False and 0) compare different, so a wrong type cannot slip through."""
    if isinstance(value, dict):
        return {key: typed(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [typed(item) for item in value]
    return (type(value).__name__, value)


# --- structure -------------------------------------------------------------------------------


def test_block_mappings_and_sequences_nest() -> None:
    text = """\
sip:
  listen: 127.0.0.1
  port: 5060
users:
  - name: alice
    devices:
      - username: "201"
      - username: "202"
  - name: bob
"""
    assert load(text) == {
        "sip": {"listen": "127.0.0.1", "port": 5060},
        "users": [
            {"name": "alice", "devices": [{"username": "201"}, {"username": "202"}]},
            {"name": "bob"},
        ],
    }


@pytest.mark.parametrize(
    "text",
    [
        "a:\n  b:\n    - 1\n    - 2\n",  # two spaces
        "a:\n    b:\n        - 1\n        - 2\n",  # four spaces
        "a:\n b:\n - 1\n - 2\n",  # one space, sequence at its key's indentation
        "a:\n   b:\n   - 1\n   - 2\n",  # three, sequence at its key's indentation
        "a: {b: [1, 2]}\n",
        "a:\n  b: [1,\n     2]\n",  # flow over two lines
    ],
)
def test_any_consistent_indentation(text: str) -> None:
    assert typed(load(text)) == typed({"a": {"b": [1, 2]}})


def test_compact_nesting_in_sequences() -> None:
    assert load("- - a\n  - b\n- c: 1\n  d: 2\n-   e: 3\n    f: 4\n") == [
        ["a", "b"],
        {"c": 1, "d": 2},
        {"e": 3, "f": 4},
    ]


def test_sequence_entry_with_value_on_the_next_lines() -> None:
    assert load("-\n  a: 1\n-\n- x\n") == [{"a": 1}, None, "x"]


def test_flow_collections() -> None:
    text = "a: {b: c, d: [1, 2, {e: f}], g: }\nh: []\ni: {}\nj: [x, y,]\n"
    assert load(text) == {
        "a": {"b": "c", "d": [1, 2, {"e": "f"}], "g": None},
        "h": [],
        "i": {},
        "j": ["x", "y"],
    }


def test_flow_plain_scalars_keep_spaces_and_apostrophes() -> None:
    assert load("- {label: Alice's Mobile, type: mobile}\n- [1 2, x]\n") == [
        {"label": "Alice's Mobile", "type": "mobile"},
        ["1 2", "x"],
    ]


def test_flow_collection_over_several_lines_with_comments() -> None:
    text = "a: [\n  1,  # one\n  2\n]\nb: 3\n"
    assert load(text) == {"a": [1, 2], "b": 3}


def test_json_style_quoted_keys_without_space() -> None:
    assert load('{"a":1, "b":"x"}') == {"a": 1, "b": "x"}


# --- scalars ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: 40000-40999", "40000-40999"),
        ("a: Alice's Mobile", "Alice's Mobile"),
        ("a: Office Desk Phone  # the desk", "Office Desk Phone"),
        ("a: x#y", "x#y"),
        ("a: http://host:5060/x", "http://host:5060/x"),
        ("a: ::1", "::1"),
        ("a: -5", -5),
        ("a: 0", 0),
        ("a: 200", 200),
        ("a: 0200", "0200"),
        ("a: -0", "-0"),
        ("a: +5", "+5"),
        ("a: 1.5", "1.5"),
        ("a: 0x10", "0x10"),
        ("a: true", True),
        ("a: False", False),
        ("a: TRUE", True),
        ("a: yes", "yes"),
        ("a: off", "off"),
        ("a: null", None),
        ("a: ~", None),
        ("a:", None),
        ("a:   # nothing", None),
        ('a: "200"', "200"),
        ("a: '200'", "200"),
        ('a: "true"', "true"),
        ("a: ''", ""),
        ("a: 'it''s'", "it's"),
        ("a: 'back\\slash'", "back\\slash"),
        ('a: "*0"', "*0"),
        ("a: '#1'", "#1"),
        ('a: "tab\\there"', "tab\there"),
        ('a: "q\\"uote \\\\ \\/"', 'q"uote \\ /'),
        ('a: "\\x41\\u00e9\\U0001F4DE"', "A\u00e9\U0001f4de"),
        ('a: "\\0\\a\\b\\n\\v\\f\\r\\e\\ \\N\\_\\L\\P"', "\0\a\b\n\v\f\r\x1b \x85\xa0\u2028\u2029"),
        ('a: "# not a comment"', "# not a comment"),
        ("a: -x", "-x"),
        ("a: ?x", "?x"),
        ("a: :x", ":x"),
        ("a: café", "café"),
    ],
)
def test_scalars(text: str, expected: object) -> None:
    assert typed(load(text)) == typed({"a": expected})


def test_keys_are_always_text() -> None:
    assert typed(load("200: a\ntrue: b\n'x y': c\n\"\": d\nnull: e\n")) == typed(
        {"200": "a", "true": "b", "x y": "c", "": "d", "null": "e"}
    )


def test_key_with_spaces_before_colon() -> None:
    assert load("a   : 1") == {"a": 1}


def test_empty_documents_are_null() -> None:
    for text in ("", "\n\n", "# only a comment\n", "---\n", "--- # start\n# c\n"):
        node = parse(text)
        assert isinstance(node, ScalarNode)
        assert node.value is None


def test_document_start_bom_and_crlf() -> None:
    assert load("\ufeff---\r\na: 1\r\nb: [x, y]\r\n") == {"a": 1, "b": ["x", "y"]}


def test_top_level_scalar_and_sequence() -> None:
    assert load("hello") == "hello"
    assert load("  - 1\n  - 2\n") == [1, 2]


# --- line numbers ----------------------------------------------------------------------------


def test_nodes_keep_their_lines() -> None:
    text = """\
# header

sip:
  port: 5060
users:
  - name: alice
    devices:
      -
        username: "201"
      - {username: "202",
         password: x}
"""
    node = parse(text)
    assert isinstance(node, MappingNode)
    assert node.line == 3
    users = node.get("users")
    assert isinstance(users, SequenceNode)
    assert users.line == 6
    lines = line_map(node)
    assert lines[()] == 3
    assert lines[("sip",)] == 3
    assert lines[("sip", "port")] == 4
    assert lines[("users", 0)] == 6
    assert lines[("users", 0, "name")] == 6
    assert lines[("users", 0, "devices")] == 7
    assert lines[("users", 0, "devices", 0)] == 9
    assert lines[("users", 0, "devices", 0, "username")] == 9
    assert lines[("users", 0, "devices", 1)] == 10
    assert lines[("users", 0, "devices", 1, "password")] == 11


def test_empty_value_takes_its_keys_line() -> None:
    node = parse("a:\nb: 1\n")
    assert isinstance(node, MappingNode)
    value = node.get("a")
    assert value == ScalarNode(None, 1)
    assert node.get("missing") is None


# --- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        (
            "flip:\n  code: *0\n",
            2,
            "'*0' is a YAML alias, which is not supported; if you meant the text, quote it: \"*0\"",
        ),
        ("a: &anchor 1\n", 1, "anchors"),
        ("a: !!str 1\n", 1, "tags"),
        ("a: |\n  text\n", 1, "block scalars ('|')"),
        ("a: >\n  text\n", 1, "block scalars ('>')"),
        ("%YAML 1.2\n---\na: 1\n", 1, "directives"),
        ("a: 1\n---\nb: 2\n", 2, "only one document"),
        ("a: 1\n...\n", 2, "'...'"),
        ("--- a: 1\n", 1, "after '---'"),
        ("a:\n\tb: 1\n", 2, "tabs are not allowed for indentation"),
        ("a:\n  \tb: 1\n", 2, "tabs are not allowed for indentation"),
        ("a: 1\nb: 2\na: 3\n", 3, "duplicate key 'a' (first on line 1)"),
        ("a: 1\n'a': 3\n", 2, "duplicate key 'a'"),
        ("a: {b: 1, b: 2}\n", 1, "duplicate key 'b'"),
        ("? a\n: b\n", 1, "complex keys"),
        ("a: b: c\n", 1, "a mapping cannot start on the same line as its key"),
        ("a: - b\n", 1, "a sequence cannot start on the same line"),
        ("a: 1\n- b\n", 2, "not a sequence entry"),
        ("- a\nb: 1\n", 2, "unexpected content after the end"),
        ("a:\n    b: 1\n  c: 2\n", 3, "unexpected indentation"),
        ("a: value\n  more text\n", 2, "unexpected indentation"),
        ("a: 'x\n", 1, "unterminated single-quoted"),
        ('a: "x\n', 1, "unterminated double-quoted"),
        ('a: "x\\\n  y"\n', 1, "unterminated double-quoted"),
        ("a: 'Alice's'\n", 1, "write '' for a quote"),
        ('a: "x" y\n', 1, "unexpected text after the quoted value"),
        ('a: "\\q"\n', 1, "unknown escape '\\q'"),
        ('a: "\\x4"\n', 1, "needs 2 hexadecimal digits"),
        ('a: "\\u+123"\n', 1, "needs 4 hexadecimal digits"),
        ('a: "\\ud800"\n', 1, "not a valid character"),
        ('a: "\\UFFFFFFFF"\n', 1, "not a valid character"),
        ("a: [1, 2\n", 1, "unterminated flow collection: ']' is missing"),
        ("a: [1, 2\nb: 3\n", 2, "expected ',' or ']' in the flow sequence opened on line 1"),
        ("a: {b: 1\n", 1, "'}' is missing"),
        ('a: ["x" y]\n', 1, "expected ',' or ']'"),
        ("a: [b: 1]\n", 1, "[{a: b}]"),
        ("a: [1, , 2]\n", 1, "unexpected ','"),
        ("a: {b}\n", 1, "expected ':' after the key 'b'"),
        ("a: {b:1}\n", 1, "put a space after ':'"),
        ("a: {[b]: 1}\n", 1, "cannot be used as keys"),
        ("[a]: 1\n", 1, "cannot be used as keys"),
        ("a: [x] y\n", 1, "unexpected text"),
        ("a:b\nc: 1\n", 2, "put a space after ':'"),
        ("a: 1\nb:c\n", 2, "put a space after ':'"),
        ("a: 1\nplain\n", 2, "expected 'key: value', found 'plain'"),
        (": x\n", 1, "missing key before ':'"),
        ("a: @x\n", 1, "'@' cannot start"),
        ("a: `x\n", 1, "'`' cannot start"),
        ("a: %x\n", 1, "'%' cannot start"),
        ("a: ]\n", 1, "unexpected ']'"),
        ("a: [1]#x\n", 1, "a comment needs a space before '#'"),
        ("a: [- x]\n", 1, "sequence entry"),
        ("a: 1\x07\n", 1, "U+0007"),
        ("a: 1\rb: 2\n", 1, "U+000D"),
        ("a: " + "9" * 101 + "\n", 1, "integers longer than 100 digits"),
    ],
)
def test_refusals_name_the_line(text: str, line: int, fragment: str) -> None:
    with pytest.raises(YamlError) as caught:
        load(text, "pbx.yaml")
    error = caught.value
    assert error.line == line
    assert fragment in error.message
    assert str(error) == f"pbx.yaml: {error.message} (line {line})"


def test_nesting_depth_is_bounded() -> None:
    assert load("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None
    with pytest.raises(YamlError, match="nesting deeper than"):
        load("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))
    deep_block = "".join(" " * level + "-\n" for level in range(MAX_DEPTH + 1))
    with pytest.raises(YamlError, match="nesting deeper than"):
        load(deep_block)


def test_error_without_source_or_line() -> None:
    assert str(YamlError("bad")) == "bad"
    assert str(YamlError("bad", 3)) == "bad (line 3)"


# --- writing and round trips -----------------------------------------------------------------


def test_dump_writes_readable_yaml() -> None:
    data = {
        "sip": {"listen": "127.0.0.1", "port": 5060},
        "users": [{"name": "alice", "extension": "200", "devices": [], "tags": {}}],
        "flip": {"code": "*0", "note": "Alice's", "on": True, "off": None},
    }
    assert dump(data) == (
        "sip:\n"
        "  listen: 127.0.0.1\n"
        "  port: 5060\n"
        "users:\n"
        "  - name: alice\n"
        '    extension: "200"\n'
        "    devices: []\n"
        "    tags: {}\n"
        "flip:\n"
        '  code: "*0"\n'
        '  note: "Alice\'s"\n'
        "  on: true\n"
        "  off: null\n"
    )
    assert typed(load(dump(data))) == typed(data)


def test_dump_refuses_what_it_cannot_write() -> None:
    with pytest.raises(TypeError):
        dump({"a": 1.5})
    with pytest.raises(TypeError):
        dump({(1, 2): "x"})
    with pytest.raises(ValueError, match="surrogate"):
        dump("\ud800")


_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.text(max_size=20)
)
_data = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(_data)
def test_dump_then_load_gives_the_same_data(data: Any) -> None:
    assert typed(load(dump(data))) == typed(data)


def _error_of(text: str) -> YamlError | None:
    """Load ``text``; return the YamlError it raised, if any (anything else fails the test)."""
    try:
        load(text)
    except YamlError as error:
        return error
    return None


_yamlish = st.text(alphabet=" -:#[]{},'\"\n\t*&!|>%@`?~abc019\\.", max_size=60)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(max_size=80), _yamlish))
def test_any_text_gives_data_or_a_yaml_error(text: str) -> None:
    error = _error_of(text)
    if error is not None:
        assert error.line is not None
        assert 1 <= error.line <= text.count("\n") + 1


_EXAMPLE = """\
sip: {listen: 127.0.0.1, port: 5060, domain: home.arpa}
users:
  - name: alice
    extension: "200"
    devices:
      - {username: "201", password: "desk-secret", label: Office Desk Phone}
      - username: '202'
        label: Alice's Mobile  # mobile
"""


@settings(max_examples=300, deadline=None)
@given(
    st.integers(min_value=0, max_value=len(_EXAMPLE)),
    st.text(alphabet=" -:#[]{},'\"\n\t*&!|>x1", min_size=1, max_size=3),
)
def test_a_damaged_config_gives_data_or_a_yaml_error(position: int, insert: str) -> None:
    error = _error_of(_EXAMPLE[:position] + insert + _EXAMPLE[position:])
    if error is not None:
        assert error.line is not None
        assert error.message
