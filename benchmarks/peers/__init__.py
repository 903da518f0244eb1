"""Peer runtimes for side-by-side benchmarks: DeepSparse 1.8 (in its own virtualenv, driven as a
subprocess), OpenVINO and onnxruntime (in process). Each is optional; `*_status()` says why one
is unusable so a benchmark can skip with that message.

    from peers import deepsparse_available, run_deepsparse, DeepSparsePeer, openvino_runner
    r = run_deepsparse(path, feeds, iterations=20)        # one shot: {"latencies_ms": [...], ...}
    with DeepSparsePeer(path, feeds) as ds:               # compiled once, timed in blocks
        lat_ms = ds.block(10)
        outs = ds.outputs()                                # {output name: array}
    run = openvino_runner(path, feeds)                     # callable -> list of outputs

DeepSparse 1.8 pins numpy 1.x and onnx 1.14, so it lives in its own virtualenv
(tools/setup_deepsparse_peer.sh; default /opt/deepsparse18, or $DSCY_DEEPSPARSE_PYTHON naming
that venv's python). Its timings come from benchmarks/peers/deepsparse_driver.py running there;
feeds travel through a temporary .npz. Processes cannot alternate single calls, so comparisons
alternate whole blocks (deepsparse_cy block, DeepSparse block, ...) and report medians: see
alternate_blocks().

This module imports nothing from deepsparse_cy, so the CLI can reuse it as is.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

DRIVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "deepsparse_driver.py")
DEFAULT_VENV = "/opt/deepsparse18"
WANT_DEEPSPARSE = "1.8."

_status_cache = {}


def deepsparse_python():
    """The interpreter of DeepSparse's virtualenv: $DSCY_DEEPSPARSE_PYTHON, else
    $DSCY_DEEPSPARSE_VENV/bin/python, else /opt/deepsparse18/bin/python."""
    exe = os.environ.get("DSCY_DEEPSPARSE_PYTHON")
    if exe:
        return exe
    return os.path.join(os.environ.get("DSCY_DEEPSPARSE_VENV", DEFAULT_VENV), "bin", "python")


def _peer_env():
    env = dict(os.environ)
    env["NM_DISABLE_ANALYTICS"] = "1"       # DeepSparse phones home otherwise
    # the venv must not see the parent's packages (numpy 2, onnx 1.2x)
    env.pop("PYTHONPATH", None)
    env.pop("PYTHONHOME", None)
    return env


def deepsparse_status():
    """(ok, message): ok when DeepSparse 1.8 imports in its virtualenv; else why not, with the
    command that installs it."""
    exe = deepsparse_python()
    if exe in _status_cache:
        return _status_cache[exe]
    hint = "run tools/setup_deepsparse_peer.sh (or set DSCY_DEEPSPARSE_PYTHON)"
    if not os.path.exists(exe):
        res = (False, f"DeepSparse peer not installed: {exe} missing; {hint}")
    else:
        try:
            p = subprocess.run([exe, "-c", "import deepsparse; print(deepsparse.__version__)"],
                               capture_output=True, text=True, timeout=120, env=_peer_env())
            ver = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else ""
            if p.returncode != 0:
                res = (False, f"DeepSparse does not import in {exe}: "
                              f"{p.stderr.strip().splitlines()[-1:]}; {hint}")
            elif not ver.startswith(WANT_DEEPSPARSE):
                res = (False, f"{exe} has DeepSparse {ver}, want {WANT_DEEPSPARSE}x; {hint}")
            else:
                res = (True, f"DeepSparse {ver} ({exe})")
        except (OSError, subprocess.TimeoutExpired) as e:
            res = (False, f"DeepSparse peer unusable ({e}); {hint}")
    _status_cache[exe] = res
    return res


def deepsparse_available():
    return deepsparse_status()[0]


def _write_feeds(feeds, d):
    path = os.path.join(d, "inputs.npz")
    np.savez(path, **{k: np.ascontiguousarray(v) for k, v in feeds.items()})
    return path


def _private_copy(model_path, d):
    """A copy of the model for DeepSparse to read: when it fixes input shapes it rewrites the
    .onnx file it was given in place, which corrupted the zoo's cached (dynamic-shape) models."""
    src = os.path.abspath(model_path)
    dst = os.path.join(d, os.path.basename(src))
    shutil.copyfile(src, dst)
    data = os.path.splitext(src)[0] + ".data"     # external weights written beside the model
    if os.path.exists(data):
        shutil.copyfile(data, os.path.join(d, os.path.basename(data)))
    return dst


def run_deepsparse(model_path, feeds, iterations=20, warmup=5, num_cores=None, batch=None,
                   outputs=False, timeout=1800):
    """Compile `model_path` with DeepSparse in its virtualenv and time `iterations` calls on
    `feeds` ({input name: array}, batch leading). Returns the driver's JSON dict
    (latencies_ms, median_ms, compile_s, fraction_of_supported_ops, ...); with outputs=True also
    "outputs": {name: array} from one more call."""
    ok, msg = deepsparse_status()
    if not ok:
        raise RuntimeError(msg)
    d = tempfile.mkdtemp(prefix="dscy_ds_")
    try:
        cmd = [deepsparse_python(), DRIVER, _private_copy(model_path, d), _write_feeds(feeds, d),
               "--iterations", str(iterations), "--warmup", str(warmup)]
        if num_cores:
            cmd += ["--num-cores", str(num_cores)]
        if batch:
            cmd += ["--batch", str(batch)]
        out_path = os.path.join(d, "outputs.npz")
        if outputs:
            cmd += ["--outputs", out_path]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_peer_env())
        if p.returncode != 0:
            raise RuntimeError(f"DeepSparse driver failed (exit {p.returncode}):\n"
                               f"{p.stderr[-3000:]}")
        res = json.loads(p.stdout.strip().splitlines()[-1])
        if outputs:
            with np.load(out_path) as z:
                res["outputs"] = {k: z[k] for k in z.files}
        return res
    finally:
        shutil.rmtree(d, ignore_errors=True)


class DeepSparsePeer:
    """DeepSparse compiled once in a long-lived driver subprocess (--serve); block(n) times n
    calls there and returns their latencies in ms. Use as a context manager (or call close())."""

    def __init__(self, model_path, feeds, num_cores=None, batch=None, timeout=1800):
        ok, msg = deepsparse_status()
        if not ok:
            raise RuntimeError(msg)
        self._dir = tempfile.mkdtemp(prefix="dscy_ds_")
        cmd = [deepsparse_python(), DRIVER, _private_copy(model_path, self._dir),
               _write_feeds(feeds, self._dir), "--serve"]
        if num_cores:
            cmd += ["--num-cores", str(num_cores)]
        if batch:
            cmd += ["--batch", str(batch)]
        self._err = open(os.path.join(self._dir, "stderr.txt"), "w+")
        self._p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=self._err, text=True, bufsize=1, env=_peer_env())
        self.timeout = timeout
        self.info = self._read()
        if not self.info.get("ready"):
            raise RuntimeError(f"DeepSparse driver did not start: {self.info}")

    def _read(self):
        line = self._p.stdout.readline()
        if not line:
            self._err.flush()
            self._err.seek(0)
            tail = self._err.read()[-3000:]
            self.close()
            raise RuntimeError(f"DeepSparse driver exited (code {self._p.poll()}):\n{tail}")
        res = json.loads(line)
        if "error" in res:
            raise RuntimeError(f"DeepSparse driver: {res['error']}")
        return res

    def _ask(self, req):
        self._p.stdin.write(json.dumps(req) + "\n")
        self._p.stdin.flush()
        return self._read()

    def block(self, iterations, warmup=0):
        return self._ask({"cmd": "run", "iterations": iterations, "warmup": warmup})["latencies_ms"]

    def outputs(self):
        path = os.path.join(self._dir, "outputs.npz")
        self._ask({"cmd": "outputs", "path": path})
        with np.load(path) as z:
            return {k: z[k] for k in z.files}

    def close(self):
        p = getattr(self, "_p", None)
        if p is not None and p.poll() is None:
            try:
                p.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                p.stdin.flush()
                p.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired, ValueError):
                p.kill()
                p.wait()
        if getattr(self, "_err", None) is not None:
            self._err.close()
            self._err = None
        if getattr(self, "_dir", None):
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


# --------------------------------------------------------------------------------------------
def openvino_status():
    try:
        import openvino
        return True, f"OpenVINO {openvino.__version__}"
    except Exception as e:      # ImportError, or a broken install
        return False, f"OpenVINO not installed ({type(e).__name__}: {e}); pip install openvino"


def openvino_available():
    return openvino_status()[0]


def openvino_runner(model_path, feeds, num_cores=None):
    """Callable running `model_path` in OpenVINO's CPU plugin on `feeds`, returning a list of
    outputs in model order. FP32 forced: without INFERENCE_PRECISION_HINT=f32 OpenVINO runs bf16
    on CPUs that have it (this one does not, but the figure must mean the same elsewhere).
    Latency mode, one stream, num_cores threads (default: all cores this process may use)."""
    import openvino as ov
    core = ov.Core()
    model = core.read_model(os.path.abspath(model_path))
    model.reshape({k: ov.PartialShape(list(v.shape)) for k, v in feeds.items()})
    n = num_cores or len(os.sched_getaffinity(0))
    compiled = core.compile_model(model, "CPU", {
        "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": "1", "INFERENCE_NUM_THREADS": str(n)})
    req = compiled.create_infer_request()
    names = [p.get_any_name() for p in compiled.inputs]
    xs = {nm: np.ascontiguousarray(feeds[nm]) for nm in names}
    outs = compiled.outputs

    def run():
        r = req.infer(xs)
        return [np.asarray(r[o]) for o in outs]
    run.compiled = compiled
    run.precision = compiled.get_property("INFERENCE_PRECISION_HINT")
    return run


def onnxruntime_runner(model_path, feeds, num_cores=None):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = num_cores or len(os.sched_getaffinity(0))
    sess = ort.InferenceSession(os.path.abspath(model_path), so,
                                providers=["CPUExecutionProvider"])
    return lambda: sess.run(None, feeds)


# --------------------------------------------------------------------------------------------
def time_block(fn, iterations, warmup=0):
    """Latencies (ms) of `iterations` back-to-back calls of fn, after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    lat = []
    for _ in range(iterations):
        t = time.perf_counter()
        fn()
        lat.append((time.perf_counter() - t) * 1e3)
    return lat


def alternate_blocks(contenders, blocks, per_block, warmup=2, pause=0.2):
    """{name: [latency ms, ...]} from `blocks` rounds; each round runs every contender for one
    block of `per_block` calls, in turn, with a pause between blocks (OpenMP / DeepSparse /
    OpenVINO worker threads spin for a while after a run and would steal the next contender's
    cores). A contender is either a callable (timed in process) or an object with
    .block(n, warmup) returning latencies (DeepSparsePeer, timed inside its own process). The
    first round's blocks start with `warmup` untimed calls each."""
    lat = {k: [] for k in contenders}
    for b in range(blocks):
        for k, c in contenders.items():
            time.sleep(pause)
            w = warmup if b == 0 else 0
            if hasattr(c, "block"):
                lat[k] += list(c.block(per_block, w))
            else:
                lat[k] += time_block(c, per_block, w)
    return lat


def cosine(a, b):
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(a @ b / (na * nb))


__all__ = ["deepsparse_python", "deepsparse_status", "deepsparse_available", "run_deepsparse",
           "DeepSparsePeer", "openvino_status", "openvino_available", "openvino_runner",
           "onnxruntime_runner", "time_block", "alternate_blocks", "cosine", "DRIVER"]
