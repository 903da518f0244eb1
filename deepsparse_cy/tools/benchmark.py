"""`deepsparse-cy benchmark`: throughput and latency of a model, like deepsparse.benchmark.

sync runs one stream of back-to-back calls; async runs num_streams threads that share one
engine. Baselines (--compare onnxruntime, the dense FP32 twin of a zoo model) are measured in the
same run in alternating blocks with a short pause between blocks, so a slow drift of the machine
(other jobs, clocks) hits every contender alike and the printed ratios stay meaningful.
"""
from __future__ import annotations

import json
import os
import threading
import time

import numpy as np

from ._common import (Progress, UsageError, compile_for, dense_twin_name, is_zoo_spec, load_spec,
                      make_inputs, note, resolve_shapes)

DEFAULT_MODEL = "zoo:bert-base-block4-pruned90-quant"
BLOCK_S = 1.0       # length of one alternating block per contender
PAUSE_S = 0.1       # idle gap between blocks: lets onnxruntime's spinning pool threads go quiet
COMPARE_CHOICES = ("onnxruntime", "dense")


class _Contender:
    def __init__(self, label, model_name, fn, kind):
        self.label = label
        self.model_name = model_name
        self.fn = fn
        self.kind = kind
        self.latencies = []
        self.items = 0
        self.wall = 0.0


def _run_block(c, duration, streams, batch, record, tick):
    """Call c.fn back to back for `duration` seconds on `streams` threads."""
    deadline = time.perf_counter() + duration
    lats = []
    lock = threading.Lock()
    errors = []

    def loop():
        local = []
        try:
            while True:
                t0 = time.perf_counter()
                c.fn()
                t1 = time.perf_counter()
                local.append(t1 - t0)
                if t1 >= deadline:
                    break
                if streams == 1:
                    tick()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(e)
        with lock:
            lats.extend(local)

    start = time.perf_counter()
    if streams == 1:
        loop()
    else:
        threads = [threading.Thread(target=loop, daemon=True) for _ in range(streams)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            tick()
            for t in threads:
                t.join(0.05)
    wall = time.perf_counter() - start
    if errors:
        raise errors[0]
    if record:
        c.latencies.extend(lats)
        c.items += len(lats) * batch
        c.wall += wall


def latency_stats(lat_s):
    a = np.asarray(lat_s, dtype=np.float64) * 1e3
    if a.size == 0:
        return {k: float("nan") for k in ("mean", "median", "std", "p90", "p95", "p99")}
    return {"mean": float(a.mean()), "median": float(np.median(a)), "std": float(a.std()),
            "p90": float(np.percentile(a, 90)), "p95": float(np.percentile(a, 95)),
            "p99": float(np.percentile(a, 99))}


def _ort_session(model, num_cores):
    try:
        import onnxruntime as ort
    except ImportError:
        return None, None
    so = ort.SessionOptions()
    if num_cores:
        so.intra_op_num_threads = int(num_cores)
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess, ort.__version__


def benchmark_model(model=None, batch_size=None, input_shapes=None, num_cores=None,
                    scenario="sync", num_streams=None, time_s=10.0, warmup_s=2.0, compare=(),
                    export_json=None, seed=0, progress=None, quiet=False):
    """Benchmark a model (path, zoo:NAME or onnx.ModelProto); returns the result dict that
    --export-json writes. With model=None it runs DEFAULT_MODEL against its dense FP32 twin."""
    compare = [compare] if isinstance(compare, str) else list(compare or ())
    if model is None:
        model = DEFAULT_MODEL
        if "dense" not in compare:
            compare.append("dense")
    for c in compare:
        if c not in COMPARE_CHOICES:
            raise UsageError(f"--compare {c!r}: choose from {', '.join(COMPARE_CHOICES)}")
    if scenario not in ("sync", "async"):
        raise UsageError(f"--scenario {scenario!r}: choose sync or async")
    if time_s <= 0 or warmup_s < 0:
        raise UsageError("--time must be > 0 and --warmup-time >= 0")
    if batch_size is not None and batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {batch_size}")
    if num_cores is not None and num_cores < 1:
        raise UsageError(f"--num-cores must be >= 1, got {num_cores}")
    ncpu = os.cpu_count() or 1
    if scenario == "sync":
        if num_streams not in (None, 1):
            raise UsageError("--num-streams > 1 needs --scenario async")
        streams = 1
    else:
        streams = int(num_streams) if num_streams else max(2, ncpu)
        if streams < 1:
            raise UsageError(f"--num-streams must be >= 1, got {streams}")
    twin = None
    if "dense" in compare:
        if not (isinstance(model, str) and is_zoo_spec(model)):
            raise UsageError("--compare dense needs a zoo:NAME model (its dense FP32 twin is "
                             "generated locally)")
        twin = "zoo:" + dense_twin_name(model[4:])
        if twin == model:
            raise UsageError(f"{model} is already the dense FP32 model; nothing to compare with")
    say = (lambda m: note(m, quiet))
    if isinstance(input_shapes, str):
        from ._common import parse_input_shapes
        input_shapes = parse_input_shapes(input_shapes)

    proto, name = load_spec(model, progress=say)
    names, shapes, batch = resolve_shapes(proto, batch_size, input_shapes)
    xs = make_inputs(proto, shapes, seed)
    say(f"compiling {name} ...")
    engine = compile_for(proto, shapes, batch, num_cores)
    from ..kernels import kernel_isa
    contenders = [_Contender("deepsparse_cy", name, lambda: engine.run(xs), "engine")]
    skipped = []
    if "dense" in compare:
        tproto, _ = load_spec(twin, progress=say)
        say(f"compiling {twin} ...")
        teng = compile_for(tproto, shapes, batch, num_cores)
        txs = make_inputs(tproto, shapes, seed)
        contenders.append(_Contender("dense FP32 twin", twin, lambda: teng.run(txs), "dense"))
        del tproto
    if "onnxruntime" in compare:
        sess, ver = _ort_session(proto, num_cores or ncpu)
        if sess is None:
            skipped.append("onnxruntime is not installed (pip install onnxruntime); "
                           "--compare onnxruntime skipped")
            say(skipped[-1])
        else:
            feeds = dict(zip(names, xs))
            contenders.append(_Contender(f"onnxruntime {ver}", name,
                                         lambda: sess.run(None, feeds), "onnxruntime"))

    # alternating blocks: round r runs every contender for one block, warmup included
    rounds = 1 if len(contenders) == 1 else max(1, int(round(time_s / BLOCK_S)))
    block = time_s / rounds
    total = (warmup_s + time_s) * len(contenders)
    bar = Progress(total, enabled=progress)
    done = [0.0]

    def make_tick(c, t_start, phase=""):
        def tick():
            bar.update(done[0] + time.perf_counter() - t_start, label=phase + c.label)
        return tick

    try:
        for c in contenders:
            if warmup_s > 0:
                t0 = time.perf_counter()
                _run_block(c, warmup_s, streams, batch, False, make_tick(c, t0, "warm-up: "))
                done[0] += warmup_s
            else:
                c.fn()   # at least one call: the first run builds the plan
        for r in range(rounds):
            for i, c in enumerate(contenders):
                if len(contenders) > 1 and (r or i):
                    time.sleep(PAUSE_S)
                t0 = time.perf_counter()
                _run_block(c, block, streams, batch, True, make_tick(c, t0))
                done[0] += block
        bar.update(total, force=True)
    finally:
        bar.close()

    main = contenders[0]
    result = {
        "model": name, "batch_size": batch,
        "input_shapes": {n: list(s) for n, s in zip(names, shapes)},
        "scenario": scenario, "num_streams": streams, "num_cores": engine.num_cores,
        "kernel_isa": kernel_isa(), "time_s": time_s, "warmup_s": warmup_s,
        "throughput_items_per_s": main.items / main.wall if main.wall else float("nan"),
        "latency_ms": latency_stats(main.latencies), "iterations": len(main.latencies),
        "comparisons": [], "notes": skipped,
    }
    for c in contenders[1:]:
        thr = c.items / c.wall if c.wall else float("nan")
        result["comparisons"].append({
            "name": c.label, "kind": c.kind, "model": c.model_name,
            "throughput_items_per_s": thr, "latency_ms": latency_stats(c.latencies),
            "iterations": len(c.latencies),
            "ratio": result["throughput_items_per_s"] / thr if thr else float("nan")})
    if len(contenders) > 1:
        result["alternation"] = {"rounds": rounds, "block_s": block, "pause_s": PAUSE_S}
    if export_json:
        try:
            with open(export_json, "w") as fh:
                json.dump(result, fh, indent=2)
        except OSError as e:
            raise UsageError(f"cannot write --export-json {export_json}: {e.strerror}") from None
    return result


def format_result(r):
    lat = r["latency_ms"]
    shapes = ", ".join(f"{n} {s}" for n, s in r["input_shapes"].items())
    lines = [
        f"Model:            {r['model']}",
        f"Batch size:       {r['batch_size']}",
        f"Input shapes:     {shapes}",
        f"Scenario:         {r['scenario']} ({r['num_streams']} stream"
        f"{'s' if r['num_streams'] > 1 else ''})",
        f"Cores:            {r['num_cores']}   kernel ISA: {r['kernel_isa']}",
        f"Throughput:       {r['throughput_items_per_s']:.2f} items/s",
        f"Latency mean:     {lat['mean']:.3f} ms/batch",
        f"Latency median:   {lat['median']:.3f} ms/batch",
        f"Latency std:      {lat['std']:.3f} ms/batch",
        f"Latency p90:      {lat['p90']:.3f} ms/batch",
        f"Latency p95:      {lat['p95']:.3f} ms/batch",
        f"Latency p99:      {lat['p99']:.3f} ms/batch",
        f"Iterations:       {r['iterations']}",
    ]
    if r["comparisons"]:
        a = r["alternation"]
        lines.append(f"Compared in the same run ({a['rounds']} round"
                     f"{'s' if a['rounds'] > 1 else ''} of alternating blocks, each "
                     f"{a['block_s']:.2f} s or one call if longer, {a['pause_s']:.1f} s pauses):")
        for c in r["comparisons"]:
            lat = c["latency_ms"]
            lines.append(f"  {c['name']} ({c['model']}): {c['throughput_items_per_s']:.2f} items/s, "
                         f"latency mean {lat['mean']:.3f} / median {lat['median']:.3f} ms/batch, "
                         f"{c['iterations']} iterations")
            if c["kind"] == "dense":
                lines.append(f"    Speedup over the dense FP32 twin: {c['ratio']:.2f}x")
            else:
                lines.append(f"    deepsparse_cy / {c['name']} throughput: {c['ratio']:.2f}x")
    for n in r.get("notes", []):
        lines.append(f"Note: {n}")
    return "\n".join(lines)
