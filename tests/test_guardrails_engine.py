"""The guardrails engine on its own: detectors, rule compilation, input masking, the stream filter.

The stream filter is fed each case split at every offset (and one character at a time): nothing of
a blocked match is released, masked text is exact, and what comes out equals what the same filter
makes of the whole answer.
"""

from __future__ import annotations

import copy
import datetime
import random

import pytest

from gateway.guardrails import (
    OutputFilter, RuleError, apply_input, check_pattern, compile_rule, compile_rules, filter_answer,
)
from gateway.guardrails.detectors import DETECTORS, cn_id_check_digit, find, iban_valid, luhn_valid
from gateway.guardrails.matching import detector_matcher

ALL_ENTITIES = ["email", "phone", "credit_card", "cn_id", "cn_mobile", "iban", "api_key"]


def cn_id(first17: str) -> str:
    return first17 + cn_id_check_digit(first17)


def wrong_check(number: str) -> str:
    right = number[-1]
    return number[:-1] + ("0" if right != "0" else "1")


ID = cn_id("11010519491231002")          # -> ...002X
ID_DIGIT = cn_id("44030419900101123")     # a check digit that is a digit


def texts(entity: str, text: str) -> list[str]:
    return [text[s:e] for s, e in find(entity, text)]


# --- detectors ----------------------------------------------------------------------------------------


def test_luhn():
    assert ID.endswith("X") and ID_DIGIT[-1].isdigit()
    for good in ("4111111111111111", "5555555555554444", "378282246310005", "6011111111111117", "4222222222222"):
        assert luhn_valid(good), good
        assert not luhn_valid(good[:-1] + str((int(good[-1]) + 1) % 10)), good


@pytest.mark.parametrize("text, card", [
    ("card 4111 1111 1111 1111 thanks", "4111 1111 1111 1111"),
    ("Visa: 4111-1111-1111-1111.", "4111-1111-1111-1111"),
    ("amex 378282246310005 ok", "378282246310005"),
    ("mastercard 5555555555554444", "5555555555554444"),
    ("卡号4111111111111111，请查收", "4111111111111111"),
    ("我的卡是 5555 5555 5555 4444 。", "5555 5555 5555 4444"),
    ("4111 1111 1111 1111 123 (the cvv)", "4111 1111 1111 1111"),
    ("4111111111111111 12/27", "4111111111111111"),
])
def test_valid_cards_are_found(text, card):
    assert texts("credit_card", text) == [card]


@pytest.mark.parametrize("text", [
    "card 4111 1111 1111 1112 thanks",        # Luhn fails
    "4111111111111112",
    "卡号5555555555554445",
    "order 123456789012",                     # 12 digits: too short
    "x4111111111111111", "4111111111111111x", "ab_4111111111111111",   # part of a longer token
])
def test_invalid_cards_are_not(text):
    assert texts("credit_card", text) == []


def test_no_card_inside_a_longer_run_of_digits():
    for run in ("9" + "4111111111111111", "4111111111111111" + "0", "12" + "4111111111111111" + "34"):
        assert not luhn_valid(run)   # the run itself is no card
        assert texts("credit_card", f"id {run} end") == []
        assert texts("credit_card", f"编号{run}号") == []
    # nor does one start inside a run of digit groups
    assert texts("credit_card", "ref 1234 4111111111111111") == []
    assert texts("credit_card", "1 " * 5000) == [] and texts("credit_card", "12-" * 3000) == []


def test_chinese_resident_ids():
    assert texts("cn_id", f"身份证号{ID}，出生于1949年") == [ID]
    assert texts("cn_id", f"ID: {ID_DIGIT}.") == [ID_DIGIT]
    assert texts("cn_id", f"id {ID.lower()} ok") == [ID.lower()]           # a lower-case x
    assert texts("cn_id", f"身份证号{wrong_check(ID)}，") == []
    assert texts("cn_id", f"ID {wrong_check(ID_DIGIT)}") == []
    assert texts("cn_id", cn_id("11010519490231002")) == []                # 31 February... 02/31
    future = (datetime.date.today() + datetime.timedelta(days=400)).strftime("%Y%m%d")
    assert texts("cn_id", cn_id("110105" + future + "002")) == []          # not born yet
    assert texts("cn_id", "1" + ID_DIGIT) == [] and texts("cn_id", ID_DIGIT + "5") == []
    assert texts("cn_id", f"x{ID_DIGIT}") == []


def test_emails_in_english_and_chinese():
    assert texts("email", "Mail bob.smith+news@example.co.uk.") == ["bob.smith+news@example.co.uk"]
    assert texts("email", "请发邮件到zhang.san@example.com，谢谢") == ["zhang.san@example.com"]
    assert texts("email", "邮箱：li_si@mail.example.cn。") == ["li_si@mail.example.cn"]
    assert texts("email", "a@b.io and c@d.io") == ["a@b.io", "c@d.io"]
    assert texts("email", "user@localhost, a@b, @example.com, name@.com") == []


@pytest.mark.parametrize("text, phone", [
    ("call +1 (415) 555-2671 now", "+1 (415) 555-2671"),
    ("London +44 20 7946 0958.", "+44 20 7946 0958"),
    ("office 415-555-2671", "415-555-2671"),
    ("电话010-12345678转1", "010-12345678"),
    ("手机号是13812345678。", "13812345678"),
    ("手机：+86 138 1234 5678", "+86 138 1234 5678"),
    ("Call me at 139-1234-5678 tomorrow", "139-1234-5678"),
])
def test_phones_in_english_and_chinese(text, phone):
    assert texts("phone", text) == [phone]


@pytest.mark.parametrize("text", [
    "on 2024-01-15 at 10:30", "card 4111 1111 1111 1111", "total 1234567", "订单号2013812345678901",
    "call 1381234567890", "+1 2",
])
def test_no_phone_in_dates_cards_and_longer_runs(text):
    assert texts("phone", text) == []


def test_chinese_mobile_numbers():
    assert texts("cn_mobile", "我的手机13812345678") == ["13812345678"]
    assert texts("cn_mobile", "tel 138-1234-5678, +86 15912345678, 008618612345678") == [
        "138-1234-5678", "+86 15912345678", "008618612345678"]
    assert texts("cn_mobile", "12812345678 213812345678 138123456789 1381234567") == []


def test_ibans():
    assert iban_valid("GB82WEST12345698765432") and not iban_valid("GB82WEST12345698765433")
    assert texts("iban", "IBAN DE89 3704 0044 0532 0130 00 please") == ["DE89 3704 0044 0532 0130 00"]
    assert texts("iban", "账户GB82WEST12345698765432。") == ["GB82WEST12345698765432"]
    assert texts("iban", "DE89 3704 0044 0532 0130 01") == []             # mod 97 fails
    assert texts("iban", "XDE89370400440532013000") == []


def test_api_keys():
    keys = ["sk-" + "a1B2" * 12, "sk-ant-api03-" + "x" * 90, "sk-proj-" + "Ab_-" * 30, "AIza" + "S" * 35,
            "AKIAIOSFODNN7EXAMPLE", "ghp_" + "a" * 36, "xoxb-1234567890-abcdef",
            "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc"]
    for key in keys:
        assert texts("api_key", f"key: {key} ok") == [key], key
        assert texts("api_key", f"密钥{key}，") == [key], key
    assert texts("api_key", "task-force-planning-and-strategy ask-me-anything-about-it-now") == []
    assert texts("api_key", "sk-short AKIA1234") == []


# --- rules ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pattern, reason", [
    ("(unclosed", "not a valid regular expression"),
    ("a{2,1}", "not a valid regular expression"),
    ("(?<=a+)b", "not a valid regular expression"),
    ("a*", "can match the empty string"),
    ("(foo)?", "can match the empty string"),
    ("|foo", "can match the empty string"),
    (r"\b", "can match the empty string"),
    ("(?=secret)", "can match the empty string"),
    ("", "non-empty string"),
])
def test_patterns_that_cannot_compile_or_match_empty_are_refused(pattern, reason):
    with pytest.raises(ValueError, match=reason):
        check_pattern(pattern)
    with pytest.raises(RuleError, match=r"guardrail 'bad': patterns\[1\]: .*" + reason):
        compile_rule("bad", {"kind": "pattern", "patterns": ["fine", pattern], "action": "block"})


@pytest.mark.parametrize("spec, reason", [
    ({"kind": "pii", "entities": ["email", "passport"], "action": "mask"}, "unknown entity 'passport'"),
    ({"kind": "pii", "entities": [], "action": "mask"}, "'entities' must be a non-empty list"),
    ({"kind": "pii", "entities": ["email"], "action": "redact"}, "'action' must be one of"),
    ({"kind": "regex", "patterns": ["x"], "action": "flag"}, "'kind' must be one of"),
    ({"kind": "pii", "entities": ["email"], "action": "block", "restore": True}, "needs 'action: mask'"),
    ({"kind": "pattern", "patterns": "x", "action": "flag"}, "'patterns' must be a non-empty list"),
    ({"kind": "pattern", "patterns": ["x+"], "action": "mask", "max_match": 0}, "'max_match' must be"),
    ({"kind": "pattern", "patterns": ["x"], "action": "mask", "placeholder": "lower"}, "'placeholder' must be"),
    ({"kind": "pii", "entities": ["email"], "action": "mask", "patterns": ["x"]}, "unknown field"),
])
def test_bad_rules_are_refused(spec, reason):
    with pytest.raises(RuleError, match=reason):
        compile_rule("r", spec)


def test_hold_bounds():
    rules = compile_rules({
        "phrase": {"kind": "pattern", "patterns": ["(?i)internal use only"], "action": "block"},
        "key": {"kind": "pattern", "patterns": ["sk-[A-Za-z0-9]{20,}"], "action": "block"},
        "key64": {"kind": "pattern", "patterns": ["sk-[A-Za-z0-9]{20,}"], "action": "block", "max_match": 64},
        "card": {"kind": "pii", "entities": ["credit_card"], "action": "block"},
    })
    assert rules["phrase"].hold == 17      # 17 characters + 1 to see what follows, less the one that decides
    assert rules["key"].hold == 255 and rules["key64"].hold == 63
    assert rules["card"].hold == 38        # 19 digits and 18 separators, and 2 to see the run end


# --- input rules -------------------------------------------------------------------------------------------


def test_input_masking_numbers_placeholders_per_entity():
    rules = compile_rules({"pii": {"kind": "pii", "entities": ALL_ENTITIES, "action": "mask"}})
    messages = [
        {"role": "system", "content": "You help bob@example.com."},
        {"role": "user", "content": [
            {"type": "text", "text": "Card 4111 1111 1111 1111, mail bob@example.com or Bob@Example.com"},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
            {"type": "text", "text": f"身份证{ID}，手机13812345678，卡4111111111111111，邮箱amy@example.org"},
        ]},
    ]
    before = repr(messages)
    result = apply_input(list(rules.values()), messages)
    assert repr(messages) == before                     # the caller's messages are not changed
    assert result.blocked is None and result.restorer is None
    assert result.messages[0] == {"role": "system", "content": "You help <EMAIL_1>."}
    parts = result.messages[1]["content"]
    assert parts[0]["text"] == "Card <CREDIT_CARD_1>, mail <EMAIL_1> or <EMAIL_1>"
    assert parts[1] is messages[1]["content"][1]
    assert parts[2]["text"] == "身份证<CN_ID_1>，手机<CN_MOBILE_1>，卡<CREDIT_CARD_1>，邮箱<EMAIL_2>"
    assert [(f.rule, f.action, f.count) for f in result.fired] == [("pii", "mask", 8)]


def test_input_block_names_the_rule_and_flag_only_records():
    rules = compile_rules({
        "topics": {"kind": "pattern", "patterns": [r"(?i)\b(lawsuit|attorney)\b"], "action": "flag"},
        "cards": {"kind": "pii", "entities": ["credit_card"], "action": "block"},
    })
    messages = [{"role": "user", "content": "我的律师attorney says hi"}]
    result = apply_input(list(rules.values()), messages)
    assert result.messages is messages and result.blocked is None
    assert [(f.rule, f.action) for f in result.fired] == [("topics", "flag")]
    blocked = apply_input(list(rules.values()), [{"role": "user", "content": "pay with 4111111111111111"}])
    assert blocked.blocked == "cards"
    assert "4111" not in repr(blocked.fired)


def test_unchanged_messages_are_the_same_objects():
    rules = compile_rules({"pii": {"kind": "pii", "entities": ALL_ENTITIES, "action": "mask"}})
    messages = [{"role": "user", "content": "nothing personal here"},
                {"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    assert apply_input(list(rules.values()), messages).messages is messages


# --- the stream filter --------------------------------------------------------------------------------------

RULES = compile_rules({
    "pii": {"kind": "pii", "entities": ALL_ENTITIES, "action": "mask", "restore": True},
    "cards": {"kind": "pii", "entities": ["credit_card"], "action": "block"},
    "ids": {"kind": "pii", "entities": ["cn_id"], "action": "block"},
    "no-leaks": {"kind": "pattern", "patterns": ["(?i)internal use only", "sk-[A-Za-z0-9]{20,}"], "action": "block"},
    "mask-cards": {"kind": "pii", "entities": ["credit_card"], "action": "mask"},
    "mask-ids": {"kind": "pii", "entities": ["cn_id"], "action": "mask"},
    "mask-phrase": {"kind": "pattern", "patterns": ["(?i)internal use only"], "action": "mask",
                    "placeholder": "SECRET"},
    "topics": {"kind": "pattern", "patterns": [r"(?i)\b(lawsuit|attorney)\b"], "action": "flag"},
})


def rules(*names):
    return [RULES[n] for n in names]


def run(rule_list, chunks, masker=None, restorer=None):
    """Feed the chunks; the text released, the filter, and what each feed returned."""
    f = OutputFilter(rule_list, masker, restorer)
    bound = max([r.hold for r in rule_list if r.action != "flag"] + [restorer.matcher.hold if restorer else 0])
    assert f.hold == bound
    released = []
    for chunk in chunks:
        released.append(f.feed(chunk))
        assert f.held <= bound
    released.append(f.end())
    return "".join(released), f, released


def splits(text):
    """The text in two chunks at every offset, in three at every pair of offsets 7 apart, and one
    character at a time."""
    yield [text]
    for i in range(1, len(text)):
        yield [text[:i], text[i:]]
    for i in range(1, len(text) - 7):
        yield [text[:i], text[i:i + 7], text[i + 7:]]
    yield list(text)


BLOCK_CASES = [
    ("cards", "Your card is 4111 1111 1111 1111, expiring soon.", "Your card is "),
    ("cards", "卡号4111111111111111已冻结", "卡号"),
    ("ids", f"身份证号{ID}，请核对。", "身份证号"),
    ("ids", f"The ID {ID_DIGIT} is on file.", "The ID "),
    ("no-leaks", "Note: this is Internal Use Only, do not share.", "Note: this is "),
    ("no-leaks", "Use key sk-" + "Ab1" * 10 + " for the test.", "Use key "),
]


@pytest.mark.parametrize("rule, text, before", BLOCK_CASES)
def test_block_releases_nothing_of_the_match_at_every_split(rule, text, before):
    for chunks in splits(text):
        released, f, parts = run(rules(rule), chunks)
        assert f.blocked == rule, chunks
        assert released == before, chunks
        assert [(x.rule, x.action) for x in f.fired] == [(rule, "block")]
        # once blocked, nothing more comes out
        assert f.feed("more 4111 1111 1111 1111 text") == "" and f.end() == ""


MASK_CASES = [
    ("mask-cards", "Card 4111 1111 1111 1111 and 5555-5555-5555-4444 are on file.",
     "Card <CREDIT_CARD_1> and <CREDIT_CARD_2> are on file."),
    ("mask-cards", "卡号4111111111111111，另一张4111 1111 1111 1111。", "卡号<CREDIT_CARD_1>，另一张<CREDIT_CARD_1>。"),
    ("mask-ids", f"身份证{ID}和{ID_DIGIT}", "身份证<CN_ID_1>和<CN_ID_2>"),
    ("mask-ids", f"wrong {wrong_check(ID)} stays", f"wrong {wrong_check(ID)} stays"),
    ("mask-phrase", "This is INTERNAL USE ONLY. Also internal use only!", "This is <SECRET_1>. Also <SECRET_2>!"),
    ("pii", f"Mail bob@example.com, call 13812345678 or +1 (415) 555-2671; ID {ID}.",
     "Mail <EMAIL_1>, call <CN_MOBILE_1> or <PHONE_1>; ID <CN_ID_1>."),
]


@pytest.mark.parametrize("rule, text, masked", MASK_CASES)
def test_masked_text_is_exact_at_every_split(rule, text, masked):
    assert filter_answer(rules(rule), text).text == masked
    for chunks in splits(text):
        released, f, _ = run(rules(rule), chunks)
        assert f.blocked is None
        assert released == masked, chunks


def test_not_a_card_when_the_digits_go_on_in_the_next_chunk():
    text = "id 4111111111111111" + "0 ok"                 # 17 digits: no card
    for chunks in splits(text):
        released, f, _ = run(rules("cards"), chunks)
        assert (released, f.blocked) == (text, None), chunks


def test_text_that_cannot_match_is_released_chunk_for_chunk():
    chunks = ["The weather", " is nice", " today.", " 天气", "很好，", "我们", "去公园", "吧。", " See", " you", " soon!"]
    for rule_list in (rules("cards", "ids", "no-leaks"), rules("mask-cards", "mask-ids"), rules("topics")):
        f = OutputFilter(rule_list)
        assert [f.feed(c) for c in chunks] == chunks
        assert f.end() == ""
    # with every PII entity, so with `email`, chunks that end where no address can be going on
    chunks = ["天气很好，", "我们去公园吧。", "The weather is nice ", "today! ", "See you soon; ", "bye. ", "再见"]
    f = OutputFilter(rules("pii", "no-leaks"))
    assert [f.feed(c) for c in chunks] == chunks


def test_pii_holds_back_only_what_could_still_become_a_match():
    # The email detector must hold a trailing word (it could be an address's local part) and
    # the number detectors trailing digits; each chunk is out once the next one shows it is not.
    f = OutputFilter(rules("pii"))
    assert f.feed("Hello") == ""
    assert f.feed(" there, ") == "Hello there, "
    assert f.feed("call 4111") == "call "
    assert f.feed(" tomorrow.") == "4111 "                 # "tomorrow." may still be "tomorrow.x@y.com"
    assert f.feed(" Then") == "tomorrow. "
    assert f.feed(" Mail me at bob") == "Then Mail me at "
    assert f.feed("@example.c") == ""
    assert f.feed("om now") == "<EMAIL_1> "
    assert f.end() == "now"


def test_holdback_never_exceeds_the_bound():
    text = ("x" * 3 + "4111 1111 1111 1111 1111 1111 1111 1" + " INTERNAL USE ONL" + "sk-" + "a" * 300
            + " 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0" + "a.b.c@" + "d" * 70)
    rule_list = rules("pii", "no-leaks", "cards")
    bound = max(r.hold for r in rule_list)
    f = OutputFilter(rule_list)
    for ch in text:
        f.feed(ch)
        assert f.held <= bound
        if f.blocked:
            break
    assert f.blocked == "no-leaks"


@pytest.mark.parametrize("pattern, text", [
    ("a(?:bcd)?", "xx abcd abc ab a abcde"),          # a longer match only once more text is seen
    ("foo(?!bar)", "foobar foo foobaz foob"),         # a lookahead undecided at the end of a chunk
    ("ab.*z|q", "ab q abz qq ab"),                    # a complete match ahead of a partial one
    (r"\bcat\b", "cat concat cats 猫cat猫 cat."),
    ("(?<=x)yz", "yz xyz xxyzz"),
    ("(?m)^hi", "hi there\nhi again hi"),
    ("^hi", "hi " + "x" * 40 + " hi hi"),            # the start of the answer, not of what is kept
    (r"\b[a-z]+@", "3-5@ex.com@7 ab@ cd.ef@"),       # Unicode word boundaries read two characters
])
def test_any_pattern_streams_as_the_whole_text_does(pattern, text):
    rule = compile_rule("p", {"kind": "pattern", "patterns": [pattern], "action": "mask", "placeholder": "P"})
    whole = filter_answer([rule], text).text
    for chunks in splits(text):
        assert run([rule], chunks)[0] == whole, chunks


def test_random_chunks_of_random_text_stream_as_the_whole_text_does():
    # Seeded and bounded: texts built from pieces of every entity and near misses, every rule kind.
    rng = random.Random(14)
    pieces = list("0123456789") * 3 + list(" -.@<>_+()X的，") + [
        "4111", "1111 ", "sk-", "Ab1" * 4, "@ex.com", "+86", "DE89", "13812345678", ID[:9], ID[9:], "bob",
        "internal ", "use only", "<EMAIL_1>", "<CREDIT_CARD_", "attorney", "GB82WEST12345698765432"]
    masked = apply_input(rules("pii"), [{"role": "user", "content": "bob@ex.com and 4111 1111 1111 1111"}])
    names = list(RULES)
    for _ in range(1500):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 30)))
        rule_list = rules(*rng.sample(names, rng.randint(1, 3)))
        restorer = masked.restorer if rng.random() < 0.5 else None
        whole = filter_answer(rule_list, text, copy.deepcopy(masked.masker), restorer)
        cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, rng.randint(0, 12)))) if len(text) > 1 else []
        chunks = [text[a:b] for a, b in zip([0] + cuts, cuts + [len(text)])]
        released, f, _ = run(rule_list, chunks, copy.deepcopy(masked.masker), restorer)
        assert (released, f.blocked) == (whole.text, whole.blocked), (rule_list, chunks)


def test_a_detector_scans_what_it_finds_in_a_whole_text():
    # The stream engine skips a detector when no character that starts its matches is there: the
    # same matches either way.
    rng = random.Random(15)
    pieces = list("0123456789 -.@+(X_") + [
        "4111", "sk-" + "a" * 22, "@ex.com", "+86", "DE89", ID, "AKIAIOSFODNN7EXAMPLE", "GB82WEST12345698765432",
        "xoxb-1234567890a", "的"]
    matchers = {entity: (detector, detector_matcher(detector)) for entity, detector in DETECTORS.items()}
    for _ in range(2000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 25)))
        for entity, (detector, matcher) in matchers.items():
            assert matcher.scan(text, 0, True)[0] == list(detector.finditer(text)), (entity, text)


def test_mask_cut_by_a_block_inside_it():
    rule_list = rules("no-leaks", "pii")
    text = "write to internal-use-only@example.com or INTERNAL USE ONLY"
    whole = filter_answer(rule_list, text)
    # the address is masked; the block is on the bare phrase after it
    assert (whole.text, whole.blocked) == ("write to <EMAIL_1> or ", "no-leaks")
    text = "write to internal use only@example.com"
    assert filter_answer(rule_list, text).text == "write to "
    for chunks in splits(text):
        assert run(rule_list, chunks)[0] == "write to ", chunks


def test_flags_never_hold_text_back():
    f = OutputFilter(rules("topics"))
    assert f.feed("Talk to an att") == "Talk to an att"
    assert f.feed("orney about the law") == "orney about the law"
    assert f.feed("suit.") == "suit."
    f.end()
    assert [(x.rule, x.action, x.count) for x in f.fired] == [("topics", "flag", 2)]


# --- reversible masking -------------------------------------------------------------------------------


def test_restore_round_trip_at_every_split():
    request = [{"role": "user", "content": "I'm bob@example.com, card 4111 1111 1111 1111. 请联系13812345678"}]
    result = apply_input(rules("pii"), request)
    prompt = result.messages[0]["content"]
    assert prompt == "I'm <EMAIL_1>, card <CREDIT_CARD_1>. 请联系<CN_MOBILE_1>"
    assert result.restorer is not None
    answer = ("We sent it to <EMAIL_1> and charged <CREDIT_CARD_1>; 我们会打<CN_MOBILE_1>。"
              " <EMAIL_2> and <email_1> are not ours; new: amy@example.org")
    expected = ("We sent it to bob@example.com and charged 4111 1111 1111 1111; 我们会打13812345678。"
                " <EMAIL_2> and <email_1> are not ours; new: <EMAIL_2>")
    # output rules run on what the model wrote: a restored value is not masked again, a new one is
    assert filter_answer(rules("pii"), answer, result.masker, result.restorer).text == expected
    for chunks in splits(answer):
        assert run(rules("pii"), chunks, result.masker, result.restorer)[0] == expected, chunks
    assert result.restorer.restore("to <EMAIL_1>") == "to bob@example.com"


def test_restore_only_for_rules_that_ask():
    plain = compile_rule("plain", {"kind": "pii", "entities": ["email"], "action": "mask"})
    result = apply_input([plain], [{"role": "user", "content": "bob@example.com"}])
    assert result.restorer is None
    assert filter_answer([], "to <EMAIL_1>", result.masker, result.restorer).text == "to <EMAIL_1>"


# --- whole answers ------------------------------------------------------------------------------------


def test_whole_answer_mask_and_block():
    masked = filter_answer(rules("mask-cards"), "pay 4111 1111 1111 1111 now")
    assert (masked.text, masked.blocked) == ("pay <CREDIT_CARD_1> now", None)
    blocked = filter_answer(rules("mask-cards", "no-leaks"), "card 4111111111111111, internal use only, more")
    assert (blocked.text, blocked.blocked) == ("card <CREDIT_CARD_1>, ", "no-leaks")
    assert [(x.rule, x.action) for x in blocked.fired] == [("mask-cards", "mask"), ("no-leaks", "block")]
    assert filter_answer([], "anything") == filter_answer(rules("topics"), "anything")
