"""HTTP ``Range`` requests for media (RFC 9110 §14): one byte range or the whole file.

Only a single part is ever served.  Media elements and download resumers ask
for one range; for a header listing several, the first satisfiable one is
served as an ordinary 206 whose ``Content-Range`` says exactly what was sent.
A server may ignore ``Range`` altogether (§14.2), so this is no less correct
than a 200, and it spares us ``multipart/byteranges`` and the amplification
tricks (many overlapping ranges) that come with it.

Following §14.2, a header that is not a valid ``bytes`` ranges-specifier is
ignored (the whole file is served); only a valid header none of whose ranges
fits the file is refused, with :class:`RangeNotSatisfiable` (416).
"""

from __future__ import annotations

import re

MAX_RANGES = 64
"""More ranges than this in one header is abuse; the header is ignored."""

_SPEC = re.compile(r"([0-9]*)-([0-9]*)")  # ASCII digits only: int() would take other scripts'
_BIG = 10**21
"""Stands in for numbers too long to matter (and too long for ``int`` to parse cheaply)."""


class RangeNotSatisfiable(ValueError):
    """A valid Range header none of whose ranges overlaps the file: answer 416."""

    def __init__(self, size: int) -> None:
        super().__init__(f"no requested range overlaps the {size} bytes of this file")
        self.size = size

    @property
    def content_range(self) -> str:
        """The ``Content-Range`` value a 416 response carries."""
        return f"bytes */{self.size}"


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive ``(start, end)`` to serve from a file of ``size`` bytes, or None for all.

    None means "ignore the header and send a 200": no header, another unit, or
    invalid syntax.  An end past the file is clamped to its last byte, and a
    suffix ``-N`` means the last N bytes.
    """
    if size < 0:
        raise ValueError("size must be >= 0")
    if header is None:
        return None
    unit, equals, range_set = header.strip(" \t").partition("=")
    if not equals or unit.lower() != "bytes":
        return None
    specs = [part.strip(" \t") for part in range_set.split(",")]
    specs = [part for part in specs if part]  # the list syntax allows empty elements
    if not specs or len(specs) > MAX_RANGES:
        return None
    ranges: list[tuple[str, str]] = []
    for spec in specs:
        match = _SPEC.fullmatch(spec)
        if match is None or match.group(0) == "-":
            return None
        first, last = match.groups()
        if first and last and _order(last) < _order(first):
            return None  # an invalid byte-range-spec makes the whole header invalid
        ranges.append((first, last))
    for first, last in ranges:
        if not first:
            length = _number(last)
            if length == 0:
                continue  # a zero-length suffix is unsatisfiable
            if size == 0:
                return None  # satisfiable but empty: the (empty) whole file is the answer
            return max(size - length, 0), size - 1
        start = _number(first)
        if start < size:
            return start, size - 1 if not last else min(_number(last), size - 1)
    raise RangeNotSatisfiable(size)


def content_range(start: int, end: int, size: int) -> str:
    """The ``Content-Range`` value of a 206 carrying bytes ``start..end`` (inclusive)."""
    if not 0 <= start <= end < size:
        raise ValueError(f"bad range {start}-{end} for {size} bytes")
    return f"bytes {start}-{end}/{size}"


def _number(digits: str) -> int:
    """Parse ASCII digits; over 20 significant digits is more than any file we hold."""
    significant = digits.lstrip("0")
    return int(significant or "0") if len(significant) <= 20 else _BIG


def _order(digits: str) -> tuple[int, str]:
    """A key giving the numeric order of digit strings of any length, without ``int``."""
    significant = digits.lstrip("0")
    return len(significant), significant
