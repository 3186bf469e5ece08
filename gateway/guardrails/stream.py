"""Output rules on an answer as it streams, and on a whole answer.

`OutputFilter` is fed the answer's text deltas in order. Each `feed` returns the text that is safe
to send now: everything up to the earliest position where some rule's match is not decided yet
(see `matching`). Text that cannot begin a match is released in the call that brought it; a tail
that could is held until the next characters decide it, never longer than the rule's bound
(`Rule.hold`). `end()` releases the rest.

Over the text released, `mask` matches become placeholders and placeholders the model echoes
become their originals again (`restore`). A `block` match stops the answer: `feed` returns the text
before it, `blocked` names the rule, and nothing of the match, nor anything after it, is released.

A whole answer (`filter_answer`) goes through the same engine in one step, so a JSON answer and the
same answer streamed in any chunks come out the same.

How matches combine: every matcher finds its own matches left to right (as `finditer` would). The
earliest `block` match ends the answer; a masked or restored match that runs into it is cut off with
it. Masked and restored matches do not overlap: the leftmost wins, then the longest, then the first
rule (and in a `pii` rule the more specific entity). `flag` rules read the same text but never hold
anything back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .matching import Matcher, Rule
from .placeholders import Masker, Restorer


# More than any detector's lookbehind or a word boundary reads; cheap, it is only kept, not scanned.
_MIN_CONTEXT = 16


@dataclass(frozen=True, slots=True)
class Fired:
    rule: str
    action: str      # mask | block | flag
    count: int       # how many matches (a block counts its one)


@dataclass(frozen=True, slots=True)
class Filtered:
    text: str                 # the answer to send: masked and restored, cut before a block
    blocked: str | None       # the rule that blocked it
    fired: list[Fired]


@dataclass(frozen=True, slots=True)
class _Entry:
    matcher: Matcher
    rule: Rule | None         # None: the restorer's placeholders
    action: str               # mask | block | flag | restore


class OutputFilter:
    def __init__(self, rules: Sequence[Rule], masker: Masker | None = None, restorer: Restorer | None = None):
        self.masker = masker if masker is not None else Masker()
        self._restorer = restorer
        entries = [_Entry(restorer.matcher, None, "restore")] if restorer else []
        entries += [_Entry(m, rule, rule.action) for rule in rules for m in rule.matchers]
        self._edits = [e for e in entries if e.action != "flag"]
        self._flags = [e for e in entries if e.action == "flag"]
        self._scans = [e.matcher.scan for e in self._edits]
        # Characters kept before the unreleased text, for lookbehinds and word boundaries (and so that
        # `^` never takes the start of what is kept for the start of the answer).
        self._context = max([_MIN_CONTEXT] + [e.matcher.behind for e in entries])
        self._text = ""           # raw text from absolute offset `_base` on
        self._base = 0
        self._done = 0            # raw text before this absolute offset is released
        self._resume = [0] * len(self._edits)   # a matcher's next match starts at or after this
        self._flag_at = [0] * len(self._flags)
        self._fired: dict[str, list] = {}
        self.blocked: str | None = None

    @property
    def fired(self) -> list[Fired]:
        return [Fired(rule, action, count) for rule, (action, count) in self._fired.items()]

    @property
    def hold(self) -> int:
        """The most characters this filter ever holds back (`flag` rules hold none)."""
        return max([e.matcher.hold for e in self._edits], default=0)

    @property
    def held(self) -> int:
        """How many characters of the answer are held back now."""
        return 0 if self.blocked else self._base + len(self._text) - self._done

    def feed(self, text: str) -> str:
        """The next delta of the answer's text; returns what can be sent now."""
        if self.blocked is not None or not text:
            return ""
        self._text += text
        return self._advance(final=False)

    def end(self) -> str:
        """The answer is complete: the rest of what can be sent."""
        if self.blocked is not None:
            return ""
        return self._advance(final=True)

    def _advance(self, final: bool) -> str:
        text, base = self._text, self._base
        start = self._done - base
        limit = len(text)
        found: list[tuple[int, int, int]] = []
        resume = self._resume
        for i, scan in enumerate(self._scans):
            pos = resume[i] - base
            spans, undecided = scan(text, pos if pos > start else start, final)
            if undecided < limit:
                limit = undecided
            if spans:
                found.extend((s, e, i) for s, e in spans)
        if found:
            text_out, limit = self._resolve(text, start, limit, found)
        else:
            text_out = text[start:limit]
        if self.blocked is not None:
            self._scan_flags(text[:limit], True)
            self._text = ""
            return text_out
        self._scan_flags(text, final)
        self._done = base + limit
        keep = max(base, min([self._done] + self._flag_at) - self._context)
        if keep > base:
            self._text = text[keep - base:]
            self._base = keep
        return text_out

    def _resolve(self, text: str, start: int, limit: int, found: list[tuple[int, int, int]]) -> tuple[str, int]:
        """The released text and where it ends, from the decided matches (those before `limit`)."""
        edits = self._edits
        blocks = [(s, i) for s, e, i in found if s < limit and edits[i].action == "block"]
        block = min(blocks) if blocks else None
        if block is not None:
            limit = block[0]
        kept: list[tuple[int, int, int]] = []
        end = start
        candidates = [f for f in found if f[0] < limit and edits[f[2]].action != "block"]
        for s, e, i in sorted(candidates, key=lambda f: (f[0], -f[1], f[2])):
            if s >= end:
                kept.append((s, e, i))
                end = e
        if kept and kept[-1][1] > limit:   # runs past what is decided (or into the block): not yet
            limit = kept.pop()[0]
        base = self._base
        for s, e, i in found:
            if s < limit and base + e > self._resume[i]:
                self._resume[i] = base + e
        out: list[str] = []
        pos = start
        for s, e, i in kept:
            out.append(text[pos:s])
            out.append(self._replace(text[s:e], edits[i]))
            pos = e
        out.append(text[pos:limit])
        if block is not None:
            rule = edits[block[1]].rule
            assert rule is not None
            self.blocked = rule.name
            self._fire(rule.name, "block")
        return "".join(out), limit

    def _replace(self, value: str, entry: _Entry) -> str:
        if entry.rule is None:
            assert self._restorer is not None
            return self._restorer.originals[value]
        self._fire(entry.rule.name, "mask")
        m = entry.matcher
        return self.masker.mask(m.label, value, m.normalize(value), entry.rule.restore)

    def _scan_flags(self, text: str, final: bool) -> None:
        base = self._base
        for j, entry in enumerate(self._flags):
            spans, undecided = entry.matcher.scan(text, max(0, self._flag_at[j] - base), final)
            for _ in spans:
                assert entry.rule is not None
                self._fire(entry.rule.name, "flag")
            self._flag_at[j] = base + undecided

    def _fire(self, rule: str, action: str) -> None:
        fired = self._fired.get(rule)
        if fired is None:
            self._fired[rule] = [action, 1]
        else:
            fired[1] += 1


def filter_answer(rules: Sequence[Rule], text: str, masker: Masker | None = None,
                  restorer: Restorer | None = None) -> Filtered:
    """A whole answer (or any whole text): masked and restored, or cut before the first block."""
    f = OutputFilter(rules, masker, restorer)
    f._text = text
    released = f._advance(final=True)
    return Filtered(released, f.blocked, f.fired)


def merge_fired(a: list[Fired], b: list[Fired]) -> list[Fired]:
    """Two tallies as one, in the order rules first fired."""
    if not a:
        return b
    if not b:
        return a
    counts = {f.rule: f for f in a}
    for f in b:
        seen = counts.get(f.rule)
        counts[f.rule] = f if seen is None else Fired(f.rule, seen.action, seen.count + f.count)
    return list(counts.values())
