"""Dense INT8 GEMM on BERT-base shapes (M=128), and the INT8 peak probe; pairs with
tests/kernels/test_qs8_gemm.py."""
import numpy as np
import pytest

import deepsparse_cy.kernels as K
from _bench_common import (SHAPES, SHAPE_IDS, M, activations, weights, nthreads, interleaved_best,
                           probe_fns, PROBE_MACS)


def _setup(k, n):
    x = activations(k)
    p = K.pack_qs8(weights(k, n, 0.0, "dense"), "dense")
    return x, p, np.full(n, 1e-3, np.float32)


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_qs8_gemm_dense(benchmark, shape):
    k, n = shape
    x, p, s = _setup(k, n)
    nt = nthreads()
    benchmark.extra_info["GMAC"] = M * k * n / 1e9
    benchmark(K.qs8_matmul, x, p, None, s, np.uint8, 0, num_threads=nt)


def test_qs8_gemm_summary(benchmark):
    """Dense INT8 as % of the probe peak, all timed interleaved in this run."""
    fns = probe_fns()
    if not fns:
        pytest.skip("CPU lacks avx2: no probe")
    nt = nthreads()
    for (k, n), sid in zip(SHAPES, SHAPE_IDS):
        x, p, s = _setup(k, n)
        fns[sid] = (lambda x=x, p=p, s=s: K.qs8_matmul(x, p, None, s, np.uint8, 0, num_threads=nt))
    best = interleaved_best(fns)
    peak = {name: PROBE_MACS[name] / best[name] for name in PROBE_MACS}
    lines = [f"peaks per core (GMAC/s): vpmaddubsw seq {peak['peak_vpmaddubsw_seq'] / 1e9:.1f}, "
             f"vpmaddwd int16 {peak['peak_vpmaddwd_i16'] / 1e9:.1f}; threads {nt}"]
    for (k, n), sid in zip(SHAPES, SHAPE_IDS):
        t = best[sid]
        rate = M * k * n / t
        lines.append(f"{sid}: {t * 1e3:.3f} ms {rate / 1e9:.1f} GMAC/s = "
                     f"{100 * rate / (nt * peak['peak_vpmaddwd_i16']):.0f}% of vpmaddwd peak, "
                     f"{100 * rate / (nt * peak['peak_vpmaddubsw_seq']):.0f}% of vpmaddubsw-seq peak")
        benchmark.extra_info[sid] = lines[-1]
    print("\n" + "\n".join(lines))
    benchmark.pedantic(lambda: None, rounds=1)
