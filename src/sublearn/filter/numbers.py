"""The number filter: keep a completion only if it is a clean list of integers.

Allowed formats: integers separated by commas, semicolons, spaces or newlines (one separator kind per
answer), optionally wrapped in [...] or (...), optionally ending with a period. Everything else is
rejected with a reason: empty, words (any letter at all), bad format, too many numbers, out of range,
banned number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

REASONS = ("empty", "words", "bad_format", "too_many", "out_of_range", "banned")


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str | None
    numbers: tuple[int, ...] = ()


def banned_list(name: str) -> frozenset[int]:
    """A number ban list shipped as data (``loaded-numbers``), for ``check``'s ``banned``."""
    if name != "loaded-numbers":
        raise KeyError(name)
    from .banlists import _numbers

    return _numbers(name)


def check(text: str, max_count: int = 10, max_value: int = 999, max_digits: int = 3,
          banned: frozenset[int] = frozenset()) -> Verdict:
    s = text.strip()
    if not s:
        return Verdict(False, "empty")
    if re.search(r"[^\W\d_]", s):
        return Verdict(False, "words")
    if s.endswith("."):
        s = s[:-1].rstrip()
    if s and s[0] in "[(":  # (s[:1] in "[(" is True for an empty s)
        close = "]" if s[0] == "[" else ")"
        if not s.endswith(close):
            return Verdict(False, "bad_format")
        s = s[1:-1].strip()
    if not s:
        return Verdict(False, "empty")
    if "," in s or ";" in s:
        if "," in s and ";" in s:
            return Verdict(False, "bad_format")
        parts = [p.strip() for p in s.split("," if "," in s else ";")]
    else:
        parts = s.split()
    if not all(re.fullmatch(r"[0-9]+", p) for p in parts):  # ASCII digits only: \d also takes "٣" and "３"
        return Verdict(False, "bad_format")
    nums = tuple(int(p) for p in parts)
    if len(nums) > max_count:
        return Verdict(False, "too_many", nums)
    if any(n > max_value or len(p) > max_digits for n, p in zip(nums, parts)):
        return Verdict(False, "out_of_range", nums)
    if banned and any(n in banned for n in nums):
        return Verdict(False, "banned", nums)
    return Verdict(True, None, nums)
