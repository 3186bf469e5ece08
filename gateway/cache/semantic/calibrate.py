"""Calibration: how often a served semantic hit is right, on labelled pairs of questions.

Each pair is (stored question, incoming question, same answer or not). A pair is *served* when
the similarity reaches the threshold and the verification of the mode passes:

- embedding: similarity alone (what most semantic caches do);
- veto: similarity, then the rule veto;
- judge: similarity, the rule veto, then the judge.

precision = right served hits / served hits (1 - precision is the share of wrong answers served);
recall = served paraphrases / all paraphrases (the share of reusable answers actually reused).
The evaluation set lives in tests/data/semantic_eval.jsonl; scripts/calibrate_semantic.py prints
the sweep, and a test keeps the held-out precision of the default threshold from regressing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from .embedders import Embedder, LocalEmbedder
from .veto import veto

MODES = ("embedding", "veto", "judge")


@dataclass(frozen=True)
class Pair:
    stored: str
    incoming: str
    same: bool
    lang: str        # en | zh
    kind: str        # paraphrase | near_miss | unrelated
    twist: str | None  # near misses: word | entity | number | negation | direction | kind | intent | attribute
    split: str       # dev (the veto was tuned on it) | test (held out)
    domain: str = "support"  # support | general | mixed | catalogue (one frame, another product or intent)


def load_pairs(path: str | Path) -> list[Pair]:
    pairs = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                pairs.append(Pair(row["a"], row["b"], bool(row["same"]), row["lang"], row["kind"],
                                  row.get("twist"), row["split"], row.get("domain", "support")))
    return pairs


UNREADABLE = float("-inf")  # the similarity of a pair the embedder cannot read: never served


async def embed_texts(texts: Iterable[str], embedder: Embedder, batch: int = 64) -> dict[str, list[float]]:
    """A vector for every distinct text the embedder can read (the cache skips the others)."""
    todo = sorted(set(texts))
    if isinstance(embedder, LocalEmbedder):
        todo = [t for t, ok in zip(todo, await embedder.readable(todo)) if ok]
    vectors: dict[str, list[float]] = {}
    for i in range(0, len(todo), batch):
        chunk = todo[i:i + batch]
        for text, vector in zip(chunk, await embedder.embed(chunk)):
            vectors[text] = vector
    return vectors


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    return sum(x * y for x, y in zip(a, b))  # the vectors are unit length


def pair_similarities(pairs: Sequence[Pair], vectors: Mapping[str, list[float]]) -> list[float]:
    return [cosine(vectors[p.stored], vectors[p.incoming]) if p.stored in vectors and p.incoming in vectors
            else UNREADABLE for p in pairs]


async def similarities(pairs: Sequence[Pair], embedder: Embedder) -> list[float]:
    """Cosine similarity of each pair, embedding every distinct text once."""
    return pair_similarities(pairs, await embed_texts((t for p in pairs for t in (p.stored, p.incoming)), embedder))


def vetoes(pairs: Iterable[Pair]) -> list[str | None]:
    return [veto(p.stored, p.incoming) for p in pairs]


@dataclass(frozen=True)
class Score:
    threshold: float
    served: int
    right: int
    paraphrases: int
    reused: int

    @property
    def precision(self) -> float | None:
        return self.right / self.served if self.served else None

    @property
    def recall(self) -> float:
        return self.reused / self.paraphrases if self.paraphrases else 0.0


def score(pairs: Sequence[Pair], sims: Sequence[float], reasons: Sequence[str | None], mode: str,
          threshold: float, verdicts: Mapping[int, bool] | None = None) -> Score:
    """`verdicts` maps a pair's index to the judge's verdict; mode "judge" needs one for every pair
    that passes the threshold and the veto."""
    served = right = reused = 0
    for i, (pair, sim, reason) in enumerate(zip(pairs, sims, reasons)):
        if sim < threshold:
            continue
        if mode in ("veto", "judge") and reason is not None:
            continue
        if mode == "judge":
            if verdicts is None or i not in verdicts:
                raise ValueError(f"no judge verdict for pair {i}")
            if not verdicts[i]:
                continue
        served += 1
        right += pair.same
        reused += pair.same
    return Score(threshold, served, right, sum(p.same for p in pairs), reused)


def sweep(pairs: Sequence[Pair], sims: Sequence[float], reasons: Sequence[str | None], mode: str,
          thresholds: Iterable[float], verdicts: Mapping[int, bool] | None = None) -> list[Score]:
    return [score(pairs, sims, reasons, mode, t, verdicts) for t in thresholds]


def select(pairs: Sequence[Pair], *, lang: str | None = None, split: str | None = None,
           domain: str | None = None) -> list[int]:
    return [i for i, p in enumerate(pairs) if (lang is None or p.lang == lang) and (split is None or p.split == split)
            and (domain is None or p.domain == domain)]


# ---- pool mode: one cache holding every stored question ---------------------------------------


@dataclass(frozen=True)
class PoolScore:
    threshold: float
    served: int
    right: int
    paraphrase_queries: int
    reused: int           # paraphrase queries served a right answer

    @property
    def precision(self) -> float | None:
        return self.right / self.served if self.served else None

    @property
    def recall(self) -> float:
        return self.reused / self.paraphrase_queries if self.paraphrase_queries else 0.0


def pool_scores(pairs: Sequence[Pair], vectors: Mapping[str, list[float]], queries: Sequence[int],
                thresholds: Iterable[float], top_k: int = 5) -> list[PoolScore]:
    """Closer to a live cache than pairs: every stored question of the pairs' language sits in one
    partition, and each query in `queries` (pair indexes) is served the best candidate (top-k above
    the threshold) that survives the veto. A hit is right only if the pair (served question, query)
    is labelled as needing the same answer; unlabelled combinations count as wrong."""
    same = {(p.stored, p.incoming) for p in pairs if p.same}
    stored = sorted({p.stored for p in pairs if p.stored in vectors})
    vetoed: dict[tuple[str, str], bool] = {}
    ranked: dict[str, list[tuple[float, str]]] = {}
    for i in queries:
        q = pairs[i].incoming
        if q in vectors and q not in ranked:
            sims = sorted(((cosine(vectors[s], vectors[q]), s) for s in stored if s != q), reverse=True)
            ranked[q] = sims[:top_k]
    out = []
    for t in thresholds:
        served = right = reused = 0
        for i in queries:
            pair = pairs[i]
            for sim, s in ranked.get(pair.incoming, []):
                if sim < t:
                    break
                key = (s, pair.incoming)
                if key not in vetoed:
                    vetoed[key] = veto(s, pair.incoming) is not None
                if vetoed[key]:
                    continue
                served += 1
                ok = key in same
                right += ok
                reused += ok and pair.same
                break
        out.append(PoolScore(t, served, right, sum(1 for i in queries if pairs[i].same), reused))
    return out
