"""Sparse FP32 (unstructured) over dense FP32 BLAS (numpy matmul), BERT-base shapes; pairs with
tests/kernels/test_f32_spmm.py."""
import numpy as np
import pytest

import deepsparse_cy.kernels as K
from _bench_common import SHAPES, SHAPE_IDS, activations, weights, nthreads, blocked_best

SPARSITIES = [0.8, 0.9, 0.95]


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("sparsity", SPARSITIES)
def test_f32_spmm(benchmark, shape, sparsity):
    k, n = shape
    x = activations(k, np.float32)
    p = K.pack_f32_sparse(weights(k, n, sparsity, "unstructured", np.float32))
    benchmark(K.f32_spmm, x, p, None, num_threads=nthreads())


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_f32_blas_dense(benchmark, shape):
    k, n = shape
    x = activations(k, np.float32)
    wt = np.ascontiguousarray(weights(k, n, 0.0, "dense", np.float32).T)
    benchmark(np.matmul, x, wt)


def test_f32_spmm_summary(benchmark):
    from threadpoolctl import threadpool_limits
    nt = nthreads()
    lines = [f"threads {nt} (BLAS limited to the same); speedup = BLAS dense time / sparse time; "
             f"f32_spmm build {K.kernel_builds()['f32_spmm']}; timed in blocks 0.25 s apart "
             "(OpenBLAS's workers spin after a call)"]
    with threadpool_limits(limits=nt, user_api="blas"):
        for (k, n), sid in zip(SHAPES, SHAPE_IDS):
            x = activations(k, np.float32)
            wt = np.ascontiguousarray(weights(k, n, 0.0, "dense", np.float32).T)
            fns = {"blas": lambda: x @ wt}
            for sp in SPARSITIES:
                p = K.pack_f32_sparse(weights(k, n, sp, "unstructured", np.float32))
                fns[sp] = (lambda p=p: K.f32_spmm(x, p, None, num_threads=nt))
            best = blocked_best(fns)
            parts = [f"{sid}: BLAS {best['blas'] * 1e3:.3f} ms"]
            parts += [f"{sp}: {best['blas'] / best[sp]:.2f}x" for sp in SPARSITIES]
            lines.append(" | ".join(parts))
            benchmark.extra_info[sid] = lines[-1]
    print("\n" + "\n".join(lines))
    benchmark.pedantic(lambda: None, rounds=1)
