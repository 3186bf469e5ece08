"""Support questions for the cache scenarios: intents x products, each with paraphrases.

A question is (intent, product); wording 0 is the canonical text, 1-3 rephrase it, 4-5 keep its
words but type them differently (a greeting around it; lower case without the question mark). Every
text maps back to its question, so a semantic hit can be checked: the fake upstream echoes the text
it was asked, and a hit that echoes another question is a wrong hit.
"""

from __future__ import annotations

import random

INTENTS = [
    ("How do I reset the password on my {p}?", "What are the steps to reset my {p} password?",
     "I forgot the password for my {p}, how can I reset it?", "Can you tell me how to reset the {p} password?"),
    ("How long does a refund for the {p} take?", "When will I get my money back for the {p}?",
     "How many days until the {p} refund reaches my card?", "What is the refund time for a returned {p}?"),
    ("How do I cancel my {p} subscription?", "What is the way to end my {p} subscription?",
     "I want to stop my {p} subscription, how do I do that?", "Can I cancel the subscription for my {p}?"),
    ("Does the {p} ship internationally?", "Can you send the {p} to another country?",
     "Is international shipping available for the {p}?", "Do you deliver the {p} abroad?"),
    ("How do I update the firmware on my {p}?", "What is the procedure to upgrade the {p} firmware?",
     "My {p} needs new firmware, how do I install it?", "How can I get the latest firmware onto the {p}?"),
    ("What does the warranty on the {p} cover?", "Which repairs are covered by the {p} warranty?",
     "Tell me what the {p} warranty includes.", "Is damage covered under the warranty of the {p}?"),
    ("How do I change the shipping address for my {p} order?", "Can I send my {p} order to a different address?",
     "I moved, how do I update the delivery address of the {p} order?", "Where do I edit the address for my {p} delivery?"),
    ("Why is my {p} not turning on?", "My {p} will not power up, what should I do?",
     "The {p} does not start at all, how do I fix it?", "What can I do when the {p} stays off?"),
    ("How do I connect the {p} to Wi-Fi?", "What are the steps to put my {p} on my wireless network?",
     "My {p} needs to join Wi-Fi, how do I set that up?", "How can I link the {p} to my home Wi-Fi?"),
    ("Can I return the {p} if I opened it?", "Is an opened {p} still returnable?",
     "I unboxed the {p}, can I still send it back?", "Do you accept returns of a {p} that was opened?"),
    ("How do I clean the {p}?", "What is the right way to clean my {p}?",
     "Which cleaning steps does the {p} need?", "How should I wash and care for the {p}?"),
    ("Where can I download the manual for the {p}?", "Is there a user guide for the {p} I can download?",
     "I lost the {p} manual, where do I get a copy?", "Where is the {p} instruction manual online?"),
    ("How do I pair the {p} with my phone?", "What are the steps to connect my phone to the {p}?",
     "My phone will not pair with the {p}, how do I link them?", "How can I set up Bluetooth between the {p} and my phone?"),
    ("Is the {p} compatible with Apple devices?", "Does the {p} work with an iPhone or a Mac?",
     "Can I use the {p} with Apple products?", "Will my Apple devices support the {p}?"),
    ("How do I track my {p} order?", "Where can I see the delivery status of my {p}?",
     "What is the tracking page for my {p} shipment?", "How can I follow where my {p} package is?"),
    ("What is the battery life of the {p}?", "How long does the {p} battery last on a charge?",
     "How many hours can the {p} run on battery?", "What runtime does a full charge give the {p}?"),
    ("How do I factory reset the {p}?", "What are the steps to restore the {p} to factory settings?",
     "I need to wipe my {p} back to defaults, how?", "How can I reset the {p} to how it came out of the box?"),
    ("Can I change the payment method for my {p} order?", "How do I pay for the {p} order with a different card?",
     "I want to switch the card used for my {p} purchase.", "Where do I update payment details on the {p} order?"),
    ("Why is my {p} making a loud noise?", "My {p} is noisy, what is wrong with it?",
     "The {p} started making a strange sound, what should I check?", "What causes the {p} to be so loud?"),
    ("How do I register my {p} for support?", "Where do I sign up my {p} to get support?",
     "What is the product registration process for the {p}?", "How can I add my {p} to my account for service?"),
]

_ADJ = ["Aurora", "Nimbus", "Atlas", "Zephyr", "Vertex", "Lumen", "Cobalt", "Orion", "Pixel", "Summit",
        "Harbor", "Maple", "Quartz", "Falcon", "Willow", "Ember", "Glacier", "Juniper", "Mosaic", "Tundra",
        "Beacon", "Cascade", "Delta", "Everest", "Fjord"]
_NOUN = ["router", "blender", "headphones", "smartwatch", "vacuum", "thermostat", "camera", "e-bike",
         "espresso machine", "air purifier", "keyboard", "speaker", "tablet", "drone", "projector",
         "electric toothbrush", "baby monitor", "sewing machine", "rice cooker", "lawn mower"]
# A product line's models ("Aurora router Pro"): more products of the same frames, for a cache of
# 100,000 questions. Each is a name of its own, so the veto keeps them apart like any two products.
_SERIES = ["Pro", "Mini", "Max", "Plus", "Lite", "Air", "Ultra", "Neo", "Go"]
PRODUCTS = [f"{a} {n}" for a in _ADJ for n in _NOUN]  # 500: the first 10,000 questions
PRODUCTS += [f"{a} {n} {s}" for s in _SERIES for a in _ADJ for n in _NOUN]  # 4,500 more
BASE = 20 * 500  # the questions of the 500 base products: the default scenarios use only these


WORDINGS = 6  # 0 canonical, 1-3 rephrased, 4-5 the same words typed differently


def text(intent: int, product: int, wording: int = 0) -> str:
    if wording < len(INTENTS[intent]):
        return INTENTS[intent][wording].format(p=PRODUCTS[product])
    canonical = INTENTS[intent][0].format(p=PRODUCTS[product])
    if wording == 4:  # a greeting and thanks around it
        return f"Hi, {canonical[0].lower()}{canonical[1:]} Thanks!"
    return canonical.lower().rstrip("?.")  # typed in a hurry: lower case, no question mark


def all_questions() -> list[tuple[int, int]]:
    """Every (intent, product): first the 10,000 of the base products, shuffled with a fixed seed,
    then the 90,000 of their series models, shuffled too (a fill of more than 10,000 reaches them)."""
    base = [(i, p) for i in range(len(INTENTS)) for p in range(500)]
    random.Random(7).shuffle(base)
    series = [(i, p) for i in range(len(INTENTS)) for p in range(500, len(PRODUCTS))]
    random.Random(8).shuffle(series)
    return base + series


def index() -> dict[str, tuple[int, int]]:
    """Every wording's text -> its question."""
    return {text(i, p, w): (i, p) for i in range(len(INTENTS)) for p in range(len(PRODUCTS))
            for w in range(WORDINGS)}


def zipf_ranks(n: int, s: float, rng: random.Random, count: int) -> list[int]:
    weights = [1.0 / (k + 1) ** s for k in range(n)]
    return rng.choices(range(n), weights=weights, k=count)
