"""Shared setup of the kernel benchmarks: BERT-base shapes, weights per pattern, the peak probe.

Run quietly (other jobs share the cores): `pytest benchmarks/bench_qs8_gemm.py --benchmark-only`.
DSCY_BENCH_THREADS sets num_threads (default 0 = OpenMP default, both cores).
Ratios are printed by the `test_*_summary` benchmarks from timings taken in the same run."""
import os
import threading
import time

import numpy as np

import deepsparse_cy.kernels as K

M = 128
SHAPES = [(768, 768), (768, 3072), (3072, 768)]          # (K, N)
SHAPE_IDS = ["768x768", "768x3072", "3072x768"]
THREADS = int(os.environ.get("DSCY_BENCH_THREADS", "0"))


def nthreads():
    return THREADS or len(os.sched_getaffinity(0))


def weights(k, n, sparsity, pattern, dtype=np.int8, seed=0):
    rng = np.random.default_rng(seed)
    if dtype == np.int8:
        w = rng.integers(-127, 128, (n, k), dtype=np.int8)
        w[w == 0] = 1
    else:
        w = rng.standard_normal((n, k)).astype(np.float32)
    if sparsity == 0:
        return w
    if pattern == "block4":
        keep = np.repeat(rng.random((n, k // 4)) >= sparsity, 4, axis=1)
    else:
        keep = rng.random((n, k)) >= sparsity
    return np.where(keep, w, 0).astype(dtype)


def activations(k, dtype=np.uint8, seed=1):
    rng = np.random.default_rng(seed)
    if dtype == np.float32:
        return rng.standard_normal((M, k)).astype(np.float32)
    return rng.integers(0, 256, (M, k), dtype=np.uint8)


def best_time(fn, reps=30):
    """Minimum wall time of fn over reps runs (the least disturbed run on shared cores)."""
    fn()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def interleaved_best(fns, rounds=40, warm=()):
    """{name: min seconds}: every fn runs once per round, round-robin, so all of them (and the
    probe) get the same chance at the quiet moments of a shared machine. Names in `warm` get one
    untimed call right before each timed one: a kernel timed just after the probe's threads
    otherwise pays the wake-up of its OpenMP workers, which in a model run spin between steps
    (the 768x768 GEMM read 0.33-0.36 ms after the probe, 0.17 ms in the sparse summary)."""
    for f in fns.values():
        f()
    best = {k: float("inf") for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            if k in warm:
                f()
            t = time.perf_counter()
            f()
            best[k] = min(best[k], time.perf_counter() - t)
    return best


def blocked_best(fns, rounds=8, calls=5, pause=0.25):
    """{name: min seconds} timed in blocks: per round, each fn gets one untimed call and then
    `calls` timed ones, with `pause` seconds of sleep after every block. For contenders whose
    worker threads keep spinning after a call: OpenBLAS's spin ~0.1 s (2^28 cycles) and slow
    whatever runs next (f32_spmm 768x768 read 10-16 ms within 0.1 s of a BLAS call, 0.2 ms
    alone), which interleaved_best's call-by-call rounds would charge to the sparse kernel."""
    best = {k: float("inf") for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            f()
            for _ in range(calls):
                t = time.perf_counter()
                f()
                best[k] = min(best[k], time.perf_counter() - t)
            time.sleep(pause)
    return best


PROBE_ITERS = 2_000_000


def probe_fns(nt=1):
    """Probe loops for interleaved_best: each call runs the register-only loop on nt threads at
    once (every core busy, as in a threaded GEMM: one busy core alone may run at a higher boost
    clock) and records the summed per-thread MACs/s, best over calls, in PROBE_BEST[f"{name}@{nt}"]."""
    if "avx2" not in K.runnable_isas():
        return {}
    avx2 = K.load("qs8_gemm", "avx2")
    gemm = K.kernel_builds().get("qs8_gemm")

    def make(kind, name, mod=avx2, iters=PROBE_ITERS):
        def call():
            rates = [0.0] * nt

            def one(i):
                rates[i] = mod.probe_peak(kind, iters)     # nogil: the threads overlap
            threads = [threading.Thread(target=one, args=(i,)) for i in range(nt)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            key = f"{name}@{nt}"
            PROBE_BEST[key] = max(PROBE_BEST.get(key, 0.0), sum(rates))
        return call
    fns = {"peak_vpmaddubsw_seq": make(0, "peak_vpmaddubsw_seq"),
           "peak_vpmaddwd_i16": make(1, "peak_vpmaddwd_i16")}
    if gemm in ("avx512_vnni", "amx"):   # the INT8 kernels' own instructions: vpdpbusd (the
        # sparse kernel's, and the dense one's on avx512_vnni) and on amx the tiles' tdpbusd
        fns["peak_vpdpbusd_zmm"] = make(3, "peak_vpdpbusd_zmm", K.load("qs8_gemm", "avx512_vnni"))
    if gemm == "amx":      # 65536 MACs an iteration: 1/12 the iterations, a similar time
        fns["peak_tdpbusd_amx"] = make(4, "peak_tdpbusd_amx", K.load("qs8_gemm", "amx"),
                                       PROBE_ITERS // 12)
    return fns


def kernel_peak_name():
    """The probe of the instruction the dispatched dense INT8 kernel issues."""
    return {"amx": "peak_tdpbusd_amx", "avx512_vnni": "peak_vpdpbusd_zmm"}.get(
        K.kernel_builds().get("qs8_gemm"), "peak_vpmaddwd_i16")


PROBE_BEST = {}
PROBE_MACS = {"peak_vpmaddubsw_seq": PROBE_ITERS * 6 * 32, "peak_vpmaddwd_i16": PROBE_ITERS * 6 * 16,
              "peak_vpdpbusd_zmm": PROBE_ITERS * 12 * 64,
              "peak_tdpbusd_amx": PROBE_ITERS // 12 * 4 * 16 * 16 * 64}


def probe_peaks(iters=20_000_000, reps=5):
    """Per-core MACs/s of the AVX2 sequences (best of reps): vpmaddubsw+vpmaddwd+vpaddd, and
    vpmaddwd+vpaddd on int16 (what the exact AVX2 kernels issue). None without an AVX2 build."""
    if "avx2" not in K.runnable_isas():
        return None
    mod = K.load("qs8_gemm", "avx2")
    return {"vpmaddubsw_seq": max(mod.probe_peak(0, iters) for _ in range(reps)),
            "vpmaddwd_i16": max(mod.probe_peak(1, iters) for _ in range(reps)),
            "fma_f32": max(mod.probe_peak(2, iters) for _ in range(reps))}
