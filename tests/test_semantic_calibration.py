"""The published calibration must hold: on the held-out half of the evaluation set, the default
threshold with the rule veto serves right answers at least 97% of the time (99% on the catalogue
part) (README "Semantic
cache"). A change to the veto or the default threshold that breaks that fails here."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from gateway.cache.semantic.calibrate import (
    embed_texts, load_pairs, pair_similarities, pool_scores, score, select, vetoes,
)
from gateway.cache.semantic.embedders import LocalEmbedder
from gateway.config import SemanticCacheConfig

DATA = Path(__file__).parent / "data" / "semantic_eval.jsonl"
THRESHOLD = SemanticCacheConfig().threshold   # all-MiniLM-L6-v2's


def embedded(pairs: list[Any], model: str) -> Any:
    """A vector for each text of `pairs`, by the local `model`, embedded once (nothing on disk)."""
    async def embed() -> Any:
        embedder = LocalEmbedder(model)
        await embedder.start()
        try:
            return await embed_texts((t for p in pairs for t in (p.stored, p.incoming)), embedder)
        finally:
            await embedder.close()

    return asyncio.run(embed())


@pytest.fixture(scope="module")
def english() -> Any:
    """The English pairs and their all-MiniLM-L6-v2 vectors."""
    pairs = [p for p in load_pairs(DATA) if p.lang == "en"]
    return pairs, embedded(pairs, "all-MiniLM-L6-v2")


def test_the_set_is_large_varied_and_split():
    pairs = load_pairs(DATA)
    assert len(pairs) >= 500
    kinds = {(p.lang, p.kind) for p in pairs}
    assert {("en", "paraphrase"), ("en", "near_miss"), ("en", "related"), ("en", "unrelated"),
            ("zh", "paraphrase"), ("zh", "near_miss"), ("zh", "related"), ("zh", "unrelated")} <= kinds
    assert {p.twist for p in pairs if p.kind == "near_miss"} == {"word", "entity", "number", "negation", "direction",
                                                                 "kind", "intent", "attribute"}
    catalogue = [p for p in pairs if p.domain == "catalogue"]
    assert len(catalogue) >= 400
    assert {(p.lang, p.split, p.twist) for p in catalogue if not p.same} >= {
        (lang, split, twist) for lang in ("en", "zh") for split in ("dev", "test")
        for twist in ("entity", "kind", "intent", "attribute")}
    # A stored question and all its variants sit in one split, so held-out questions are new.
    split_of: dict[str, set[str]] = {}
    for p in pairs:
        split_of.setdefault(p.stored, set()).add(p.split)
    assert all(len(s) == 1 for s in split_of.values())


def test_held_out_precision_with_the_veto_at_the_default_threshold(english):
    pairs, vectors = english
    held_out = select(pairs, split="test")
    sub = [pairs[i] for i in held_out]
    sims = pair_similarities(sub, vectors)
    reasons = vetoes(sub)
    old = [i for i, p in enumerate(sub) if p.domain != "catalogue"]
    alone = score([sub[i] for i in old], [sims[i] for i in old], [reasons[i] for i in old], "embedding", THRESHOLD)
    vetted = score(sub, sims, reasons, "veto", THRESHOLD)
    assert alone.precision < 0.6          # the set is adversarial: similarity alone is wrong half the time
    assert vetted.precision >= 0.97       # the published target (measured 0.979)
    assert vetted.recall >= 0.55          # and the veto still lets real paraphrases through (0.551)
    assert vetted.served >= 90            # (94)


def test_held_out_older_domains_keep_their_recall(english):
    # Support and general questions reworded freely: the slot rules must not refuse them all.
    pairs, vectors = english
    sub = [p for p in pairs if p.split == "test" and p.domain != "catalogue"]
    vetted = score(sub, pair_similarities(sub, vectors), vetoes(sub), "veto", THRESHOLD)
    assert vetted.precision >= 0.94       # measured 0.943 (33 of 35); before the catalogue rules 0.947
    assert vetted.recall >= 0.37          # measured 0.371 (33 of 89); before the catalogue rules 0.404


def test_held_out_precision_in_one_shared_partition(english):
    # Every stored question in one partition: each query is served its best surviving candidate.
    pairs, vectors = english
    [pool] = pool_scores(pairs, vectors, select(pairs, split="test"), [THRESHOLD])
    assert pool.precision >= 0.97         # measured 0.980
    assert pool.recall >= 0.54            # measured 0.545


def test_held_out_catalogue_precision(english):
    # One frame, another product, product kind, intent or attribute: a served hit must still be the
    # answer to the question asked.
    pairs, vectors = english
    cat = [p for p in pairs if p.domain == "catalogue"]
    sub = [cat[i] for i in select(cat, split="test")]
    vetted = score(sub, pair_similarities(sub, vectors), vetoes(sub), "veto", THRESHOLD)
    assert vetted.precision >= 0.99       # measured 1.000
    assert vetted.recall >= 0.75          # measured 0.756
    [pool] = pool_scores(cat, vectors, select(cat, split="test"), [THRESHOLD])
    assert pool.precision >= 0.99
    assert pool.recall >= 0.75


def test_held_out_chinese_catalogue_veto_alone():
    # No embedder here reads Chinese: the veto alone must refuse every held-out near miss and keep
    # most paraphrases.
    pairs = [p for p in load_pairs(DATA) if p.lang == "zh" and p.domain == "catalogue" and p.split == "test"]
    reasons = vetoes(pairs)
    let_through = [p for p, r in zip(pairs, reasons) if r is None and not p.same]
    kept = [r is None for p, r in zip(pairs, reasons) if p.same]
    assert let_through == []
    assert sum(kept) / len(kept) >= 0.90  # measured 48 of 51


def test_held_out_chinese_older_pairs_veto_alone():
    pairs = [p for p in load_pairs(DATA) if p.lang == "zh" and p.domain != "catalogue" and p.split == "test"]
    reasons = vetoes(pairs)
    let_through = [p for p, r in zip(pairs, reasons) if r is None and p.kind == "near_miss"]
    kept = [r is None for p, r in zip(pairs, reasons) if p.same]
    assert len(let_through) <= 5          # measured 5 of 32 (before the catalogue rules: 2)
    assert sum(kept) / len(kept) >= 0.70  # measured 17 of 24


@pytest.fixture(scope="module")
def multilingual() -> Any:
    """Every pair, embedded by the bundled multilingual model (USE Multilingual v3)."""
    pairs = load_pairs(DATA)
    return pairs, embedded(pairs, "multilingual")


def test_held_out_chinese_with_the_multilingual_embedder(multilingual):
    # Its default threshold (0.80) was picked on the dev half: the first at which the veto's
    # precision is 1.00 there, for both languages.
    pairs, vectors = multilingual
    threshold = SemanticCacheConfig(embedder={"kind": "local", "model": "multilingual"}).threshold
    assert threshold == 0.80
    for lang, precision, recall in (("zh", 0.99, 0.64), ("en", 0.97, 0.40)):
        sub = [p for p in pairs if p.lang == lang and p.split == "test"]
        vetted = score(sub, pair_similarities(sub, vectors), vetoes(sub), "veto", threshold)
        assert vetted.precision >= precision, lang   # measured zh 1.000, en 0.971
        assert vetted.recall >= recall, lang         # measured zh 0.653, en 0.407
