"""Matchers: a compiled expression and when one of its matches in a growing text is decided.

The output filter sees an answer a few characters at a time. A match near the end of what it has
seen may still grow, shrink or vanish with the next characters, so for each matcher it asks one
question of the text so far: which matches are decided, and from where on is nothing decided yet.
Everything before the earliest undecided position of every matcher can be released.

The `regex` engine's partial matching answers most of it: a search with `partial=True` reports a
match that the end of the text cut short, so the filter holds back only a tail that could still
begin a match, and releases any other text at once. Two kinds of matcher then decide complete matches:

- Detectors (`kind: pii`) are written so that the engine reads at most `tail` characters past a
  match's end: such a match is decided once `tail` characters follow it.
- Patterns (`kind: pattern`) are the operator's expressions, anything the syntax allows, so a match
  is decided only once the text reaches `reach` characters past its start: the pattern's maximum
  width plus what its lookaheads read. A pattern of unbounded width (`sk-[A-Za-z0-9]{20,}`), or wider
  than the rule's `max_match` (256 by default), gets `max_match` instead: in a stream its matches are
  taken to be at most that long (a longer match is still caught from its start, so a block releases
  nothing of it, and a mask covers at least its first `max_match` characters). The same bound ends
  a partial match that has not completed within it.

Patterns use Python's `re` syntax: the standard library's parser bounds them (width, lookarounds),
and the `regex` engine runs them (VERSION0, its `re`-compatible mode, for partial matching) with
its WORD flag, so that `\\b` is a Unicode word boundary: it sees one between "律师" and "attorney".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from re import _constants as sre   # the standard library's own parse of a pattern: widths, lookarounds
from re import _parser as sre_parse
from typing import Callable

import regex

from .detectors import Check, Detector

MAX_MATCH = 256          # the default bound on a pattern match in a stream, when the pattern has none
MAX_MATCH_LIMIT = 4096   # the most `max_match` may be set to

_UNBOUNDED = sre.MAXREPEAT
DIGITS = "0123456789"   # what the detectors count as digits (ASCII: their expressions' [0-9])


@dataclass(frozen=True, slots=True)
class Widths:
    min: int
    max: int | None      # None: unbounded
    ahead: int | None    # the most characters a lookahead (or \b, $) reads past where it stands
    behind: int          # the most characters a lookbehind (or \b, ^) reads before where it stands


def widths(pattern: str) -> Widths:
    parsed = sre_parse.parse(pattern)
    lo, hi = parsed.getwidth()
    ahead, behind = _lookarounds(parsed.data)
    return Widths(lo, None if hi >= _UNBOUNDED else hi, None if ahead >= _UNBOUNDED else ahead, behind)


def _lookarounds(items: list, ahead: int = 0, behind: int = 0) -> tuple[int, int]:
    for op, av in items:
        subs: list = []
        if op in (sre.ASSERT, sre.ASSERT_NOT):
            direction, sub = av
            width = sub.getwidth()[1]
            if direction == 1:
                ahead = max(ahead, width)
            else:
                behind = max(behind, width)
            subs = [sub]
        elif op is sre.AT:
            # ^, $, \A, \Z read one character; \b and \B under the WORD flag are Unicode word
            # boundaries (UAX #29), which read two on either side ("ex.com" is one word: whether a
            # boundary falls before "c" depends on the "x")
            ahead, behind = max(ahead, 2), max(behind, 2)
        elif op is sre.SUBPATTERN:
            subs = [av[-1]]
        elif op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT):
            subs = [av[2]]
        elif op is sre.ATOMIC_GROUP:
            subs = [av]
        elif op is sre.BRANCH:
            subs = list(av[1])
        elif op is sre.GROUPREF_EXISTS:
            subs = [p for p in av[1:] if p is not None]
        for sub in subs:
            ahead, behind = _lookarounds(sub.data, ahead, behind)
    return ahead, behind


def check_pattern(pattern: str) -> str:
    """A pattern rule's expression, or ValueError saying why the gateway refuses it."""
    if not isinstance(pattern, str) or not pattern:
        raise ValueError("a pattern must be a non-empty string")
    try:
        re.compile(pattern)
        regex.compile(pattern, regex.VERSION0 | regex.WORD)
    except (re.error, regex.error) as exc:
        raise ValueError(f"{pattern!r} is not a valid regular expression: {exc}") from None
    if widths(pattern).min == 0:
        raise ValueError(f"{pattern!r} can match the empty string, so it would match everywhere: "
                         "make it match at least one character")
    return pattern


@dataclass(frozen=True, slots=True)
class Matcher:
    """One expression of a rule, and how to tell its decided matches in a text that grows."""

    pattern: regex.Pattern[str]
    label: str                   # the placeholder's type: <EMAIL_1>
    reach: int                   # the most characters from a match's start the engine reads
    behind: int                  # the most characters before a start it reads
    tail: int | None = None      # detectors: decided once this many characters follow a match
    check: Check | None = None
    normalize: Callable[[str], str] = str
    first: regex.Pattern[str] | None = None   # what every match begins with: no such character, no scan
    digits: int = 0                           # the fewest digits in a match: a whole text with fewer, no scan

    @property
    def hold(self) -> int:
        """The most trailing characters the stream filter holds back for this matcher."""
        return self.reach - 1

    def scan(self, text: str, pos: int, final: bool) -> tuple[list[tuple[int, int]], int]:
        """The decided matches that start at or after `pos`, and the earliest position from which
        nothing is decided (len(text) when everything is). `final`: the text is all there is."""
        found: list[tuple[int, int]] = []
        n = len(text)
        if self.first is not None and self.first.search(text, pos) is None:
            return found, n
        if final and self.digits and sum(text.count(d, pos) for d in DIGITS) < self.digits:
            return found, n   # (a growing text may still get them: there a partial match is looked for)
        partial = not final
        search = self.pattern.search
        while (m := search(text, pos, partial=partial)) is not None:
            s, e = m.span()
            if m.partial:
                if s >= n:                    # only "a match could start after the end": nothing to hold
                    return found, n
                if s + self.reach <= n:       # longer than any match can be: no match starts here
                    pos = s + 1
                    continue
                return found, s
            if partial:
                if self.tail is not None:
                    if e + self.tail > n:
                        return found, s
                elif s + self.reach > n:
                    return found, self._hidden_partial(text, pos, s)
            span = self.check(text, s, e) if self.check else (s, e)
            if span is None:
                pos = s + 1                   # a later start inside the candidate may still be one
                continue
            found.append(span)
            pos = span[1] if span[1] > span[0] else span[1] + 1
        return found, n

    def _hidden_partial(self, text: str, pos: int, s: int) -> int:
        """An undecided match at `s`: the engine reports a complete match ahead of a partial one at an
        earlier start (`ab.*z|q` on "abq" finds the q), so look for one where it could still matter."""
        match = self.pattern.match
        for start in range(max(pos, len(text) - self.reach + 1), s):
            if match(text, start, partial=True) is not None:
                return start
        return s


def detector_matcher(detector: Detector) -> Matcher:
    w = widths(detector.pattern.pattern)
    assert w.max is not None, detector.entity
    return Matcher(detector.pattern, detector.label, w.max + detector.tail, w.behind, detector.tail,
                   detector.check, detector.normalize, regex.compile(detector.first),
                   detector.digits)


def pattern_matcher(pattern: str, label: str, max_match: int = MAX_MATCH) -> Matcher:
    check_pattern(pattern)
    w = widths(pattern)
    if w.max is None or w.ahead is None:
        reach = max_match
    else:
        reach = min(w.max + max(w.ahead, 1), max_match)
    return Matcher(regex.compile(pattern, regex.VERSION0 | regex.WORD), label, reach, w.behind)


@dataclass(frozen=True, slots=True)
class Rule:
    """A compiled guardrail: its matchers (one per entity or pattern) and what to do on a match."""

    name: str
    kind: str                         # pii | pattern
    action: str                       # mask | block | flag
    matchers: tuple[Matcher, ...]
    restore: bool = False             # mask only: placeholders the model echoes are put back

    @property
    def hold(self) -> int:
        """The most trailing characters the stream filter holds back for this rule."""
        return max(m.hold for m in self.matchers)
