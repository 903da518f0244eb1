"""FP32 transformer latency vs onnxruntime, for the fusions in graph/fusion.py (issue #5 item 5).

    python benchmarks/bench_fp32_fusion.py [--models bert-base,minilm] [--batches 1,8]
        [--threads N] [--blocks 6] [--calls 3] [--profile] [--no-fusion]

Both engines in one process, limited to the same threads (ORT intra_op_num_threads, our
num_cores + OPENBLAS/OMP limits via threadpoolctl), timed in alternating blocks of calls with a
short pause between blocks; the median per-call time of each block is kept and the ratio of the
medians over blocks reported. Use --threads 1 on a shared machine: less noise-sensitive.
"""
import argparse
import os
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="bert-base,minilm")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--blocks", type=int, default=6)
    ap.add_argument("--calls", type=int, default=3)
    ap.add_argument("--pause", type=float, default=0.2)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--no-fusion", action="store_true")
    a = ap.parse_args()
    if a.no_fusion:
        os.environ["DEEPSPARSE_CY_NO_FUSION"] = "1"
    from threadpoolctl import threadpool_limits
    import onnxruntime as ort
    import deepsparse_cy as ds
    from deepsparse_cy import zoo

    for name in a.models.split(","):
        path = zoo.model_path(name)
        so = ort.SessionOptions()
        so.intra_op_num_threads = a.threads
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        eng = ds.compile_model(path, num_cores=a.threads)
        for batch in [int(b) for b in a.batches.split(",")]:
            feeds = zoo.example_inputs(name, batch=batch, seq=a.seq, seed=0)
            xs = [feeds[k] for k in eng.input_names]
            with threadpool_limits(limits=a.threads):
                ref = sess.run(None, feeds)[0]
                got = eng.run(xs)[0]
                err = float(np.abs(got - ref).max() / np.abs(ref).max())
                cos = float((got * ref).sum() / np.linalg.norm(got) / np.linalg.norm(ref))
                tds, tort = [], []
                for blk in range(a.blocks):
                    for fn, acc in ((lambda: eng.run(xs), tds), (lambda: sess.run(None, feeds), tort)):
                        fn()
                        t = []
                        for _ in range(a.calls):
                            t0 = time.perf_counter()
                            fn()
                            t.append(time.perf_counter() - t0)
                        acc.append(np.median(t))
                        time.sleep(a.pause)
                md, mo = np.median(tds) * 1e3, np.median(tort) * 1e3
                print(f"{name:10s} b={batch} seq={a.seq} threads={a.threads}: deepsparse_cy "
                      f"{md:8.2f} ms  onnxruntime {mo:8.2f} ms  ratio {md / mo:5.2f}  "
                      f"(best {min(tds) * 1e3:.2f} / {min(tort) * 1e3:.2f})  "
                      f"max|d|/max|ref| {err:.1e} cos {cos:.7f}", flush=True)
                if a.profile:
                    recs = eng.profile(xs, iterations=3, dense_baseline=False)
                    by = {}
                    for r in recs:
                        k = r["op_type"]
                        by.setdefault(k, [0.0, 0])
                        by[k][0] += r["time_ms"]
                        by[k][1] += 1
                    tot = sum(v[0] for v in by.values())
                    for k, (t, n) in sorted(by.items(), key=lambda kv: -kv[1][0]):
                        print(f"    {k:28s} x{n:3d} {t:8.2f} ms {100 * t / tot:5.1f}%")


if __name__ == "__main__":
    main()
