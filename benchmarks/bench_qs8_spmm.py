"""Sparse INT8 (block4 / unstructured) over the project's dense INT8 GEMM, BERT-base shapes;
pairs with tests/kernels/test_qs8_spmm.py."""
import numpy as np
import pytest

import deepsparse_cy.kernels as K
from _bench_common import SHAPES, SHAPE_IDS, M, activations, weights, nthreads, interleaved_best

CASES = [("block4", 0.8), ("block4", 0.9), ("block4", 0.95), ("unstructured", 0.9),
         ("unstructured", 0.95)]


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("fmt,sparsity", CASES, ids=[f"{f}-{s}" for f, s in CASES])
def test_qs8_spmm(benchmark, shape, fmt, sparsity):
    k, n = shape
    x = activations(k)
    p = K.pack_qs8(weights(k, n, sparsity, fmt), fmt)
    s = np.full(n, 1e-3, np.float32)
    benchmark.extra_info.update(nbytes=p.nbytes, bytes_per_nnz=p.bytes_per_nnz)
    benchmark(K.qs8_matmul, x, p, None, s, np.uint8, 0, num_threads=nthreads())


def _prepared_call(x, p, s, nt, isa=None):
    """The call a compiled model makes: the layer prepared once, its output preallocated."""
    pr = K.prepare_qs8_matmul(p, None, s, np.uint8, 0, isa=isa)
    out = np.empty((x.shape[0], p.n), np.uint8)
    return lambda: pr(x, out=out, num_threads=nt)


def test_qs8_spmm_summary(benchmark):
    """Speedups over dense INT8, timed interleaved in the same run (prepared calls into a fixed
    output, as a compiled model runs them); packed bytes; auto's choice, and where it differs
    from the pattern's own format (avx512_vnni packs random patterns as block4) its speedup.
    Where dispatch runs the amx dense GEMM, the speedups are over it, and a second figure in
    [] over the vpdpbusd dense GEMM (the sparse kernel's own instruction)."""
    nt = nthreads()
    amx = K.kernel_builds().get("qs8_gemm") == "amx"
    lines = [f"threads {nt}; kernels {K.kernel_builds()['qs8_spmm']}, dense "
             f"{K.kernel_builds()['qs8_gemm']}; speedup = dense INT8 time / sparse time"
             + (" [over the avx512_vnni dense GEMM]" if amx else "")]
    for (k, n), sid in zip(SHAPES, SHAPE_IDS):
        x = activations(k)
        s = np.full(n, 1e-3, np.float32)
        pd = K.pack_qs8(weights(k, n, 0.0, "dense"), "dense")
        fns = {"dense": _prepared_call(x, pd, s, nt)}
        if amx:
            fns["dense_vec"] = _prepared_call(x, pd, s, nt, "avx512_vnni")
        info = {}
        for fmt, sp in CASES:
            w = weights(k, n, sp, fmt)
            p = K.pack_qs8(w, fmt)
            fns[(fmt, sp)] = _prepared_call(x, p, s, nt)
            auto = K.choose_format(w)
            info[(fmt, sp)] = (p.bytes_per_nnz, auto)
            if auto != fmt:
                fns[(fmt, sp, "auto")] = _prepared_call(x, K.pack_qs8(w, auto), s, nt)
        # every timed call right after an untimed one of the same layer, as the GEMM summary
        # times the dense kernel: otherwise the dense layer's 0.6-2.4 MB of weights come back
        # from L3 after the other cases' calls while the sparse ones (1/10 of that) stay in L2
        best = interleaved_best(fns, warm=set(fns))
        parts = [f"{sid}: dense {best['dense'] * 1e3:.3f} ms"
                 + (f" [vpdpbusd dense {best['dense_vec'] * 1e3:.3f} ms]" if amx else "")]
        for fmt, sp in CASES:
            auto = info[(fmt, sp)][1]
            vec = f" [{best['dense_vec'] / best[(fmt, sp)]:.2f}x]" if amx else ""
            parts.append(f"{fmt}@{sp}: {best['dense'] / best[(fmt, sp)]:.2f}x{vec} "
                         f"({info[(fmt, sp)][0]:.2f} B/nnz, auto->{auto}"
                         + (f" {best['dense'] / best[(fmt, sp, 'auto')]:.2f}x)"
                            if (fmt, sp, "auto") in best else ")"))
        lines.append("\n    ".join(parts))
        benchmark.extra_info[sid] = lines[-1]
    print("\n" + "\n".join(lines))
    benchmark.pedantic(lambda: None, rounds=1)
