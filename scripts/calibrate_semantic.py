#!/usr/bin/env python
"""Sweep the semantic cache's threshold on the labelled evaluation set and print, per language,
the served-hit precision and paraphrase recall of each mode: embedding alone, with the rule veto,
and with a judge.

    .venv/bin/python scripts/calibrate_semantic.py                      # local all-MiniLM-L6-v2
    .venv/bin/python scripts/calibrate_semantic.py --show-errors dev    # what the veto gets wrong
    .venv/bin/python scripts/calibrate_semantic.py \\
        --embedder-url https://api.openai.com/v1 --embedder-model text-embedding-3-small \\
        --judge-url https://api.openai.com/v1 --judge-model gpt-4o-mini  # key from $OPENAI_API_KEY

The judge column needs a chat model behind an OpenAI-compatible URL; without one it is left out
(it is never simulated from the labels).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.cache.semantic.calibrate import (  # noqa: E402
    MODES, Pair, PoolScore, Score, embed_texts, load_pairs, pair_similarities, pool_scores, score, select, vetoes,
)
from gateway.cache.semantic.embedders import Embedder, LocalEmbedder, OpenAIEmbedder  # noqa: E402
from gateway.cache.semantic.judge import LLMJudge  # noqa: E402
from gateway.config import ModelConfig, ProviderConfig, SemanticCacheConfig  # noqa: E402
from gateway.runtime import Target  # noqa: E402
from gateway.upstream.client import Provider  # noqa: E402



def remote_target(url: str, model: str, key: str | None) -> Target:
    provider = Provider("calibration", ProviderConfig(base_url=url, api_key=key, timeout_s=60))
    provider.open()
    return Target(model, model, provider, ModelConfig(provider="calibration"))


def thresholds(spec: str) -> list[float]:
    start, stop, step = (float(x) for x in spec.split(":"))
    out, t = [], start
    while t <= stop + 1e-9:
        out.append(round(t, 4))
        t += step
    return out


def cell(s: Score | PoolScore) -> str:
    p = f"{s.precision:.3f}" if s.precision is not None else "  -  "
    return f"{p} {s.recall:.3f} {s.served:4d}"


def print_table(title: str, pairs: list[Pair], sims: list[float], reasons: list, verdicts: dict[int, bool] | None,
                idx: list[int], ts: list[float]) -> None:
    sub = [pairs[i] for i in idx]
    ssims = [sims[i] for i in idx]
    sreasons = [reasons[i] for i in idx]
    sverdicts = {j: verdicts[i] for j, i in enumerate(idx) if i in verdicts} if verdicts is not None else None
    modes = [m for m in MODES if m != "judge" or sverdicts is not None]
    paraphrases = sum(p.same for p in sub)
    print(f"\n{title}: {len(sub)} pairs, {paraphrases} paraphrases, {len(sub) - paraphrases} near misses and unrelated")
    print("threshold  " + "  ".join(f"{m + ' (P R n)':<20}" for m in modes))
    for t in ts:
        row = [cell(score(sub, ssims, sreasons, m, t, sverdicts)) for m in modes]
        print(f"  {t:.2f}     " + "  ".join(f"{c:<20}" for c in row))


def print_veto_alone(pairs: list[Pair], reasons: list) -> None:
    """What the veto does regardless of the embedder: the share of each kind of pair it lets through."""
    print("\nThe rule veto alone, before any threshold (share of pairs it lets through):")
    groups: dict[tuple[str, str], list[bool]] = {}
    for p, reason in zip(pairs, reasons):
        kind = p.kind if p.kind != "near_miss" else f"near_miss:{p.twist}"
        groups.setdefault((p.lang, kind), []).append(reason is None)
    for (lang, kind), passed in sorted(groups.items()):
        print(f"  {lang} {kind:<20} {sum(passed):3d}/{len(passed):<3d} = {sum(passed) / len(passed):.2f}")


def print_errors(pairs: list[Pair], sims: list[float], reasons: list, idx: list[int], threshold: float) -> None:
    print(f"\nVeto errors at {threshold:.2f}:")
    for i in idx:
        p, sim, reason = pairs[i], sims[i], reasons[i]
        if sim < threshold:
            continue
        if reason is None and not p.same:
            print(f"  SERVED WRONG  {sim:.3f} [{p.twist or p.kind}] {p.stored!r} -> {p.incoming!r}")
        elif reason is not None and p.same:
            print(f"  vetoed para   {sim:.3f} ({reason}) {p.stored!r} -> {p.incoming!r}")


async def judge_all(pairs: list[Pair], sims: list[float], reasons: list, floor: float, judge: LLMJudge) -> dict[int, bool]:
    """Ask the judge about every pair that could be served at a threshold >= floor."""
    verdicts: dict[int, bool] = {}
    todo = [i for i, (s, r) in enumerate(zip(sims, reasons)) if s >= floor and r is None]
    sem = asyncio.Semaphore(8)

    async def one(i: int) -> None:
        async with sem:
            verdicts[i] = (await judge.same_answer(pairs[i].stored, pairs[i].incoming)).same

    await asyncio.gather(*(one(i) for i in todo))
    for i, (s, r) in enumerate(zip(sims, reasons)):
        verdicts.setdefault(i, False)  # never reaches the judge: the threshold or the veto stops it
    return verdicts


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT / "tests/data/semantic_eval.jsonl"))
    parser.add_argument("--local-model", default="all-MiniLM-L6-v2")
    parser.add_argument("--embedder-url", help="an OpenAI-compatible base URL (instead of the local model)")
    parser.add_argument("--embedder-model", default="text-embedding-3-small")
    parser.add_argument("--judge-url", help="an OpenAI-compatible base URL serving --judge-model")
    parser.add_argument("--judge-model", default="gpt-4o-mini")
    parser.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY"))
    parser.add_argument("--thresholds", default="0.50:0.96:0.02", help="start:stop:step")
    parser.add_argument("--threshold", type=float, default=None,
                        help="the threshold to report held-out numbers for (default: the embedder's calibrated default)")
    parser.add_argument("--show-errors", choices=["dev", "test", "all"], help="list the veto's mistakes at --threshold")
    args = parser.parse_args()
    if args.threshold is None:  # what the gateway uses when `threshold` is not set
        embedder_config = ({"kind": "openai", "model": args.embedder_model} if args.embedder_url
                           else {"kind": "local", "model": args.local_model})
        args.threshold = SemanticCacheConfig(embedder=embedder_config).threshold

    pairs = load_pairs(args.data)
    embedder: Embedder
    if args.embedder_url:
        embedder = OpenAIEmbedder(remote_target(args.embedder_url, args.embedder_model, args.api_key))
    else:
        embedder = LocalEmbedder(args.local_model)
    started = time.perf_counter()
    await embedder.start()
    vectors = await embed_texts((t for p in pairs for t in (p.stored, p.incoming)), embedder)
    sims = pair_similarities(pairs, vectors)
    reasons = vetoes(pairs)
    print(f"embedder {embedder.name}: {len(pairs)} pairs embedded and vetoed in {time.perf_counter() - started:.1f}s")

    ts = thresholds(args.thresholds)
    verdicts = None
    if args.judge_url:
        judge = LLMJudge(remote_target(args.judge_url, args.judge_model, args.api_key))
        verdicts = await judge_all(pairs, sims, reasons, min(ts + [args.threshold]), judge)
        await judge.target.provider.close()
    else:
        print("judge: not measured (no --judge-url); the judge column is left out, never simulated")

    print_veto_alone(pairs, reasons)
    for lang in ("en", "zh"):
        idx = select(pairs, lang=lang)
        unreadable = sum(1 for i in idx if sims[i] == float("-inf"))
        if unreadable == len(idx):
            print(f"\n[{lang}] {embedder.name} cannot read any of the {len(idx)} pairs: the cache skips "
                  "such text (never a hit); use a multilingual embedder")
            continue
        if unreadable:
            print(f"\n[{lang}] {unreadable} of {len(idx)} pairs hold text {embedder.name} cannot read (never served)")
        for split, what in (("dev", "the split the veto was tuned on"), ("test", "held out")):
            print_table(f"[{lang}] {split}, {what}", pairs, sims, reasons, verdicts,
                        select(pairs, lang=lang, split=split), ts)
        print(f"\n[{lang}] pool mode, rule veto on: every stored question in one partition, each query served "
              "its best surviving candidate (top 5)")
        print("threshold  dev (P R n)           test (P R n)")
        pools = {split: pool_scores([pairs[i] for i in idx], vectors,
                                    [j for j, i in enumerate(idx) if pairs[i].split == split], ts)
                 for split in ("dev", "test")}
        for k, t in enumerate(ts):
            print(f"  {t:.2f}     " + "  ".join(f"{cell(pools[split][k]):<20}" for split in ("dev", "test")))
    parts = (("catalogue", lambda p: p.domain == "catalogue",
              "the catalogue part alone (one frame, another product, kind, intent or attribute)"),
             ("older", lambda p: p.domain != "catalogue", "the older support and general pairs alone"))
    for part, in_part, what in parts:
        print(f"\n[en] {what} at {args.threshold:.2f}: pairs, then pool (its stored questions in one partition)")
        sub_all = [p for p in pairs if p.lang == "en" and in_part(p)]
        for split in ("dev", "test"):
            idx = [i for i in select(pairs, lang="en", split=split) if in_part(pairs[i])]
            if not idx:
                continue
            sub = [pairs[i] for i in idx]
            rows = [f"{m}: {cell(score(sub, [sims[i] for i in idx], [reasons[i] for i in idx], m, args.threshold))}"
                    for m in ("embedding", "veto")]
            [pool] = pool_scores(sub_all, vectors, [j for j, p in enumerate(sub_all) if p.split == split],
                                 [args.threshold])
            print(f"  en {split:<4} ({len(idx)} pairs)  " + "   ".join(rows) + f"   pool: {cell(pool)}")
    for part, in_part, what in parts:
        print(f"\n[zh] the rule veto alone on the {part} pairs (no embedder reads Chinese here):")
        for split in ("dev", "test"):
            sub = [(p, r) for p, r in zip(pairs, reasons) if p.lang == "zh" and in_part(p) and p.split == split]
            if sub:
                para = [r is None for p, r in sub if p.same]
                miss = [r is None for p, r in sub if p.kind == "near_miss"]
                print(f"  zh {split:<4} near misses let through {sum(miss)}/{len(miss)}, "
                      f"paraphrases kept {sum(para)}/{len(para)} = {sum(para) / max(1, len(para)):.2f}")
    print(f"\nAt threshold {args.threshold:.2f}, by split (P = precision, R = recall, n = served):")
    for lang in ("en", "zh"):
        for split in ("dev", "test"):
            idx = select(pairs, lang=lang, split=split)
            sub = [pairs[i] for i in idx]
            row = []
            for mode in MODES:
                if mode == "judge" and verdicts is None:
                    continue
                v = {j: verdicts[i] for j, i in enumerate(idx)} if verdicts is not None else None
                s = score(sub, [sims[i] for i in idx], [reasons[i] for i in idx], mode, args.threshold, v)
                row.append(f"{mode}: {cell(s)}")
            print(f"  {lang} {split:<4} ({len(idx)} pairs)  " + "   ".join(row))
    if args.show_errors:
        split = None if args.show_errors == "all" else args.show_errors
        print_errors(pairs, sims, reasons, select(pairs, split=split), args.threshold)
    await embedder.close()
    if isinstance(embedder, OpenAIEmbedder):
        await embedder.target.provider.close()


if __name__ == "__main__":
    asyncio.run(main())
