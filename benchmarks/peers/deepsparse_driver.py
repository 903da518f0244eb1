"""Runs DeepSparse (Neural Magic, 1.8) on one model and reports per-call latencies as JSON.

This script runs INSIDE DeepSparse's own virtualenv (tools/setup_deepsparse_peer.sh makes it:
DeepSparse 1.8 pins numpy 1.x and onnx 1.14, which cannot share deepsparse_cy's environment), as
a subprocess of benchmarks/peers. It imports nothing from deepsparse_cy and only numpy and
deepsparse from its own environment.

One shot:
    python deepsparse_driver.py MODEL.onnx INPUTS.npz [--batch 1] [--iterations 50] [--warmup 5]
                                [--num-cores N] [--outputs OUT.npz]
prints one JSON object (the engine's description, compile seconds, "latencies_ms": [...]).

Server (--serve): compiles once, prints a JSON line {"ready": true, ...}, then answers one JSON
line per request line on stdin, so a caller can alternate whole timing blocks with another
runtime without recompiling:
    {"cmd": "run", "iterations": N, "warmup": W}  -> {"latencies_ms": [...]}
    {"cmd": "outputs", "path": "OUT.npz"}         -> {"saved": "OUT.npz", "names": [...]}
    {"cmd": "quit"}                               -> process exits

INPUTS.npz holds one array per model input, keyed by input name, with the batch already in the
leading dimension. DeepSparse compiles static shapes: they are taken from these arrays. The
protocol goes to the process's original stdout; everything DeepSparse itself prints (its banner,
logs) is moved to stderr so it cannot corrupt the JSON. Set NM_DISABLE_ANALYTICS=1 (the Python
wrapper does).
"""
import argparse
import json
import os
import sys
import time

# Keep a private handle on the real stdout for the protocol, then point fd 1 at stderr before
# deepsparse is imported: its C++ engine writes a banner to fd 1.
_proto = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)
sys.stdout = sys.stderr
os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")

import numpy as np  # noqa: E402


def _emit(obj):
    _proto.write(json.dumps(obj) + "\n")
    _proto.flush()


def _timed(engine, xs, iterations, warmup):
    for _ in range(warmup):
        engine.run(xs, val_inp=False)
    lat = []
    for _ in range(iterations):
        t = time.perf_counter()
        engine.run(xs, val_inp=False)
        lat.append((time.perf_counter() - t) * 1e3)
    return lat


def _save_outputs(engine, xs, path):
    outs = engine.run(xs, val_inp=False)
    names = list(engine.output_names)
    np.savez(path, **{n: np.asarray(o) for n, o in zip(names, outs)})
    return names


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("inputs", help=".npz with one array per model input, keyed by name")
    ap.add_argument("--batch", type=int, default=None,
                    help="batch size to compile for (default: leading dim of the inputs)")
    ap.add_argument("--iterations", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--num-cores", type=int, default=None)
    ap.add_argument("--outputs", default=None, help="write the outputs of one run to this .npz")
    ap.add_argument("--serve", action="store_true", help="answer JSON requests on stdin")
    a = ap.parse_args(argv)

    import deepsparse

    data = np.load(a.inputs)
    feeds = {k: data[k] for k in data.files}
    batch = a.batch or next(iter(feeds.values())).shape[0]
    # input order of the model file (compile_model's input_shapes are positional)
    import onnx
    m = onnx.load(a.model, load_external_data=False)
    inits = {t.name for t in m.graph.initializer}
    order = [vi.name for vi in m.graph.input if vi.name not in inits]
    del m
    missing = [n for n in order if n not in feeds]
    if missing:
        raise SystemExit(f"inputs .npz lacks model inputs {missing}")
    xs = [np.ascontiguousarray(feeds[n]) for n in order]

    t0 = time.perf_counter()
    engine = deepsparse.compile_model(a.model, batch_size=batch, num_cores=a.num_cores,
                                      input_shapes=[list(x.shape) for x in xs])
    compile_s = time.perf_counter() - t0
    try:
        supported = float(engine.fraction_of_supported_ops)
    except Exception:       # not every build reports it
        supported = None
    info = {"runtime": "deepsparse", "version": deepsparse.__version__,
            "model": os.path.abspath(a.model), "batch": batch,
            "num_cores": engine.num_cores, "num_streams": engine.num_streams,
            "cpu_avx_type": getattr(engine, "cpu_avx_type", None),
            "fraction_of_supported_ops": supported,
            "input_names": list(engine.input_names), "output_names": list(engine.output_names),
            "compile_s": compile_s}

    if not a.serve:
        lat = _timed(engine, xs, a.iterations, a.warmup)
        if a.outputs:
            _save_outputs(engine, xs, a.outputs)
            info["outputs"] = a.outputs
        info["latencies_ms"] = lat
        info["median_ms"] = float(np.median(lat)) if lat else None
        _emit(info)
        return 0

    _emit(dict(info, ready=True))
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            req = json.loads(line)
            cmd = req.get("cmd")
            if cmd == "run":
                _emit({"latencies_ms": _timed(engine, xs, int(req.get("iterations", 10)),
                                              int(req.get("warmup", 0)))})
            elif cmd == "outputs":
                _emit({"saved": req["path"], "names": _save_outputs(engine, xs, req["path"])})
            elif cmd == "quit":
                break
            else:
                _emit({"error": f"unknown cmd {cmd!r}"})
        except Exception as e:      # report and keep serving; the caller decides
            _emit({"error": f"{type(e).__name__}: {e}"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
