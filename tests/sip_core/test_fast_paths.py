"""Fast paths of the message and digest layers agree with the straightforward grammar checks.

The hot paths of a registration avoid some regular-expression passes; these tests hold them to the
plain implementation they replace, on hand-picked edge cases and on generated inputs.
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from sip_core.digest import DigestCredentials, parse_credentials

# The grammar check and extraction parse_credentials used before its one-pass version.
_NAME = r"[A-Za-z0-9_.!%*+`'~-]+"
_VALUE = r'"(?:[^"\\]|\\.)*"|[^ \t,"]*'
_ITEM = rf"[ \t]*{_NAME}[ \t]*=[ \t]*(?:{_VALUE})[ \t]*"
_REF_PARAM = re.compile(rf"[ \t]*({_NAME})[ \t]*=[ \t]*({_VALUE})[ \t]*")
_REF_LIST = re.compile(rf"{_ITEM}(?:,{_ITEM})*")


def reference_credentials(value: str) -> DigestCredentials | None:
    value = value.strip()
    if value[:6].lower() != "digest" or len(value) < 8 or value[6] not in " \t":
        return None
    rest = value[7:]
    if _REF_LIST.fullmatch(rest) is None:
        return None
    params: dict[str, str] = {}
    for name, raw in _REF_PARAM.findall(rest):
        key = name.lower()
        if key in params:
            return None
        if raw.startswith('"'):
            text = raw[1:-1]
            params[key] = re.sub(r"\\(.)", r"\1", text) if "\\" in text else text
        else:
            params[key] = raw
    return DigestCredentials(params)


CREDENTIALS = [
    'Digest username="alice",realm="home.arpa",nonce="n",uri="sip:home.arpa",'
    'response="0123456789abcdef0123456789abcdef",algorithm=MD5,cnonce="abc",qop=auth,nc=00000001',
    'Digest username="a", realm="r"',
    "Digest a=1",
    "Digest a=1,",
    "Digest a=1 ,b=2",
    "Digest a=1 , ",
    "Digest ,a=1",
    "Digest a=1,,b=2",
    "Digest a=1 b=2",
    'Digest a="x\\"y", b = z ',
    'Digest a="x',
    'Digest a="x"y',
    'Digest a="x" "y"',
    "Digest a=1;b=2",
    "Digest a=",
    "Digest a=,b=",
    "Digest A=1,a=2",
    "Digest =1",
    'Digest a="\\',
    'Digest a="new\nline"',
    "Digest\ta=1",
    "Digestive a=1",
    "Basic abc",
]


def test_parse_credentials_matches_the_grammar_on_edge_cases() -> None:
    for value in CREDENTIALS:
        assert parse_credentials(value) == reference_credentials(value), value


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "A", "nonce", "uri", "b-c", ""]),
            st.sampled_from(["", " ", "\t"]),
            st.text(alphabet='ab1 ,"\\=\t;', max_size=8),
        ),
        min_size=1,
        max_size=5,
    ),
    st.sampled_from([",", ", ", " ,", ",,", " "]),
)
def test_parse_credentials_matches_the_grammar(
    items: list[tuple[str, str, str]], separator: str
) -> None:
    value = "Digest " + separator.join(f"{name}{blank}={raw}" for name, blank, raw in items)
    assert parse_credentials(value) == reference_credentials(value)
