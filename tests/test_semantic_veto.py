"""The rule veto on its own: each rule fires on the near misses it is for, and stays quiet on
paraphrases that reword the question."""

from __future__ import annotations

from collections import Counter

import pytest

from gateway.cache.semantic.veto import literals, numbers, veto


@pytest.mark.parametrize("text, expected", [
    ("How do I book a table for 4 people?", {4.0: 1}),
    ("I'd like to reserve a table for four", {4.0: 1}),
    ("I was charged twice", {2.0: 1}),
    ("Error code E1042 when I log in", {1042.0: 1}),
    ("Transfer 1,250.50 dollars", {1250.5: 1}),
    ("What year did World War II end?", {2.0: 1}),
    ("How many calories are in a banana? One banana.", {}),          # "one" is an article here
    ("同一个订单被扣了两次钱", {2.0: 1}),
    ("第二次世界大战哪一年结束？", {2.0: 1}),
    ("三根香蕉有多少卡路里", {3.0: 1}),
    ("我们一起去吧，等一下", {}),                                      # 一起, 一下 are not numbers
    ("一百二十块", {120.0: 1}),
])
def test_numbers_are_read_as_values(text, expected):
    assert numbers(text) == Counter(expected)


def test_quoted_strings_and_identifiers_are_literals():
    assert literals('The app shows "Payment failed" after checkout') == {"payment failed"}
    assert literals("What does `git rebase` do?") == {"git rebase"}
    assert {"max_retries", "client.chat.create", "--dry-run", "getuserbyid"} <= literals(
        "Why does max_retries in client.chat.create ignore --dry-run and getUserById?")
    assert literals("Is in-store pickup available for a grown-up?") == set()  # hyphenated words are words


@pytest.mark.parametrize("stored, incoming, rule", [
    ("How do I book a table for 4 people?", "How do I book a table for 12 people?", "numbers"),
    ("I was charged twice for the same order.", "I was charged three times for the same order.", "numbers"),
    ("Error code E1042 when I try to log in", "Error code E1043 when I try to log in", "numbers"),
    ("Is 97 a prime number?", "Is 91 a prime number?", "numbers"),
    ("Can I return an item without a receipt?", "Can I return an item with a receipt?", "negation"),
    ("Is my data encrypted at rest?", "Why is my data not encrypted at rest?", "negation"),
    ("Why can't I change my delivery address?", "Can I change my delivery address?", "negation"),
    ("下单后还能修改收货地址吗？", "下单后为什么不能修改收货地址？", "negation"),
    ('The app shows "Payment failed" after checkout', 'The app shows "Payment pending" after checkout', "quoted"),
    ("What does `git rebase` do?", "What does `git merge` do?", "quoted"),
    ("How do I cancel my order before it ships?", "How do I cancel my order after it ships?", "differs only"),
    ("What is the daily withdrawal limit on my debit card?",
     "What is the monthly withdrawal limit on my debit card?", "differs only"),
    ("I forgot my password, how can I reset it?", "I forgot my username, how can I recover it?", "no counterpart"),
    ("Do you ship to Canada?", "Do you ship to Mexico?", "names differ"),
    ("How do I reset the password on my Everest espresso machine?",
     "I forgot the password for my Summit espresso machine, how can I reset it?", "names differ"),
    ("Does the Mosaic lawn mower ship internationally?", "Do you deliver the Aurora lawn mower abroad?",
     "names differ"),
    ("How do I turn on two-factor authentication?", "How do I turn off two-factor authentication?", "differs only"),
    ("忘记密码了怎么办？", "忘记支付密码了怎么办？", "differs only"),
    ("会员可以暂停吗？", "会员可以取消吗？", "no counterpart"),
    ("How do I transfer money from PayPal to my bank account?",
     "How do I transfer money from my bank account to PayPal?", "another order"),
    ("Convert 100 degrees Fahrenheit to Celsius", "Convert 100 degrees Celsius to Fahrenheit", "another order"),
    ("怎么把钱从支付宝转到银行卡？", "怎么把钱从银行卡转到支付宝？", "another order"),
    ("把人民币换成美元", "把美元换成人民币", "another order"),          # 成 plays "into"
    ("How do I opt in to text alerts?", "How do I opt out of text alerts?", "differs only"),  # in / out are content
])
def test_each_rule_fires_on_its_near_misses(stored, incoming, rule):
    reason = veto(stored, incoming)
    assert reason is not None and rule in reason, reason
    assert veto(incoming, stored) is not None  # the rules are symmetric


@pytest.mark.parametrize("stored, incoming", [
    ("How do I reset my password?", "How can I reset my password?"),
    ("Does the Mosaic lawn mower ship internationally?", "does the mosaic lawn mower ship internationally"),
    ("How do I transfer money from PayPal to my bank account?",
     "What are the steps to move funds out of PayPal into my bank?"),
    ("How Do I Reset My Password?", "How can I reset my password?"),
    ("How long does a refund take to show up on my card?", "How many days until I see my refund on my card?"),
    ("Do you ship to Canada?", "Is delivery available to Canada?"),
    ("Can I return an item without a receipt?", "I don't have my receipt anymore, can I still send the product back?"),
    ("How do I book a table for 4 people?", "I'd like to reserve a table for four, how do I do that?"),
    ("What year did World War II end?", "In which year was the Second World War over?"),
    # ('The app shows ...' / 'I see the message ...' is refused since every word needs a counterpart:
    # "app" / "message" is a swap the veto cannot tell from "router" / "printer". A missed hit.)
    ("What does `git rebase` do?", "Explain the git rebase command."),
    ("97是质数吗？", "97是不是质数？"),                   # an A-not-A question is not a negation
    ("退款多久能到账？", "申请退款后需要等多长时间才到账？"),
])
def test_paraphrases_pass(stored, incoming):
    assert veto(stored, incoming) is None


# ---- every slot word needs a counterpart (catalogue traffic: one frame, another product, kind or intent) --


@pytest.mark.parametrize("stored, incoming", [
    # the same name, another kind of product
    ("How do I update the firmware on my Corvina router?", "How can I install the newest firmware on the Corvina printer?"),
    ("Is the Brisa kettle available in green?", "hi, does the brisa toaster come in green"),
    # the same product, another intent
    ("Where can I see the delivery status of my Lyra sewing machine?", "How do I register my Lyra sewing machine?"),
    ("How do I factory reset the Oska drone?", "What can I do when my Oska drone stays off?"),
    ("Can I return the Oska drone?", "How long is the warranty on the Oska drone?"),
    ("How do I cancel my Oska drone order?", "How do I change the shipping address of my Oska drone order?"),
    # cleaning and passwords are intents too (a device that stays off, a factory reset)
    ("How do I clean the Oska drone?", "What can I do when my Oska drone stays off?"),
    ("How do I factory reset the Orlo speaker?", "I forgot the password of my Orlo speaker, how do I reset it?"),
    ("柯蓝电水壶怎么清洗？", "柯蓝电水壶怎么开机？"),
    ("柯蓝路由器怎么恢复出厂设置？", "柯蓝路由器的密码忘了怎么办？"),
    # the same product and intent, another attribute
    ("Does the Brisa kettle come in white?", "Is there a red Brisa kettle?"),
    ("Is there a smaller Brisa kettle?", "Do you sell a larger Brisa kettle?"),
    # lower case on both sides: no names to go by, the kind word still decides
    ("how do i update the firmware on my corvina router", "what is the procedure to upgrade the corvina printer firmware"),
    # Chinese: the intent verb, the product kind, the attribute
    ("柯蓝空气炸锅可以退货吗？", "柯蓝空气炸锅可以换货吗？"),
    ("柯蓝空气炸锅怎么退款？", "柯蓝空气炸锅可以退货吗？"),
    ("柯蓝手环怎么绑定手机？", "柯蓝手环怎么解绑手机？"),
    ("柯蓝手环怎么激活？", "柯蓝手环怎么注册？"),
    ("柯蓝手环的订单怎么取消？", "柯蓝手环的订单怎么修改收货地址？"),
    ("柯蓝手环怎么查物流？", "柯蓝音箱怎么查物流？"),
    ("柯蓝手环有黑色的吗？", "柯蓝手环有红色的吗？"),
    ("柯蓝手环怎么退货？", "柯蓝手表怎么退货？"),
    # a slot word swapped in a reworded question, where the minimal-pair rule sees no shared frame
    ("How do I update the firmware on my Orlo speaker?", "What can I do to reset my Orlo speaker?"),
    ("Is the Orlo blender available in red?", "does the orlo blender come in blue"),
    # the word a kind is read with ("my kestrel kettle"), the characters before a Chinese kind, and
    # the word a name is read with ("the Corvina airbed"): swapped, they name another product
    ("hi there, how do i track my kestrel kettle order", "where can i follow the delivery of my marigold kettle"),
    ("青鸾电水壶怎么查物流？", "你好，请问墨竹电水壶的快递到哪了"),
    ("Does the Corvina airbed come with a warranty?", "How long is the warranty on the Corvina hammock?"),
])
def test_a_word_without_counterpart_vetoes(stored, incoming):
    reason = veto(stored, incoming)
    assert reason is not None and "no counterpart" in reason, reason
    assert veto(incoming, stored) is not None


@pytest.mark.parametrize("stored, incoming", [
    # synonyms of the table: change / update / edit, ship / deliver, return / send back, register / sign up
    ("How do I change the delivery address for my Corvina router order?",
     "Can I update the shipping address on my Corvina router order?"),
    ("How do I change the delivery address for my Corvina router order?",
     "how do i edit the delivery address of my corvina router order"),
    ("Can I return the Brisa toaster?", "Is it possible to send my Brisa toaster back?"),
    ("How do I register my Brisa toaster?", "Hello! How can I sign up my Brisa toaster for registration? Thanks"),
    ("How do I factory reset my Oska drone?", "How can I restore the Oska drone to its factory settings?"),
    ("Is the Oska drone covered by a warranty?", "Does a warranty come with the Oska drone?"),
    ("How do I assemble the Oska desk?", "how do i put my oska desk together"),
    ("How do I clean my Brisa kettle?", "What is the best way to wash the Brisa kettle?"),
    ("柯蓝电水壶怎么清洗？", "柯蓝电水壶如何清洁？"),
    ("柯蓝路由器密码忘了怎么办？", "柯蓝路由器的密码忘记了怎么办"),
    # one plain word without counterpart, when nothing is named: the synonym no table holds
    ("How long should I boil an egg for a soft yolk?", "Boiling time for a soft-boiled egg?"),
    # reordered words without "from" / "to" roles
    ("Is there a student discount?", "Do you offer discounts for students?"),
    # Chinese: 修改/更改, 退货/退回, 保修/质保, greetings around the question
    ("柯蓝手环的订单怎么修改收货地址？", "你好，柯蓝手环订单的收货地址能更改吗"),
    ("柯蓝空气炸锅可以退货吗？", "买的柯蓝空气炸锅能不能退回？"),
    ("柯蓝空气炸锅保修多久？", "请问柯蓝空气炸锅的质保期是多长时间"),
    ("柯蓝手环怎么恢复出厂设置？", "柯蓝手环如何重置？"),
    ("柯蓝手环有白色的吗？", "柯蓝手环有没有白色款？"),
    # Chinese groups named by their English word: a question that mixes the two languages
    ("How do I 申请退款？", "怎么申请 refund？"),
    # "cancelling" / "cancel": a doubled final letter still finds its group
    ("How do I cancel my Orlo blender order?", "Is cancelling my Orlo blender order possible?"),
])
def test_synonyms_and_framing_have_counterparts(stored, incoming):
    assert veto(stored, incoming) is None
    assert veto(incoming, stored) is None


@pytest.mark.parametrize("stored, incoming", [
    # Plain words (no slot of the tables) may differ: rewordings swap words no table can hold.
    ("What is the speed of light?", "How fast does light travel?"),
    ("How do I descale my electric kettle?", "What's the way to descale a kettle?"),   # a modifier on one side only
    ("Do you accept Apple Pay?", "Can I pay using Apple Pay?"),                         # a name's word on one side only
    ("Is the Orlo blender available in red?", "Can I buy a red Orlo blender?"),
    ("为什么天空是蓝色的？", "天空为什么呈现蓝色？"),
])
def test_plain_words_may_differ(stored, incoming):
    assert veto(stored, incoming) is None
    assert veto(incoming, stored) is None
