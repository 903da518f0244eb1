"""One engine shared by 8 threads gives exactly the serial outputs; the kernels release the GIL;
num_cores and threadpoolctl limits bound the threads that do work (issue 6, item 5)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import deepsparse_cy as ds
from deepsparse_cy import kernels

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def small_model(k=64, n=48):
    """QLinearMatMul (qs8 kernel) -> sparse float MatMul (f32_spmm) -> Softmax, with a side
    Conv-free elementwise branch: the fused C kernels, the arena and numpy ops in one plan."""
    r = np.random.default_rng(0)
    wq = r.integers(-127, 128, (k, n)).astype(np.int8)
    ws = r.standard_normal((n, 32)).astype(np.float32)
    ws[r.random(ws.shape) < 0.85] = 0
    inits = [nh.from_array(np.array(0.05, np.float32), "xs"), nh.from_array(np.array(128, np.uint8), "xz"),
             nh.from_array(wq, "wq"), nh.from_array(np.array(0.02, np.float32), "ws_"),
             nh.from_array(np.array(0, np.int8), "wz"), nh.from_array(np.array(0.1, np.float32), "ys"),
             nh.from_array(np.array(128, np.uint8), "yz"), nh.from_array(ws, "w2")]
    nodes = [h.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             h.make_node("QLinearMatMul", ["xq", "xs", "xz", "wq", "ws_", "wz", "ys", "yz"], ["yq"]),
             h.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["d"]),
             h.make_node("MatMul", ["d", "w2"], ["m"]),
             h.make_node("Softmax", ["m"], ["y"], axis=-1),
             h.make_node("Tanh", ["x"], ["t"]),
             h.make_node("ReduceMax", ["t"], ["z"], axes=[1], keepdims=1)]
    g = h.make_graph(nodes, "conc", [h.make_tensor_value_info("x", T.FLOAT, ["M", k])],
                     [h.make_tensor_value_info("y", T.FLOAT, None), h.make_tensor_value_info("z", T.FLOAT, None)],
                     initializer=inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def test_engine_uses_the_kernels():
    e = ds.compile_model(small_model())
    kinds = {n.op_type for n, _ in e._program.steps}
    assert kinds & {"QGemm"} and kinds & {"SparseMatMul"}, kinds


def test_eight_threads_500_calls_equal_serial():
    e = ds.compile_model(small_model())
    r = np.random.default_rng(1)
    # varied inputs: three token counts (three plans, built concurrently) and 24 value sets
    inputs = [r.standard_normal((m, 64)).astype(np.float32) * 3 for m in (1, 5, 17) for _ in range(8)]
    serial = [e.run([x]) for x in inputs]
    e2 = ds.compile_model(small_model())        # fresh engine: plans are created under contention
    n_threads, calls = 8, 500
    errors = []
    mismatches = []
    barrier = threading.Barrier(n_threads)

    def worker(t):
        try:
            barrier.wait()
            for i in range(calls):
                j = (t * 7 + i * 13) % len(inputs)
                out = e2.run([inputs[j]])
                for a, b in zip(out, serial[j]):
                    if a.shape != b.shape or not np.array_equal(a, b):
                        mismatches.append((t, i, j))
        except Exception as ex:  # noqa: BLE001
            errors.append(repr(ex))

    ths = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    t0 = time.perf_counter()
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    dt = time.perf_counter() - t0
    print(f"\n8 threads x 500 calls: {dt:.2f} s, {n_threads * calls / dt:.0f} calls/s")
    assert not errors, errors[:3]
    assert not mismatches, mismatches[:10]
    # outputs handed to callers are theirs: mutating one does not change the next result
    out = e2.run([inputs[0]])
    out[0][...] = 0
    np.testing.assert_array_equal(e2.run([inputs[0]])[0], serial[0][0])


def test_qs8_kernel_releases_the_gil():
    r = np.random.default_rng(2)
    w = r.integers(-127, 128, (512, 1024)).astype(np.int8)
    packed = kernels.pack_qs8(w, format="dense")
    x = r.integers(0, 256, (1024, 1024)).astype(np.uint8)
    ref = kernels.qs8_matmul(x, packed, out_dtype=np.int32, num_threads=1)

    def spin(seconds):
        n, end = 0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            n += 1
        return n

    t0 = time.perf_counter()
    kernels.qs8_matmul(x, packed, out_dtype=np.int32, num_threads=1)
    one = time.perf_counter() - t0
    reps = max(2, int(0.5 / max(one, 1e-3)))
    solo_rate = spin(0.1) / 0.1
    # While another thread sits inside qs8_matmul (one C call of `one` seconds), this thread keeps
    # running Python. A kernel holding the GIL would stop it for the whole call.
    done = threading.Event()
    results = []

    def work():
        for _ in range(reps):
            results.append(kernels.qs8_matmul(x, packed, out_dtype=np.int32, num_threads=1))
        done.set()

    th = threading.Thread(target=work)
    n = 0
    t0 = time.perf_counter()
    th.start()
    while not done.is_set():
        n += 1
    th.join()
    busy = time.perf_counter() - t0
    rate = n / busy
    print(f"\nqs8_matmul {one * 1e3:.1f} ms/call x {reps}; Python thread alongside ran at "
          f"{rate / solo_rate:.0%} of its solo rate")
    assert all(np.array_equal(r_, ref) for r_ in results)
    assert rate > 0.2 * solo_rate

    # two threads in the kernel at once: both correct, and (with 2 free cores) overlapping
    outs = [None, None]

    def call(i):
        outs[i] = kernels.qs8_matmul(x, packed, out_dtype=np.int32, num_threads=1)

    ths = [threading.Thread(target=call, args=(i,)) for i in range(2)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    assert all(np.array_equal(o, ref) for o in outs)


def test_f32_spmm_releases_the_gil_and_agrees_across_threads():
    r = np.random.default_rng(3)
    w = r.standard_normal((256, 512)).astype(np.float32)
    w[r.random(w.shape) < 0.9] = 0
    packed = kernels.pack_f32_sparse(w)
    xs = [r.standard_normal((128, 512)).astype(np.float32) for _ in range(4)]
    ref = [kernels.f32_spmm(x, packed, num_threads=1) for x in xs]
    bad = []

    def worker(t):
        for i in range(50):
            j = (t + i) % 4
            if not np.array_equal(kernels.f32_spmm(xs[j], packed, num_threads=1), ref[j]):
                bad.append((t, i))

    ths = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    assert not bad


# --- threads that do work -----------------------------------------------------------------------

_PROBE = textwrap.dedent("""
    import json, os, sys, time, threading
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    sys.path.insert(0, os.path.join(sys.argv[1], "tests", "reliability"))
    import deepsparse_cy as ds
    from test_concurrency import small_model
    from threadpoolctl import threadpool_limits, threadpool_info

    def cpu_by_thread():
        res = {}
        for tid in os.listdir("/proc/self/task"):
            try:
                f = open(f"/proc/self/task/{tid}/stat").read().rsplit(")", 1)[1].split()
                res[tid] = int(f[11]) + int(f[12])     # utime + stime, clock ticks
            except OSError:
                pass
        return res

    def busy_threads(engine, x, seconds=1.0):
        engine.run([x])                                 # plan + thread pools created
        before = cpu_by_thread()
        end = time.perf_counter() + seconds
        calls = 0
        while time.perf_counter() < end:
            engine.run([x])
            calls += 1
        after = cpu_by_thread()
        tick = os.sysconf("SC_CLK_TCK")
        # a thread that did work: at least 10% of the window on a CPU
        return sum(1 for t, c in after.items() if c - before.get(t, 0) >= 0.1 * seconds * tick), calls

    seen = {}
    def omp_limit(tag):
        def op_hook():
            seen[tag] = [i.get("num_threads") for i in threadpool_info() if i.get("user_api") == "openmp"]
        return op_hook

    x = np.random.default_rng(0).standard_normal((4096, 256)).astype(np.float32)
    m = small_model(k=256, n=256)
    out = {"cpu_count": os.cpu_count(), "tasks": len(os.listdir("/proc/self/task"))}
    for nc in (1, 2):
        e = ds.compile_model(m, num_cores=nc)
        out[f"num_cores={nc}"] = busy_threads(e, x)[0]
    e = ds.compile_model(m)
    with threadpool_limits(limits=1):
        out["default engine under threadpool_limits(1)"] = busy_threads(e, x)[0]
        out["openmp limit seen inside"] = [i.get("num_threads") for i in threadpool_info()
                                           if i.get("user_api") == "openmp"]
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def probe():
    if (os.cpu_count() or 1) < 2:
        pytest.skip("needs two cores to see a difference")
    p = subprocess.run([sys.executable, "-c", _PROBE, ROOT], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(p.stdout.strip().splitlines()[-1])
    print("\n", res)
    return res


def test_num_cores_bounds_the_working_threads(probe):
    assert probe["num_cores=1"] == 1, probe
    assert probe["num_cores=2"] <= 2, probe


def test_threadpoolctl_limit_bounds_a_default_engine(probe):
    assert probe["openmp limit seen inside"] == [1], probe
    assert probe["default engine under threadpool_limits(1)"] == 1, probe


def test_cnn_bound_steps_eight_threads_equal_serial():
    """Arena instances are per call: the bound kernel calls of one instance (engine._run_plan)
    never run on another thread's buffers. Conv, depthwise, squeeze-excite and residual steps
    from 8 threads, two input sizes, give exactly the serial outputs."""
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    try:
        from test_engine import _cnn_model
    finally:
        sys.path.pop(0)
    m = _cnn_model()
    r = np.random.default_rng(5)
    inputs = [r.standard_normal(s).astype(np.float32) for s in ((1, 3, 20, 24), (2, 3, 9, 33))
              for _ in range(6)]
    serial = [ds.compile_model(m).run([x])[0] for x in inputs]
    e = ds.compile_model(m)
    errors, mismatches = [], []
    barrier = threading.Barrier(8)

    def worker(t):
        try:
            barrier.wait()
            for i in range(150):
                j = (t * 5 + i * 7) % len(inputs)
                if not np.array_equal(e.run([inputs[j]])[0], serial[j]):
                    mismatches.append((t, i, j))
        except Exception as ex:  # noqa: BLE001
            errors.append(repr(ex))

    ths = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    assert not errors, errors[:3]
    assert not mismatches, mismatches[:10]
