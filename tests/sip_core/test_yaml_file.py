"""Reading the runner's YAML with PyYAML on our terms: values as written, lines, refusals."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sip_core.yaml_file import MAX_DEPTH, YamlError, read_yaml


def load(text: str) -> Any:
    return read_yaml(text, "pbx.yaml").data


def typed(value: Any) -> Any:
    """Make True and 1 (and False and 0) compare different, so a wrong type cannot slip through."""
    if isinstance(value, dict):
        return {key: typed(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [typed(item) for item in value]
    return (type(value).__name__, value)


# --- structure -------------------------------------------------------------------------------


def test_block_and_flow_collections_nest() -> None:
    text = """\
sip:
  listen: 127.0.0.1
  port: 5060
users:
  - name: alice
    devices:
      - username: "201"
      - {username: "202", digest: [MD5, SHA-256]}
  - name: bob
"""
    assert typed(load(text)) == typed(
        {
            "sip": {"listen": "127.0.0.1", "port": 5060},
            "users": [
                {
                    "name": "alice",
                    "devices": [
                        {"username": "201"},
                        {"username": "202", "digest": ["MD5", "SHA-256"]},
                    ],
                },
                {"name": "bob"},
            ],
        }
    )


def test_empty_documents_are_none() -> None:
    for text in ("", "\n\n", "# only a comment\n", "---\n", "\ufeff"):
        assert read_yaml(text).data is None


def test_document_start_bom_and_crlf() -> None:
    assert load("\ufeff---\r\na: 1\r\nb: [x, y]\r\n") == {"a": 1, "b": ["x", "y"]}


# --- scalars: as written, never guessed ------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: 40000-40999", "40000-40999"),
        ("a: Alice's Mobile", "Alice's Mobile"),
        ("a: Office Desk Phone  # the desk", "Office Desk Phone"),
        ("a: ::1", "::1"),
        ("a: -5", -5),
        ("a: 0", 0),
        ("a: 200", 200),
        ("a: 0200", "0200"),  # YAML 1.1 would say octal 128
        ("a: 0o17", "0o17"),
        ("a: 1:30", "1:30"),  # YAML 1.1 would say 90 (base 60)
        ("a: 1_000", "1_000"),
        ("a: -0", "-0"),
        ("a: +5", "+5"),
        ("a: 1.5", "1.5"),
        ("a: 1e3", "1e3"),
        ("a: .inf", ".inf"),
        ("a: 0x10", "0x10"),
        ("a: 2026-12-03", "2026-12-03"),  # not a date
        ("a: true", True),
        ("a: False", False),
        ("a: TRUE", True),
        ("a: yes", "yes"),  # YAML 1.1 would say True
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
        ('a: "*0"', "*0"),
        ("a: *0", "*0"),  # an alias in YAML; here the feature code it looks like
        ("a: *01#", "*01#"),
        ("a: &x", "&x"),
        ("a: &x y", "&x y"),
        ("a: [*0, '#1']", ["*0", "#1"]),
        ("a: '#1'", "#1"),
        ('a: "tab\\there"', "tab\there"),
        ("a: |\n  two\n  lines\n", "two\nlines\n"),
        ("a: >\n  folded\n  text\n", "folded text\n"),
        ("a: " + "9" * 101, "9" * 101),  # too long for a number: text, never a huge int
        ("a: café", "café"),
    ],
)
def test_scalars(text: str, expected: object) -> None:
    assert typed(load(text)) == typed({"a": expected})


def test_keys_are_always_text_including_star_codes() -> None:
    assert typed(load("200: a\ntrue: b\n'x y': c\nnull: e\n*0: f\n0200: g\n")) == typed(
        {"200": "a", "true": "b", "x y": "c", "null": "e", "*0": "f", "0200": "g"}
    )


# --- lines -----------------------------------------------------------------------------------


def test_every_key_and_item_has_its_line() -> None:
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
  -
"""
    lines = read_yaml(text).lines
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
    assert lines[("users", 1)] == 12  # an empty item is on its dash's line


# --- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("a: 1\nb: 2\na: 3\n", 3, "duplicate key 'a' (first on line 1)"),
        ("a: 1\n'a': 3\n", 2, "duplicate key 'a'"),
        ("a: {b: 1, b: 2}\n", 1, "duplicate key 'b'"),
        ("200: x\n'200': y\n", 2, "duplicate key '200'"),
        ("a: !secret password\n", 1, "tags such as '!secret' are not supported"),
        ("a: !!int 5\n", 1, "tags such as '!!int' are not supported"),
        ("a: !!map {}\nb: !!seq [1]\nc: !!str x\n", None, ""),  # the default tags are fine
        ("? [a]\n: b\n", 1, "keys must be plain text"),
        ("a:\n\tb: 1\n", 2, "tabs are not allowed for indentation; use spaces"),
        ("a: b: c\n", 1, "quote a value that contains ': '"),
        ("a: 'x\nb: 2\n", 1, "a quoted value is not closed"),
        ('a: "x\n', 1, "a quoted value is not closed"),
        ("a: 1\n---\nb: 2\n", 2, "only one document is allowed"),
        ("- a\nb: 1\n", 2, "check the indentation"),
        ("a:\n    b: 1\n  c: 2\n", 3, "check the indentation"),
        ("a: [1, 2\nb: 3\n", 2, "expected ',' or ']'"),
        ("a: {b: 1\n", 2, "expected ',' or '}'"),
        ("a: @x\n", 1, "'@' that cannot start any token"),
        ("a: 1\x07\n", 1, "the character U+0007 is not allowed"),
    ],
)
def test_refusals_name_the_line(text: str, line: int | None, fragment: str) -> None:
    if line is None:
        assert load(text) is not None
        return
    with pytest.raises(YamlError) as caught:
        read_yaml(text, "pbx.yaml")
    error = caught.value
    assert error.line == line
    assert fragment in error.message
    assert str(error) == f"pbx.yaml: {error.message} (line {line})"


def test_nesting_depth_is_bounded() -> None:
    assert load("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None
    with pytest.raises(YamlError, match="nesting deeper than"):
        load("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))
    with pytest.raises(YamlError, match="nesting deeper than"):
        load("[" * 5000 + "]" * 5000)  # deeper than PyYAML's own recursion can go


def test_error_without_source_or_line() -> None:
    assert str(YamlError("bad")) == "bad"
    assert str(YamlError("bad", 3)) == "bad (line 3)"


# --- fuzzing ---------------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=" -:#[]{},'\"\n\t*&!|>?%@`x10\\", max_size=40))
def test_any_text_gives_data_or_a_yaml_error_with_a_line(text: str) -> None:
    outcome: object
    try:
        outcome = read_yaml(text, "fuzz.yaml")
    except YamlError as error:
        outcome = error
    if isinstance(outcome, YamlError):
        assert outcome.line is not None
        assert str(outcome).startswith("fuzz.yaml: ")
