"""What personal data looks like: one detector per entity of a `kind: pii` rule.

A detector is a regular expression that finds candidates and, where the entity has one, a check
that a candidate must pass (Luhn for cards, the MOD 11-2 check digit and a real birth date for a
Chinese resident ID, mod 97 for an IBAN). The expressions stand alone in Chinese as in English text:
their edges are lookarounds on ASCII letters and digits, never `\\b`, which counts a CJK character
as a word character and so finds no boundary in "卡号4111111111111111". A number inside a longer run
of letters or digits is not a match.

Each detector also says how far past the end of a match the engine may have read (`tail`): a match
that ends at least that many characters before the end of the text cannot change whatever text
comes after. The expressions are written so that this holds (bounded runs, edges that look at most
two characters ahead), which is what lets the stream filter release a match as soon as it is
decided instead of holding the text for the expression's full width.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import regex

# A candidate the check refines or refuses: the span of the real match inside it, or None.
Check = Callable[[str, int, int], Optional[tuple[int, int]]]


@dataclass(frozen=True, slots=True)
class Detector:
    entity: str              # the name a rule lists: email, phone, ...
    label: str               # the placeholder's type: <EMAIL_1>
    pattern: regex.Pattern[str]
    tail: int                # how many characters past a match the expression may read
    first: str               # a character class: every match begins with one of these
    check: Check | None = None
    normalize: Callable[[str], str] = str   # the same value written two ways is one value
    # The fewest digits a match has: a whole text with fewer is not searched (set where the search
    # costs more than the count: the phone expression's alternatives try at every digit).
    digits: int = 0

    def finditer(self, text: str) -> Iterator[tuple[int, int]]:
        """The matches in a whole text, left to right, as spans."""
        pos = 0
        while (m := self.pattern.search(text, pos)) is not None:
            s, e = m.span()
            span = self.check(text, s, e) if self.check else (s, e)
            if span is None:
                pos = s + 1   # a later start inside the candidate may still be one
            else:
                yield span
                pos = span[1]


# Edges: not next to an ASCII letter, digit or underscore. CJK characters, punctuation (full width
# or not) and spaces are edges.
_BEFORE = r"(?<![0-9A-Za-z_])"
_AFTER = r"(?![0-9A-Za-z_])"


def _digits(text: str) -> str:
    return "".join(c for c in text if c.isascii() and c.isdigit())


def _compact(text: str) -> str:
    return "".join(text.split()).replace("-", "").upper()


# --- email ------------------------------------------------------------------------------------------

# The local part (at most 64 characters) in the characters people use (RFC 5322's full set allows
# more), then one to eight labels and a letters-only top-level domain. After it: no more domain
# characters, and no "." that continues the domain (a sentence's full stop may follow).
_EMAIL = (
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,8}[A-Za-z]{2,63}"
    r"(?![A-Za-z0-9-]|\.[A-Za-z0-9])"
)

# --- phones -----------------------------------------------------------------------------------------

# Chinese mobile numbers: 1[3-9]x xxxx xxxx, spaces or dashes between the groups, +86 or 0086 before.
_CN_MOBILE = r"(?:(?:\+|00)86[ -]?)?1[3-9][0-9](?:[ -]?[0-9]{4}){2}"
# International: + and a country code, then up to six groups (a group in brackets allowed).
_INTL = r"\+[1-9][0-9]{0,2}(?:[ .-]?(?:\([0-9]{1,4}\)|[0-9]{1,5})){1,6}"
# National with an area code: (415) 555-2671, 415-555-2671, 020 7946 0958, 010-12345678.
_NATIONAL = r"(?:\([0-9]{2,4}\)[ .-]?|[0-9]{2,4}[ .-])[0-9]{3,4}[ .-]?[0-9]{4}"
# A phone number is not a piece of a longer run of digit groups (a card number, an account number):
# no digit group joined to it by a single separator on either side.
_PHONE_BEFORE = r"(?<![0-9A-Za-z_+])(?<![0-9][ .-])"
_PHONE_AFTER = r"(?![0-9A-Za-z_])(?![ .-][0-9])"


def _phone_digits(text: str, s: int, e: int) -> tuple[int, int] | None:
    return (s, e) if 7 <= len(_digits(text[s:e])) <= 15 else None   # E.164: at most 15 digits


# --- credit cards -----------------------------------------------------------------------------------

# 13 to 19 digits, a single space or dash allowed between any two, at the start of a run of digit
# groups (not after "1234 "). The expression takes the longest such run; the check then takes the
# longest prefix of it, ending at a group's end, that passes Luhn (so "4111 1111 1111 1111 123", a
# card and its CVV, is still the card). One candidate per run: a long run of short groups
# ("1 2 3 4 ...") costs one check, not one per group.
_CARD = _BEFORE + r"(?<![0-9][ -])[0-9](?:[ -]?[0-9]){12,18}" + _AFTER
_DOUBLED = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)


def luhn_valid(digits: str) -> bool:
    values = [ord(c) - 48 for c in digits]
    return (sum(values[-1::-2]) + sum(_DOUBLED[d] for d in values[-2::-2])) % 10 == 0


def _card(text: str, s: int, e: int) -> tuple[int, int] | None:
    end = e
    while end > s:
        digits = _digits(text[s:end])
        if len(digits) < 13:
            return None
        if luhn_valid(digits):
            return s, end
        # the previous group's end: back over this group and its separator
        end -= 1
        while end > s and text[end - 1].isdigit():
            end -= 1
        while end > s and text[end - 1] in " -":
            end -= 1
    return None


# --- Chinese resident ID ----------------------------------------------------------------------------

# GB 11643-1999: six digits of region (the province is 11-82), the birth date YYYYMMDD, a three-digit
# sequence number and the ISO 7064 MOD 11-2 check digit (0-9 or X).
_CN_ID = (
    _BEFORE + r"[1-8][0-9]{5}(?:19|20)[0-9]{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])[0-9]{3}[0-9Xx]"
    + _AFTER
)
_ID_WEIGHTS = tuple(pow(2, 17 - i, 11) for i in range(17))


def cn_id_check_digit(first17: str) -> str:
    """ISO 7064 MOD 11-2 over the first 17 digits: the character that makes the sum 1 mod 11."""
    total = sum(int(c) * w for c, w in zip(first17, _ID_WEIGHTS))
    return "10X98765432"[total % 11]


def _cn_id(text: str, s: int, e: int) -> tuple[int, int] | None:
    number = text[s:e].upper()
    if cn_id_check_digit(number[:17]) != number[17]:
        return None
    try:
        born = datetime.date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:   # 30 February
        return None
    return (s, e) if born <= datetime.date.today() else None


# --- IBAN -------------------------------------------------------------------------------------------

# Length of the IBAN per country, from SWIFT's IBAN registry (release 101). A candidate is exactly as
# long as its country's IBANs, so the expression never takes in a word that follows it.
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HN": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21,
    "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28,
    "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22,
    "RU": 33, "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25,
    "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}


def _iban_pattern() -> str:
    by_length: dict[int, list[str]] = {}
    for country, length in IBAN_LENGTHS.items():
        by_length.setdefault(length, []).append(country)
    # The country code, the two check digits, then the rest with a space allowed before each character
    # (IBANs are printed in groups of four).
    options = [f"(?:{'|'.join(sorted(cs))})[0-9]{{2}}(?: ?[0-9A-Z]){{{n - 4}}}" for n, cs in sorted(by_length.items())]
    return _BEFORE + "(?:" + "|".join(options) + ")" + _AFTER


def iban_valid(iban: str) -> bool:
    """ISO 13616: the country code and check digits moved to the end, letters as 10-35, mod 97 is 1."""
    iban = _compact(iban)
    moved = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _iban(text: str, s: int, e: int) -> tuple[int, int] | None:
    return (s, e) if iban_valid(text[s:e]) else None


# --- provider API keys ------------------------------------------------------------------------------

# The shapes providers publish: OpenAI (sk-, sk-proj-...) and Anthropic (sk-ant-...), Stripe secret
# and restricted keys, Google API keys, AWS access key ids, GitHub tokens, Slack tokens. A key is a
# whole token: not preceded or followed by another key character.
_API_KEY = (
    r"(?<![A-Za-z0-9_-])(?:"
    r"sk-[A-Za-z0-9_-]{20,250}"
    r"|(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,250}"
    r"|AIza[0-9A-Za-z_-]{35}"
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}"
    r"|gh[pousr]_[A-Za-z0-9]{36,251}"
    r"|github_pat_[A-Za-z0-9_]{22,251}"
    r"|xox[abposr]-[A-Za-z0-9-]{10,250}"
    r")(?![A-Za-z0-9_-])"
)


def _compile(pattern: str) -> regex.Pattern[str]:
    return regex.compile(pattern, regex.VERSION0)


def _lower(text: str) -> str:
    return text.lower()


# In order of specificity: when two entities of one rule match the same text, the first one names it
# (a Chinese mobile number is a `cn_mobile` before it is a `phone`).
DETECTORS: dict[str, Detector] = {d.entity: d for d in (
    Detector("cn_id", "CN_ID", _compile(_CN_ID), 1, "[1-8]", _cn_id, _compact),
    Detector("credit_card", "CREDIT_CARD", _compile(_CARD), 2, "[0-9]", _card, _digits),
    Detector("iban", "IBAN", _compile(_iban_pattern()), 1, "[A-Z]", _iban, _compact),
    Detector("api_key", "API_KEY", _compile(_API_KEY), 1, "[srAgx]"),
    Detector("email", "EMAIL", _compile(_EMAIL), 2, "[A-Za-z0-9._%+-]", None, _lower),
    Detector("cn_mobile", "CN_MOBILE", _compile(_PHONE_BEFORE + _CN_MOBILE + _PHONE_AFTER), 2, "[0-9+]", None,
             _digits),
    Detector("phone", "PHONE", _compile(_PHONE_BEFORE + f"(?:{_CN_MOBILE}|{_INTL}|{_NATIONAL})" + _PHONE_AFTER), 2,
             "[0-9+(]", _phone_digits, _digits, 7),
)}
ENTITIES = tuple(DETECTORS)


def find(entity: str, text: str) -> list[tuple[int, int]]:
    """The spans of `entity` in a whole text (a convenience: the rules run detectors through the
    stream engine, which finds the same matches)."""
    return list(DETECTORS[entity].finditer(text))
