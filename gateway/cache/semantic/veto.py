"""The rule veto: cheap checks that two similar-looking questions may still need different answers.

Embeddings score "cancel my order before it ships" and "... after it ships" as near-identical, so a
candidate found by cosine similarity is served only when none of these rules fires:

- numbers differ ("limit for 4 people" / "for 12 people", "E1042" / "E1043", "twice" / "three times");
- negation differs (one question is negated, the other is not);
- a quoted string or code identifier on one side does not appear in the other;
- a name (a capitalised word that does not start a sentence: "Summit" / "Everest espresso
  machine") on one side is not mentioned on the other;
- a slot word without counterpart: an intent, support topic, product kind, colour or size of the
  tables below on one side and not the other ("register" / "track my Kestrel kettle", "router" /
  "printer", "in black" / "in cream"), or one kind or name read with other words on each side
  ("my kestrel kettle" / "my marigold kettle", "青鸾电水壶" / "墨竹电水壶"). Plain words may differ;
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
import functools
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
_STOP_ZH = frozenset("的了吗呢吧啊呀么嘛我你您他她它们请问怎样如何什哪里是在要想能可以会就还和与及或跟同把被给让"
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



def _stem(word: str) -> str:
    # Just enough to match "refunds"/"refund", "shipped"/"shipping"/"ships", "included"/"include",
    # "calories"/"calorie"; no dictionary. A final "e" is dropped and a final "y" read as "i" so both forms meet.
    for suffix, keep in (("ies", "y"), ("ing", ""), ("ed", ""), ("es", ""), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith("ss") \
                and not (suffix == "ed" and word.endswith("eed")) \
                and not (suffix == "es" and not word.endswith(("ses", "xes", "zes", "ches", "shes"))):
            word = word[: len(word) - len(suffix)] + keep
            if keep == "" and len(word) >= 4 and word[-1] == word[-2] and word[-1] not in "aeiouls":
                word = word[:-1]  # shipp -> ship
            break
    if len(word) >= 4 and word[-1] == "e":
        word = word[:-1]
    elif len(word) >= 4 and word[-1] == "y":
        word = word[:-1] + "i"
    return word


# ---- words that mean the same, and the slots that decide an answer --------------------------
#
# Catalogue questions share a frame and differ in one slot: the product's name, its kind, the
# intent, an attribute, a number ("How do I register my Kestrel kettle?" / "... track my Kestrel
# kettle order?" / "... register my Kestrel toaster?"). A slot word on one side must have a
# counterpart on the other: the same word, or a word of its synonym group. Every other word is free
# wording, which real paraphrases change without a table that could list it ("speed" / "how fast",
# "coupon" / "promo code"): those words are left to the minimal-pair rule, as before.
#
# The slot classes are closed and small: intents and support topics (below), product kinds, colours
# and sizes, names (capitalised words, and the word that modifies a kind: "my kestrel kettle",
# "青鸾电水壶"), numbers. The synonym groups are deliberately coarse where a swap never changes the
# answer (order / purchase / delivery) and fine where it does (return / refund / exchange; register /
# activate; bind / unbind).

# Intents and support topics: slots. Words of a group are one word.
_INTENTS_EN = [
    "change update modify edit alter amend switch upgrade install",
    "track tracking trace status follow whereabouts",
    "return returnable",                       # "send it back" is rewritten to "return" below
    "refund reimburse reimbursement",          # "money back" too
    "exchange swap replace replacement",
    "cancel cancellation terminate discontinue",
    "register registration enrol enroll signup",
    "activate activation",
    "reset restore wipe",
    "warranty guarantee",
    "assemble assembly",
    "pair pairing bluetooth",
    "descale limescale decalcify",
    "firmware",
    "manual handbook booklet",
    "noise noisy loud rattle buzz hum squeak",
    "wifi wireless",
    "clean cleaning wash",
    "password passcode",
]
# Attributes: slots, each group one value ("in black" / "in cream", "smaller" / "larger").
_ATTRIBUTES_EN = [
    "black", "white", "red", "blue", "green", "yellow", "pink", "purple", "orange", "brown", "beige",
    "cream", "ivory", "navy", "teal", "silver", "gold", "bronze", "grey gray", "charcoal", "graphite",
    "large larger largest big bigger xl", "small smaller smallest little compact mini",
]
# Synonyms that are free wording: one word to the rules, but no slot.
_SYNONYMS_EN = [
    "delivery deliver ship dispatch send sent",
    "cover covered coverage",
    "factory default defaults",
    "connect connection link join sync",
    "network internet",
    "guide documentation",
    "sound",
    "colour color shade",
    "forget forgot forgotten",
    "login signin logon",
    "email e-mail",
    "price cost pricing",
    "duration long period day week month year hour minute time soon quickly last",
    "poweron boot",
    "delete remove erase",
    "book reserve reservation booking",
    "subscription membership",
    "money fund funds cash",
    "transfer move",
    "end over finish",
]
# Product kinds: slots. Compound kinds are joined into one word before the words are compared.
_KINDS_EN = """
router modem extender printer scanner blender mixer standmixer kettle toaster vacuum robotvacuum
mop robotmop fryer airfryer microwave oven stove cooktop dishwasher washer washingmachine dryer
freezer cooker ricecooker slowcooker pressurecooker coffeemaker coffeemachine espressomachine grinder
juicer grill sandwichmaker tablet ipad chromebook computer pc desktop monitor projector camera webcam
dashcam camcorder drone speaker soundbar subwoofer amplifier turntable watch smartwatch tracker
keyboard mouse console controller charger powerbank heater spaceheater radiator fan humidifier
dehumidifier purifier airpurifier thermostat doorbell smartlock doorlock treadmill bike ebike bicycle
scooter mower lawnmower trimmer toothbrush shaver razor hairdryer straightener curler iron steamer
ereader sewingmachine drill stroller babymonitor mattress desk chair sofa lamp
""".split() + ["phone smartphone mobile cellphone", "laptop notebook", "tv television", "fridge refrigerator",
               "headphone headphones headset", "earbud earbuds earphone earphones"]
_COMPOUND_KINDS_EN = [
    ("stand mixer", "standmixer"), ("robot vacuum", "robotvacuum"), ("robot mop", "robotmop"),
    ("air fryer", "airfryer"), ("washing machine", "washingmachine"), ("rice cooker", "ricecooker"),
    ("slow cooker", "slowcooker"), ("pressure cooker", "pressurecooker"), ("coffee maker", "coffeemaker"),
    ("coffee machine", "coffeemachine"), ("espresso machine", "espressomachine"),
    ("sandwich maker", "sandwichmaker"), ("power bank", "powerbank"), ("space heater", "spaceheater"),
    ("air purifier", "airpurifier"), ("smart lock", "smartlock"), ("door lock", "doorlock"),
    ("e-bike", "ebike"), ("lawn mower", "lawnmower"), ("hair dryer", "hairdryer"),
    ("e-reader", "ereader"), ("ebook reader", "ereader"), ("sewing machine", "sewingmachine"),
    ("baby monitor", "babymonitor"), ("dash cam", "dashcam"), ("dash camera", "dashcam"),
]
# Phrases rewritten to one word before the words are compared.
_PHRASES_EN = [
    (r"\b(?:send|take|bring|give)((?: \w+){0,4}) back\b", r" return \1 "),
    (r"\b(?:my |the |your )?money back\b", " refund "),
    (r"\bput((?: \w+){0,3}) together\b", r" assemble \1 "),
    (r"\bsign(?:ing)? (?:me |it |them )?up\b", " signup "),
    (r"\b(?:log|sign)(?:ging)? ?(?:in|on)(?:to)?\b", " login "),
    (r"\b(?:turn|power|switch)(?:s|ed|ing)? (?:on|up)\b", " poweron "),
    (r"\bcall(?:ing|ed)? off\b", " cancel "),
    (r"\bshow(?:s|ed|ing)? up\b", " appear "),
    (r"\bwi[- ]?fi\b", " wifi "),
    (r"\bset(?:ting)? up\b", " setup "),
] + [(rf"\b{re.escape(phrase)}(?:s|es)?\b", f" {word} ") for phrase, word in _COMPOUND_KINDS_EN]
# Words that frame a question without changing its answer: politeness, "the steps to", "is there".
_FILLER_EN = frozenset("""
step procedure process method best right correct proper exact exactly help please kindly thank thanks
hi hello hey there good morning afternoon evening dear team guy folks wonder wondering question quick
explain tell show find found see check look possible option available availability come sold sell
offer exist version variant edition model latest newest current recent actually currently online page
site website instruction instructions do work policy rule info information detail details now anymore
ever someone anyone thing still until take took see seen show appear arrive reach receive land
setting settings set account command people person guest new on under within inside accept
complete allow allowed item product order purchase buy bought package parcel shipment
""".split())

# Chinese: the same classes. Terms are matched longest first and become one word each.
# A group that starts with an English word shares that word's id, so "How do I 申请退款" and
# "怎么申请 refund" meet.
_INTENTS_ZH = [
    "return 退货 退回 退掉",
    "refund 退款 退钱 返款 退的钱",
    "exchange 换货 调换",
    "解绑 解除绑定 取消绑定",
    "cancel 取消 撤销",
    "change 修改 更改 变更 改",
    "升级 更新",
    "track 物流 快递 运单",
    "activate 激活 开通 启用",
    "绑定 关联 配对",
    "register 注册 登记",
    "reset 恢复出厂设置 恢复出厂 重置 出厂设置",
    "warranty 保修期 质保期 保修 质保 保固",
    "firmware 固件",
    "收货地址 送货地址 配送地址 地址",
    "manual 说明书 手册",
    "noise 噪音",
    "clean 清洗 清洁",
    "password 密码",
]
_ATTRIBUTES_ZH = ["black 黑色 黑", "white 白色 白", "red 红色 红", "blue 蓝色 蓝", "green 绿色 绿", "yellow 黄色 黄",
                  "pink 粉色 粉红色 粉", "purple 紫色 紫", "orange 橙色", "brown 棕色 咖啡色", "beige 米色 米白色",
                  "silver 银色", "gold 金色", "grey 灰色 灰", "large 大号 大码 大尺寸", "small 小号 小码 小尺寸 迷你"]
_SYNONYMS_ZH = [
    "开机 启动",
    "发货 寄出 发出 配送 寄到 送到",
    "包裹",
    "多长时间 多久 多少天 几天 几年 多少年 多长 什么时候 多少时间",
    "颜色",
    "声音",
    "忘记 忘了",
    "到账 到帐",
    "连接 连上",
]
_KINDS_ZH = ["phone 手机", "tablet 平板 平板电脑", "laptop 笔记本 笔记本电脑"] + """
电脑 台式机 显示器 键盘 鼠标 打印机 扫描仪 路由器 电视 电视机 投影仪 相机
摄像头 监控 无人机 耳机 蓝牙耳机 头戴式耳机 音箱 音响 蓝牙音箱 智能音箱 手表 智能手表 手环 充电宝 充电器
冰箱 洗衣机 烘干机 洗碗机 空调 微波炉 烤箱 电烤箱 电饭煲 电压力锅 高压锅 电水壶 烧水壶 热水壶 电热水壶 空气炸锅
咖啡机 豆浆机 榨汁机 破壁机 料理机 搅拌机 吸尘器 扫地机 扫地机器人 拖地机 洗地机 净化器 空气净化器 加湿器 除湿机
除湿器 电风扇 风扇 取暖器 电暖器 暖风机 热水器 吹风机 电吹风 剃须刀 电动牙刷 门锁 智能门锁 门铃 行车记录仪
跑步机 动感单车 电动车 自行车 滑板车 台灯 灯泡 床垫 婴儿车 缝纫机 电钻 电熨斗 挂烫机 阅读器 电子书
""".split()
_FILLER_ZH = ("你好 您好 请问 谢谢 麻烦 怎么样 怎么 如何 怎样 需要 可以 能够 支持 方法 步骤 是什么 什么 操作 办法 "
              "新买 买了 购买 下单 订单 以后 之后 查询 查看 查找 哪里 有没有 可选 选 款 一下 还能 能 到哪 想要 不想要 "
              "要 想 去 查 买 后 等 才 有 申请 信息 情况").split()


def _concept_ids(groups: list[str], key) -> dict[str, str]:
    out: dict[str, str] = {}
    for group in groups:
        words = group.split()
        if words[0].isascii() and not words[-1].isascii():   # a Chinese group named by its English word
            name = "~" + _stem(words.pop(0))
        else:
            name = "~" + key(words[0])
        for w in words:
            out[key(w)] = name
    return out


_CONCEPT_ZH = _concept_ids(_SYNONYMS_ZH + _INTENTS_ZH + _ATTRIBUTES_ZH + _KINDS_ZH, str)
_SLOTS_ZH = frozenset(_concept_ids(_INTENTS_ZH + _ATTRIBUTES_ZH + _KINDS_ZH, str).values())
_KIND_IDS_ZH = frozenset(_concept_ids(_KINDS_ZH, str).values())
_ZH_TERMS = re.compile("|".join(sorted(map(re.escape, list(_CONCEPT_ZH) + _FILLER_ZH), key=len, reverse=True)))
_PHRASE_RES = [(re.compile(p), r) for p, r in _PHRASES_EN]


def _canonical_text(text: str) -> str:
    """Phrases rewritten to one word, Chinese terms to their group's id (" ~退货 ") or removed (fillers)."""
    for pattern, repl in _PHRASE_RES:
        text = pattern.sub(repl, text)

    def zh(m: re.Match[str]) -> str:
        term = m.group()
        return f" {_CONCEPT_ZH[term]} " if term in _CONCEPT_ZH else f" ^{term} "

    return _ZH_TERMS.sub(zh, text)


# ---- normalised questions ------------------------------------------------------------------


@dataclass(frozen=True)
class Question:
    text: str                     # NFKC, lower-cased, single-spaced
    words: tuple[str, ...]        # every token (Chinese: characters), stemmed; numbers as "#"
    content: tuple[bool, ...]     # which of `words` are content words
    slots: tuple[bool, ...]       # which of `words` decide the answer (see _slots)
    modifiers: dict[str, frozenset[str]]  # a kind or name -> the words it is read with (see _modifiers)
    negated: bool
    numbers: Counter[float]
    literals: frozenset[str]
    names: frozenset[str]         # capitalised names, lower-cased
    cjk: bool                     # mostly Chinese

    @property
    def content_words(self) -> tuple[str, ...]:
        return tuple(w for w, c in zip(self.words, self.content) if c)


_EN_KEY = lambda w: _stem(w.replace("-", ""))  # noqa: E731
_CONCEPT_EN = _concept_ids(_SYNONYMS_EN + _INTENTS_EN + _ATTRIBUTES_EN + _KINDS_EN, _EN_KEY)
_SLOTS_EN = frozenset(_concept_ids(_INTENTS_EN + _ATTRIBUTES_EN + _KINDS_EN, _EN_KEY).values())
_KIND_IDS_EN = frozenset(_concept_ids(_KINDS_EN, _EN_KEY).values())
_FILLER_STEMS = frozenset(_stem(w) for w in _FILLER_EN)
_TOKEN_CANON = re.compile(rf"~[{_CJK}]+|~[a-z0-9-]+|\^[{_CJK}]+|[{_CJK}]|[a-z0-9]+(?:'[a-z]+)?")
# Words a name or a kind is read with: "the Corvina router", "my kestrel kettle", "青鸾电水壶".
NAME_HEAD_WORDS = 2
KIND_MODIFIER_CHARS = 2  # Chinese brands before a kind are mostly two characters


def _slots(words: list[str]) -> tuple[bool, ...]:
    """Which words decide the answer: the intents, topics, attributes and kinds of the tables."""
    return tuple(w in _SLOTS_EN or w in _SLOTS_ZH for w in words)


def _modifiers(words: list[str], content: list[bool], names: frozenset[str]) -> dict[str, frozenset[str]]:
    """The words a kind or a name is read with, by the kind or name: "my kestrel kettle" (kettle:
    kestrel), "青鸾电水壶" (电水壶: 青, 鸾), "the Corvina router" (corvina: router). Two questions
    that read one kind or name with different words ask about different products."""
    out: dict[str, set[str]] = {}
    name_stems = {_stem(n) for n in names}
    for i, w in enumerate(words):
        if i > 0 and (w in _KIND_IDS_EN or w in _KIND_IDS_ZH):
            if _IS_CJK.fullmatch(words[i - 1]):
                for k in range(i - 1, max(-1, i - 1 - KIND_MODIFIER_CHARS), -1):
                    if not (content[k] and _IS_CJK.fullmatch(words[k])):
                        break
                    out.setdefault(w, set()).add(words[k])
            elif content[i - 1] and not words[i - 1].startswith("~"):
                out.setdefault(w, set()).add(words[i - 1])
        elif w in name_stems:
            for k in range(i + 1, min(len(words), i + 1 + NAME_HEAD_WORDS)):
                if not content[k] or words[k].startswith("~") or words[k] in name_stems:
                    break
                out.setdefault(w, set()).add(words[k])
    return {k: frozenset(v) for k, v in out.items()}


@functools.lru_cache(maxsize=8192)
def parse(raw: str) -> Question:
    """What the veto reads in a question. Cached: a lookup compares one incoming question with up
    to top_k stored ones, and hot stored questions come back lookup after lookup (the Question is
    only ever read)."""
    nfkc = unicodedata.normalize("NFKC", raw)
    text = " ".join(nfkc.lower().split())
    tokens = _TOKEN.findall(text)
    cjk_count = sum(1 for t in tokens if _IS_CJK.match(t))
    negated = any(t in _NEG_EN or t.endswith("n't") for t in tokens) or bool(_NEG_ZH.search(_A_NOT_A.sub(r"\1", text)))

    words: list[str] = []
    content: list[bool] = []
    for token in _TOKEN_CANON.findall(_canonical_text(text)):
        if token[0] in "~^":             # a Chinese term of the tables (^: a filler, frame only)
            words.append(token)
            content.append(token[0] == "~")
            continue
        is_cjk = bool(_IS_CJK.match(token))
        if token.isdigit() or token in _NUMBER_WORDS or token.upper() in _ROMAN_VALUES \
                or token in _ZH_DIGITS or token in _ZH_UNITS:
            words.append("#")  # numbers are compared on their own; here they are only frame
            content.append(False)
            continue
        is_stop = (is_cjk and (token in _STOP_ZH or token in "不没无未别非")) or \
                  (not is_cjk and (token.split("'")[0] in _STOP_EN or token in _NEG_EN or token.endswith("n't")))
        if is_cjk:
            words.append(token)
        else:
            stem = _stem(token.split("'")[0])
            if stem not in _CONCEPT_EN and len(stem) >= 5 and stem[-1] == stem[-2]:
                stem = stem[:-1] if stem[:-1] in _CONCEPT_EN else stem   # "cancelled" / "cancel"
            words.append(_CONCEPT_EN.get(stem, stem))
            is_stop = is_stop or stem in _FILLER_STEMS or token in _FILLER_EN
        content.append(not is_stop)
    found_names = names(nfkc)
    return Question(text, tuple(words), tuple(content), _slots(words), _modifiers(words, content, found_names),
                    bool(negated), numbers(nfkc), frozenset(literals(nfkc)), found_names, cjk_count * 2 > len(tokens))


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


_ROLE = re.compile(r"\b(?:from|to|into|onto|than|vs|versus|toward|towards)\b|[从到给比向往成]")

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
    if set(ca) == set(cb):
        # Order changes the answer when the words play roles around "from" / "to" ("from PayPal to
        # my bank"); without such a word, "student discount" / "discounts for students" is a paraphrase.
        if ca != cb and _ROLE.search(a.text) and _ROLE.search(b.text):
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


def unmatched_word(a: Question, b: Question) -> str | None:
    """A slot word of one question that the other never uses, in any form its synonym group
    allows: the intent ("track" / "register my order"), the kind ("Kestrel kettle" / "Kestrel
    toaster"), an attribute ("in black" / "in cream"), the product's name. A swap of two slot
    words is refused by the same check, on either side.

    Plain words may differ: real rewordings swap words no table holds ("speed" / "how fast"),
    and the minimal-pair rule still catches a one-word change in a shared frame."""
    wa, wb = set(a.words), set(b.words)
    for q, other in ((a, wb), (b, wa)):
        for w, s in zip(q.words, q.slots):
            if s and w not in other:
                return w.lstrip("~")
    # One kind or name read with other words on each side: "kestrel" / "marigold kettle".
    for head in a.modifiers.keys() & b.modifiers.keys():
        only_a, only_b = a.modifiers[head] - wb, b.modifiers[head] - wa
        if only_a and only_b:
            return min(only_a)
    return None


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
    word = unmatched_word(a, b)
    if word is not None:
        return f"no counterpart for {word!r}"
    return minimal_pair(a, b)
