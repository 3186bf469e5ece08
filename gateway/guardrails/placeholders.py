"""Typed placeholders for masked values (`<EMAIL_1>`), and putting the originals back.

One `Masker` per request: numbers count per type within the request, and the same value (written
the same way or not: "4111 1111 1111 1111" and "4111111111111111" are one card) gets the same
placeholder, in the prompt and in the answer. Values masked by a rule with `restore: true` can be
put back: `Masker.restorer()` is the map the output filter uses to turn the placeholders the model
echoes into the originals the client sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import regex

from .matching import Matcher

# A placeholder's type is a detector's label or a pattern rule's (upper case, at most 32 characters),
# its number at most six digits.
PLACEHOLDER = regex.compile(r"<[A-Z][A-Z0-9_]{0,31}_[1-9][0-9]{0,5}>", regex.VERSION0)
_PLACEHOLDER_WIDTH = 1 + 32 + 1 + 6 + 1
_OPEN = regex.compile("<")


class Masker:
    def __init__(self) -> None:
        self._placeholders: dict[tuple[str, str], str] = {}   # (type, normalized value) -> placeholder
        self._counts: dict[str, int] = {}
        self._originals: dict[str, str] = {}                  # restorable placeholder -> original

    def mask(self, label: str, value: str, normalized: str, restore: bool = False) -> str:
        key = (label, normalized)
        placeholder = self._placeholders.get(key)
        if placeholder is None:
            count = self._counts[label] = self._counts.get(label, 0) + 1
            placeholder = self._placeholders[key] = f"<{label}_{count}>"
        if restore:
            self._originals.setdefault(placeholder, value)
        return placeholder

    def restorer(self) -> Restorer | None:
        """The restorable placeholders so far, or None when there are none."""
        return Restorer(dict(self._originals)) if self._originals else None


@dataclass(frozen=True, slots=True)
class Restorer:
    originals: Mapping[str, str]           # placeholder -> the original value
    matcher: Matcher = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        originals = self.originals

        def known(text: str, s: int, e: int) -> tuple[int, int] | None:
            return (s, e) if text[s:e] in originals else None

        # A placeholder ends with ">", so a complete one cannot grow: decided at once (tail 0).
        object.__setattr__(self, "matcher", Matcher(PLACEHOLDER, "", _PLACEHOLDER_WIDTH, 0, 0, known,
                                                        first=_OPEN))

    def restore(self, text: str) -> str:
        """A whole text with its known placeholders put back."""
        originals = self.originals
        return PLACEHOLDER.sub(lambda m: originals.get(m.group(), m.group()), text)
