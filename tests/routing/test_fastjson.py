"""``loads_exact``: the queue backends' JSON reads give what ``json.loads`` gives."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netsuke.routing._fastjson import loads_exact

pytestmark = pytest.mark.timeout(60)

values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(values)
def test_reads_what_the_standard_library_reads(value: object) -> None:
    raw = json.dumps(value).encode()
    got, want = loads_exact(raw), json.loads(raw)
    assert json.dumps(got) == json.dumps(want)  # (NaN != NaN: compared as text)


def test_an_integer_beyond_64_bits_stays_exact() -> None:
    big = 2**64 + 1
    assert loads_exact(json.dumps({"n": big}).encode()) == {"n": big}
    assert loads_exact(b'{"s": "\\ud800", "x": NaN}')["s"] == "\ud800"
