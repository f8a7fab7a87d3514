"""The request headers that shape a file's answer, read by the rules of RFC 9110: entity
tags (§8.8.3), HTTP dates (§5.6.7), conditional requests (§13), ranges (§14) and
Accept-Encoding (§12.5.3).

Pure functions over strings and numbers, no I/O: static.py asks, this module answers.
Every reader is lenient in one direction only: what it cannot parse is ignored, as the RFC
asks for dates and allows for ranges, never guessed into a match.
"""

from __future__ import annotations

import email.utils
from typing import Dict, List, Optional, Tuple

# --------------------------------------------------------------------- entity tags
#   entity-tag = [ weak ] opaque-tag ; weak = %s"W/" ; opaque-tag = DQUOTE *etagc DQUOTE
#   etagc      = %x21 / %x23-7E / obs-text    (a comma may sit inside the quotes)


def etag_list(value: str) -> Optional[List[str]]:
    """The entity-tags of an If-Match / If-None-Match value, each with its W/ prefix if
    any; None for "*". Parsing stops at the first malformed member."""
    if value.strip() == "*":
        return None
    tags = []
    i, n = 0, len(value)
    while i < n:
        c = value[i]
        if c in " \t,":
            i += 1
            continue
        start = i
        if value.startswith("W/", i):
            i += 2
        if i >= n or value[i] != '"':
            break
        end = value.find('"', i + 1)
        if end < 0:
            break
        tags.append(value[start:end + 1])
        i = end + 1
    return tags


def strong_match(tags: Optional[List[str]], etag: str) -> bool:
    """If-Match: "*" matches any current representation; a weak tag never matches."""
    return tags is None or etag in tags


def weak_match(tags: Optional[List[str]], etag: str) -> bool:
    """If-None-Match: tags compare with any W/ prefix removed from both sides."""
    if tags is None:
        return True
    bare = etag[2:] if etag.startswith("W/") else etag
    for tag in tags:
        if tag == bare or tag[2:] == bare and tag.startswith("W/"):
            return True
    return False


# --------------------------------------------------------------------- dates
#   HTTP-date = IMF-fixdate / obs-date (rfc850-date / asctime-date); email.utils reads all three.

_DATES: Dict[str, Optional[int]] = {}


def http_date(value: str) -> Optional[int]:
    """Seconds since the epoch for an HTTP-date, None when it is not one. Clients send
    back the same few dates again and again, so answers are remembered."""
    seconds = _DATES.get(value, -1)
    if seconds != -1:
        return seconds
    try:
        parts = email.utils.parsedate_tz(value)
        seconds = email.utils.mktime_tz(parts) if parts is not None else None
    except (TypeError, ValueError, OverflowError, IndexError):
        seconds = None
    if len(_DATES) > 1024:
        _DATES.clear()
    _DATES[value] = seconds
    return seconds


# --------------------------------------------------------------------- ranges
#   Range = ranges-specifier ; ranges-specifier = range-unit "=" range-set
#   range-set = 1#range-spec ; range-spec = int-range / suffix-range
#   int-range = first-pos "-" [ last-pos ] ; suffix-range = "-" suffix-length

# Past this many ranges, or when ranges overlap or add up to the file or more, the whole
# file is sent with 200 instead (RFC 9110 §14.2 allows it; nginx does the same for the
# sum, and its max_ranges bounds the count). It stops a request from asking for the same
# bytes thousands of times.
MAX_RANGES = 64

WHOLE = "whole"  # ignore the Range header: answer 200 with everything
UNSATISFIABLE = "unsatisfiable"  # 416


def byte_ranges(value: str, size: int):
    """Read a Range header against a file of `size` bytes. Returns WHOLE, UNSATISFIABLE,
    or a list of (first, last) inclusive offsets in the order asked, all satisfiable."""
    unit, eq, spec = value.partition("=")
    if not eq or unit.lower() != "bytes":  # units compare case-insensitively (§14.1)
        return WHOLE  # unknown unit or not a ranges-specifier: ignored, as §14.2 asks
    ranges: List[Tuple[int, int]] = []
    count = 0
    for item in spec.split(","):
        item = item.strip(" \t")
        if not item:
            continue  # 1#element allows empty list members
        count += 1
        if count > MAX_RANGES:
            return WHOLE
        first_s, dash, last_s = item.partition("-")
        if not dash or not (first_s.isdigit() or first_s == "") or not (last_s.isdigit() or last_s == ""):
            return WHOLE  # invalid syntax: ignored
        if not first_s.isascii() or not last_s.isascii():
            return WHOLE  # str.isdigit() accepts other scripts' digits; the grammar does not
        if first_s == "":
            if last_s == "":
                return WHOLE
            suffix = int(last_s)
            if suffix == 0 or size == 0:
                continue  # unsatisfiable member
            ranges.append((max(0, size - suffix), size - 1))
            continue
        first = int(first_s)
        if last_s:
            last = int(last_s)
            if last < first:
                return WHOLE  # invalid
        else:
            last = size - 1
        if first >= size:
            continue  # unsatisfiable member
        ranges.append((first, min(last, size - 1)))
    if count == 0:
        return WHOLE
    if not ranges:
        return UNSATISFIABLE
    if len(ranges) > 1:
        ordered = sorted(ranges)
        total = 0
        previous_last = -1
        for first, last in ordered:
            if first <= previous_last:
                return WHOLE  # overlapping
            previous_last = last
            total += last - first + 1
        if total >= size:
            return WHOLE
    return ranges


# --------------------------------------------------------------------- Accept-Encoding
#   Accept-Encoding = #( codings [ weight ] ) ; codings = content-coding / "identity" / "*"
#   weight = OWS ";" OWS "q=" qvalue

_ALIASES = {"x-gzip": "gzip"}
_PREFERENCES: Dict[Tuple[str, Tuple[str, ...]], Tuple[str, ...]] = {}


def _qvalue(params: str) -> float:
    for param in params.split(";"):
        name, eq, value = param.strip().partition("=")
        if eq and name.strip().lower() == "q":
            try:
                q = float(value.strip())
            except ValueError:
                return 0.0
            return q if 0.0 <= q <= 1.0 else 0.0
    return 1.0


def acceptable_codings(value: str, available: Tuple[str, ...]) -> Tuple[str, ...]:
    """The codings of `available` (in the server's order of preference) that
    Accept-Encoding `value` accepts, best first: higher q first, then the server's order.
    q=0 refuses; "*" stands for every coding not named; a coding weighted below an
    explicit identity is not chosen. Answers are remembered: browsers send a handful of
    distinct values."""
    key = (value, available)
    found = _PREFERENCES.get(key)
    if found is not None:
        return found
    weights: Dict[str, float] = {}
    star = None
    for member in value.split(","):
        coding, _, params = member.partition(";")
        coding = coding.strip().lower()
        if not coding:
            continue
        q = _qvalue(params) if params else 1.0
        if coding == "*":
            star = q
        else:
            coding = _ALIASES.get(coding, coding)
            weights[coding] = max(q, weights.get(coding, 0.0))
    # A client that names identity with a higher q than a coding prefers the plain file;
    # one that does not name it (browsers) wants whatever it accepts over the plain file.
    identity = weights.get("identity", 0.0)
    scored = []
    for rank, coding in enumerate(available):
        q = weights.get(coding, star if star is not None else 0.0)
        if q > 0 and q >= identity:
            scored.append((-q, rank, coding))
    found = tuple(coding for _, _, coding in sorted(scored))
    if len(_PREFERENCES) > 256:
        _PREFERENCES.clear()
    _PREFERENCES[key] = found
    return found
