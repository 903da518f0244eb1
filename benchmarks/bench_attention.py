"""Attention kernels on transformer shapes (1 x 128 queries and keys, BERT-base 12 x 64 and
MiniLM-L6 12 x 32 heads): the float32 kernel (f32_conv, dispatched) and, where the f32_attn amx
build runs, its bf16 products on AMX tiles (DEEPSPARSE_CY_BF16_ATTENTION=1 in a model), both
writing the quantized output a QDQ transformer's attention has. Pairs with
tests/kernels/test_f32_attention.py."""
import numpy as np
import pytest

import deepsparse_cy.kernels as K
from _bench_common import interleaved_best, nthreads

SHAPES = [(12, 64), (12, 32)]                  # heads, head size
SHAPE_IDS = ["bert-base", "minilm"]
S = 128


def _inputs(h, d):
    rng = np.random.default_rng(0)
    qkv = rng.standard_normal((1, S, 3, h, d)).astype(np.float32)   # a fused Q/K/V buffer
    mask = np.broadcast_to(np.zeros((1, 1, 1, S), np.float32), (1, h, S, S))
    return qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], mask, np.empty((1, S, h, d), np.uint8)


def _call(mod, h, d):
    q, k, v, mask, out = _inputs(h, d)
    nt = nthreads()
    return lambda: mod.attention(q, k, v, mask, d ** -0.5, out, nt, (0.02, 128.0))


def _bf16():
    miss = K.missing_features("amx", "f32_attn") if ("f32_attn", "amx") in \
        {(k[0], k[1]) for k in K.KERNELS} else ["no f32_attn build"]
    return None if miss else K.load("f32_attn", "amx")


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("kind", ["f32", "bf16_amx"])
def test_attention(benchmark, shape, kind):
    mod = K.load("f32_conv") if kind == "f32" else _bf16()
    if mod is None:
        pytest.skip("no f32_attn amx build runs here (AMX-BF16)")
    benchmark(_call(mod, *shape))


def test_attention_summary(benchmark):
    """float32 kernel time / bf16-on-AMX time per shape, timed interleaved in this run."""
    bf = _bf16()
    if bf is None:
        pytest.skip("no f32_attn amx build runs here (AMX-BF16)")
    fns = {}
    for (h, d), sid in zip(SHAPES, SHAPE_IDS):
        fns[sid + "/f32"] = _call(K.load("f32_conv"), h, d)
        fns[sid + "/bf16"] = _call(bf, h, d)
    best = interleaved_best(fns, warm=set(fns))
    lines = [f"threads {nthreads()}; float32 kernel: f32_conv {K.kernel_builds()['f32_conv']}"]
    for sid in SHAPE_IDS:
        f, b = best[sid + "/f32"], best[sid + "/bf16"]
        lines.append(f"{sid}: float32 {f * 1e3:.3f} ms, bf16 on AMX {b * 1e3:.3f} ms, "
                     f"{f / b:.2f}x")
        benchmark.extra_info[sid] = lines[-1]
    print("\n" + "\n".join(lines))
    benchmark.pedantic(lambda: None, rounds=1)
