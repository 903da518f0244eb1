"""Print the engine's agreement with onnxruntime on the built-in models (the figures issue
closing notes quote): max |difference| / max |output| and cosine, per model, batch and input
size, every output.

    python tools/agreement.py                 # the zoo generators at batch 1 and 4
    python tools/agreement.py --real-world    # yolov8n / mbv3-ocr / minilm at several sizes
"""
import argparse
import sys

import numpy as np

import deepsparse_cy as ds
from deepsparse_cy import zoo


def _ort(model):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def figures(ref, got):
    r = np.asarray(ref, np.float64)
    g = np.asarray(got, np.float64)
    rel = float(np.abs(r - g).max() / max(np.abs(r).max(), 1e-30))
    cos = float((r * g).sum() / max(np.linalg.norm(r) * np.linalg.norm(g), 1e-300))
    return rel, cos


def report(name, model, cases):
    eng = ds.compile_model(model)
    sess = _ort(model)
    worst = 0.0
    for label, feeds in cases:
        ref = sess.run(None, feeds)
        got = eng.run([feeds[n] for n in eng.input_names])
        for i, (r, g) in enumerate(zip(ref, got)):
            rel, cos = figures(r, g)
            worst = max(worst, rel)
            print(f"{name:12s} {label:18s} out{i} {str(tuple(r.shape)):22s} "
                  f"max|diff|/max|out| {rel:.2e}  cosine {cos:.7f}", flush=True)
    return worst


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--real-world", action="store_true")
    a = ap.parse_args(argv)
    worst = 0.0
    if not a.real_world:
        for name in ["bert-base", "resnet50", "mobilenetv2", "yolov5s"]:
            m = zoo.get_model(name)
            cases = [(f"batch {b}", zoo.example_inputs(m, batch=b, seq=128, seed=b))
                     for b in (1, 4)]
            worst = max(worst, report(name, m, cases))
    else:
        img = lambda b, h, w: np.random.default_rng(0).random((b, 3, h, w), dtype=np.float32)  # noqa: E731
        y = zoo.get_model("yolov8n")
        worst = max(worst, report("yolov8n", y, [
            (f"{b}x{h}x{w}", {y.graph.input[0].name: img(b, h, w)})
            for b, h, w in [(1, 128, 128), (1, 320, 320), (1, 480, 640), (1, 640, 640),
                            (8, 320, 320)]]))
        o = zoo.get_model("mbv3-ocr")
        worst = max(worst, report("mbv3-ocr", o, [
            (f"{b}x{h}x{w}", {o.graph.input[0].name: img(b, h, w)})
            for b, h, w in [(1, 128, 128), (1, 48, 320), (8, 48, 320), (1, 640, 640)]]))
        mm = zoo.get_model("minilm")
        worst = max(worst, report("minilm", mm, [
            (f"batch {b} seq {s}", zoo.example_inputs(mm, batch=b, seq=s, seed=b))
            for b, s in [(1, 16), (1, 128), (8, 128), (1, 384)]]))
    print(f"worst max|diff|/max|out|: {worst:.2e}")
    return 0 if worst <= 1e-3 else 1


if __name__ == "__main__":
    sys.exit(main())
