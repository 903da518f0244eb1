"""No leaks (issue 6, item 6): 10,000 calls grow resident memory by < 1% after warm-up;
compiling and dropping 100 engines returns their memory. Each measurement runs in a fresh
process so other tests' garbage does not blur it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_COMMON = textwrap.dedent("""
    import gc, json, os, sys, weakref
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    sys.path.insert(0, os.path.join(sys.argv[1], "tests", "reliability"))
    import deepsparse_cy as ds
    from test_concurrency import small_model

    import ctypes
    _libc = ctypes.CDLL("libc.so.6")

    def rss():
        # glibc keeps freed heap pages until trimmed; trimming first measures what is still in
        # use, not the allocator's high-water mark
        _libc.malloc_trim(0)
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
""")

_CALLS = _COMMON + textwrap.dedent("""
    e = ds.compile_model(small_model())
    r = np.random.default_rng(0)
    xs = [r.standard_normal((m, 64)).astype(np.float32) for m in (1, 7, 32) for _ in range(4)]
    for i in range(1000):                       # warm-up: plans, arenas, allocator pools
        e.run([xs[i % len(xs)]])
    gc.collect()
    before = rss()
    for i in range(10000):
        e.run([xs[i % len(xs)]])
    gc.collect()
    after = rss()
    print(json.dumps({"before": before, "after": after, "growth": (after - before) / before,
                      "calls": 10000}))
""")

_ENGINES = _COMMON + textwrap.dedent("""
    m = small_model(k=1024, n=1024)             # 1 MiB of int8 weights + packed copies per engine
    x = np.ones((8, 1024), np.float32)

    def one():
        e = ds.compile_model(m)
        e.run([x])
        return weakref.ref(e)

    for _ in range(10):
        one()
    gc.collect()
    before = rss()
    refs = [one() for _ in range(100)]
    gc.collect()
    after = rss()
    alive = sum(r() is not None for r in refs)
    # what one live engine holds, for scale
    keep = [ds.compile_model(m) for _ in range(5)]
    for k in keep:
        k.run([x])
    gc.collect()
    per_engine = (rss() - after) / 5
    print(json.dumps({"before": before, "after": after, "alive": alive, "per_engine": per_engine,
                      "growth": (after - before) / before}))
""")


def _run(script):
    p = subprocess.run([sys.executable, "-c", script, ROOT], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(p.stdout.strip().splitlines()[-1])
    print("\n", res)
    return res


def test_ten_thousand_calls_do_not_grow_rss():
    res = _run(_CALLS)
    assert res["growth"] < 0.01, res


def test_dropped_engines_return_memory():
    res = _run(_ENGINES)
    assert res["alive"] == 0, res
    # 100 leaked engines would add 100 * per_engine; allow a tenth of one engine's worth
    assert res["after"] - res["before"] < 0.1 * 100 * max(res["per_engine"], 1 << 20), res
    assert res["growth"] < 0.01, res
