"""Range header parsing (webui.ranges): RFC 9110 cases, invalid headers, and a property."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webui.ranges import MAX_RANGES, RangeNotSatisfiable, content_range, parse_range

SIZE = 1000


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-", (0, 999)),
        ("bytes=100-199", (100, 199)),
        ("bytes=0-0", (0, 0)),
        ("bytes=999-", (999, 999)),
        ("bytes=999-999", (999, 999)),
        ("bytes=-500", (500, 999)),
        ("bytes=-1", (999, 999)),
        ("bytes=-1000", (0, 999)),
        ("bytes=-5000", (0, 999)),
        ("bytes=900-5000", (900, 999)),
        ("bytes=0-" + "9" * 5000, (0, 999)),
        ("bytes=0007-0010", (7, 10)),
        ("BYTES=1-2", (1, 2)),
        ("Bytes=1-2", (1, 2)),
        (" bytes=1-2 ", (1, 2)),
        # Several ranges: the first satisfiable one is served (see the module docstring).
        ("bytes=0-1,5-6", (0, 1)),
        ("bytes=5-6, 0-1", (5, 6)),
        ("bytes=1-2, ,3-4", (1, 2)),
        ("bytes=,1-2", (1, 2)),
        ("bytes=5000-6000,0-10", (0, 10)),
        ("bytes=-0,10-20", (10, 20)),
        ("bytes=" + ",".join(["0-1"] * MAX_RANGES), (0, 1)),
    ],
)
def test_satisfiable(header: str, expected: tuple[int, int]) -> None:
    assert parse_range(header, SIZE) == expected


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "   ",
        "bytes",
        "bytes=",
        "bytes=,",
        "bytes=-",
        "bytes=abc",
        "bytes=5-1",
        "bytes=1-2,5-1",
        "bytes=" + "9" * 50 + "-" + "9" * 49,
        "items=0-1",
        "bytes 0-1",
        "bytes:0-1",
        "bytes =0-1",
        "bytes=0-1-2",
        "bytes=--1",
        "bytes=+1-2",
        "bytes=0x10-",
        "bytes=1 -2",
        "bytes=\u0661-\u0662",  # Arabic-Indic digits, which int() would accept
        "bytes=\uff11-\uff12",  # fullwidth digits
        "bytes=" + ",".join(["0-1"] * (MAX_RANGES + 1)),
    ],
)
def test_invalid_headers_are_ignored(header: str | None) -> None:
    assert parse_range(header, SIZE) is None


@pytest.mark.parametrize(
    "header",
    [
        "bytes=1000-",
        "bytes=1000-2000",
        "bytes=-0",
        "bytes=5000-6000,7000-",
        "bytes=" + "9" * 5000 + "-",
        "bytes=" + "9" * 30 + "-" + "9" * 31,
    ],
)
def test_unsatisfiable(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable) as refused:
        parse_range(header, SIZE)
    assert refused.value.size == SIZE
    assert refused.value.content_range == "bytes */1000"


def test_empty_file() -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range("bytes=0-", 0)
    assert parse_range("bytes=-5", 0) is None  # satisfiable, and the answer is all 0 bytes
    assert parse_range(None, 0) is None


def test_negative_size_is_a_caller_bug() -> None:
    with pytest.raises(ValueError):
        parse_range("bytes=0-", -1)


def test_content_range() -> None:
    assert content_range(0, 99, 1000) == "bytes 0-99/1000"
    assert content_range(999, 999, 1000) == "bytes 999-999/1000"
    for start, end, size in [(-1, 5, 10), (5, 4, 10), (0, 10, 10), (0, 0, 0)]:
        with pytest.raises(ValueError):
            content_range(start, end, size)


NUMBERS = st.one_of(st.integers(0, 3000).map(str), st.from_regex(r"[0-9]{1,30}", fullmatch=True))
SPECS = st.one_of(
    st.tuples(NUMBERS, NUMBERS).map("-".join),
    NUMBERS.map(lambda n: n + "-"),
    NUMBERS.map(lambda n: "-" + n),
    st.text(max_size=8),
)
HEADERS = st.one_of(
    st.lists(SPECS, min_size=1, max_size=4).map(lambda specs: "bytes=" + ",".join(specs)),
    st.text(max_size=40),
)


@settings(max_examples=400, deadline=None, database=None)
@given(header=HEADERS, size=st.integers(0, 2500))
def test_result_is_always_inside_the_file(header: str, size: int) -> None:
    try:
        result = parse_range(header, size)
    except RangeNotSatisfiable:
        return
    if result is not None:
        start, end = result
        assert 0 <= start <= end <= size - 1
        assert content_range(start, end, size)


@settings(max_examples=300, deadline=None, database=None)
@given(first=st.integers(0, 3000), length=st.integers(0, 3000), size=st.integers(1, 2500))
def test_single_range_matches_its_definition(first: int, length: int, size: int) -> None:
    last = first + length
    if first >= size:
        with pytest.raises(RangeNotSatisfiable):
            parse_range(f"bytes={first}-{last}", size)
    else:
        assert parse_range(f"bytes={first}-{last}", size) == (first, min(last, size - 1))
