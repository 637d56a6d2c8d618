"""Routing that tries only the rules that can match a path's first segment.

Tornado tries an application's rules in order until one matches, and the download routes come
last (they match almost any three-segment path): every download would run every other route's
regex first. ``IndexedRouter`` gives the same answer as that in-order search, but skips the
rules whose regex requires a literal first segment other than the request's.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

from tornado import httputil
from tornado.routing import PathMatches, ReversibleRouter, Rule, RuleRouter

# Characters with a meaning of their own in a regex (re's syntax, without the VERBOSE flag).
_SPECIAL = frozenset(".^$*+?{}[]|()\\")
_QUANTIFIERS = frozenset("?*+{")
_LOOKAROUNDS = ("(?=", "(?!", "(?<=", "(?<!")


def _skip_class(pattern: str, i: int) -> int:
    """The index past the character class opening at ``pattern[i]`` (``[``)."""
    i += 1
    if pattern.startswith("^", i):
        i += 1
    if pattern.startswith("]", i):
        i += 1  # a ``]`` first is one of the class's characters
    while i < len(pattern) and pattern[i] != "]":
        i += 2 if pattern[i] == "\\" else 1
    return i + 1


def _top_level(pattern: str, start: int, end: int) -> list[int]:
    """Where a ``|`` outside any group or class splits ``pattern[start:end]``."""
    bars = []
    depth = 0
    i = start
    while i < end:
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if c == "[":
            i = _skip_class(pattern, i)
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "|" and depth == 0:
            bars.append(i)
        i += 1
    return bars


def _group_end(pattern: str, i: int) -> int | None:
    """The index past the group opening at ``pattern[i]``, or None if it does not close."""
    depth = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if c == "[":
            i = _skip_class(pattern, i)
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return None


def _literal_segment(text: str) -> str | None:
    """The first segment of every string ``text`` (a regex without top-level ``|``) matches,
    read up to its first literal ``/`` or its closing ``$``, or None when it is not spelled out
    literally."""
    segment: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            escaped = text[i + 1 : i + 2]
            if not escaped or escaped.isalnum() or not escaped.isascii():
                return None  # a class (\d), a reference (\1), a code (\x2f)...
            c, width = escaped, 2
        elif c == "$":
            return "".join(segment) if i == len(text) - 1 else None
        elif c in _SPECIAL or c == "\n":
            return None
        else:
            width = 1
        if text[i + width : i + width + 1] in _QUANTIFIERS:
            return None  # the character is optional or repeated
        if c == "/":
            return "".join(segment)
        segment.append(c)
        i += width
    return None  # no ``$``: the regex matches any path it is a prefix of


def first_segments(regex: re.Pattern[str]) -> frozenset[str] | None:
    """The first path segments (between the leading ``/`` and the next) of all paths
    ``regex.match`` accepts, when the regex spells them out; None when any path might match.

    Understood: ``/literal/...``, ``/literal$``, and ``/(?:one|two|...)...`` whose alternatives
    are literal, after lookarounds (which only narrow what matches, so are skipped). Anything
    else, flags included, is None: the rule is tried for every path."""
    pattern = regex.pattern
    if not isinstance(pattern, str) or regex.flags & ~re.UNICODE:
        return None
    if _top_level(pattern, 0, len(pattern)):
        return None
    i = 1 if pattern.startswith("^") else 0
    if not pattern.startswith("/", i):
        return None
    i += 1
    while pattern.startswith(_LOOKAROUNDS, i):
        end = _group_end(pattern, i)
        if end is None or pattern[end : end + 1] in _QUANTIFIERS:
            return None
        i = end
    rest = pattern[i:]
    if not pattern.startswith("(?:", i):
        segment = _literal_segment(rest)
        return None if segment is None else frozenset([segment])
    end = _group_end(pattern, i)
    if end is None or pattern[end : end + 1] in _QUANTIFIERS:
        return None
    after = pattern[end:]
    bars = [i + 2, *_top_level(pattern, i + 3, end - 1), end - 1]
    segments: set[str] = set()
    for start, stop in itertools.pairwise(bars):
        # Each alternative followed by what follows the group: a regex of its own.
        segment = _literal_segment(pattern[start + 1 : stop] + after)
        if segment is None:
            return None
        segments.add(segment)
    return frozenset(segments)


def rule_segments(rule: Rule) -> frozenset[str] | None:
    """What ``first_segments`` says of a rule matched by path alone, else None. A subclass of
    PathMatches may match differently (more paths), so only PathMatches itself is read."""
    if type(rule.matcher) is not PathMatches:
        return None
    return first_segments(rule.matcher.regex)


def path_segment(path: str) -> str | None:
    """The request path's first segment, None for a path not starting with ``/``."""
    if not path.startswith("/"):
        return None
    end = path.find("/", 1)
    return path[1:] if end < 0 else path[1:end]


class RuleIndex:
    """For each literal first segment, the rules that can match a path with it, in their
    original order: the rules indexed under it and those indexed under none."""

    def __init__(self, rules: list[Rule]) -> None:
        self.rules = list(rules)
        indexed = [rule_segments(rule) for rule in self.rules]
        self.wildcards = [
            rule for rule, segs in zip(self.rules, indexed, strict=True) if segs is None
        ]
        names: set[str] = set()
        for segs in indexed:
            names |= segs or set()
        self.by_segment = {
            name: [
                rule
                for rule, segs in zip(self.rules, indexed, strict=True)
                if segs is None or name in segs
            ]
            for name in names
        }

    def candidates(self, path: str) -> list[Rule]:
        segment = path_segment(path)
        if segment is None:
            return self.wildcards
        found = self.by_segment.get(segment)
        if found is not None:
            return found
        # ``$`` also matches before a final newline: such a path is tried against every rule.
        return self.rules if segment.endswith("\n") else self.wildcards


class IndexedRouter(ReversibleRouter):
    """Routes as ``router`` (a RuleRouter) does, trying its rules in order, but only those
    ``RuleIndex`` says can match. Rules added to ``router`` later are indexed on the next
    request; rules changed in place are not seen."""

    def __init__(self, router: RuleRouter) -> None:
        self.router = router
        self.index = RuleIndex(router.rules)

    def find_handler(
        self, request: httputil.HTTPServerRequest, **kwargs: Any
    ) -> httputil.HTTPMessageDelegate | None:
        if len(self.index.rules) != len(self.router.rules):
            self.index = RuleIndex(self.router.rules)
        # RuleRouter.find_handler's loop, over the candidates.
        for rule in self.index.candidates(request.path):
            target_params = rule.matcher.match(request)
            if target_params is not None:
                if rule.target_kwargs:
                    target_params["target_kwargs"] = rule.target_kwargs
                delegate = self.router.get_target_delegate(rule.target, request, **target_params)
                if delegate is not None:
                    return delegate
        return None

    def reverse_url(self, name: str, *args: Any) -> str | None:
        if isinstance(self.router, ReversibleRouter):
            return self.router.reverse_url(name, *args)
        return None
