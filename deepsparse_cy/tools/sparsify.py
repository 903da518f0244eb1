"""`deepsparse-cy sparsify IN OUT`: one-shot magnitude pruning (unstructured or block4) and static
INT8 quantization into a standard QDQ ONNX model that onnxruntime also runs.

Pruning and quantization are deepsparse_cy.zoo.prune / zoo.quantize; this module adds the user
interface: calibration data from an .npz or seeded random inputs, the per-layer report of the
sparsity achieved, and the output difference against the input model, both run with deepsparse_cy.
"""
from __future__ import annotations

import os

import numpy as np
import onnx

from ..errors import DeepSparseCyError
from ._common import (UsageError, compile_for, load_spec, make_inputs, note, parse_input_shapes,
                      resolve_shapes)


def parse_overrides(items):
    """['name=0.8', ...] -> {name: 0.8}."""
    out = {}
    for it in items or ():
        if isinstance(it, tuple):
            k, v = it
        else:
            if "=" not in it:
                raise UsageError(f"bad --override {it!r}: expected NAME=SPARSITY, e.g. "
                                 "'encoder.layer.0.attention.self.query.weight=0.8'")
            k, v = it.rsplit("=", 1)
        try:
            v = float(v)
        except ValueError:
            raise UsageError(f"bad --override {it!r}: {v!r} is not a number") from None
        if not 0.0 <= v < 1.0:
            raise UsageError(f"bad --override {it!r}: sparsity must be in [0, 1)")
        out[k.strip()] = v
    return out


def load_calibration(path, names, shapes):
    """Feeds from an .npz: one array per input (by name, or arr_0.. in input order), either one
    sample of the input's shape or several stacked along a new leading axis."""
    if not os.path.isfile(path):
        raise UsageError(f"calibration data file not found: {path}")
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - zip/format errors come in several types
        raise UsageError(f"cannot read --calibration-data {path}: {e}") from None
    keys = list(data.keys())
    arrays = []
    for i, (n, s) in enumerate(zip(names, shapes)):
        k = n if n in data else (f"arr_{i}" if f"arr_{i}" in data else None)
        if k is None:
            raise UsageError(f"--calibration-data {path} has no array for input {n!r} "
                             f"(keys: {', '.join(keys)})")
        a = data[k]
        if a.ndim == len(s):
            a = a[None]
        elif a.ndim != len(s) + 1:
            raise UsageError(f"--calibration-data {k!r}: rank {a.ndim} fits neither one sample "
                             f"(rank {len(s)}) nor a stack of samples (rank {len(s) + 1})")
        arrays.append(a)
    count = {a.shape[0] for a in arrays}
    if len(count) != 1:
        raise UsageError(f"--calibration-data: inputs hold different sample counts {sorted(count)}")
    return [{n: a[j] for n, a in zip(names, arrays)} for j in range(count.pop())]


def output_difference(reference, candidates, xs, shapes, batch):
    """Run the reference and each candidate model with deepsparse_cy on the same inputs; per
    candidate and output: max / mean absolute difference, relative L2 error, cosine similarity."""
    er = compile_for(reference, shapes, batch)
    yr = er.run(xs)
    res = {}
    for label, model in candidates:
        yc = compile_for(model, shapes, batch).run(xs)
        rows = []
        for n, a, b in zip(er.output_names, yr, yc):
            a = np.asarray(a, dtype=np.float64).ravel()
            b = np.asarray(b, dtype=np.float64).ravel()
            d = np.abs(a - b)
            na, nb = np.linalg.norm(a), np.linalg.norm(b)
            rows.append({"output": n, "max_abs": float(d.max()) if d.size else 0.0,
                         "mean_abs": float(d.mean()) if d.size else 0.0,
                         "rel_l2": float(np.linalg.norm(a - b) / na) if na else float("nan"),
                         "cosine": float(a @ b / (na * nb)) if na and nb else float("nan")})
        res[label] = rows
    return res


def sparsify_model(src, dst, sparsity=0.9, pattern="unstructured", overrides=None, skip=(),
                   skip_first_last=True, quantize=None, calibration_data=None,
                   num_calibration_samples=4, input_shapes=None, batch_size=None, seed=0,
                   compare=True, quiet=False):
    """Prune (and optionally quantize) `src`, write `dst`; returns the report dict."""
    from ..zoo import prune as _prune
    if pattern not in _prune.PATTERNS:
        raise UsageError(f"--pattern {pattern!r}: choose from {', '.join(_prune.PATTERNS)}")
    if not 0.0 <= sparsity < 1.0:
        raise UsageError(f"--sparsity must be in [0, 1), got {sparsity}")
    if quantize not in (None, "none", "int8"):
        raise UsageError(f"--quantize {quantize!r}: choose int8 or none")
    if num_calibration_samples < 1:
        raise UsageError("--num-calibration-samples must be >= 1")
    out_dir = os.path.dirname(os.path.abspath(os.fspath(dst)))
    if not os.path.isdir(out_dir):
        raise UsageError(f"output folder does not exist: {out_dir}")
    if isinstance(input_shapes, str):
        input_shapes = parse_input_shapes(input_shapes)
    overrides = parse_overrides(overrides) if not isinstance(overrides, dict) else overrides
    say = (lambda m: note(m, quiet))
    model, name = load_spec(src, progress=say)
    layers = {l.node for l in _prune.prunable_layers(model)} | \
        {l.weight for l in _prune.prunable_layers(model)}
    unknown = [k for k in list(overrides) + list(skip) if k not in layers]
    if unknown:
        raise UsageError(f"--override/--skip name(s) {unknown} match no prunable layer (node or "
                         "weight name of a MatMul/Gemm/Conv)")
    names, shapes, batch = resolve_shapes(model, batch_size, input_shapes)
    calib = None
    if quantize == "int8" and calibration_data:   # read it first: a bad file fails fast
        calib = load_calibration(calibration_data, names, shapes)

    say(f"pruning {name}: {sparsity:.0%} {pattern} ...")
    pruned, rep = _prune.prune_model(model, sparsity=sparsity, pattern=pattern,
                                     overrides=overrides, skip_first_last=skip_first_last,
                                     skip=skip)
    occ = {r["weight"]: r["block4_occupancy"] for r in _prune.layer_sparsity(pruned)}
    report_layers = [{"node": r["node"], "op_type": r["op_type"], "weight": r["weight"],
                      "shape": list(r["shape"]), "target": r["target"], "sparsity": r["sparsity"],
                      "block4_occupancy": occ.get(r["weight"])} for r in rep]
    out = pruned
    calib_desc = None
    if quantize == "int8":
        from ..zoo import quantize as _quant
        if calib is not None:
            feeds = calib
            calib_desc = f"{len(feeds)} samples from {calibration_data}"
        else:
            feeds = [dict(zip(names, make_inputs(model, shapes, seed + 1 + i)))
                     for i in range(num_calibration_samples)]
            calib_desc = f"{len(feeds)} seeded random samples (seed {seed + 1}..)"
        say(f"quantizing to INT8 (QDQ, static calibration on {calib_desc}) ...")
        out = _quant.quantize_model(pruned, calibration=feeds)
    try:
        onnx.save_model(out, os.fspath(dst))
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot write {dst}: {e}") from None
    result = {"input": name, "output": os.fspath(dst), "pattern": pattern, "target": sparsity,
              "quantize": quantize or "none", "calibration": calib_desc, "layers": report_layers,
              "input_shapes": {n: list(s) for n, s in zip(names, shapes)}}
    total = sum(int(np.prod(r["shape"])) for r in report_layers)
    zeros = sum(r["sparsity"] * int(np.prod(r["shape"])) for r in report_layers)
    result["overall_sparsity"] = zeros / total if total else 0.0
    if compare:
        say("comparing outputs with deepsparse_cy ...")
        xs = make_inputs(model, shapes, seed + 10_000)
        try:
            cands = [("pruned FP32", pruned)] if out is not pruned else []
            cands.append(("output model", out))
            result["difference"] = output_difference(model, cands, xs, shapes, batch)
        except DeepSparseCyError as e:
            result["difference_error"] = f"{type(e).__name__}: {str(e).splitlines()[0]}"
    return result


def format_sparsify(r):
    lines = [f"Sparsified {r['input']} -> {r['output']}",
             f"Pattern {r['pattern']}, target {r['target']:.0%}, quantize {r['quantize']}"
             + (f" (calibration: {r['calibration']})" if r["calibration"] else ""), "",
             f"{'layer (node)':<48} {'op':<6} {'weight shape':<16} {'target':>6} {'sparsity':>8} "
             f"{'b4occ':>6}"]
    for x in r["layers"]:
        nm = x["node"] if len(x["node"]) <= 48 else "…" + x["node"][-47:]
        lines.append(f"{nm:<48} {x['op_type']:<6} {'x'.join(map(str, x['shape'])):<16} "
                     f"{x['target']:6.0%} {x['sparsity']:8.1%} {x['block4_occupancy']:6.2f}")
    lines.append(f"Overall weight sparsity of the {len(r['layers'])} prunable layers: "
                 f"{r['overall_sparsity']:.1%}")
    if "difference" in r:
        lines.append("")
        lines.append("Output difference vs the input model (both run with deepsparse_cy, seeded "
                     "random inputs):")
        for label, rows in r["difference"].items():
            for d in rows:
                lines.append(f"  {label:<13} {d['output']}: max abs {d['max_abs']:.4g}, mean abs "
                             f"{d['mean_abs']:.4g}, relative L2 {d['rel_l2']:.4g}, cosine "
                             f"{d['cosine']:.5f}")
    elif "difference_error" in r:
        lines.append(f"Output difference: not measured, deepsparse_cy could not run a model: "
                     f"{r['difference_error']}")
    return "\n".join(lines)
