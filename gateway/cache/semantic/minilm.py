"""all-MiniLM-L6-v2 without torch: its 6-layer BERT as an ONNX graph run by ONNX Runtime, built at
load time from the model directory's `model.safetensors` (no export step, no torch, no network),
tokenised by the `tokenizers` library from its `tokenizer.json`.

It computes what sentence-transformers computes for this model (modules.json: Transformer, mean
pooling over the attention mask, Normalize; max_seq_length 256): cosine >= 0.99999 to its vectors
on English and other text. Measured on a 2-core machine, one thread each: 3.4 ms per question
against 9 ms for sentence-transformers + torch, 35 ms against 70 ms for 16 questions, and a
gateway process of 267 MiB against 580 once the model is loaded (bench/embed_probe.py).

Blocking and not thread-safe (the tokenizer): call it from one worker thread.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from cachetools import LRUCache

_MAX_TOKENS = 256  # sentence_bert_config.json's max_seq_length: longer texts are truncated
_OPSET = 17        # LayerNormalization is a standard op from 17 on


def _bert_graph(weights: dict[str, np.ndarray], config: dict[str, Any]) -> Any:
    """The BERT encoder plus mean pooling as an ONNX model, weights inlined as initializers.

    Inputs: input_ids and attention_mask (batch, length) int64, positions (length,) int64.
    Output: pooled (batch, hidden) float32, the masked mean of the last hidden states.
    ONNX Runtime fuses the plain ops used here (LayerNorm + residual, bias + GELU) when it loads
    the graph.
    """
    from onnx import TensorProto, helper, numpy_helper

    hidden = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    head_dim = hidden // heads
    eps = float(config.get("layer_norm_eps", 1e-12))
    prefix = "bert." if "bert.embeddings.word_embeddings.weight" in weights else ""
    inits: list[Any] = []
    nodes: list[Any] = []

    def const(name: str, array: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(array if array.flags.c_contiguous else array.copy(), name))
        return name

    def w(name: str) -> np.ndarray:
        return weights[prefix + name].astype(np.float32, copy=False)

    def node(op: str, inputs: list[str], name: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def linear(x: str, weight: np.ndarray, bias: np.ndarray, name: str) -> str:
        # torch's Linear keeps (out, in); MatMul wants (in, out): transposed once, here.
        y = node("MatMul", [x, const(name + ".w", weight.T)], name + ".mm")
        return node("Add", [y, const(name + ".b", bias)], name)

    def layer_norm(x: str, name: str, key: str) -> str:
        return node("LayerNormalization", [x, const(name + ".g", w(key + ".weight")),
                                           const(name + ".beta", w(key + ".bias"))], name, axis=-1, epsilon=eps)

    # Embeddings: token type 0 for every token (one text, no pair) is folded into the positions.
    words = node("Gather", [const("word", w("embeddings.word_embeddings.weight")), "input_ids"], "words")
    table = w("embeddings.position_embeddings.weight") + w("embeddings.token_type_embeddings.weight")[0]
    positions = node("Gather", [const("pos", table), "positions"], "pos_emb")
    x = layer_norm(node("Add", [words, positions], "emb"), "emb_ln", "embeddings.LayerNorm")

    # Padding keys get -10000 added to their scores (what BERT does), then softmax ignores them.
    maskf = node("Cast", ["attention_mask"], "maskf", to=TensorProto.FLOAT)
    bias = node("Mul", [node("Sub", [const("one", np.array(1.0, np.float32)), maskf], "inv_mask"),
                        const("neg", np.array(-10000.0, np.float32))], "mask_bias0")
    bias = node("Unsqueeze", [bias, const("axes12", np.array([1, 2], np.int64))], "mask_bias")
    split_shape = const("split_shape", np.array([0, 0, 3, heads, head_dim], np.int64))
    merge_shape = const("merge_shape", np.array([0, 0, hidden], np.int64))
    scale = np.float32(1 / np.sqrt(head_dim))
    sqrt_half = const("sqrt_half", np.array(1 / np.sqrt(2), np.float32))
    half = const("half", np.array(0.5, np.float32))
    one = "one"
    for i in range(int(config["num_hidden_layers"])):
        p, n = f"encoder.layer.{i}.", f"l{i}"
        # Q, K and V in one GEMM; the 1/sqrt(head_dim) of the scores is folded into Q.
        qkv_w = np.concatenate([w(p + "attention.self.query.weight") * scale, w(p + "attention.self.key.weight"),
                                w(p + "attention.self.value.weight")])
        qkv_b = np.concatenate([w(p + "attention.self.query.bias") * scale, w(p + "attention.self.key.bias"),
                                w(p + "attention.self.value.bias")])
        qkv = node("Reshape", [linear(x, qkv_w, qkv_b, n + ".qkv"), split_shape], n + ".qkv5")
        qkv = node("Transpose", [qkv], n + ".qkvT", perm=[2, 0, 3, 1, 4])  # (3, batch, heads, length, head_dim)
        q, k, v = (node("Gather", [qkv, const(f"{n}.i{j}", np.array(j, np.int64))], f"{n}.{c}", axis=0)
                   for j, c in enumerate("qkv"))
        scores = node("MatMul", [q, node("Transpose", [k], n + ".kT", perm=[0, 1, 3, 2])], n + ".scores")
        probs = node("Softmax", [node("Add", [scores, bias], n + ".masked")], n + ".probs", axis=-1)
        context = node("Transpose", [node("MatMul", [probs, v], n + ".ctx")], n + ".ctxT", perm=[0, 2, 1, 3])
        context = node("Reshape", [context, merge_shape], n + ".ctx3")
        attended = linear(context, w(p + "attention.output.dense.weight"), w(p + "attention.output.dense.bias"), n + ".o")
        x = layer_norm(node("Add", [attended, x], n + ".res1"), n + ".ln1", p + "attention.output.LayerNorm")
        h = linear(x, w(p + "intermediate.dense.weight"), w(p + "intermediate.dense.bias"), n + ".i")
        # The exact (erf) GELU of BERT: x * 0.5 * (1 + erf(x / sqrt 2)).
        erf = node("Erf", [node("Mul", [h, sqrt_half], n + ".hs")], n + ".erf")
        h = node("Mul", [node("Mul", [h, node("Add", [erf, one], n + ".erf1")], n + ".hg"), half], n + ".gelu")
        out = linear(h, w(p + "output.dense.weight"), w(p + "output.dense.bias"), n + ".f")
        x = layer_norm(node("Add", [out, x], n + ".res2"), n + ".ln2", p + "output.LayerNorm")

    mask3 = node("Unsqueeze", [maskf, const("axis2", np.array([2], np.int64))], "mask3")
    axis1 = const("axis1", np.array([1], np.int64))
    total = node("ReduceSum", [node("Mul", [x, mask3], "masked_h"), axis1], "sum_h", keepdims=0)
    count = node("ReduceSum", [mask3, axis1], "count", keepdims=0)
    node("Div", [total, count], "pooled")

    graph = helper.make_graph(
        nodes, "minilm",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "length"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "length"]),
         helper.make_tensor_value_info("positions", TensorProto.INT64, ["length"])],
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", hidden])],
        inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)], producer_name="llm-gateway")


def _release_freed_memory() -> None:
    """Hand the heap that loading freed back to the system (glibc keeps it otherwise, and the
    process would look 200 MB bigger than it is)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to trim


class MiniLM:
    """A BERT sentence encoder with mean pooling (sentence-transformers layout), on ONNX Runtime."""

    def __init__(self, model_dir: str | Path, threads: int = 1):
        import onnxruntime
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        model_dir = Path(model_dir)
        config = json.loads((model_dir / "config.json").read_text())
        if config.get("model_type") != "bert" or config.get("hidden_act") != "gelu":
            raise ValueError(f"{model_dir}: not a BERT model with GELU")
        pooling = model_dir / "1_Pooling" / "config.json"
        if pooling.exists() and not json.loads(pooling.read_text()).get("pooling_mode_mean_tokens"):
            raise ValueError(f"{model_dir}: this encoder does mean pooling only")
        self.dim = int(config["hidden_size"])

        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(min(_MAX_TOKENS, int(config["max_position_embeddings"])))
        self.unk_id = self.tokenizer.token_to_id("[UNK]")
        self._ids: LRUCache[str, list[int]] = LRUCache(maxsize=4096)

        options = onnxruntime.SessionOptions()
        # One thread: the event loop needs the other core, and on a shared 2-core machine a
        # second intra-op thread made the tail latency worse, not better.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Through a file, not bytes: a session made from bytes keeps them (90 MB) for its lifetime.
        with tempfile.TemporaryDirectory(prefix="minilm-onnx-") as tmp:
            path = Path(tmp) / "model.onnx"
            path.write_bytes(_bert_graph(load_file(str(model_dir / "model.safetensors")), config).SerializeToString())
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        _release_freed_memory()  # the weights were read and serialised once: ~250 MB of heap

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids with [CLS] and [SEP], truncated as sentence-transformers truncates.

        A batch is asked for its unknown shares and then encoded: its ids are kept (by text, a
        few thousand) so that it is tokenised once, not twice."""
        todo = [t for t in dict.fromkeys(texts) if t not in self._ids]
        for text, encoding in zip(todo, self.tokenizer.encode_batch(todo)):
            self._ids[text] = encoding.ids
        return [self._ids[t] for t in texts]

    def unknown_shares(self, texts: Sequence[str]) -> list[float]:
        """Per text, the share of its tokens (without [CLS]/[SEP]) that are [UNK]."""
        shares = []
        for ids in self.tokenize(texts):
            inner = len(ids) - 2
            shares.append(ids.count(self.unk_id) / inner if inner > 0 else 0.0)
        return shares

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors, one float32 row per text."""
        batch = self.tokenize(texts)
        longest = max(map(len, batch))
        ids = np.zeros((len(batch), longest), dtype=np.int64)
        mask = np.zeros((len(batch), longest), dtype=np.int64)
        for row, tokens in enumerate(batch):
            ids[row, :len(tokens)] = tokens
            mask[row, :len(tokens)] = 1
        pooled = self.session.run(None, {"input_ids": ids, "attention_mask": mask,
                                         "positions": np.arange(longest, dtype=np.int64)})[0]
        pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return pooled
