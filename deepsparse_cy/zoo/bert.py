"""BERT-style encoder written the way torch.onnx exports HuggingFace's BertModel.

Owns the graph shape of the transformer models (bert-base, minilm and small test variants):
embeddings (word + position + token_type Gather, LayerNorm), the extended attention mask
(Unsqueeze -> Cast -> Sub(1, mask) -> Mul(finfo.min or -10000)), per-layer attention as
MatMul/Add/Reshape/Transpose/MatMul/Div/Add/Softmax/MatMul/Transpose/Reshape, Erf GELU, and
LayerNormalization (opset >= 17) or its ReduceMean decomposition. Shape arithmetic for the
Reshapes (Shape -> Gather -> Unsqueeze -> Concat) and the position-id Slice are kept as an
exporter writes them, so batch and sequence stay dynamic.
"""
import math
from dataclasses import dataclass, replace

import numpy as np
from onnx import TensorProto

from ._builder import GraphBuilder


@dataclass(frozen=True)
class BertConfig:
    layers: int = 12
    hidden: int = 768
    heads: int = 12
    intermediate: int = 3072
    vocab: int = 30522
    max_pos: int = 512
    type_vocab: int = 2
    opset: int = 17
    layernorm: str = "auto"          # "fused" (LayerNormalization), "decomposed" or "auto"
    mask_value: str = "finfo"        # "finfo" (torch.finfo(float32).min, HF >= 4.30) or "10000"
    pooler: bool = False
    eps: float = 1e-12
    seed: int = 0


BERT_BASE = BertConfig()
MINILM = BertConfig(layers=6, hidden=384, heads=12, intermediate=1536)
# A few-second model for quick tests: same graph, small sizes.
BERT_TINY = BertConfig(layers=2, hidden=64, heads=4, intermediate=128, vocab=1000, max_pos=128)


def bert_config(base="bert-base", **overrides):
    cfg = {"bert-base": BERT_BASE, "minilm": MINILM, "bert-tiny": BERT_TINY}[base]
    return replace(cfg, **overrides)


def _layernorm(b, x, hidden, eps, fused, prefix):
    gamma = b.normal(prefix + ".weight", (hidden,), 0.05, mean=1.0)
    beta = b.normal(prefix + ".bias", (hidden,), 0.05)
    if fused:
        return b.node("LayerNormalization", [x, gamma, beta], axis=-1, epsilon=eps,
                      name=prefix + "/LayerNormalization")
    # torch.onnx (opset < 17) form of nn.LayerNorm
    mean = b.reduce_mean(x, [-1])
    d = b.node("Sub", [x, mean])
    var = b.reduce_mean(b.node("Pow", [d, b.const(2.0, np.float32)]), [-1])
    std = b.node("Sqrt", [b.node("Add", [var, b.const(eps, np.float32)])])
    y = b.node("Div", [d, std])
    return b.node("Add", [b.node("Mul", [y, gamma]), beta])


def _linear(b, x, n_in, n_out, prefix, gain=1.0):
    # torch.onnx stores nn.Linear weights pre-transposed for MatMul: [in, out]
    w = b.given(prefix + ".weight", (n_in, n_out), transpose=True)
    if w is None:
        w = b.weight(prefix + ".weight", (n_in, n_out), n_in, gain)
    bias = b.normal(prefix + ".bias", (n_out,), 0.02)
    return b.node("Add", [b.node("MatMul", [x, w], name=prefix + "/MatMul"), bias],
                  name=prefix + "/Add")


def _gelu(b, x):
    # x * 0.5 * (1 + erf(x / sqrt(2))), in torch.onnx's node order
    e = b.node("Erf", [b.node("Div", [x, b.const(math.sqrt(2.0), np.float32)])])
    return b.node("Mul", [b.node("Mul", [x, b.node("Add", [e, b.const(1.0, np.float32)])]),
                          b.const(0.5, np.float32)])


def _dim(b, shape, i):
    return b.unsqueeze(b.node("Gather", [shape, b.const(i)], axis=0), [0])


def build_bert(cfg: BertConfig = BERT_BASE, name="bert", weights=None):
    """weights: optional {HuggingFace BertModel parameter name: array} in torch layout (Linear
    weights [out, in]), e.g. from a safetensors file with its "bert."/"0.auto_model." prefix
    stripped; every name given must be used, missing ones are drawn at random."""
    if cfg.hidden % cfg.heads:
        raise ValueError(f"hidden {cfg.hidden} not divisible by heads {cfg.heads}")
    fused = cfg.layernorm == "fused" or (cfg.layernorm == "auto" and cfg.opset >= 17)
    if fused and cfg.opset < 17:
        raise ValueError("LayerNormalization needs opset >= 17")
    b = GraphBuilder(name, opset=cfg.opset, seed=cfg.seed, weights=weights)
    H, nh = cfg.hidden, cfg.heads
    hd = H // nh
    dyn = ["batch", "sequence"]
    ids = b.input("input_ids", TensorProto.INT64, dyn)
    mask = b.input("attention_mask", TensorProto.INT64, dyn)
    tt = b.input("token_type_ids", TensorProto.INT64, dyn)

    # ---- embeddings (std 1 rows: LayerNorm right after makes the scale irrelevant) -------------
    word = b.normal("embeddings.word_embeddings.weight", (cfg.vocab, H), 1.0)
    pos = b.normal("embeddings.position_embeddings.weight", (cfg.max_pos, H), 0.5)
    tok = b.normal("embeddings.token_type_embeddings.weight", (cfg.type_vocab, H), 0.5)
    b.weights.pop("embeddings.position_ids", None)     # a buffer, always arange
    pos_ids_buf = b.init("embeddings.position_ids",
                         np.arange(cfg.max_pos, dtype=np.int64)[None, :])
    ids_shape = b.node("Shape", [ids])
    seq = b.unsqueeze(b.node("Gather", [ids_shape, b.const(1)], axis=0), [0])
    pos_ids = b.node("Slice", [pos_ids_buf, b.const([0]), seq, b.const([1]), b.const([1])])
    e = b.node("Gather", [word, ids], name="embeddings/word_embeddings/Gather")
    e = b.node("Add", [e, b.node("Gather", [tok, tt], name="embeddings/token_type/Gather")])
    e = b.node("Add", [e, b.node("Gather", [pos, pos_ids], name="embeddings/position/Gather")])
    x = _layernorm(b, e, H, cfg.eps, fused, "embeddings.LayerNorm")

    # ---- extended attention mask: [b, 1, 1, s], 0 where attended, big negative where padded --
    m = b.unsqueeze(b.unsqueeze(mask, [1]), [2])
    m = b.node("Cast", [m], to=TensorProto.FLOAT)
    m = b.node("Sub", [b.const(1.0, np.float32), m])
    neg = float(np.finfo(np.float32).min) if cfg.mask_value == "finfo" else -10000.0
    ext_mask = b.node("Mul", [m, b.const(neg, np.float32)], name="extended_attention_mask/Mul")

    scale = b.const(math.sqrt(hd), np.float32)
    for li in range(cfg.layers):
        p = f"encoder.layer.{li}"
        # [b, s, nh, hd] target shape, computed from the runtime shape like torch's .view()
        xs = b.node("Shape", [x])
        heads_shape = b.node("Concat", [_dim(b, xs, 0), _dim(b, xs, 1), b.const([nh]),
                                        b.const([hd])], axis=0)
        q = _linear(b, x, H, H, p + ".attention.self.query")
        k = _linear(b, x, H, H, p + ".attention.self.key")
        v = _linear(b, x, H, H, p + ".attention.self.value")
        q = b.node("Transpose", [b.node("Reshape", [q, heads_shape])], perm=[0, 2, 1, 3])
        k = b.node("Transpose", [b.node("Reshape", [k, heads_shape])], perm=[0, 2, 3, 1])
        v = b.node("Transpose", [b.node("Reshape", [v, heads_shape])], perm=[0, 2, 1, 3])
        s = b.node("MatMul", [q, k], name=p + ".attention.self/MatMul_qk")
        s = b.node("Div", [s, scale])
        s = b.node("Add", [s, ext_mask])
        s = b.node("Softmax", [s], axis=-1)
        ctx = b.node("MatMul", [s, v], name=p + ".attention.self/MatMul_av")
        ctx = b.node("Transpose", [ctx], perm=[0, 2, 1, 3])
        merged_shape = b.node("Concat", [_dim(b, xs, 0), _dim(b, xs, 1), b.const([H])], axis=0)
        ctx = b.node("Reshape", [ctx, merged_shape])
        a = _linear(b, ctx, H, H, p + ".attention.output.dense")
        x = _layernorm(b, b.node("Add", [a, x]), H, cfg.eps, fused,
                       p + ".attention.output.LayerNorm")
        h = _gelu(b, _linear(b, x, H, cfg.intermediate, p + ".intermediate.dense"))
        # GELU halves the variance: sqrt(2) gain keeps the FFN output near unit scale
        o = _linear(b, h, cfg.intermediate, H, p + ".output.dense", gain=math.sqrt(2.0))
        x = _layernorm(b, b.node("Add", [o, x]), H, cfg.eps, fused, p + ".output.LayerNorm")

    x = b.identity_to(x, "last_hidden_state")
    b.output("last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", H])
    if cfg.pooler:
        first = b.node("Gather", [x, b.const(0)], axis=1)
        pooled = b.node("Tanh", [_linear(b, first, H, H, "pooler.dense")])
        b.identity_to(pooled, "pooler_output")
        b.output("pooler_output", TensorProto.FLOAT, ["batch", H])
    unused = set(b.weights) - b.used_weights
    if unused:
        raise ValueError(f"weights not used by this configuration: {sorted(unused)[:8]}")
    return b.build(doc=f"BERT-style encoder {cfg}")
