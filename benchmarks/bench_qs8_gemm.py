"""Dense INT8 GEMM on BERT-base shapes (M=128), and the INT8 peak probe; pairs with
tests/kernels/test_qs8_gemm.py."""
import numpy as np
import pytest

import deepsparse_cy.kernels as K
from _bench_common import (SHAPES, SHAPE_IDS, M, activations, weights, nthreads, interleaved_best,
                           probe_fns, PROBE_BEST, kernel_peak_name)


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
    """Dense INT8 as % of the probe peak of the instruction the dispatched kernel issues
    (tdpbusd on the amx build, with its share of the vpdpbusd zmm peak beside it; vpdpbusd zmm
    on the avx512_vnni build; vpmaddwd + vpaddd on avx2), all timed interleaved
    in this run; the GEMM as a compiled model calls it (prepared once, fixed output). The peak is the
    probe running on as many threads as the GEMM, at the same time (both cores busy); the
    single-core figure is printed beside it."""
    nt = nthreads()
    fns = probe_fns(nt)
    if not fns:
        pytest.skip("CPU lacks avx2: no probe")
    single = probe_fns(1)
    fns.update({k + "_1": f for k, f in single.items()})
    for (k, n), sid in zip(SHAPES, SHAPE_IDS):
        x, p, s = _setup(k, n)
        pr = K.prepare_qs8_matmul(p, None, s, np.uint8, 0)       # as a compiled model calls it
        out = np.empty((M, n), np.uint8)
        fns[sid] = (lambda x=x, pr=pr, out=out: pr(x, out=out, num_threads=nt))
    PROBE_BEST.clear()
    best = interleaved_best(fns, warm=set(SHAPE_IDS))
    peak = {name: PROBE_BEST[f"{name}@{nt}"] for name in single}
    one = {name: PROBE_BEST[f"{name}@1"] for name in single}
    kp = kernel_peak_name()
    lines = [f"threads {nt}; kernels {K.kernel_builds()['qs8_gemm']}; probe peaks, GMAC/s, {nt} "
             f"threads at once (per thread) | one thread alone: "
             + ", ".join(f"{name[5:]} {peak[name] / 1e9:.1f} ({peak[name] / nt / 1e9:.1f}) | "
                         f"{one[name] / 1e9:.1f}" for name in peak)]
    for (k, n), sid in zip(SHAPES, SHAPE_IDS):
        t = best[sid]
        rate = M * k * n / t
        lines.append(f"{sid}: {t * 1e3:.3f} ms {rate / 1e9:.1f} GMAC/s = "
                     f"{100 * rate / peak[kp]:.0f}% of the {kp[5:]} peak (the kernel's "
                     f"instruction; {100 * rate / (nt * one[kp]):.0f}% of {nt} x one thread alone)"
                     + (f"; {100 * rate / peak['peak_vpdpbusd_zmm']:.0f}% of the vpdpbusd_zmm "
                        f"peak" if kp != "peak_vpdpbusd_zmm" and "peak_vpdpbusd_zmm" in peak
                        else ""))
        benchmark.extra_info[sid] = lines[-1]
    print("\n" + "\n".join(lines))
    benchmark.pedantic(lambda: None, rounds=1)
