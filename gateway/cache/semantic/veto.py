"""The rule veto: cheap checks that two similar-looking questions may still need different answers.

Embeddings score "cancel my order before it ships" and "... after it ships" as near-identical, so a
candidate found by cosine similarity is served only when none of these rules fires:

- numbers differ ("limit for 4 people" / "for 12 people", "E1042" / "E1043", "twice" / "three times");
- negation differs (one question is negated, the other is not);
- a quoted string or code identifier on one side does not appear in the other;
- a name (a capitalised word that does not start a sentence: "Summit" / "Everest espresso
  machine") on one side is not mentioned on the other;
- a minimal pair: the questions share their frame and differ in one to three content words
  ("daily" / "monthly withdrawal limit", "after it ships" / "before it ships"), or hold the same
  content words in another order ("from PayPal to my bank" / "from my bank to PayPal").

Real paraphrases rarely look like minimal pairs: people reword the whole question. The price is a
lower recall on paraphrases that swap one word for a synonym ("change" / "update my email"); the
calibration in scripts/calibrate_semantic.py measures both sides. Chinese text is compared character
by character (no word segmenter is needed for these rules), with limits scaled to its two-character
words.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass

# ---- tokens --------------------------------------------------------------------------------

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN = re.compile(rf"[{_CJK}]|[a-z0-9]+(?:'[a-z]+)?")
_IS_CJK = re.compile(rf"[{_CJK}]")

# Function words and the generic verbs of asking: they carry no answer-changing content.
_STOP_EN = frozenset("""
a an the i me my mine myself we us our you your yours he she it its they them their this that these
those there here what which who whom whose how why when where is are was were be been being am do
does did doing done have has had having can could would should will shall may might must of for
with at by about as and or but if so then than too very just also please any some all each every
into onto to from via per than vs versus again further once s t d ll m re ve y want wanted
like need needed get got getting go going way ways possible able tell know let make sure still
yet already anything something else much many more most really pls thanks hi hello hey
""".split())
# Negation markers; "n't" is matched on the raw token.
_NEG_EN = frozenset("not no never cannot cant without none nobody nothing neither nor dont doesnt didnt "
                    "isnt arent wasnt werent wont wouldnt shouldnt couldnt hasnt havent hadnt".split())
_STOP_ZH = frozenset("的了吗呢吧啊呀么嘛我你您他她它们请问怎样如何什哪里是在要想能可以会就还和与及或把被给让"
                     "这那个些下吧得地着过对为所从到成往向")
_NEG_ZH = re.compile(r"[不没无未别非]")
# "是不是", "能不能", "有没有": an A-not-A question is a plain question, not a negation.
_A_NOT_A = re.compile(rf"([{_CJK}])[不没]\1")

# ---- numbers -------------------------------------------------------------------------------

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
# "one" and a bare "一" are mostly articles ("one banana" = "a banana"), so they are not numbers;
# digits and ordinals always are.
_NUMBER_WORDS = {
    "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30,
    "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90,
    "hundred": 100, "thousand": 1000, "million": 1_000_000, "billion": 1_000_000_000,
    "first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7,
    "eighth": 8, "ninth": 9, "tenth": 10, "twice": 2, "thrice": 3, "double": 2, "triple": 3,
    "half": 0.5, "dozen": 12, "zero": 0,
}
_ROMAN = re.compile(r"\b(II|III|IV|VI|VII|VIII|IX|XI|XII)\b")  # "World War II"; a lone "I" is a pronoun
_ROMAN_VALUES = {"II": 2, "III": 3, "IV": 4, "VI": 6, "VII": 7, "VIII": 8, "IX": 9, "XI": 11, "XII": 12}
_ZH_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7,
              "八": 8, "九": 9}
_ZH_UNITS = {"十": 10, "百": 100, "千": 1000, "万": 10_000, "亿": 100_000_000}
_ZH_NUMBER = re.compile(r"第?[零〇一二两三四五六七八九十百千万亿]+")
# Words that only look like numbers: "一起" (together), "一下" (a bit), "万一" (in case), ...
_ZH_NOT_NUMBER = ("一起", "一下", "一般", "一直", "一样", "一定", "一点", "一些", "一旦", "统一", "唯一",
                  "万一", "一切", "一致", "一段", "不一", "一次性", "千万", "百分")


def _zh_value(text: str) -> float | None:
    ordinal = text.startswith("第")
    text = text.lstrip("第")
    if text == "一" and not ordinal:
        return None
    total, section, digit = 0, 0, 0
    for ch in text:
        if ch in _ZH_DIGITS:
            digit = _ZH_DIGITS[ch]
        else:
            unit = _ZH_UNITS[ch]
            if unit >= 10_000:
                total = (total + section + digit) * unit
                section = 0
            else:
                section += (digit or 1) * unit
            digit = 0
    return float(total + section + digit)


def numbers(text: str) -> Counter[float]:
    """The numbers a question mentions, as values: "two", "2" and "两" are the same number."""
    found: Counter[float] = Counter()
    for m in _NUMBER.finditer(text):
        raw = m.group().replace(",", "")
        try:
            found[float(raw)] += 1
        except ValueError:
            found[float(raw.replace(".", ""))] += 1
    for m in _ROMAN.finditer(text):
        found[float(_ROMAN_VALUES[m.group()])] += 1
    lowered = text.lower()
    for word in re.findall(r"[a-z]+", lowered):
        if word in _NUMBER_WORDS:
            found[float(_NUMBER_WORDS[word])] += 1
    masked = text
    for phrase in _ZH_NOT_NUMBER:
        masked = masked.replace(phrase, " ")
    for m in _ZH_NUMBER.finditer(masked):
        value = _zh_value(m.group())
        if value is not None:
            found[value] += 1
    return found


# ---- quoted strings and code identifiers ---------------------------------------------------

_QUOTED = re.compile(r"\"([^\"]{1,200})\"|`([^`]{1,200})`|“([^”]{1,200})”|「([^」]{1,200})」|"
                     r"《([^》]{1,200})》|(?<![a-zA-Z])'([^']{2,200})'(?![a-zA-Z])")
# snake_case, camelCase, dotted.names, call(), --flags, /paths, and codes like E1042 or HTTP_404.
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9]*_[A-Za-z0-9_]*|[a-z]+[A-Z][A-Za-z0-9]*|"
                    r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+|\w+\(\)|(?<![\w-])--?[a-z][\w-]+|(?:/[\w.-]+){2,}|"
                    r"\b[A-Z]+\d+[A-Z0-9]*\b")


def literals(text: str) -> set[str]:
    """Quoted strings and code identifiers: spans that must appear verbatim in a matching question."""
    found = {next(g for g in m.groups() if g is not None).strip().lower() for m in _QUOTED.finditer(text)}
    found |= {m.group().lower() for m in _IDENT.finditer(text)}
    return {f for f in found if f}


# ---- names ---------------------------------------------------------------------------------

_CAPITALIZED = re.compile(r"(?<![\w'-])[A-Z][A-Za-z0-9'-]*")
_SENTENCE_START = re.compile(r"(?:^|[.!?:;\n]\s*|[\"'(]\s*)$")


def names(text: str) -> frozenset[str]:
    """Capitalised words that do not start a sentence: product, place and brand names ("Summit
    espresso machine" / "Everest espresso machine"). Empty for Title Case Text, where every word is
    capitalised and capitals say nothing."""
    found = []
    for m in _CAPITALIZED.finditer(text):
        word = m.group()
        if word == "I" or word in _ROMAN_VALUES or word.lower() in _NUMBER_WORDS:
            continue  # numbers are compared by the numbers rule
        if not _SENTENCE_START.search(text[: m.start()]):
            found.append(word.lower())
    if len(found) * 2 > max(1, len(text.split())):
        return frozenset()
    return frozenset(found)


def _name_missing(a: Question, b: Question) -> str | None:
    """A name on one side that the other side does not mention at all (in any case)."""
    a_tokens, b_tokens = set(_TOKEN.findall(a.text)), set(_TOKEN.findall(b.text))
    for name in a.names:
        if name not in b_tokens and name not in b.text:
            return name
    for name in b.names:
        if name not in a_tokens and name not in a.text:
            return name
    return None


# ---- normalised questions ------------------------------------------------------------------


@dataclass(frozen=True)
class Question:
    text: str                     # NFKC, lower-cased, single-spaced
    words: tuple[str, ...]        # every token (Chinese: characters), stemmed; numbers as "#"
    content: tuple[bool, ...]     # which of `words` are content words
    negated: bool
    numbers: Counter[float]
    literals: frozenset[str]
    names: frozenset[str]         # capitalised names, lower-cased
    cjk: bool                     # mostly Chinese

    @property
    def content_words(self) -> tuple[str, ...]:
        return tuple(w for w, c in zip(self.words, self.content) if c)


def _stem(word: str) -> str:
    # Just enough to match "refunds"/"refund" and "shipped"/"shipping"/"ships"; no dictionary.
    for suffix, keep in (("ies", "y"), ("ing", ""), ("ed", ""), ("es", ""), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith("ss"):
            word = word[: len(word) - len(suffix)] + keep
            if keep == "" and len(word) >= 4 and word[-1] == word[-2] and word[-1] not in "aeiouls":
                word = word[:-1]  # shipp -> ship
            break
    return word


def parse(raw: str) -> Question:
    nfkc = unicodedata.normalize("NFKC", raw)
    text = " ".join(nfkc.lower().split())
    tokens = _TOKEN.findall(text)
    cjk_count = sum(1 for t in tokens if _IS_CJK.match(t))
    negated = any(t in _NEG_EN or t.endswith("n't") for t in tokens) or bool(_NEG_ZH.search(_A_NOT_A.sub(r"\1", text)))

    words: list[str] = []
    content: list[bool] = []
    for token in tokens:
        is_cjk = bool(_IS_CJK.match(token))
        if token.isdigit() or token in _NUMBER_WORDS or token.upper() in _ROMAN_VALUES \
                or token in _ZH_DIGITS or token in _ZH_UNITS:
            words.append("#")  # numbers are compared on their own; here they are only frame
            content.append(False)
            continue
        is_stop = (is_cjk and (token in _STOP_ZH or token in "不没无未别非")) or \
                  (not is_cjk and (token in _STOP_EN or token in _NEG_EN or token.endswith("n't")))
        words.append(token if is_cjk else _stem(token.replace("'", "")))
        content.append(not is_stop)
    return Question(text, tuple(words), tuple(content), bool(negated), numbers(nfkc),
                    frozenset(literals(nfkc)), names(nfkc), cjk_count * 2 > len(tokens))


# ---- the rules -----------------------------------------------------------------------------

MAX_CHANGED_WORDS = 3


def _literal_missing(a: Question, b: Question) -> str | None:
    for lit in a.literals:
        if lit not in b.text:
            return lit
    for lit in b.literals:
        if lit not in a.text:
            return lit
    return None


# A frame is shared when at least this share of the longer question's tokens match in order.
FRAME_SHARE = 0.5


def minimal_pair(a: Question, b: Question) -> str | None:
    """Why the two share a frame but not their content, or None.

    The frame is measured on every token, function words included ("I forgot my ___, how can I
    ___ it?"), the change on content words only. Words added on one side count as a change too:
    "my password" / "my payment password" are different questions.
    """
    ca, cb = a.content_words, b.content_words
    if not ca or not cb:
        return None
    if Counter(ca) == Counter(cb):
        if ca != cb:
            return "same words in another order"
        return None
    matcher = difflib.SequenceMatcher(None, a.words, b.words, autojunk=False)
    shared = 0
    kept_a: set[int] = set()
    kept_b: set[int] = set()
    for i, j, size in matcher.get_matching_blocks():
        shared += size
        kept_a.update(range(i, i + size))
        kept_b.update(range(j, j + size))
    changed_a = sum(1 for k, c in enumerate(a.content) if c and k not in kept_a)
    changed_b = sum(1 for k, c in enumerate(b.content) if c and k not in kept_b)
    changed = max(changed_a, changed_b)
    # Chinese words are mostly two characters: allow twice as many changed characters.
    limit = MAX_CHANGED_WORDS * (2 if a.cjk or b.cjk else 1)
    if changed == 0 or changed > limit or shared < FRAME_SHARE * max(len(a.words), len(b.words)):
        return None
    return f"differs only in {changed} content word{'s' if changed > 1 else ''}"


def veto(stored: str, incoming: str) -> str | None:
    """The reason `incoming` may need a different answer than `stored`, or None if no rule fires."""
    a, b = parse(stored), parse(incoming)
    if a.numbers != b.numbers:
        return "numbers differ"
    if a.negated != b.negated:
        return "negation differs"
    lit = _literal_missing(a, b)
    if lit is not None:
        return f"quoted string or identifier differs: {lit!r}"
    name = _name_missing(a, b)
    if name is not None:
        return f"names differ: {name!r}"
    return minimal_pair(a, b)
