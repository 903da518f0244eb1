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


def test_qs8_spmm_summary(benchmark):
    """Speedups over dense INT8, timed interleaved in the same run; packed bytes; auto's choice."""
    nt = nthreads()
    lines = [f"threads {nt}; speedup = dense INT8 time / sparse time"]
    for (k, n), sid in zip(SHAPES, SHAPE_IDS):
        x = activations(k)
        s = np.full(n, 1e-3, np.float32)
        pd = K.pack_qs8(weights(k, n, 0.0, "dense"), "dense")
        fns = {"dense": lambda: K.qs8_matmul(x, pd, None, s, np.uint8, 0, num_threads=nt)}
        info = {}
        for fmt, sp in CASES:
            w = weights(k, n, sp, fmt)
            p = K.pack_qs8(w, fmt)
            fns[(fmt, sp)] = (lambda p=p: K.qs8_matmul(x, p, None, s, np.uint8, 0, num_threads=nt))
            info[(fmt, sp)] = (p.bytes_per_nnz, K.choose_format(w))
        best = interleaved_best(fns)
        parts = [f"{sid}: dense {best['dense'] * 1e3:.3f} ms"]
        for fmt, sp in CASES:
            parts.append(f"{fmt}@{sp}: {best['dense'] / best[(fmt, sp)]:.2f}x "
                         f"({info[(fmt, sp)][0]:.2f} B/nnz, auto->{info[(fmt, sp)][1]})")
        lines.append("\n    ".join(parts))
        benchmark.extra_info[sid] = lines[-1]
    print("\n" + "\n".join(lines))
    benchmark.pedantic(lambda: None, rounds=1)
